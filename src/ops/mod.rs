//! GPU ops: one module per kernel family in `shaders/`. Each op checks shapes
//! when it is built, owns its parameter buffer and [`Dispatch`]es (built
//! once, at load), and is replayed every step. Its CPU twin lives in
//! [`crate::cpu`].
//!
//! [`Dispatch`]: crate::gpu::Dispatch

/// A parameter block uploaded to a shader: `#[repr(C)]`, `Pod`, its fields
/// in the WGSL struct's order (padding included) and `pub(crate)`, so
/// `shaders::params_layout` checks it against its WGSL twin.
macro_rules! gpu_params {
    ($name:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        #[repr(C)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        pub(crate) struct $name {
            $(pub(crate) $field: $ty,)*
        }
    };
}
pub(crate) use gpu_params;

pub mod attention;
pub mod delta;
pub mod elementwise;
pub mod embedding;
pub mod hybrid;
pub mod matmul;
pub mod op;
pub mod quant;
pub mod rmsnorm;
pub mod rope;
pub mod sampling;
pub mod ternary;
pub use op::{Op, OpCost, Step};
pub use rmsnorm::RmsNorm;

use crate::error::{Error, Result};
use crate::gpu::GpuBuffer;

/// Check that `buf` holds at least `elements` items of `elem_bytes` each.
pub(crate) fn check_len(op: &'static str, buf: &GpuBuffer, elements: u64, elem_bytes: u64) -> Result<()> {
    let need = elements * elem_bytes;
    if buf.size < need {
        return Err(Error::shape(
            op,
            format!(
                "buffer '{}' has {} bytes, needs {need} ({elements} elements of {elem_bytes} bytes)",
                buf.label, buf.size
            ),
        ));
    }
    Ok(())
}
