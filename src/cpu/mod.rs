//! Plain-Rust CPU references, one module per kernel family, mirroring
//! `src/ops/`. They are written for clarity, not speed: they define what the
//! GPU kernels must compute, and the tests compare against them.

pub mod rmsnorm;
pub use rmsnorm::rmsnorm;
