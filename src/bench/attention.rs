//! The kernel suite's attention cases: dense decode attention at each
//! context, and DeltaLLM (docs/DESIGN.md §2) against dense attention on the
//! same keys (delta build, prefill and decode).

use super::kernels::{Shapes, Suite, delta_sparsity, pseudo_random, sparse_walk, too_slow};
use crate::error::Result;
use crate::gpu::Dispatch;
use crate::ops::attention::{Attention, KvCache};
use crate::ops::delta::{DeltaCache, DeltaKeys, MAX_STEP_ROWS};
use crate::ops::hybrid::HybridAttention;

impl Suite<'_> {
    /// One decode token attending to a context of `ctx` (KV append + attend).
    pub(super) async fn attention(&mut self) -> Result<()> {
        let s = self.shapes.clone();
        for ctx in s.contexts {
            let name = format!("attention decode ctx {ctx}");
            if !self.wants(&name) {
                continue;
            }
            let gpu = self.gpu;
            let (q_dim, kv_dim) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
            let cache = KvCache::new(gpu, "bench.kv", s.kv_heads, s.head_dim, ctx)?;
            let history = pseudo_random((ctx * kv_dim) as usize, ctx);
            gpu.write(&cache.k, 0, bytemuck::cast_slice(&history));
            gpu.write(&cache.v, 0, bytemuck::cast_slice(&history));
            drop(history);
            let q = gpu.storage_from("bench.q", &pseudo_random(q_dim as usize, 29))?;
            let k = gpu.storage_from("bench.k", &pseudo_random(kv_dim as usize, 31))?;
            let v = gpu.storage_from("bench.v", &pseudo_random(kv_dim as usize, 37))?;
            let out = gpu.storage("bench.out", q_dim as u64 * 4)?;
            let mut op = Attention::new(gpu, &cache, &q, &k, &v, &out, 1, s.heads)?;
            op.set_step(gpu, 1, ctx - 1)?;
            let kv_bytes = 2 * ctx as u64 * kv_dim as u64 * 4;
            let bytes = kv_bytes + 2 * q_dim as u64 * 4 + 2 * kv_dim as u64 * 4;
            let ops = 4 * ctx as u64 * q_dim as u64;
            let shape = format!("heads {}/{}, head_dim {}", s.heads, s.kv_heads, s.head_dim);
            self.time(name, shape, &op.dispatches(), bytes, ops).await?;
        }
        Ok(())
    }

    /// DeltaLLM (docs/DESIGN.md §2) against dense attention on the same keys: the
    /// delta build over a prompt, prefill attention and one decode token,
    /// dense and hybrid. Keys follow a sparse random walk (each element
    /// jumps with probability 0.4 per position, else repeats), so Θ = 0.01
    /// gives about 60 % delta sparsity; the measured figure is in the shape
    /// column. Window W = max(64, round(0.05 · ctx)), no sinks.
    pub(super) async fn delta(&mut self) -> Result<()> {
        let s = self.shapes.clone();
        // (context, slowest prefill median) of the last prefill case timed.
        let mut last: Option<(u32, f64)> = None;
        for ctx in s.prefill_contexts.clone() {
            let names = [
                format!("delta build prefill ctx {ctx}"),
                format!("attention prefill ctx {ctx}"),
                format!("attention hybrid prefill ctx {ctx}"),
            ];
            if !names.iter().any(|n| self.wants(n)) {
                continue;
            }
            let predicted = last.filter(|_| self.options.filter.is_none()).and_then(|l| too_slow(l, ctx));
            if let Some(why) = predicted {
                for _ in &names {
                    (self.progress)(&format!("skipped {why}"));
                }
                self.skipped.push(why);
                continue;
            }
            self.delta_case(&s, ctx, true, &names).await?;
            let slowest =
                self.rows.iter().filter(|r| names[1..].contains(&r.name)).map(|r| r.median_ms).reduce(f64::max);
            last = slowest.map(|ms| (ctx, ms));
        }
        for ctx in s.contexts.clone() {
            let names = [
                format!("delta build decode ctx {ctx}"),
                // The dense decode case is `attention decode ctx N`; this one
                // is the hybrid kernel with every key exact (W = ctx): dense
                // attention with the KV-head sharing of the hybrid kernel.
                format!("attention exact-gqa decode ctx {ctx}"),
                format!("attention hybrid decode ctx {ctx}"),
            ];
            if names.iter().any(|n| !n.is_empty() && self.wants(n)) {
                self.delta_case(&s, ctx, false, &names).await?;
            }
        }
        Ok(())
    }

    /// One context: `prefill` times all `ctx` rows in one step, else the
    /// last token alone after the first `ctx - 1` are cached.
    async fn delta_case(&mut self, s: &Shapes, ctx: u32, prefill: bool, names: &[String; 3]) -> Result<()> {
        let gpu = self.gpu;
        let (q_dim, kv_dim, hd) = (s.heads * s.head_dim, s.kv_heads * s.head_dim, s.head_dim);
        let keys = sparse_walk(ctx as usize, kv_dim as usize, 0.4, ctx);
        let values = pseudo_random((ctx * kv_dim) as usize, ctx + 1);
        let rows = if prefill { ctx } else { 1 };
        let pos0 = ctx - rows;
        let window = 64.max((0.05 * ctx as f64).round() as u32);
        // Dense attention reads the full K cache; hybrid attention the
        // compressed one: a ring of the window and the step's rows.
        let cache = KvCache::new(gpu, "bench.kv", s.kv_heads, hd, ctx)?;
        let ring = KvCache::with_key_ring(gpu, "bench.kv_ring", s.kv_heads, hd, ctx, 0, window + rows - 1)?;
        let mut deltas = DeltaCache::new(gpu, "bench.deltas", s.kv_heads, hd, ctx)?;
        let k_all = gpu.storage("bench.k_all", (ctx.min(MAX_STEP_ROWS) * kv_dim) as u64 * 4)?;
        let q = gpu.storage_from("bench.q", &pseudo_random((rows * q_dim) as usize, 43))?;
        let k = gpu.storage_from("bench.k", &keys[(pos0 * kv_dim) as usize..])?;
        let v = gpu.storage_from("bench.v", &values[(pos0 * kv_dim) as usize..])?;
        let out = gpu.storage("bench.out", (rows * q_dim) as u64 * 4)?;
        // The cached history: full keys and values, and every delta row (the
        // ring's keys are some of the same walk: the timing needs real
        // magnitudes, not the exact positions).
        gpu.write(&cache.k, 0, bytemuck::cast_slice(&keys));
        gpu.write(&cache.v, 0, bytemuck::cast_slice(&values));
        gpu.write(&ring.k, 0, bytemuck::cast_slice(&keys[..(ring.k.size / 4) as usize]));
        gpu.write(&ring.v, 0, bytemuck::cast_slice(&values));
        let theta = 0.01;
        let step = ctx.min(MAX_STEP_ROWS);
        let mut history = DeltaKeys::new(gpu, &deltas, &k_all, step, theta)?;
        for pos0 in (0..ctx).step_by(step as usize) {
            let rows = step.min(ctx - pos0);
            gpu.write(&k_all, 0, bytemuck::cast_slice(&keys[(pos0 * kv_dim) as usize..][..(rows * kv_dim) as usize]));
            deltas.reserve(gpu, rows, pos0)?;
            history.set_step(gpu, &deltas, rows, pos0)?;
            gpu.run("bench.delta_history", &history.dispatches())?;
        }
        let sparsity = delta_sparsity(gpu, &deltas, ctx).await?;
        let used_words: u64 = deltas.read_used_async(gpu).await?.iter().map(|&w| w as u64).sum();
        // K-cache bytes held for ctx positions vs a dense f16 K cache.
        let k_bytes =
            (ctx * s.kv_heads * deltas.row_words()) as u64 * 4 + used_words * 4 + ring.k.size + deltas.reference.size;
        let k_ratio = k_bytes as f64 / (ctx as u64 * kv_dim as u64 * 2) as f64;

        let mut dense = Attention::new(gpu, &cache, &q, &k, &v, &out, rows, s.heads)?;
        dense.set_step(gpu, rows, pos0)?;
        let mut ring_append = Attention::new(gpu, &ring, &q, &k, &v, &out, rows, s.heads)?;
        ring_append.set_step(gpu, rows, pos0)?;
        // The step's delta rows, in steps of at most MAX_STEP_ROWS as the model builds them.
        deltas.reserve(gpu, rows, pos0)?;
        let mut builds = Vec::new();
        for start in (0..rows).step_by(MAX_STEP_ROWS as usize) {
            let n = MAX_STEP_ROWS.min(rows - start);
            let at = ((pos0 + start) * kv_dim) as usize;
            let keys_in = gpu.storage_from("bench.k_step", &keys[at..at + (n * kv_dim) as usize])?;
            let mut op = DeltaKeys::new(gpu, &deltas, &keys_in, n, theta)?;
            op.set_step(gpu, &deltas, n, pos0 + start)?;
            builds.push((keys_in, op));
        }
        let build: Vec<&Dispatch> = builds.iter().map(|(_, op)| &op.build).collect();
        let mut hybrid = HybridAttention::new(gpu, &ring, &deltas, &q, &out, rows, s.heads, window, 0)?;
        hybrid.set_step(gpu, &deltas, rows, pos0)?;
        // (A prefill in one step keeps every key in its ring: no ratio to show.)
        let k_cache = if prefill { String::new() } else { format!(", K cache {:.1} % of dense f16", 100.0 * k_ratio) };
        let shape = format!(
            "heads {}/{}, head_dim {hd}, W {window}, Θ {theta}: delta sparsity {:.1} %{k_cache}",
            s.heads,
            s.kv_heads,
            100.0 * sparsity,
        );
        let stage = if prefill { "prefill" } else { "decode" };
        // Bytes: keys in, deltas out (f16 values + masks + starts), at the measured sparsity.
        let nnz = ((1.0 - sparsity) * (rows * kv_dim) as f64) as u64;
        let delta_bytes = nnz * 2 + (rows * s.kv_heads * deltas.row_words()) as u64 * 4;
        if self.wants(&names[0]) {
            let bytes = (rows * kv_dim) as u64 * 4 + delta_bytes;
            self.time(names[0].clone(), format!("{shape}, {rows} rows"), &build, bytes, (rows * kv_dim) as u64).await?;
        }
        // Causal cells a query row attends to, summed over the step's rows.
        let cells: u64 = (pos0..ctx).map(|t| t as u64 + 1).sum();
        let dense_ops = 4 * cells * q_dim as u64;
        let dense_bytes = 2 * (ctx * kv_dim) as u64 * 4 + 2 * (rows * q_dim) as u64 * 4;
        if prefill && self.wants(&names[1]) {
            self.time(names[1].clone(), shape.clone(), &[&dense.dispatches()[1]], dense_bytes, dense_ops).await?;
        }
        if !prefill && self.wants(&names[1]) {
            let mut exact = HybridAttention::new(gpu, &cache, &deltas, &q, &out, rows, s.heads, ctx, 0)?;
            exact.set_step(gpu, &deltas, rows, pos0)?;
            let step = [dense.dispatches()[0], &exact.attend];
            let shape = format!("heads {}/{}, head_dim {hd}, every key exact", s.heads, s.kv_heads);
            self.time(names[1].clone(), shape, &step, dense_bytes, dense_ops).await?;
        }
        if self.wants(&names[2]) {
            let exact_keys = window.min(ctx) as u64;
            let bytes = (exact_keys + rows as u64) * kv_dim as u64 * 4
                + (ctx * kv_dim) as u64 * 4 // V stays dense
                + ((1.0 - sparsity) * (ctx * kv_dim) as f64) as u64 * 2
                + (ctx * s.kv_heads * deltas.row_words()) as u64 * 4
                + 2 * (rows * q_dim) as u64 * 4;
            let name = names[2].clone();
            if prefill {
                self.time(
                    name,
                    format!("{shape}, vs attention {stage} ctx {ctx}"),
                    &hybrid.dispatches(),
                    bytes,
                    dense_ops,
                )
                .await?;
            } else {
                // Decode does the whole step: append K/V, one delta row, attend.
                let step = [ring_append.dispatches()[0], build[0], &hybrid.attend];
                self.time(name, format!("{shape}, vs attention {stage} ctx {ctx}"), &step, bytes, dense_ops).await?;
            }
        }
        Ok(())
    }
}
