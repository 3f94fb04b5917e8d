//! DeltaLLM on the GPU (DESIGN.md §2): delta keys (`shaders/delta_keys.wgsl`)
//! and context-aware hybrid attention (`shaders/attention_hybrid.wgsl`); CPU
//! twin [`crate::cpu::delta`].
//!
//! A layer's step of `rows` tokens at `pos0..pos0 + rows` runs, in order:
//! 1. [`crate::ops::attention::Attention::append`]: the full keys and values
//!    into the [`KvCache`] (the exact path of the window and sinks reads them);
//! 2. [`DeltaKeys`]: the same post-RoPE keys into delta rows of a
//!    [`DeltaCache`], moving its per-KV-head reference k̂;
//! 3. [`HybridAttention`]: every query against keys `0..=` its position,
//!    exact inside window and sinks, through the prefix sum of deltas elsewhere.
//!
//! Delta layout (compressed rows, f32 values): per row a `head_dim`-bit mask
//! of the non-zeros, the non-zero values packed row after row, and each
//! row's start in them (see [`DeltaCache`]). The attention kernel reads and
//! multiplies nnz values per row instead of `head_dim`. The values area is
//! sized for the dense worst case, so memory is not saved yet; f16 values
//! and a bounded capacity are future work.

use super::attention::KvCache;
use super::check_len;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, GpuBuffer, KernelKey};

/// Both kernels keep a lane's share of a row in registers.
pub const MAX_HEAD_DIM: u32 = 256;

/// Most rows one [`DeltaKeys`] step may build. The kernel walks a step's
/// rows in one workgroup loop; on Mesa llvmpipe (Vulkan and GL) that loop
/// stopped writing after ~1800-4400 rows depending on head_dim (measured:
/// row 3288 at head_dim 128), silently. Longer prompts are built in steps.
pub const MAX_STEP_ROWS: u32 = 1024;

/// One layer's delta rows and reference k̂, allocated once for `max_seq`
/// positions.
pub struct DeltaCache {
    /// u32 `[kv_heads][max_seq][mask_words]`: bit `i % 32` of word `i / 32`
    /// set where element `i` of the delta row is non-zero.
    pub masks: GpuBuffer,
    /// f32 `[kv_heads][max_seq · head_dim]`: each KV head's non-zero delta
    /// values, row after row in position order, element order within a row.
    pub values: GpuBuffer,
    /// u32 `[kv_heads][max_seq]`: where each row's values start in its KV
    /// head's part of `values` (`row_starts[t + 1] = row_starts[t] + nnz(t)`).
    pub row_starts: GpuBuffer,
    /// f32 `[kv_heads][head_dim]`: k̂ after the last position built.
    pub reference: GpuBuffer,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub max_seq: u32,
}

impl DeltaCache {
    pub fn new(gpu: &Gpu, label: &str, kv_heads: u32, head_dim: u32, max_seq: u32) -> Result<Self> {
        if kv_heads == 0 || head_dim == 0 || max_seq == 0 {
            return Err(Error::shape(
                "delta_cache",
                format!("kv_heads, head_dim and max_seq must be positive, got {kv_heads}, {head_dim}, {max_seq}"),
            ));
        }
        if head_dim > MAX_HEAD_DIM {
            return Err(Error::shape("delta_cache", format!("head_dim {head_dim} > {MAX_HEAD_DIM}")));
        }
        let rows = kv_heads as u64 * max_seq as u64;
        Ok(DeltaCache {
            masks: gpu.storage(&format!("{label}.masks"), rows * mask_words(head_dim) as u64 * 4)?,
            values: gpu.storage(&format!("{label}.values"), rows * head_dim as u64 * 4)?,
            row_starts: gpu.storage(&format!("{label}.row_starts"), rows * 4)?,
            reference: gpu.storage(&format!("{label}.reference"), kv_heads as u64 * head_dim as u64 * 4)?,
            kv_heads,
            head_dim,
            max_seq,
        })
    }

    /// u32 words of one row's mask.
    pub fn mask_words(&self) -> u32 {
        mask_words(self.head_dim)
    }
}

fn mask_words(head_dim: u32) -> u32 {
    head_dim.div_ceil(32)
}

