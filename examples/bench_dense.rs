//! Times the dense matmul kernels on the default adapter (or the one named
//! by `DELTALLM_ADAPTER`; `DELTALLM_PORTABLE=1` for the WebGPU baseline).
//!
//! `cargo run --release --example bench_dense [-- --lm-head]`
//!
//! Each figure is the median of 20 runs of one submit + wait, after a warm-up
//! run, so it includes the submit and queue round trip a decode step pays.
//! `--lm-head` adds the 2560 -> 128256 f16 GEMV of BitNet's tied lm_head
//! (656 MB of weights, split into chunks on baseline limits).

use deltallm::ops::matmul::{DenseWeight, Matmul, MatmulKernel};
use deltallm::{Gpu, GpuOptions, Result};
use half::f16;
use std::time::{Duration, Instant};

const REPS: usize = 20;

/// Deterministic, non-zero values in [-1, 1) without pulling in a RNG crate.
fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2654435761).max(1);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn bench(gpu: &Gpu, name: &str, weight: &DenseWeight, tokens: u32, kernel: MatmulKernel) -> Result<()> {
    let (n, k) = (weight.rows, weight.cols);
    let x = gpu.storage_from("x", &pseudo_random((tokens * k) as usize, 7))?;
    let y = gpu.storage("y", tokens as u64 * n as u64 * 4)?;
    let mut op = Matmul::new(gpu, weight, &x, &y, tokens)?;
    op.set_rows_with(gpu, tokens, kernel)?;
    op.run(gpu)?;
    gpu.wait()?;
    let mut samples = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        let start = Instant::now();
        op.run(gpu)?;
        gpu.wait()?;
        samples.push(start.elapsed());
    }
    let time = median(samples);
    let weight_gb_per_s = weight.bytes() as f64 / time.as_secs_f64() / 1e9;
    let gflops = 2.0 * tokens as f64 * n as f64 * k as f64 / time.as_secs_f64() / 1e9;
    println!(
        "{name:<28} {tokens:>3} x {k} -> {n:<6} {kernel:?}  {:>9.1} us  {weight_gb_per_s:>7.1} GB/s of weights  {gflops:>8.1} GFLOP/s  ({} chunk(s))",
        time.as_secs_f64() * 1e6,
        weight.chunks.len()
    );
    Ok(())
}

fn main() -> Result<()> {
    env_logger::init();
    let lm_head = std::env::args().any(|a| a == "--lm-head");
    let gpu = Gpu::new_blocking(&GpuOptions::from_env())?;
    println!(
        "adapter: {} ({:?}, {}), portable={}, caps={:?}",
        gpu.info.name, gpu.info.backend, gpu.info.driver, gpu.portable, gpu.caps
    );
    // BitNet's FFN shape: hidden 2560 -> intermediate 6912.
    let (n, k) = (6912u32, 2560u32);
    let values = pseudo_random((n * k) as usize, 1);
    let halves: Vec<f16> = values.iter().map(|v| f16::from_f32(*v)).collect();
    let w_f16 = DenseWeight::upload_f16(&gpu, "w_f16", &halves, n, k)?;
    let w_f32 = DenseWeight::upload_f32(&gpu, "w_f32", &values, n, k)?;
    bench(&gpu, "f16 gemv", &w_f16, 1, MatmulKernel::Gemv)?;
    bench(&gpu, "f32 gemv", &w_f32, 1, MatmulKernel::Gemv)?;
    bench(&gpu, "f16 gemm (prefill)", &w_f16, 64, MatmulKernel::Gemm)?;
    bench(&gpu, "f32 gemm (prefill)", &w_f32, 64, MatmulKernel::Gemm)?;
    if lm_head {
        let vocab = 128256u32;
        let table: Vec<f16> = pseudo_random((vocab * k) as usize, 3).iter().map(|v| f16::from_f32(*v)).collect();
        let head = DenseWeight::upload_f16(&gpu, "lm_head", &table, vocab, k)?;
        drop(table);
        bench(&gpu, "f16 lm_head gemv", &head, 1, MatmulKernel::Gemv)?;
    }
    Ok(())
}
