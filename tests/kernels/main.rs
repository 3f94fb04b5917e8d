//! GPU kernels against their CPU references (see `common` for the rules).
//! One module per kernel family, mirroring `src/ops/`.

mod common;
mod runtime;
mod rmsnorm;
mod attention;
mod elementwise;
mod embedding;
mod matmul;
mod rope;
mod sampling;
mod ternary;