fn check_step(op: &'static str, rows: u32, pos0: u32, max_rows: u32, max_seq: u32) -> Result<()> {
    if rows > max_rows {
        return Err(Error::shape(op, format!("{rows} rows > {max_rows} allocated")));
    }
    let end = pos0 as u64 + rows as u64;
    if end > max_seq as u64 {
        return Err(Error::Invalid(format!(
            "{op}: a context of {end} tokens does not fit the cache of {max_seq} positions; \
             shorten the prompt or generation, or raise the context length"
        )));
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DeltaParams {
    rows: u32,
    pos0: u32,
    kv_heads: u32,
    head_dim: u32,
    max_seq: u32,
    mask_words: u32,
    theta: f32,
    _pad: u32,
}

/// The delta rule over a step's keys k_new f32 `[rows][kv_heads · head_dim]`
/// (post-RoPE) into a [`DeltaCache`]. Position 0 starts a sequence (dense
/// row); later steps continue from the stored reference.
pub struct DeltaKeys {
    pub build: Dispatch,
    params: GpuBuffer,
    values: DeltaParams,
    max_rows: u32,
}

impl DeltaKeys {
    /// Build for up to `max_rows` tokens per step with threshold `theta`;
    /// starts with `rows = max_rows`, `pos0 = 0`.
    pub fn new(gpu: &Gpu, cache: &DeltaCache, k_new: &GpuBuffer, max_rows: u32, theta: f32) -> Result<Self> {
        check_theta(theta)?;
        if max_rows == 0 || max_rows > cache.max_seq.min(MAX_STEP_ROWS) {
            return Err(Error::shape(
                "delta_keys",
                format!(
                    "max_rows must be in 1..={} (the cache's max_seq, at most {MAX_STEP_ROWS} per step: build longer \
                     prompts in steps), got {max_rows}",
                    cache.max_seq.min(MAX_STEP_ROWS)
                ),
            ));
        }
        check_len("delta_keys", k_new, max_rows as u64 * cache.kv_heads as u64 * cache.head_dim as u64, 4)?;
        let values = DeltaParams {
            rows: max_rows,
            pos0: 0,
            kv_heads: cache.kv_heads,
            head_dim: cache.head_dim,
            max_seq: cache.max_seq,
            mask_words: cache.mask_words(),
            theta,
            _pad: 0,
        };
        let params = gpu.uniform_from("delta_keys.params", &values)?;
        let build = gpu.dispatch(
            "delta_keys",
            &KernelKey::new("delta_keys", "build"),
            &[&params, k_new, &cache.reference, &cache.values, &cache.masks, &cache.row_starts],
            gpu.grid(cache.kv_heads),
        )?;
        Ok(DeltaKeys { build, params, values, max_rows })
    }

    /// Build delta rows for positions `pos0..pos0 + rows` in the next submit.
    pub fn set_step(&mut self, gpu: &Gpu, rows: u32, pos0: u32) -> Result<()> {
        check_step("delta_keys", rows, pos0, self.max_rows, self.values.max_seq)?;
        self.values.rows = rows;
        self.values.pos0 = pos0;
        gpu.write(&self.params, 0, bytemuck::bytes_of(&self.values));
        Ok(())
    }

    /// Change Θ (e.g. after calibrating it on the prompt); takes effect at
    /// the next submit.
    pub fn set_theta(&mut self, gpu: &Gpu, theta: f32) -> Result<()> {
        check_theta(theta)?;
        self.values.theta = theta;
        gpu.write(&self.params, 0, bytemuck::bytes_of(&self.values));
        Ok(())
    }

    pub fn dispatches(&self) -> [&Dispatch; 1] {
        [&self.build]
    }
}

fn check_theta(theta: f32) -> Result<()> {
    if !(theta.is_finite() && theta >= 0.0) {
        return Err(Error::Invalid(format!("delta_keys: the threshold Θ must be finite and ≥ 0, got {theta}")));
    }
    Ok(())
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct HybridParams {
    rows: u32,
    pos0: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    max_seq: u32,
    mask_words: u32,
    window: u32,
    sinks: u32,
    scale: f32,
    _pad: [u32; 2],
}

/// Hybrid attention of q f32 `[rows][heads · head_dim]` into out f32
/// `[rows][heads · head_dim]`: exact against the [`KvCache`] for the
/// `window` latest keys and the first `sinks`, through the [`DeltaCache`]
/// prefix sums elsewhere.
pub struct HybridAttention {
    pub attend: Dispatch,
    params: GpuBuffer,
    values: HybridParams,
    max_rows: u32,
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
            _pad: [0; 2],
        };
        let params = gpu.uniform_from("attention_hybrid.params", &values)?;
        let attend = gpu.dispatch(
            "attention_hybrid",
            &KernelKey::new("attention_hybrid", "attend"),
            &[&params, &kv.k, &kv.v, &deltas.values, &deltas.masks, &deltas.row_starts, q, out],
            gpu.grid(max_rows * heads),
        )?;
        Ok(HybridAttention { attend, params, values, max_rows })
    }

    /// Attend `rows` tokens at positions `pos0..pos0 + rows` in the next
    /// submit (no allocation).
    pub fn set_step(&mut self, gpu: &Gpu, rows: u32, pos0: u32) -> Result<()> {
        check_step("attention_hybrid", rows, pos0, self.max_rows, self.values.max_seq)?;
        self.values.rows = rows;
        self.values.pos0 = pos0;
        gpu.write(&self.params, 0, bytemuck::bytes_of(&self.values));
        self.attend.set_workgroups(gpu.grid(rows * self.values.heads));
        Ok(())
    }

    /// Set the exact region: the `window` latest keys (the query's own
    /// included) and the first `sinks` keys. The context-aware window is
    /// fixed after prefill: call this before the first step.
    pub fn set_window(&mut self, gpu: &Gpu, window: u32, sinks: u32) {
        self.values.window = window;
        self.values.sinks = sinks;
        gpu.write(&self.params, 0, bytemuck::bytes_of(&self.values));
    }

    pub fn dispatches(&self) -> [&Dispatch; 1] {
        [&self.attend]
    }
}
