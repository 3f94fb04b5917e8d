//! Block-wise int8 activation round trip (`shaders/quantize_q8_blocks.wgsl`);
//! CPU twin [`crate::cpu::quantize_q8::quantize_q8_blocks`].

use super::check_len;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, GpuBuffer, KernelKey};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    blocks: u32,
    _pad: [u32; 3],
}

/// `out = q8 round trip of x` for `rows` rows of `dim` values (dim a multiple of 32).
pub struct QuantizeQ8Blocks {
    pub dispatch: Dispatch,
    params: GpuBuffer,
    dim: u32,
    max_rows: u32,
}

impl QuantizeQ8Blocks {
    pub fn new(gpu: &Gpu, x: &GpuBuffer, out: &GpuBuffer, max_rows: u32, dim: u32) -> Result<Self> {
        if dim == 0 || !dim.is_multiple_of(32) {
            return Err(Error::shape("quantize_q8_blocks", format!("dim {dim} must be a positive multiple of 32")));
        }
        if std::sync::Arc::ptr_eq(&x.buffer, &out.buffer) {
            return Err(Error::shape("quantize_q8_blocks", "out must be a buffer of its own"));
        }
        check_len("quantize_q8_blocks", x, max_rows as u64 * dim as u64, 4)?;
        check_len("quantize_q8_blocks", out, max_rows as u64 * dim as u64, 4)?;
        let blocks = max_rows * dim / 32;
        let params = gpu.uniform_from("quantize_q8_blocks.params", &Params { blocks, _pad: [0; 3] })?;
        let dispatch = gpu.dispatch(
            "quantize_q8_blocks",
            &KernelKey::new("quantize_q8_blocks", "main"),
            &[&params, x, out],
            gpu.grid(blocks.div_ceil(64)),
        )?;
        Ok(QuantizeQ8Blocks { dispatch, params, dim, max_rows })
    }

    pub fn set_rows(&mut self, gpu: &Gpu, rows: u32) -> Result<()> {
        if rows > self.max_rows {
            return Err(Error::shape("quantize_q8_blocks", format!("{rows} rows > {} allocated", self.max_rows)));
        }
        let blocks = rows * self.dim / 32;
        gpu.write(&self.params, 0, bytemuck::bytes_of(&Params { blocks, _pad: [0; 3] }));
        self.dispatch.set_workgroups(gpu.grid(blocks.div_ceil(64)));
        Ok(())
    }
}
