//! DeltaLLM's context-aware hybrid attention on the GPU
//! (`shaders/attention_hybrid.wgsl`, docs/DESIGN.md §2.2): every query
//! against keys `0..=` its position, exact inside the window and the sinks
//! (full keys from the [`KvCache`]'s ring), through the prefix sums of the
//! [`DeltaCache`]'s delta rows elsewhere. CPU twin [`crate::cpu::delta`].

use super::attention::KvCache;
use super::check_len;
use super::delta::{DeltaCache, MAX_HEAD_DIM, check_step};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, GpuBuffer, KernelKey};

gpu_params! {
    HybridParams {
        rows: u32, pos0: u32, heads: u32, kv_heads: u32, head_dim: u32, max_seq: u32, mask_words: u32, window: u32,
        sinks: u32, scale: f32, sink_rows: u32, ring_rows: u32, capacity: u32, _pad: [u32; 3],
    }
}

/// Query heads of one KV head that one hybrid-attention workgroup serves
/// together (a vec4 per dimension): each delta row, key and value it reads
/// serves them all.
pub const QUERY_HEADS_PER_WORKGROUP: u32 = 4;

/// Hybrid attention of q f32 `[rows][heads · head_dim]` into out f32
/// `[rows][heads · head_dim]`: exact against the [`KvCache`]'s keys for the
/// `window` latest keys and the first `sinks`, through the [`DeltaCache`]
/// prefix sums elsewhere.
pub struct HybridAttention {
    pub attend: Dispatch,
    params: GpuBuffer,
    values: HybridParams,
    max_rows: u32,
    /// k, v, q, out: kept to rebind after the delta values grow.
    bound: [GpuBuffer; 4],
    generation: u64,
}

