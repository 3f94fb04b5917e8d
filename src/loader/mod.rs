//! Reading model files on the CPU: GGUF (llama.cpp's format, including the
//! ternary TQ1_0/TQ2_0/I2_S types), safetensors (single or sharded, as on the
//! Hugging Face hub) and the HF `config.json`. Everything here is plain Rust
//! with no GPU; the model code uploads what these functions return.
//!
//! - [`gguf`]: [`Gguf`] parses header, metadata and tensor table; tensor data
//!   stays memory-mapped.
//! - [`quants`]: ggml block layouts, dequantization to f32 and extraction of
//!   ternary values.
//! - [`safetensors`]: [`SafeTensors`] over one file or an index of shards.
//! - [`stream`]: [`ByteSource`], files read by byte range (streamed loads
//!   read headers, then tensors one layer at a time).
//! - [`config`]: [`ModelConfig`], the normalized model description, from HF
//!   JSON or GGUF metadata.

pub mod config;
pub mod error;
pub mod gguf;
mod mapped;
pub mod quants;
pub mod safetensors;
pub mod stream;

pub use config::{Activation, Architecture, ModelConfig, RopeScaling, WeightScale};
pub use error::LoadError;
pub use gguf::{Gguf, GgufArray, GgufBuilder, GgufTensorInfo, GgufTensors, GgufValue, ReadGgufTensors};
pub use quants::{GgmlType, Ternary, dequantize, extract_ternary};
pub use safetensors::{Dtype, ReadTensors, SafeTensors, SafetensorsHeaders, TensorLookup, TensorView};
pub use stream::{ByteSource, LocalFuture};
