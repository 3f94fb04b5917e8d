//! RMSNorm (`shaders/rmsnorm.wgsl`); CPU twin [`crate::cpu::rmsnorm`].

use super::check_len;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, GpuBuffer, KernelKey};

gpu_params! { Params { rows: u32, dim: u32, eps: f32, _pad: u32 } }

/// `out[r] = rmsnorm(x[r]) * weight` for `rows` rows of `dim` f32s.
pub struct RmsNorm {
    pub dispatch: Dispatch,
    params: GpuBuffer,
    dim: u32,
    eps: f32,
    max_rows: u32,
    /// Bytes of the weight buffer.
    weight_size: u64,
}

impl RmsNorm {
    /// Build for up to `max_rows` rows (the buffers must hold that many);
    /// starts with `rows = max_rows`.
    pub fn new(
        gpu: &Gpu,
        x: &GpuBuffer,
        weight: &GpuBuffer,
        out: &GpuBuffer,
        max_rows: u32,
        dim: u32,
        eps: f32,
    ) -> Result<Self> {
        if dim == 0 {
            return Err(Error::shape("rmsnorm", "dim must be positive"));
        }
        check_len("rmsnorm", x, max_rows as u64 * dim as u64, 4)?;
        check_len("rmsnorm", out, max_rows as u64 * dim as u64, 4)?;
        check_len("rmsnorm", weight, dim as u64, 4)?;
        let p = Params { rows: max_rows, dim, eps, _pad: 0 };
        let params = gpu.uniform_from("rmsnorm.params", &p)?;
        let dispatch = gpu.dispatch(
            "rmsnorm",
            &KernelKey::new("rmsnorm", "main"),
            &[&params, x, weight, out],
            gpu.grid(max_rows),
        )?;
        Ok(RmsNorm { dispatch, params, dim, eps, max_rows, weight_size: weight.size })
    }

    /// Weight bytes a step reads: the whole weight vector, whatever the rows.
    pub fn weight_bytes(&self, _rows: u32) -> u64 {
        self.weight_size
    }

    /// Process `rows` rows in the next submit (no allocation).
    pub fn set_rows(&mut self, gpu: &Gpu, rows: u32) -> Result<()> {
        if rows > self.max_rows {
            return Err(Error::shape("rmsnorm", format!("{rows} rows > {} allocated", self.max_rows)));
        }
        let p = Params { rows, dim: self.dim, eps: self.eps, _pad: 0 };
        gpu.write(&self.params, 0, bytemuck::bytes_of(&p));
        self.dispatch.set_workgroups(gpu.grid(rows));
        Ok(())
    }
}
