//! DeltaLLM on the GPU (docs/DESIGN.md §2): delta keys (`shaders/delta_keys.wgsl`)
//! and context-aware hybrid attention (`shaders/attention_hybrid.wgsl`); CPU
//! twin [`crate::cpu::delta`].
//!
//! A layer's step of `rows` tokens at `pos0..pos0 + rows` runs, in order:
//! 1. [`crate::ops::attention::Attention::append`]: the values, and the keys
//!    into the [`KvCache`]'s key ring (the exact path of window and sinks);
//! 2. [`DeltaKeys`]: the same post-RoPE keys into delta rows of a
//!    [`DeltaCache`], moving its per-KV-head reference k̂;
//! 3. [`super::hybrid::HybridAttention`]: every query against keys `0..=` its position,
//!    exact inside window and sinks, through the prefix sum of deltas elsewhere.
//!
//! The compressed K cache, per layer and KV head:
//! - delta rows: per position a `head_dim`-bit mask of the non-zeros and the
//!   row's start word, in one u32 buffer (`rows`), and the non-zeros as f16
//!   pairs packed row after row (`values`, each row padded to a whole word so
//!   a start is a word index: at most 2 bytes lost per row, and the reader
//!   needs no half-word shifts). The mask and start cost
//!   `4 · (head_dim / 32 + 1)` bytes per row (20 at head_dim 128, 8 % of a
//!   dense f16 row); f16 values halve the f32 bytes, and the reference moves
//!   by the stored f16 delta so the CPU twin agrees bit for bit.
//! - full keys only for the sinks and a ring of the last
//!   `window + step rows − 1` positions ([`KvCache::with_key_ring`]); the
//!   delta build reads the step's own keys from the projection output. V
//!   stays a full cache.
//! - `values` is not sized for the dense worst case: it starts at
//!   [`INITIAL_DENSITY`] of it and grows (a new buffer, the old rows copied,
//!   the ops rebound) when a step could overflow it; see
//!   [`DeltaCache::reserve`]. Dense attention needs every key, so a model
//!   that may attend densely (Θ = 0, DeltaLLM in prefill only) keeps the
//!   full K cache beside the deltas.

#[cfg(doc)]
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

/// The values area starts at this fraction of the dense worst case (every
/// element fired): DeltaLLM is run at 40-90 % delta sparsity, and a denser
/// sequence grows it.
pub const INITIAL_DENSITY: f64 = 0.25;

/// When the values area grows, it holds at least this many more worst-case
/// rows than the step needs, so that decode does not read the used count
/// back at every step near the end of the area.
const GROWTH_HEADROOM_ROWS: u64 = 64;

/// The `used` word the build kernel writes when a row did not fit.
const OVERFLOW: u32 = u32::MAX;

/// One layer's compressed delta rows and reference k̂ for `max_seq`
/// positions (see the module doc for the layout).
pub struct DeltaCache {
    /// u32 `[kv_heads][max_seq][mask_words + 1]`: per delta row a
    /// `head_dim`-bit mask (bit `i % 32` of word `i / 32` set where element
    /// `i` is non-zero), then the word of its KV head's `values` where the
    /// row's values start.
    pub rows: GpuBuffer,
    /// u32 `[kv_heads][capacity]`: each KV head's non-zero deltas as f16
    /// pairs (`pack2x16float`, lower half first), row after row in position
    /// order, a row with an odd count padded with +0.0.
    pub values: GpuBuffer,
    /// f32 `[kv_heads][head_dim]`: k̂ after the last position built.
    pub reference: GpuBuffer,
    /// u32 `[kv_heads]`: words of `values` in use after the last build
    /// (`u32::MAX` if a row did not fit: a bug, reported as an error).
    pub used: GpuBuffer,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub max_seq: u32,
    /// Words of `values` per KV head.
    pub capacity: u32,
    /// Bumped whenever `values` is replaced; ops rebind when it changed.
    pub generation: u64,
    /// The most bytes `values` may grow to (one storage binding).
    max_values_bytes: u64,
    label: String,
    /// After building positions `0..known_at`, no KV head used more than
    /// `known_used` words.
    known_at: u32,
    known_used: u64,
}

