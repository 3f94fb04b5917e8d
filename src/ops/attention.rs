//! Dense causal GQA attention over a GPU KV cache (`shaders/attention.wgsl`);
//! CPU twin [`crate::cpu::attention`].
//!
//! A step of `rows` tokens at positions `pos0..pos0 + rows` (prefill: many
//! rows; decode: one) runs two dispatches: [`Attention::append`] writes the
//! step's keys and values into the [`KvCache`], then [`Attention::attend`]
//! computes every query against keys `0..=` its own position.

use super::check_len;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, GpuBuffer, KernelKey};

const APPEND_WORKGROUP: u32 = 256;
/// The attend kernel keeps each lane's share of the output in registers.
pub const MAX_HEAD_DIM: u32 = 256;
/// Query heads of one KV head that one attend workgroup serves together (a
/// vec4 per dimension), so each key and value it reads serves them all.
const QUERY_HEADS_PER_WORKGROUP: u32 = 4;

/// One layer's keys and values, allocated once for `max_seq` positions.
///
/// `v` f32 `[kv_heads][max_seq][head_dim]`. `k` f32
/// `[kv_heads][sink_rows + ring_rows][head_dim]`: position `p < sink_rows`
/// at row `p`, a later one at row `sink_rows + (p − sink_rows) % ring_rows`.
/// The full cache ([`KvCache::new`]) has `sink_rows` 0 and `ring_rows`
/// `max_seq`, so row = position; DeltaLLM's compressed K cache
/// ([`KvCache::with_key_ring`]) keeps only the sinks and a ring of recent
/// keys here, the rest as delta rows (see [`super::delta`]).
pub struct KvCache {
    pub k: GpuBuffer,
    pub v: GpuBuffer,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub max_seq: u32,
    pub sink_rows: u32,
    pub ring_rows: u32,
}

impl KvCache {
    pub fn new(gpu: &Gpu, label: &str, kv_heads: u32, head_dim: u32, max_seq: u32) -> Result<Self> {
        if kv_heads == 0 || head_dim == 0 || max_seq == 0 {
            return Err(Error::shape(
                "kv_cache",
                format!("kv_heads, head_dim and max_seq must be positive, got {kv_heads}, {head_dim}, {max_seq}"),
            ));
        }
        Self::with_key_ring(gpu, label, kv_heads, head_dim, max_seq, 0, max_seq)
    }

    /// Keys only for the first `sink_rows` positions and a ring of the last
    /// `ring_rows` (clamped to what `max_seq` needs: a ring that covers every
    /// position is the full cache); values for every position.
    pub fn with_key_ring(
        gpu: &Gpu,
        label: &str,
        kv_heads: u32,
        head_dim: u32,
        max_seq: u32,
        sink_rows: u32,
        ring_rows: u32,
    ) -> Result<Self> {
        if kv_heads == 0 || head_dim == 0 || max_seq == 0 {
            return Err(Error::shape(
                "kv_cache",
                format!("kv_heads, head_dim and max_seq must be positive, got {kv_heads}, {head_dim}, {max_seq}"),
            ));
        }
        let sink_rows = sink_rows.min(max_seq);
        let ring_rows = ring_rows.min(max_seq - sink_rows);
        if ring_rows == 0 && sink_rows < max_seq {
            return Err(Error::shape("kv_cache", "the key ring needs at least one row"));
        }
        let row_bytes = head_dim as u64 * 4;
        let key_rows = (sink_rows + ring_rows) as u64;
        Ok(KvCache {
            k: gpu.storage(&format!("{label}.k"), kv_heads as u64 * key_rows * row_bytes)?,
            v: gpu.storage(&format!("{label}.v"), kv_heads as u64 * max_seq as u64 * row_bytes)?,
            kv_heads,
            head_dim,
            max_seq,
            sink_rows,
            ring_rows,
        })
    }

    /// A cache of the same shape and key layout.
    pub fn like(gpu: &Gpu, label: &str, other: &KvCache) -> Result<Self> {
        let KvCache { kv_heads, head_dim, max_seq, sink_rows, ring_rows, .. } = *other;
        Self::with_key_ring(gpu, label, kv_heads, head_dim, max_seq, sink_rows, ring_rows)
    }

    /// Whether `k` holds every position's key (dense attention needs it).
    pub fn full_keys(&self) -> bool {
        self.sink_rows + self.ring_rows == self.max_seq
    }

    /// Rows of `k` per KV head.
    pub fn key_rows(&self) -> u32 {
        self.sink_rows + self.ring_rows
    }
}

gpu_params! {
    Params {
        rows: u32, pos0: u32, heads: u32, kv_heads: u32, head_dim: u32, max_seq: u32, scale: f32, sink_rows: u32,
        ring_rows: u32, _pad: [u32; 3],
    }
}

