fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).expect("path");
    let t = std::time::Instant::now();
    let w = deltallm::model::ModelWeights::load(&path)?;
    eprintln!("loaded host weights in {:?}: {:?}", t.elapsed(), w.config);
    let gpu = deltallm::Gpu::new_blocking(&deltallm::GpuOptions::from_env())?;
    let t = std::time::Instant::now();
    let mut m = deltallm::model::Model::load(&gpu, &w, Default::default())?;
    eprintln!("gpu load {:?}", t.elapsed());
    let mut toks = vec![1u32, 504, 3575, 282, 4649, 314];
    let t = std::time::Instant::now();
    m.forward(&gpu, &toks)?;
    let mut next = m.argmax(&gpu)?;
    eprintln!("prefill {:?}", t.elapsed());
    let t = std::time::Instant::now();
    for _ in 0..16 { toks.push(next); m.forward(&gpu, &[next])?; next = m.argmax(&gpu)?; }
    eprintln!("16 decode {:?}", t.elapsed());
    println!("{toks:?}");
    Ok(())
}