impl DeltaCache {
    /// A cache whose values area starts at [`INITIAL_DENSITY`] of the dense
    /// worst case and may grow up to the device's storage binding limit.
    pub fn new(gpu: &Gpu, label: &str, kv_heads: u32, head_dim: u32, max_seq: u32) -> Result<Self> {
        let worst = max_seq as u64 * head_dim.div_ceil(2) as u64;
        let initial = ((worst as f64 * INITIAL_DENSITY).ceil() as u64).max(1);
        Self::with_capacity(gpu, label, kv_heads, head_dim, max_seq, initial, gpu.max_binding_bytes())
    }

    /// A cache with `capacity` value words per KV head to start with, growing
    /// up to `max_values_bytes` for the whole values area.
    pub fn with_capacity(
        gpu: &Gpu,
        label: &str,
        kv_heads: u32,
        head_dim: u32,
        max_seq: u32,
        capacity: u64,
        max_values_bytes: u64,
    ) -> Result<Self> {
        if kv_heads == 0 || head_dim == 0 || max_seq == 0 {
            return Err(Error::shape(
                "delta_cache",
                format!("kv_heads, head_dim and max_seq must be positive, got {kv_heads}, {head_dim}, {max_seq}"),
            ));
        }
        if head_dim > MAX_HEAD_DIM {
            return Err(Error::shape("delta_cache", format!("head_dim {head_dim} > {MAX_HEAD_DIM}")));
        }
        let max_values_bytes = max_values_bytes.min(gpu.max_binding_bytes());
        let worst = max_seq as u64 * head_dim.div_ceil(2) as u64;
        let capacity = capacity.clamp(1, worst);
        check_values_size(label, kv_heads, capacity, max_values_bytes)?;
        let row_count = kv_heads as u64 * max_seq as u64;
        Ok(DeltaCache {
            rows: gpu.storage(&format!("{label}.rows"), row_count * row_words(head_dim) as u64 * 4)?,
            values: gpu.storage(&format!("{label}.values"), kv_heads as u64 * capacity * 4)?,
            reference: gpu.storage(&format!("{label}.reference"), kv_heads as u64 * head_dim as u64 * 4)?,
            used: gpu.storage(&format!("{label}.used"), kv_heads as u64 * 4)?,
            kv_heads,
            head_dim,
            max_seq,
            capacity: capacity as u32,
            generation: 0,
            max_values_bytes,
            label: label.to_string(),
            known_at: 0,
            known_used: 0,
        })
    }

    /// u32 words of one row's mask.
    pub fn mask_words(&self) -> u32 {
        mask_words(self.head_dim)
    }

    /// u32 words of one row's entry in `rows` (mask and start).
    pub fn row_words(&self) -> u32 {
        row_words(self.head_dim)
    }

    /// Value words one row may take: every element fired.
    pub fn worst_row_words(&self) -> u32 {
        self.head_dim.div_ceil(2)
    }

    /// Bytes of every buffer of the cache.
    pub fn allocated_bytes(&self) -> u64 {
        self.rows.size + self.values.size + self.reference.size + self.used.size
    }