impl HybridAttention {
    /// Build for up to `max_rows` tokens per step; starts with
    /// `rows = max_rows`, `pos0 = 0`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        kv: &KvCache,
        deltas: &DeltaCache,
        q: &GpuBuffer,
        out: &GpuBuffer,
        max_rows: u32,
        heads: u32,
        window: u32,
        sinks: u32,
    ) -> Result<Self> {
        let (kv_heads, head_dim, max_seq) = (kv.kv_heads, kv.head_dim, kv.max_seq);
        if (deltas.kv_heads, deltas.head_dim, deltas.max_seq) != (kv_heads, head_dim, max_seq) {
            return Err(Error::shape(
                "attention_hybrid",
                format!(
                    "the delta cache ({} kv heads, head_dim {}, {} positions) must match the KV cache ({kv_heads}, {head_dim}, {max_seq})",
                    deltas.kv_heads, deltas.head_dim, deltas.max_seq
                ),
            ));
        }
        if heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(Error::shape(
                "attention_hybrid",
                format!("heads ({heads}) must be a positive multiple of kv_heads ({kv_heads})"),
            ));
        }
        if head_dim > MAX_HEAD_DIM {
            return Err(Error::shape("attention_hybrid", format!("head_dim {head_dim} > {MAX_HEAD_DIM}")));
        }
        if max_rows == 0 || max_rows > max_seq {
            return Err(Error::shape(
                "attention_hybrid",
                format!("max_rows must be in 1..={max_seq} (the cache's max_seq), got {max_rows}"),
            ));
        }
        if std::sync::Arc::ptr_eq(&q.buffer, &out.buffer) {
            return Err(Error::shape("attention_hybrid", "out must not be the q buffer"));
        }
        let q_len = max_rows as u64 * heads as u64 * head_dim as u64;
        check_len("attention_hybrid", q, q_len, 4)?;
        check_len("attention_hybrid", out, q_len, 4)?;

        let values = HybridParams {
            rows: max_rows,
            pos0: 0,
            heads,
            kv_heads,
            head_dim,
            max_seq,
            mask_words: deltas.mask_words(),
            window,
            sinks,
            scale: 1.0 / (head_dim as f32).sqrt(),
            sink_rows: kv.sink_rows,
            ring_rows: kv.ring_rows,
            capacity: deltas.capacity,
            _pad: [0; 3],
        };
        check_exact_keys(&values, max_rows)?;
        let params = gpu.uniform_from("attention_hybrid.params", &values)?;
        let bound = [kv.k.clone(), kv.v.clone(), q.clone(), out.clone()];
        let attend = Self::bind(gpu, &params, &bound, deltas, gpu.grid(workgroups(max_rows, heads, kv_heads)))?;
        Ok(HybridAttention { attend, params, values, max_rows, bound, generation: deltas.generation })
    }

    fn bind(
        gpu: &Gpu,
        params: &GpuBuffer,
        [k, v, q, out]: &[GpuBuffer; 4],
        deltas: &DeltaCache,
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        gpu.dispatch(
            "attention_hybrid",
            &KernelKey::new("attention_hybrid", "attend"),
            &[params, k, v, &deltas.values, &deltas.rows, q, out],
            workgroups,
        )
    }

    /// Attend `rows` tokens at positions `pos0..pos0 + rows` in the next
    /// submit, over `deltas` (the cache this op was built for; rebinds once
    /// after its values grew, else allocates nothing).
    pub fn set_step(&mut self, gpu: &Gpu, deltas: &DeltaCache, rows: u32, pos0: u32) -> Result<()> {
        check_step("attention_hybrid", rows, pos0, self.max_rows, self.values.max_seq)?;
        let workgroups = gpu.grid(workgroups(rows, self.values.heads, self.values.kv_heads));
        if deltas.generation != self.generation {
            self.attend = Self::bind(gpu, &self.params, &self.bound, deltas, workgroups)?;
            self.generation = deltas.generation;
        }
        self.values.rows = rows;
        self.values.pos0 = pos0;
        self.values.capacity = deltas.capacity;
        gpu.write(&self.params, 0, bytemuck::bytes_of(&self.values));
        self.attend.set_workgroups(workgroups);
        Ok(())
    }

    /// Set the exact region: the `window` latest keys (the query's own
    /// included) and the first `sinks` keys. The context-aware window is
    /// fixed after prefill: call this before the first step. Fails when the
    /// KV cache's key ring cannot hold them.
    pub fn set_window(&mut self, gpu: &Gpu, window: u32, sinks: u32) -> Result<()> {
        let values = HybridParams { window, sinks, ..self.values };
        check_exact_keys(&values, self.max_rows)?;
        self.values = values;
        gpu.write(&self.params, 0, bytemuck::bytes_of(&self.values));
        Ok(())
    }

    pub fn dispatches(&self) -> [&Dispatch; 1] {
        [&self.attend]
    }
}

/// One workgroup per row, KV head and group of up to [`QUERY_HEADS_PER_WORKGROUP`] of its query heads.
fn workgroups(rows: u32, heads: u32, kv_heads: u32) -> u32 {
    rows * kv_heads * (heads / kv_heads).div_ceil(QUERY_HEADS_PER_WORKGROUP)
}

/// The exact keys of a step (sinks, and the window of its every row) must
/// still be in the key ring when it attends.
fn check_exact_keys(p: &HybridParams, max_rows: u32) -> Result<()> {
    if p.sink_rows + p.ring_rows == p.max_seq {
        return Ok(());
    }
    if p.sinks > p.sink_rows {
        return Err(Error::Invalid(format!(
            "attention_hybrid: {} sinks but the K cache keeps only {} sink rows; reload with the new sinks",
            p.sinks, p.sink_rows
        )));
    }
    let span = p.window as u64 + max_rows as u64 - 1;
    if span > p.ring_rows as u64 {
        return Err(Error::Invalid(format!(
            "attention_hybrid: a window of {} with steps of {max_rows} rows needs {span} ring rows of full keys, \
             the K cache keeps {}; reload with the larger window",
            p.window, p.ring_rows
        )));
    }
    Ok(())
}
