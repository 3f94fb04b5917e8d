//! Elementwise steps (`shaders/elementwise.wgsl`): the gated FFN activations
//! and the residual add; CPU twins in [`crate::cpu::elementwise`].

use super::check_len;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, GpuBuffer, KernelKey};

const WORKGROUP: u32 = 256;

gpu_params! { Params { len: u32, _pad: [u32; 3] } }

/// The gate nonlinearity of a gated FFN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatedActivation {
    /// `relu(g)²` (BitNet b1.58, `hidden_act: relu2`).
    Relu2,
    /// `g · sigmoid(g)` (Llama, `hidden_act: silu`).
    Silu,
}

impl GatedActivation {
    fn entry(self) -> &'static str {
        match self {
            GatedActivation::Relu2 => "relu2_mul",
            GatedActivation::Silu => "silu_mul",
        }
    }
}

/// A storage buffer cannot be bound read-only and read-write in one dispatch.
fn same_buffer(a: &GpuBuffer, b: &GpuBuffer) -> bool {
    std::sync::Arc::ptr_eq(&a.buffer, &b.buffer)
}

/// Rows of `dim` elements, resized per step without allocation; shared by
/// the ops below.
struct ElementwiseGrid {
    params: GpuBuffer,
    dim: u32,
    max_rows: u32,
}

impl ElementwiseGrid {
    fn new(gpu: &Gpu, op: &'static str, buffers: &[&GpuBuffer], max_rows: u32, dim: u32) -> Result<Self> {
        if dim == 0 {
            return Err(Error::shape(op, "dim must be positive"));
        }
        let len = Self::len(op, max_rows, dim)?;
        for buffer in buffers {
            check_len(op, buffer, len as u64, 4)?;
        }
        let params = gpu.uniform_from(&format!("{op}.params"), &Params { len, _pad: [0; 3] })?;
        Ok(ElementwiseGrid { params, dim, max_rows })
    }

    fn len(op: &'static str, rows: u32, dim: u32) -> Result<u32> {
        rows.checked_mul(dim).ok_or_else(|| Error::shape(op, format!("{rows} rows of {dim} elements overflow u32")))
    }

    /// Write the new length; returns the grid for it.
    fn set_rows(&self, gpu: &Gpu, op: &'static str, rows: u32) -> Result<[u32; 3]> {
        if rows > self.max_rows {
            return Err(Error::shape(op, format!("{rows} rows > {} allocated", self.max_rows)));
        }
        let len = Self::len(op, rows, self.dim)?;
        gpu.write(&self.params, 0, bytemuck::bytes_of(&Params { len, _pad: [0; 3] }));
        Ok(gpu.grid(len.div_ceil(WORKGROUP)))
    }
}

/// `out = act(gate) · up` over `rows` rows of `dim` f32s (the FFN's hidden
/// activation, before `down`).
pub struct GatedMul {
    pub dispatch: Dispatch,
    grid: ElementwiseGrid,
}

impl GatedMul {
    /// Build for up to `max_rows` rows (the buffers must hold that many);
    /// starts with `rows = max_rows`. `out` must be a buffer of its own.
    pub fn new(
        gpu: &Gpu,
        activation: GatedActivation,
        gate: &GpuBuffer,
        up: &GpuBuffer,
        out: &GpuBuffer,
        max_rows: u32,
        dim: u32,
    ) -> Result<Self> {
        let op = activation.entry();
        if same_buffer(out, gate) || same_buffer(out, up) {
            return Err(Error::shape(op, "out must not be the gate or up buffer (write to a buffer of its own)"));
        }
        let grid = ElementwiseGrid::new(gpu, op, &[gate, up, out], max_rows, dim)?;
        let dispatch = gpu.dispatch(
            op,
            &KernelKey::new("elementwise", op),
            &[&grid.params, gate, up, out],
            gpu.grid((max_rows * dim).div_ceil(WORKGROUP)),
        )?;
        Ok(GatedMul { dispatch, grid })
    }

    /// Process `rows` rows in the next submit (no allocation).
    pub fn set_rows(&mut self, gpu: &Gpu, rows: u32) -> Result<()> {
        let workgroups = self.grid.set_rows(gpu, "gated_mul", rows)?;
        self.dispatch.set_workgroups(workgroups);
        Ok(())
    }
}

/// The residual connection `h += x` over `rows` rows of `dim` f32s.
pub struct AddInPlace {
    pub dispatch: Dispatch,
    grid: ElementwiseGrid,
}

impl AddInPlace {
    /// Build for up to `max_rows` rows; starts with `rows = max_rows`.
    pub fn new(gpu: &Gpu, h: &GpuBuffer, x: &GpuBuffer, max_rows: u32, dim: u32) -> Result<Self> {
        if same_buffer(h, x) {
            return Err(Error::shape("add_inplace", "h and x must be different buffers"));
        }
        let grid = ElementwiseGrid::new(gpu, "add_inplace", &[h, x], max_rows, dim)?;
        let dispatch = gpu.dispatch(
            "add_inplace",
            &KernelKey::new("elementwise", "add_inplace"),
            &[&grid.params, h, x],
            gpu.grid((max_rows * dim).div_ceil(WORKGROUP)),
        )?;
        Ok(AddInPlace { dispatch, grid })
    }

    /// Process `rows` rows in the next submit (no allocation).
    pub fn set_rows(&mut self, gpu: &Gpu, rows: u32) -> Result<()> {
        let workgroups = self.grid.set_rows(gpu, "add_inplace", rows)?;
        self.dispatch.set_workgroups(workgroups);
        Ok(())
    }
}
