//! Rotary position embedding (`shaders/rope.wgsl`), applied in place to the
//! query and key projections; CPU twin [`crate::cpu::rope`].
//!
//! The cos/sin table is computed on the CPU in f64 and uploaded once as a
//! [`RopeTable`], shared by every layer; a [`Rope`] op rotates one pair of
//! q/k buffers for the tokens of a step.

use super::check_len;
use crate::error::{Error, Result};
use crate::format::rope::{Llama3RopeScaling, rope_inv_freq, rope_table};
use crate::gpu::{Dispatch, Gpu, GpuBuffer, KernelKey};

const WORKGROUP: u32 = 256;

/// The cos/sin table on the GPU: f32 `[max_positions][head_dim/2][2]`
/// (see [`rope_table`]).
pub struct RopeTable {
    pub buffer: GpuBuffer,
    pub head_dim: u32,
    pub max_positions: u32,
}

impl RopeTable {
    /// Compute and upload the table for positions `0..max_positions`.
    pub fn new(
        gpu: &Gpu,
        head_dim: u32,
        theta: f64,
        scaling: Option<Llama3RopeScaling>,
        max_positions: u32,
    ) -> Result<Self> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(Error::shape("rope", format!("head_dim must be even and positive, got {head_dim}")));
        }
        if max_positions == 0 || theta.is_nan() || theta <= 1.0 {
            return Err(Error::shape(
                "rope",
                format!("need max_positions > 0 and theta > 1, got {max_positions} and {theta}"),
            ));
        }
        let inv_freq = rope_inv_freq(head_dim as usize, theta, scaling);
        Self::from_inv_freq(gpu, head_dim, &inv_freq, max_positions)
    }

    /// Upload the table for explicit frequencies (e.g. a GGUF's
    /// `rope_freqs.weight` factors already applied), `head_dim / 2` of them.
    pub fn from_inv_freq(gpu: &Gpu, head_dim: u32, inv_freq: &[f64], max_positions: u32) -> Result<Self> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) || inv_freq.len() != head_dim as usize / 2 {
            return Err(Error::shape(
                "rope",
                format!(
                    "need head_dim even and positive with head_dim/2 frequencies, got {head_dim} and {}",
                    inv_freq.len()
                ),
            ));
        }
        if max_positions == 0 || inv_freq.iter().any(|f| !f.is_finite()) {
            return Err(Error::shape("rope", "need max_positions > 0 and finite frequencies"));
        }
        let table = rope_table(inv_freq, max_positions as usize);
        let buffer = gpu.storage_from("rope.table", &table)?;
        Ok(RopeTable { buffer, head_dim, max_positions })
    }
}

gpu_params! { Params { rows: u32, pos0: u32, heads: u32, kv_heads: u32, head_dim: u32, _pad: [u32; 3] } }

/// Rotates, in place, q f32 `[rows][heads · head_dim]` and k f32
/// `[rows][kv_heads · head_dim]` for tokens at positions `pos0..pos0 + rows`.
pub struct Rope {
    pub dispatch: Dispatch,
    params: GpuBuffer,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    max_rows: u32,
    max_positions: u32,
}

impl Rope {
    /// Build for up to `max_rows` rows; starts with `rows = max_rows`, `pos0 = 0`.
    pub fn new(
        gpu: &Gpu,
        table: &RopeTable,
        q: &GpuBuffer,
        k: &GpuBuffer,
        max_rows: u32,
        heads: u32,
        kv_heads: u32,
    ) -> Result<Self> {
        let head_dim = table.head_dim;
        if heads == 0 || kv_heads == 0 {
            return Err(Error::shape("rope", "heads and kv_heads must be positive"));
        }
        if max_rows > table.max_positions {
            return Err(Error::shape(
                "rope",
                format!("{max_rows} rows > the table's {} positions", table.max_positions),
            ));
        }
        if std::sync::Arc::ptr_eq(&q.buffer, &k.buffer) {
            return Err(Error::shape("rope", "q and k must be different buffers"));
        }
        check_len("rope", q, max_rows as u64 * heads as u64 * head_dim as u64, 4)?;
        check_len("rope", k, max_rows as u64 * kv_heads as u64 * head_dim as u64, 4)?;
        let pairs = max_rows as u64 * (heads + kv_heads) as u64 * (head_dim / 2) as u64;
        if pairs > u32::MAX as u64 {
            return Err(Error::shape("rope", format!("{pairs} rotations in one step overflow u32")));
        }
        // set_step below writes the real values.
        let params = gpu.uniform_from("rope.params", &<Params as bytemuck::Zeroable>::zeroed())?;
        let dispatch =
            gpu.dispatch("rope", &KernelKey::new("rope", "main"), &[&params, &table.buffer, q, k], [0; 3])?;
        let mut rope =
            Rope { dispatch, params, heads, kv_heads, head_dim, max_rows, max_positions: table.max_positions };
        rope.set_step(gpu, max_rows, 0)?;
        Ok(rope)
    }

    /// Rotate `rows` tokens at positions `pos0..pos0 + rows` in the next
    /// submit (no allocation).
    pub fn set_step(&mut self, gpu: &Gpu, rows: u32, pos0: u32) -> Result<()> {
        if rows > self.max_rows {
            return Err(Error::shape("rope", format!("{rows} rows > {} allocated", self.max_rows)));
        }
        if pos0 as u64 + rows as u64 > self.max_positions as u64 {
            return Err(Error::Invalid(format!(
                "rope: positions {pos0}..{} pass the {} positions of the RoPE table; \
                 shorten the prompt or raise the context length",
                pos0 as u64 + rows as u64,
                self.max_positions
            )));
        }
        let p =
            Params { rows, pos0, heads: self.heads, kv_heads: self.kv_heads, head_dim: self.head_dim, _pad: [0; 3] };
        gpu.write(&self.params, 0, bytemuck::bytes_of(&p));
        let pairs = rows * (self.heads + self.kv_heads) * (self.head_dim / 2);
        self.dispatch.set_workgroups(gpu.grid(pairs.div_ceil(WORKGROUP)));
        Ok(())
    }
}
