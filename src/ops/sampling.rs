//! Argmax (`shaders/argmax.wgsl`) and top-k (`shaders/topk.wgsl`) over a
//! logits vector, so a decode step reads back 4 bytes (greedy) or k pairs
//! (sampling) instead of the whole vocabulary. CPU twins:
//! [`crate::cpu::sampling`]. Both run as two dispatches, recorded in order:
//! per-chunk partial results into a scratch buffer the op owns, then one
//! workgroup that reduces them.

use super::check_len;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, GpuBuffer, KernelKey};

/// Logits per workgroup of the argmax first pass (CHUNK in argmax.wgsl).
const ARGMAX_CHUNK: u32 = 2048;
/// Logits per workgroup of the top-k first pass (CHUNK in topk.wgsl).
const TOPK_CHUNK: u32 = 2048;
/// The largest k [`TopK`] supports.
pub const TOPK_MAX_K: u32 = 64;
/// The id written where there is no answer; see [`crate::cpu::sampling::NONE`].
pub const NONE: u32 = crate::cpu::sampling::NONE;

// The uniform of both shaders (argmax.wgsl has padding where `k` is).
gpu_params! { Params { n: u32, offset: u32, k: u32, _pad: u32 } }

/// One top-k output slot, as the GPU writes it (8 bytes, id first).
/// Padding slots (fewer than k numbers) are `(NONE, -inf)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct TopKEntry {
    pub id: u32,
    pub value: f32,
}

impl TopKEntry {
    /// The real entries of a read-back output as (id, value) pairs, the form
    /// [`crate::sampler::Sampler::sample_candidates`] takes.
    pub fn pairs(entries: &[TopKEntry]) -> Vec<(u32, f32)> {
        entries.iter().filter(|e| e.id != NONE).map(|e| (e.id, e.value)).collect()
    }
}

/// Checks shared by both ops: a non-empty range that the logits buffer holds.
fn check_range(op: &'static str, logits: &GpuBuffer, offset: u32, n: u32, max_n: u32) -> Result<()> {
    if n == 0 {
        return Err(Error::shape(op, "n (the number of logits) must be positive"));
    }
    if n > max_n {
        return Err(Error::shape(op, format!("n = {n} > {max_n}, the length this op was built for")));
    }
    check_len(op, logits, offset as u64 + n as u64, 4)
}

/// `result[0] = argmax(logits[offset .. offset + n])` as a u32 (ties to the
/// lowest index, NaN never wins, [`NONE`] if all are NaN).
pub struct Argmax {
    partials_pass: Dispatch,
    finish_pass: Dispatch,
    params: GpuBuffer,
    /// Scratch: one winning index per chunk, sized for `max_n`.
    _partials: GpuBuffer,
    logits: GpuBuffer,
    max_n: u32,
}

impl Argmax {
    /// Build for logits `[0, n)` of `logits`; `n` is also the most
    /// [`Argmax::set_range`] may ask for later. `result` needs one u32.
    pub fn new(gpu: &Gpu, logits: &GpuBuffer, result: &GpuBuffer, n: u32) -> Result<Self> {
        check_range("argmax", logits, 0, n, n)?;
        check_len("argmax", result, 1, 4)?;
        let chunks = n.div_ceil(ARGMAX_CHUNK);
        let partials = gpu.storage("argmax.partials", chunks as u64 * 4)?;
        let params = gpu.uniform_from("argmax.params", &Params { n, offset: 0, k: 0, _pad: 0 })?;
        let partials_pass = gpu.dispatch(
            "argmax.partials",
            &KernelKey::new("argmax", "partials_main"),
            &[&params, logits, &partials],
            gpu.grid(chunks),
        )?;
        let finish_pass = gpu.dispatch(
            "argmax.finish",
            &KernelKey::new("argmax", "finish"),
            &[&params, logits, &partials, result],
            [1, 1, 1],
        )?;
        Ok(Argmax { partials_pass, finish_pass, params, _partials: partials, logits: logits.clone(), max_n: n })
    }

