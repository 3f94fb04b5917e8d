//! Shared helpers for the GPU-vs-CPU kernel tests.
//!
//! The GPU comes from the environment (`WGPU_BACKEND`, `DELTALLM_PORTABLE`,
//! `DELTALLM_ADAPTER`), so the same tests run on lavapipe, in portable mode
//! and on the GL backend. Outputs are poisoned with NaN before each run and
//! inputs are fresh random data, never zeros.

use deltallm::gpu::GpuBuffer;
use deltallm::{Gpu, GpuOptions};
use rand::{Rng, SeedableRng};
use std::sync::OnceLock;

/// One device per test binary: opening lavapipe is cheap, but compiling the
/// same pipelines in every test is not.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let _ = env_logger::builder().is_test(true).try_init();
        let gpu = Gpu::new_blocking(&GpuOptions::from_env()).expect("a GPU adapter (install mesa-vulkan-drivers)");
        eprintln!(
            "kernel tests on {} ({:?}), portable={}, caps={:?}",
            gpu.info.name, gpu.info.backend, gpu.portable, gpu.caps
        );
        gpu
    })
}

pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Uniform values in [-scale, scale).
pub fn random_f32(rng: &mut impl Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// An output buffer of `n` f32 filled with NaN, so unwritten cells show.
pub fn poisoned(gpu: &Gpu, label: &str, n: usize) -> GpuBuffer {
    gpu.storage_from(label, &vec![f32::NAN; n]).unwrap()
}

/// Relative L2 error ‖a − b‖ / ‖b‖ (NaN anywhere gives infinity).
pub fn rel_l2(actual: &[f32], expected: &[f32]) -> f64 {
    assert_eq!(actual.len(), expected.len(), "length mismatch");
    let mut diff = 0.0f64;
    let mut norm = 0.0f64;
    for (a, e) in actual.iter().zip(expected) {
        if !a.is_finite() {
            return f64::INFINITY;
        }
        diff += ((*a as f64) - (*e as f64)).powi(2);
        norm += (*e as f64).powi(2);
    }
    (diff / norm.max(1e-30)).sqrt()
}

pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], tolerance: f64) {
    let err = rel_l2(actual, expected);
    assert!(err <= tolerance, "{what}: relative L2 error {err:e} > {tolerance:e}");
}
