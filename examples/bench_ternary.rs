//! Times the ternary BitLinear kernels at BitNet 2B4T's largest shape
//! (K = 2560 → N = 6912): GEMV (one token, decode) and GEMM (64 tokens,
//! prefill), plus the int8 quantization in front of them. Each figure is the
//! median over repeated submit + wait of one dispatch, after a warm-up.
//!
//! `cargo run --release --example bench_ternary [reps]`; the adapter comes
//! from the environment like the tests (`WGPU_BACKEND`, `DELTALLM_ADAPTER`,
//! `DELTALLM_PORTABLE`).

use deltallm::cpu::ternary::ScaleConvention;
use deltallm::gpu::Dispatch;
use deltallm::ops::ternary::{Int8Activations, QuantizeInt8, TernaryMatmul, TernaryWeight};
use deltallm::{Gpu, GpuOptions, Result};
use std::time::Instant;

const K: u32 = 2560;
const N: u32 = 6912;
const PREFILL_TOKENS: u32 = 64;

/// (median, minimum) milliseconds of `reps` runs of `dispatch`, each
/// submitted and waited for alone. The minimum is worth reading on a shared
/// machine, where other processes inflate the median.
fn time_ms(gpu: &Gpu, dispatch: &Dispatch, reps: usize) -> Result<(f64, f64)> {
    for _ in 0..3 {
        gpu.run("warm-up", &[dispatch])?;
        gpu.wait()?;
    }
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        gpu.run(&dispatch.label, &[dispatch])?;
        gpu.wait()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((times[reps / 2], times[0]))
}

/// A deterministic pseudo-random stream (no extra dependency for an example).
fn lcg(seed: &mut u64) -> u32 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (*seed >> 33) as u32
}

fn main() -> Result<()> {
    env_logger::init();
    let reps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(21);
    let gpu = Gpu::new_blocking(&GpuOptions::from_env())?;
    println!("adapter: {} ({:?}), portable={}", gpu.info.name, gpu.info.backend, gpu.portable);

    let mut seed = 1;
    let w: Vec<i8> = (0..N * K).map(|_| (lcg(&mut seed) % 3) as i8 - 1).collect();
    let x: Vec<f32> = (0..PREFILL_TOKENS * K).map(|_| lcg(&mut seed) as f32 / u32::MAX as f32 - 0.5).collect();
    let weight = TernaryWeight::from_ternary(&gpu, "w", &w, N, K, 1.0, ScaleConvention::Divide)?;
    let xb = gpu.storage_from("x", &x)?;
    let act = Int8Activations::new(&gpu, "act", PREFILL_TOKENS, K)?;
    let out = gpu.storage("out", PREFILL_TOKENS as u64 * N as u64 * 4)?;
    let mut quantize = QuantizeInt8::new(&gpu, &xb, &act)?;
    let mut matmul = TernaryMatmul::new(&gpu, &act, &weight, &out)?;
    gpu.run("quantize", &[&quantize.dispatch])?;

    for rows in [1, PREFILL_TOKENS] {
        quantize.set_rows(&gpu, rows)?;
        matmul.set_rows(&gpu, rows)?;
        let (q, q_min) = time_ms(&gpu, &quantize.dispatch, reps)?;
        let (mm, mm_min) = time_ms(&gpu, matmul.dispatch(), reps)?;
        let name = if rows == 1 { "gemv" } else { "gemm" };
        println!(
            "{name} M={rows:<3} K={K} N={N}: matmul median {mm:8.3} ms (min {mm_min:8.3})   \
             quantize median {q:7.3} ms (min {q_min:7.3})   over {reps} runs"
        );
    }
    Ok(())
}