/// Causal attention of q f32 `[rows][heads · head_dim]` against a
/// [`KvCache`], into out f32 `[rows][heads · head_dim]`, after appending
/// k_new, v_new f32 `[rows][kv_heads · head_dim]` to the cache.
pub struct Attention {
    pub append: Dispatch,
    pub attend: Dispatch,
    params: GpuBuffer,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    max_seq: u32,
    max_rows: u32,
    sink_rows: u32,
    ring_rows: u32,
}

impl Attention {
    /// Build for up to `max_rows` tokens per step; starts with
    /// `rows = max_rows`, `pos0 = 0`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        cache: &KvCache,
        q: &GpuBuffer,
        k_new: &GpuBuffer,
        v_new: &GpuBuffer,
        out: &GpuBuffer,
        max_rows: u32,
        heads: u32,
    ) -> Result<Self> {
        let (kv_heads, head_dim, max_seq) = (cache.kv_heads, cache.head_dim, cache.max_seq);
        if heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(Error::shape(
                "attention",
                format!("heads ({heads}) must be a positive multiple of kv_heads ({kv_heads})"),
            ));
        }
        if head_dim > MAX_HEAD_DIM {
            return Err(Error::shape(
                "attention",
                format!("head_dim {head_dim} > {MAX_HEAD_DIM}, the most the kernel supports"),
            ));
        }
        if max_rows == 0 || max_rows > max_seq {
            return Err(Error::shape(
                "attention",
                format!("max_rows must be in 1..={max_seq} (the cache's max_seq), got {max_rows}"),
            ));
        }
        if std::sync::Arc::ptr_eq(&q.buffer, &out.buffer) {
            return Err(Error::shape("attention", "out must not be the q buffer"));
        }
        let q_len = max_rows as u64 * heads as u64 * head_dim as u64;
        let kv_len = max_rows as u64 * kv_heads as u64 * head_dim as u64;
        check_len("attention", q, q_len, 4)?;
        check_len("attention", out, q_len, 4)?;
        check_len("attention", k_new, kv_len, 4)?;
        check_len("attention", v_new, kv_len, 4)?;

        // set_step below writes the real values.
        let params = gpu.uniform_from("attention.params", &<Params as bytemuck::Zeroable>::zeroed())?;
        let append = gpu.dispatch(
            "kv_append",
            &KernelKey::new("attention", "append"),
            &[&params, &cache.k, &cache.v, k_new, v_new],
            [0; 3],
        )?;
        let attend = gpu.dispatch(
            "attention",
            &KernelKey::new("attention", "attend"),
            &[&params, &cache.k, &cache.v, q, out],
            [0; 3],
        )?;
        let (sink_rows, ring_rows) = (cache.sink_rows, cache.ring_rows);
        if !cache.full_keys() && max_rows > ring_rows {
            return Err(Error::shape(
                "attention",
                format!("a step of {max_rows} rows would overwrite its own keys in a ring of {ring_rows}"),
            ));
        }
        let mut attention =
            Attention { append, attend, params, heads, kv_heads, head_dim, max_seq, max_rows, sink_rows, ring_rows };
        attention.set_step(gpu, max_rows, 0)?;
        Ok(attention)
    }

    /// Attend `rows` tokens at positions `pos0..pos0 + rows` in the next
    /// submit (no allocation). Fails when the step passes the cache's end.
    pub fn set_step(&mut self, gpu: &Gpu, rows: u32, pos0: u32) -> Result<()> {
        if rows > self.max_rows {
            return Err(Error::shape("attention", format!("{rows} rows > {} allocated", self.max_rows)));
        }
        let end = pos0 as u64 + rows as u64;
        if end > self.max_seq as u64 {
            return Err(Error::Invalid(format!(
                "attention: a context of {end} tokens does not fit the KV cache of {} positions; \
                 shorten the prompt or generation, or raise the context length",
                self.max_seq
            )));
        }
        let p = Params {
            rows,
            pos0,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            max_seq: self.max_seq,
            scale: 1.0 / (self.head_dim as f32).sqrt(),
            sink_rows: self.sink_rows,
            ring_rows: self.ring_rows,
            _pad: [0; 3],
        };
        gpu.write(&self.params, 0, bytemuck::bytes_of(&p));
        let elements = rows * self.kv_heads * self.head_dim;
        self.append.set_workgroups(gpu.grid(elements.div_ceil(APPEND_WORKGROUP)));
        let chunks = (self.heads / self.kv_heads).div_ceil(QUERY_HEADS_PER_WORKGROUP);
        self.attend.set_workgroups(gpu.grid(rows * self.kv_heads * chunks));
        Ok(())
    }

    /// Whether `attend` may run: dense attention reads every key, so it
    /// needs a cache with full keys (not DeltaLLM's key ring).
    pub fn can_attend(&self) -> bool {
        self.sink_rows + self.ring_rows == self.max_seq
    }

    /// The step's dispatches, in order (dense attention: a full-key cache).
    pub fn dispatches(&self) -> [&Dispatch; 2] {
        [&self.append, &self.attend]
    }
}