    /// Make room for a step of `rows` rows at `pos0` before it is recorded.
    ///
    /// The host bounds the words in use from the last count it learned plus
    /// the worst case of every row built since; only when that bound and the
    /// step's worst case could overflow does it read the exact count back
    /// (`kv_heads` words; natively, blocking), and only when the exact count
    /// could overflow does it grow: a new buffer of at least 1.25× the
    /// capacity, with room for the step and [`GROWTH_HEADROOM_ROWS`] more
    /// rows, the old values copied per KV head. Returns whether `values` was
    /// replaced ([`DeltaCache::generation`] changed; the ops rebind in their
    /// `set_step`). Fails with a clear error past the binding limit.
    pub fn reserve(&mut self, gpu: &Gpu, rows: u32, pos0: u32) -> Result<bool> {
        let worst = self.worst_row_words() as u64;
        if pos0 == 0 {
            // A new sequence (or a rerun of its prompt) starts at word 0.
            (self.known_at, self.known_used) = (0, 0);
        }
        let bound = if pos0 >= self.known_at {
            self.known_used + (pos0 - self.known_at) as u64 * worst
        } else {
            pos0 as u64 * worst
        };
        let step = rows as u64 * worst;
        if bound + step <= self.capacity as u64 {
            return Ok(false);
        }
        let used = self.learn_used(gpu, bound)?;
        (self.known_at, self.known_used) = (pos0, used);
        if used + step <= self.capacity as u64 {
            return Ok(false);
        }
        let rest = (self.max_seq - pos0) as u64;
        let headroom = (rows as u64 + GROWTH_HEADROOM_ROWS).min(rest) * worst;
        let capacity =
            (used + headroom).max(self.capacity as u64 * 5 / 4).min(self.max_seq as u64 * worst).max(used + step);
        check_values_size(&self.label, self.kv_heads, capacity, self.max_values_bytes)?;
        let values = gpu.storage(&format!("{}.values", self.label), self.kv_heads as u64 * capacity * 4)?;
        let mut encoder = gpu.encoder("delta_cache.grow");
        let old = self.capacity as u64 * 4;
        for g in 0..self.kv_heads as u64 {
            encoder.copy_buffer_to_buffer(&self.values.buffer, g * old, &values.buffer, g * capacity * 4, old);
        }
        gpu.submit(encoder)?;
        log::debug!("{}: delta values grow from {} to {capacity} words per KV head", self.label, self.capacity);
        self.values = values;
        self.capacity = capacity as u32;
        self.generation += 1;
        Ok(true)
    }

    /// The most words any KV head uses now (`bound` where it cannot be read
    /// back without blocking).
    #[cfg(not(target_arch = "wasm32"))]
    fn learn_used(&self, gpu: &Gpu, _bound: u64) -> Result<u64> {
        Ok(self.read_used(gpu)?.into_iter().max().unwrap_or(0) as u64)
    }

    #[cfg(target_arch = "wasm32")]
    fn learn_used(&self, _gpu: &Gpu, bound: u64) -> Result<u64> {
        // No blocking read on the web: grow from the bound (never too small).
        Ok(bound)
    }

    /// Words of `values` each KV head uses after the last build.
    pub async fn read_used_async(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        let used: Vec<u32> = gpu.read_async(&self.used).await?;
        if used.contains(&OVERFLOW) {
            return Err(Error::Invalid(format!(
                "{}: a delta row did not fit the values area (the host did not reserve room for the step)",
                self.label
            )));
        }
        Ok(used)
    }

    /// Blocking form of [`DeltaCache::read_used_async`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_used(&self, gpu: &Gpu) -> Result<Vec<u32>> {
        pollster::block_on(self.read_used_async(gpu))
    }

    /// The delta rows of positions `0..positions`, `[positions][kv_heads ·
    /// head_dim]`, unpacked from the GPU (for calibration, tests and
    /// statistics).
    pub async fn read_deltas_async(&self, gpu: &Gpu, positions: u32) -> Result<Vec<f32>> {
        self.read_used_async(gpu).await?;
        let rows: Vec<u32> = gpu.read_async(&self.rows).await?;
        let values: Vec<u32> = gpu.read_async(&self.values).await?;
        Ok(unpack_rows(&rows, &values, self.kv_heads, self.head_dim, self.max_seq, self.capacity, positions))
    }

    /// Blocking form of [`DeltaCache::read_deltas_async`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_deltas(&self, gpu: &Gpu, positions: u32) -> Result<Vec<f32>> {
        pollster::block_on(self.read_deltas_async(gpu, positions))
    }
}

