//! GPU kernels against their CPU references (see `common` for the rules).
//! One module per kernel family, mirroring `src/ops/`.

mod attention;
mod common;
mod delta;
mod elementwise;
mod embedding;
mod matmul;
mod quant;
mod rmsnorm;
mod rope;
mod runtime;
mod sampling;
mod ternary;
