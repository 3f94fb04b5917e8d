//! CPU-only tests of the model-file loaders: GGUF parsing and robustness,
//! dequantization cross-checked against gguf-py, safetensors (single and
//! sharded) and config normalization. Fast; no GPU, no downloads.

mod config;
mod gguf;
mod quants;
mod real_model;
mod safetensors;

use deltallm::Error;
use deltallm::loader::LoadError;
use rand::SeedableRng;

pub fn rng(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// The loader error inside `result`, panicking (test failure) if it is Ok
/// or not a loader error.
pub fn load_err<T: std::fmt::Debug>(result: Result<T, Error>) -> LoadError {
    match result {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(Error::Load(e)) => match e {
            LoadError::InFile { source, .. } => *source,
            other => other,
        },
        Err(other) => panic!("expected a loader error, got {other}"),
    }
}

pub fn data_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}
