//! DeltaLLM's accuracy/sparsity trade-off on real text: for each Θ, the
//! mean log-likelihood (and perplexity) of a text's tokens under teacher
//! forcing, beside the delta and MAC sparsity of that prefill.
//!
//! ```sh
//! models/fetch-smollm2.sh
//! cargo run --release --example delta_sweep -- models/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
//!     /usr/share/common-licenses/GPL-3 256 0,0.25,0.5,0.75,1
//! ```
//!
//! Arguments: model, text file, tokens (default 256), Θ list (default
//! 0,0.25,0.5,1). A Θ of `pP` (e.g. `p0.6`) calibrates Θ per layer for
//! delta sparsity P instead. Window: the defaults (W_min 1, scale 0.05, no sinks).

use deltallm::engine::ModelFiles;
use deltallm::model::{DeltaOptions, Model, ModelOptions};
use deltallm::{Gpu, GpuOptions};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, text, ..] = args.as_slice() else {
        anyhow::bail!("usage: delta_sweep MODEL TEXT_FILE [TOKENS] [THETA,THETA,…]");
    };
    let n: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(256);
    let thetas = args.get(3).map(String::as_str).unwrap_or("0,0.25,0.5,1");

    let files = ModelFiles::load(deltallm::hub::resolve(model)?)?;
    let tokenizer = files.tokenizer.clone().ok_or_else(|| anyhow::anyhow!("the model has no tokenizer"))?;
    let text = std::fs::read_to_string(text)?;
    let mut ids = tokenizer.encode(&text, true)?;
    ids.truncate(n);
    let gpu = Gpu::new_blocking(&GpuOptions::from_env())?;
    let options = ModelOptions {
        max_context: ids.len() as u32,
        prefill_chunk: 64,
        all_logits: true,
        delta: Some(DeltaOptions::default()),
        ..Default::default()
    };
    let mut m = Model::load(&gpu, &files.weights, options)?;
    let vocab = m.config.vocab_size;
    eprintln!("{} tokens on {} ({:?})", ids.len(), gpu.info.name, gpu.info.backend);
    println!("| Θ | mean log-likelihood | perplexity | delta sparsity | MAC sparsity | authors' | K bytes vs f16 |");
    println!("|---|---|---|---|---|---|---|");
    for theta in thetas.split(',') {
        let mut delta = DeltaOptions::default();
        match theta.strip_prefix('p') {
            Some(p) => delta.target_sparsity = Some(p.parse()?),
            None => delta.threshold = theta.parse()?,
        }
        m.set_delta_options(&gpu, delta)?;
        let logits = m.forward_all(&gpu, &ids)?;
        // Log-likelihood of token t + 1 given the prefix up to t.
        let mut total = 0.0f64;
        for (row, &next) in logits.chunks(vocab).zip(&ids[1..]) {
            let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
            let log_sum = row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
            total += row[next as usize] as f64 - log_sum;
        }
        let mean = total / (ids.len() - 1) as f64;
        let r = m.delta_stats(&gpu)?.expect("DeltaLLM is on");
        let thresholds = m.delta_thresholds().unwrap_or_default();
        let label = if theta.starts_with('p') {
            let (lo, hi) = thresholds.iter().fold((f32::MAX, 0.0f32), |(a, b), &t| (a.min(t), b.max(t)));
            format!("{theta} (Θ {lo:.2}–{hi:.2})")
        } else {
            theta.to_string()
        };
        println!(
            "| {label} | {mean:.4} | {:.3} | {:.1} % | {:.1} % | {:.1} % | {:.1} % |",
            (-mean).exp(),
            100.0 * r.phases.total.delta_sparsity,
            100.0 * r.phases.total.mac_sparsity,
            100.0 * r.phases.total.authors_sparsity,
            100.0 * r.k_cache.compressed_f16 as f64 / r.k_cache.dense_f16 as f64,
        );
    }
    Ok(())
}