    /// Take the argmax of `logits[offset .. offset + n]` in the next submit
    /// (e.g. the last row of a batch of logits). No allocation.
    pub fn set_range(&mut self, gpu: &Gpu, offset: u32, n: u32) -> Result<()> {
        check_range("argmax", &self.logits, offset, n, self.max_n)?;
        let p = Params { n, offset, k: 0, _pad: 0 };
        gpu.write(&self.params, 0, bytemuck::bytes_of(&p));
        self.partials_pass.set_workgroups(gpu.grid(n.div_ceil(ARGMAX_CHUNK)));
        Ok(())
    }

    /// The two passes, to record in this order.
    pub fn dispatches(&self) -> [&Dispatch; 2] {
        [&self.partials_pass, &self.finish_pass]
    }
}

/// `out[0..k]` = the k largest `(id, value)` of `logits[offset .. offset + n]`
/// as [`TopKEntry`]s, sorted by value descending, equal values by lower id.
pub struct TopK {
    select_pass: Dispatch,
    merge_pass: Dispatch,
    params: GpuBuffer,
    /// Scratch: each chunk's top-k (id, order key) pairs, sized for `max_n` and [`TOPK_MAX_K`].
    _candidates: GpuBuffer,
    logits: GpuBuffer,
    out: GpuBuffer,
    max_n: u32,
    offset: u32,
    n: u32,
    k: u32,
}

impl TopK {
    /// Build for logits `[0, n)` of `logits`; `n` is also the most
    /// [`TopK::set_range`] may ask for later. `out` needs `k` entries of 8 bytes.
    pub fn new(gpu: &Gpu, logits: &GpuBuffer, out: &GpuBuffer, n: u32, k: u32) -> Result<Self> {
        check_range("topk", logits, 0, n, n)?;
        Self::check_k(out, k)?;
        let chunks = n.div_ceil(TOPK_CHUNK);
        // (id, order key) pairs.
        let candidates = gpu.storage("topk.candidates", chunks as u64 * TOPK_MAX_K as u64 * 8)?;
        let params = gpu.uniform_from("topk.params", &Params { n, offset: 0, k, _pad: 0 })?;
        let select_pass = gpu.dispatch(
            "topk.select",
            &KernelKey::new("topk", "select_chunk"),
            &[&params, logits, &candidates],
            gpu.grid(chunks),
        )?;
        let merge_pass = gpu.dispatch(
            "topk.merge",
            &KernelKey::new("topk", "merge"),
            &[&params, logits, &candidates, out],
            [1, 1, 1],
        )?;
        Ok(TopK {
            select_pass,
            merge_pass,
            params,
            _candidates: candidates,
            logits: logits.clone(),
            out: out.clone(),
            max_n: n,
            offset: 0,
            n,
            k,
        })
    }

    fn check_k(out: &GpuBuffer, k: u32) -> Result<()> {
        if k == 0 || k > TOPK_MAX_K {
            return Err(Error::shape("topk", format!("k = {k}; it must be in 1..={TOPK_MAX_K}")));
        }
        check_len("topk", out, k as u64, std::mem::size_of::<TopKEntry>() as u64)
    }

    fn write_params(&self, gpu: &Gpu) {
        let p = Params { n: self.n, offset: self.offset, k: self.k, _pad: 0 };
        gpu.write(&self.params, 0, bytemuck::bytes_of(&p));
    }

    /// Select from `logits[offset .. offset + n]` in the next submit. No allocation.
    pub fn set_range(&mut self, gpu: &Gpu, offset: u32, n: u32) -> Result<()> {
        check_range("topk", &self.logits, offset, n, self.max_n)?;
        self.offset = offset;
        self.n = n;
        self.write_params(gpu);
        self.select_pass.set_workgroups(gpu.grid(n.div_ceil(TOPK_CHUNK)));
        Ok(())
    }

    /// Select `k` entries in the next submit (the output buffer must hold them). No allocation.
    pub fn set_k(&mut self, gpu: &Gpu, k: u32) -> Result<()> {
        Self::check_k(&self.out, k)?;
        self.k = k;
        self.write_params(gpu);
        Ok(())
    }

    pub fn k(&self) -> u32 {
        self.k
    }

    /// The two passes, to record in this order.
    pub fn dispatches(&self) -> [&Dispatch; 2] {
        [&self.select_pass, &self.merge_pass]
    }
}
