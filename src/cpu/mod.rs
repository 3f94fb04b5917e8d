//! Plain-Rust CPU references, one module per kernel family, mirroring
//! `src/ops/`. They are written for clarity, not speed: they define what the
//! GPU kernels must compute, and the tests compare against them.

pub mod attention;
pub mod delta;
pub mod elementwise;
pub mod embedding;
pub mod matmul;
pub mod model;
pub mod quant;
pub mod rmsnorm;
pub mod rope;
pub mod sampling;
pub mod ternary;
pub use rmsnorm::rmsnorm;
