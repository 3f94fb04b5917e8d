//! How weights and activations are laid out in memory, shared by the
//! checkpoint readers (`crate::weights`), the GPU ops (`crate::ops`) and the
//! CPU references (`crate::cpu`): ternary packings, GGUF blocks as the GPU
//! reads them, and the RoPE tables.

pub mod blocks;
pub mod rope;
pub mod ternary;
