//! Helpers shared by the whole-model test binaries: the GPU, tiny random
//! models, the SmolLM2 package model, and comparisons. Each binary uses a
//! part of them.
#![allow(dead_code)]

use deltallm::loader::config::Architecture;
use deltallm::model::{Model, ModelWeights, synthetic};
use deltallm::{Gpu, GpuOptions};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One GPU per test binary (opening an adapter per test is slow on lavapipe).
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new_blocking(&GpuOptions::from_env()).expect("a GPU adapter"))
}

/// A tiny random model with odd-ish sizes: hidden 96 (not a multiple of 64),
/// GQA 6/2, head_dim 16, 2 layers, vocabulary 300.
pub fn tiny(arch: Architecture, seed: u64) -> ModelWeights {
    let config = synthetic::config(arch, 96, 200, 2, 6, 2, 300);
    synthetic::random_weights(&config, seed)
}

/// A token sequence for the tiny models (a repeat included).
pub const TOKENS: [u32; 11] = [1, 17, 250, 3, 99, 42, 42, 7, 123, 299, 0];

/// The SmolLM2 package model, when fetched (`models/fetch-smollm2.sh`; CI
/// does, and there a missing file is a failure, not a skip).
pub fn smollm2() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.exists() {
        Some(path)
    } else if std::env::var("CI").is_ok() {
        panic!("{} is missing: .ci/run must run models/fetch-smollm2.sh", path.display());
    } else {
        eprintln!("skipping: {} not fetched (run models/fetch-smollm2.sh)", path.display());
        None
    }
}

/// After a prompt and one decode step, `steps` more decode steps create no
/// pipelines: everything a step runs is built at load (or when the plan or
/// DeltaLLM options are set).
pub fn assert_decoding_creates_no_pipelines(model: &mut Model, steps: u32) {
    model.forward(gpu(), &TOKENS[..5]).unwrap();
    model.forward(gpu(), &[5]).unwrap();
    let before = gpu().pipelines_created();
    for t in 0..steps {
        model.forward(gpu(), &[t]).unwrap();
    }
    assert_eq!(gpu().pipelines_created(), before);
}

/// Relative L2 error ‖a − b‖ / ‖b‖ (a non-finite value in `a` gives infinity).
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let (mut d, mut n) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        if !x.is_finite() {
            return f64::INFINITY;
        }
        d += (*x as f64 - *y as f64).powi(2);
        n += (*y as f64).powi(2);
    }
    (d / n.max(1e-30)).sqrt()
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}