/// Delta rows `[positions][kv_heads · head_dim]` from a [`DeltaCache`]'s
/// `rows` and `values` read back.
pub fn unpack_rows(
    rows: &[u32],
    values: &[u32],
    kv_heads: u32,
    head_dim: u32,
    max_seq: u32,
    capacity: u32,
    positions: u32,
) -> Vec<f32> {
    let (kv_heads, head_dim, max_seq, positions) =
        (kv_heads as usize, head_dim as usize, max_seq as usize, positions as usize);
    let (words, row_words) = (mask_words(head_dim as u32) as usize, row_words(head_dim as u32) as usize);
    let mut out = vec![0.0f32; positions * kv_heads * head_dim];
    for g in 0..kv_heads {
        let head_values = &values[g * capacity as usize..][..capacity as usize];
        for t in 0..positions {
            let row = &rows[(g * max_seq + t) * row_words..][..row_words];
            let mut slot = row[words] as usize * 2;
            for i in 0..head_dim {
                if row[i / 32] & (1 << (i % 32)) != 0 {
                    let pair = head_values[slot / 2];
                    let half = if slot.is_multiple_of(2) { pair & 0xffff } else { pair >> 16 };
                    out[(t * kv_heads + g) * head_dim + i] = half::f16::from_bits(half as u16).to_f32();
                    slot += 1;
                }
            }
        }
    }
    out
}

fn check_values_size(label: &str, kv_heads: u32, capacity: u64, limit: u64) -> Result<()> {
    let bytes = kv_heads as u64 * capacity * 4;
    if bytes > limit {
        return Err(Error::Invalid(format!(
            "{label}: the delta values need {bytes} bytes ({capacity} words per KV head), over the {limit}-byte \
             limit of one storage binding; shorten the context (--context), or raise Θ for sparser deltas"
        )));
    }
    Ok(())
}

fn mask_words(head_dim: u32) -> u32 {
    head_dim.div_ceil(32)
}

fn row_words(head_dim: u32) -> u32 {
    mask_words(head_dim) + 1
}

pub(super) fn check_step(op: &'static str, rows: u32, pos0: u32, max_rows: u32, max_seq: u32) -> Result<()> {
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

gpu_params! {
    DeltaParams {
        rows: u32, pos0: u32, kv_heads: u32, head_dim: u32, max_seq: u32, mask_words: u32, capacity: u32, theta: f32,
    }
}

/// The delta rule over a step's keys k_new f32 `[rows][kv_heads · head_dim]`
/// (post-RoPE) into a [`DeltaCache`]. Position 0 starts a sequence (dense
/// row); later steps continue from the stored reference.
pub struct DeltaKeys {
    pub build: Dispatch,
    params: GpuBuffer,
    values: DeltaParams,
    max_rows: u32,
    k_new: GpuBuffer,
    generation: u64,
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
            capacity: cache.capacity,
            theta,
        };
        let params = gpu.uniform_from("delta_keys.params", &values)?;
        let build = Self::bind(gpu, &params, k_new, cache)?;
        Ok(DeltaKeys { build, params, values, max_rows, k_new: k_new.clone(), generation: cache.generation })
    }

    fn bind(gpu: &Gpu, params: &GpuBuffer, k_new: &GpuBuffer, cache: &DeltaCache) -> Result<Dispatch> {
        gpu.dispatch(
            "delta_keys",
            &KernelKey::new("delta_keys", "build"),
            &[params, k_new, &cache.reference, &cache.values, &cache.rows, &cache.used],
            gpu.grid(cache.kv_heads),
        )
    }

    /// Build delta rows for positions `pos0..pos0 + rows` of `cache` (the
    /// one this op was built for) in the next submit. Call
    /// [`DeltaCache::reserve`] first; after the values area grew this
    /// rebinds (one bind group), otherwise nothing is allocated.
    pub fn set_step(&mut self, gpu: &Gpu, cache: &DeltaCache, rows: u32, pos0: u32) -> Result<()> {
        check_step("delta_keys", rows, pos0, self.max_rows, self.values.max_seq)?;
        if cache.generation != self.generation {
            self.build = Self::bind(gpu, &self.params, &self.k_new, cache)?;
            self.generation = cache.generation;
        }
        self.values.rows = rows;
        self.values.pos0 = pos0;
        self.values.capacity = cache.capacity;
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
