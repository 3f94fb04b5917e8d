//! deltallm: small LLMs on any GPU wgpu reaches, with WGSL compute shaders
//! for ternary BitNet b1.58 matrix products and DeltaLLM's delta-key hybrid
//! attention. See ARCHITECTURE.md for what lives where.

pub mod bench;
pub mod chat;
pub mod cpu;
pub mod engine;
pub mod error;
/// Evaluation runs from the command line (files, blocking reads): native only.
#[cfg(not(target_arch = "wasm32"))]
pub mod eval;
pub mod format;
pub mod gpu;
pub mod hub;
pub mod loader;
pub mod model;
pub mod ops;
pub mod routing;
pub mod sampler;
pub mod settings;
pub mod shaders;
pub mod tokenizer;
pub mod weights;

pub use chat::{ChatTemplate, Message};
pub use error::{Error, Result};
pub use gpu::{Gpu, GpuOptions};
pub use tokenizer::{GgufVocab, TokenStream, Tokenizer};
