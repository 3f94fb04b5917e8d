//! The kernel suite: every op the decode step spends its time in, at the
//! shapes of BitNet-2B4T (docs/DESIGN.md §3) and Llama-3.2-1B (docs/DESIGN.md §4), with a
//! copy kernel as the bandwidth yardstick; the GGUF block kernels run at
//! SmolLM2-135M's shapes (the Q4_1 model the tests fetch).
//!
//! Each case builds its op once, then [`Timer::time`] warms it up and times
//! it. Byte counts are the least each kernel must move: the weights once,
//! activations in, results out (ternary weights at 2 bits, int8 activations
//! at 1 byte). Decode is bandwidth-bound, so GB/s against the copy kernel's
//! GB/s says how close a kernel is to the adapter's practical limit.

use super::copy::Copy;
use super::timer::{Repetitions, Timer};
use super::{BenchOptions, KernelRow};
use crate::cpu::quant::quantize_blocks;
use crate::error::Result;
use crate::format::blocks::BlockFormat;
use crate::format::ternary::ScaleConvention;
use crate::gpu::{Dispatch, Gpu};
use crate::ops::RmsNorm;
use crate::ops::delta::DeltaCache;
use crate::ops::matmul::{DenseWeight, Matmul};
use crate::ops::quant::{Q8Activations, QuantMatmul, QuantWeight, QuantizeQ8};
use crate::ops::rope::{Rope, RopeTable};
use crate::ops::sampling::Argmax;
use crate::ops::ternary::{Int8Activations, QuantizeInt8, TernaryMatmul, TernaryWeight};
use half::f16;

/// The dimensions the suite runs at.
#[derive(Clone, Debug)]
pub struct Shapes {
    pub hidden: u32,
    pub intermediate: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    pub vocab: u32,
    /// Llama-3.2-1B's hidden size, for its lm_head.
    pub llama_hidden: u32,
    /// Tokens of the prefill GEMM.
    pub prefill_tokens: u32,
    pub contexts: Vec<u32>,
    /// Prompt lengths of the prefill attention cases.
    pub prefill_contexts: Vec<u32>,
    /// SmolLM2-135M's hidden, intermediate and vocabulary sizes (multiples
    /// of 32), for the GGUF block kernels.
    pub gguf_hidden: u32,
    pub gguf_intermediate: u32,
    pub gguf_vocab: u32,
    pub copy_bytes: u64,
    /// Per case; a slow case stops at the minimum.
    pub reps: Repetitions,
}

impl Shapes {
    /// The real models' shapes.
    pub fn full() -> Shapes {
        Shapes {
            hidden: 2560,
            intermediate: 6912,
            heads: 20,
            kv_heads: 5,
            head_dim: 128,
            vocab: 128_256,
            llama_hidden: 2048,
            prefill_tokens: 64,
            contexts: vec![512, 1024, 2048, 4096],
            prefill_contexts: vec![512, 1024, 2048],
            gguf_hidden: 576,
            gguf_intermediate: 1536,
            gguf_vocab: 49152,
            copy_bytes: 64 << 20,
            reps: Repetitions { warmup: 2, min: 5, max: 100, budget_ms: 1500.0 },
        }
    }

    /// Tiny shapes (odd where the kernels allow) for CI: seconds on lavapipe.
    pub fn quick() -> Shapes {
        Shapes {
            hidden: 256,
            intermediate: 688,
            heads: 4,
            kv_heads: 1,
            head_dim: 64,
            vocab: 5000,
            llama_hidden: 192,
            prefill_tokens: 8,
            contexts: vec![100],
            prefill_contexts: vec![40],
            gguf_hidden: 96,
            gguf_intermediate: 224,
            gguf_vocab: 1000,
            copy_bytes: 1 << 20,
            reps: Repetitions { warmup: 1, min: 3, max: 5, budget_ms: 50.0 },
        }
    }

    pub fn for_options(options: &BenchOptions) -> Shapes {
        if options.quick { Shapes::quick() } else { Shapes::full() }
    }

    /// The (K → N) linears of one BitNet layer: q/o, k/v, gate/up, down.
    fn linears(&self) -> [(u32, u32); 4] {
        let kv_dim = self.kv_heads * self.head_dim;
        [
            (self.hidden, self.hidden),
            (self.hidden, kv_dim),
            (self.hidden, self.intermediate),
            (self.intermediate, self.hidden),
        ]
    }
}

/// Deterministic values in [-1, 1) (xorshift), so runs move the same data.
pub(super) fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}

fn pseudo_ternary(n: usize, seed: u32) -> Vec<i8> {
    pseudo_random(n, seed).into_iter().map(|v| ((v + 1.0) * 1.5).floor().clamp(0.0, 2.0) as i8 - 1).collect()
}

/// `rows` keys of `width` elements where each element jumps (to a fresh
/// value in [-1, 1)) with probability `p` per row and otherwise repeats.
pub(super) fn sparse_walk(rows: usize, width: usize, p: f32, seed: u32) -> Vec<f32> {
    let jumps = pseudo_random(rows * width, seed ^ 0x5bd1);
    let fresh = pseudo_random(rows * width, seed ^ 0x1b87);
    let mut keys = fresh.clone();
    for t in 1..rows {
        for i in 0..width {
            let at = t * width + i;
            if (jumps[at] + 1.0) * 0.5 >= p {
                keys[at] = keys[at - width];
            }
        }
    }
    keys
}

/// zeros(ΔK) / numel(ΔK) over rows 1.. of every KV head (docs/DESIGN.md §2.4).
pub(super) async fn delta_sparsity(gpu: &Gpu, deltas: &DeltaCache, positions: u32) -> Result<f64> {
    let rows: Vec<u32> = gpu.read_async(&deltas.rows).await?;
    let (words, row_words) = (deltas.mask_words() as usize, deltas.row_words() as usize);
    let (mut nnz, mut numel) = (0u64, 0u64);
    for h in 0..deltas.kv_heads as usize {
        for t in 1..positions as usize {
            let row = &rows[(h * deltas.max_seq as usize + t) * row_words..][..words];
            nnz += row.iter().map(|w| w.count_ones() as u64).sum::<u64>();
            numel += deltas.head_dim as u64;
        }
    }
    Ok(if numel == 0 { 0.0 } else { 1.0 - nnz as f64 / numel as f64 })
}

/// Without a filter, a prefill attention case predicted to take longer than
/// this per run is skipped (and listed in the report).
pub const PREFILL_SKIP_MS: f64 = 15_000.0;

/// Prefill attention grows with the square of the context: on a CPU adapter
/// 2048 rows take tens of seconds per run. From the last timed case
/// `(context, slowest median ms)`, why `ctx` would take longer than
/// [`PREFILL_SKIP_MS`] per run, if it would. (Only without a filter: `--filter
/// "prefill ctx N"` runs any case whatever it costs.)
pub(super) fn too_slow((before, ms): (u32, f64), ctx: u32) -> Option<String> {
    let predicted = ms * (ctx as f64 / before as f64).powi(2);
    (predicted > PREFILL_SKIP_MS).then(|| {
        format!(
            "prefill ctx {ctx}: ~{:.0} s per run predicted from ctx {before} on this adapter; \
             run it with --filter \"prefill ctx {ctx}\"",
            predicted / 1e3
        )
    })
}

/// Runs the selected cases and collects their rows.
pub(super) struct Suite<'a> {
    pub(super) gpu: &'a Gpu,
    pub(super) timer: &'a Timer,
    pub(super) options: &'a BenchOptions,
    pub(super) shapes: Shapes,
    pub(super) rows: Vec<KernelRow>,
    /// Cases left out, and why.
    pub(super) skipped: Vec<String>,
    pub(super) progress: &'a mut dyn FnMut(&str),
    /// Counting mode ([`count`]): record the selected names, run nothing.
    pub(super) counted: Option<std::cell::RefCell<Vec<String>>>,
}

impl Suite<'_> {
    pub(super) fn wants(&self, name: &str) -> bool {
        let selected = self.options.selects(name);
        match &self.counted {
            Some(names) => {
                if selected {
                    names.borrow_mut().push(name.to_string());
                }
                false
            }
            None => selected,
        }
    }

    pub(super) async fn time(
        &mut self,
        name: String,
        shape: String,
        dispatches: &[&Dispatch],
        bytes: u64,
        ops: u64,
    ) -> Result<()> {
        let samples = self.timer.time(self.gpu, &name, dispatches, self.shapes.reps).await?;
        let row = KernelRow::new(name, shape, &samples, bytes, ops);
        (self.progress)(&format!(
            "{:<40} median {:>10.3} ms  ({} runs, {:.1} GB/s)",
            row.name, row.median_ms, row.reps, row.gb_per_s
        ));
        self.rows.push(row);
        Ok(())
    }

    async fn copy(&mut self) -> Result<()> {
        let bytes = self.shapes.copy_bytes.min(self.gpu.max_binding_bytes() / 16 * 16);
        let name = format!("{} {} MiB", super::copy::ROW_PREFIX, bytes >> 20);
        if !self.wants(&name) {
            return Ok(());
        }
        let src = self.gpu.storage("copy.src", bytes)?;
        let words = pseudo_random((bytes / 4) as usize, 11);
        self.gpu.write(&src, 0, bytemuck::cast_slice(&words));
        let dst = self.gpu.storage("copy.dst", bytes)?;
        let copy = Copy::new(self.gpu, &src, &dst, bytes)?;
        self.time(name, format!("{bytes} bytes"), &[&copy.dispatch], 2 * bytes, 0).await
    }

    /// Ternary GEMV (1 token) and GEMM (prefill tokens) for every linear
    /// shape, plus the int8 quantization that feeds them.
    async fn ternary(&mut self) -> Result<()> {
        let tokens = self.shapes.prefill_tokens;
        for (k, n) in self.shapes.linears() {
            let gemv = format!("ternary gemv {k}->{n}");
            let gemm = format!("ternary gemm {tokens}x {k}->{n}");
            // The quantization runs once per distinct K, not per linear.
            let qname = format!("quantize int8 {k}");
            let wants_quantize = n == self.shapes.hidden && self.wants(&qname);
            if !self.wants(&gemv) && !self.wants(&gemm) && !wants_quantize {
                continue;
            }
            let gpu = self.gpu;
            let w = pseudo_ternary((n * k) as usize, n ^ k);
            let weight = TernaryWeight::from_ternary(gpu, "bench.ternary", &w, n, k, 1.0, ScaleConvention::Divide)?;
            drop(w);
            let x = gpu.storage_from("bench.x", &pseudo_random((tokens * k) as usize, 3))?;
            let act = Int8Activations::new(gpu, "bench.act", tokens, k)?;
            let out = gpu.storage("bench.out", tokens as u64 * n as u64 * 4)?;
            let mut quantize = QuantizeInt8::new(gpu, &x, &act)?;
            let mut matmul = TernaryMatmul::new(gpu, &act, &weight, &out)?;
            gpu.run("bench.quantize", &[&quantize.dispatch])?;
            let weight_bytes = n as u64 * k as u64 / 4;
            for (rows, name) in [(1, gemv), (tokens, gemm)] {
                if !self.wants(&name) {
                    continue;
                }
                quantize.set_rows(gpu, rows)?;
                matmul.set_rows(gpu, rows)?;
                let (r, k64, n64) = (rows as u64, k as u64, n as u64);
                let bytes = weight_bytes + r * k64 + r * n64 * 4;
                self.time(name, format!("M={rows} K={k} N={n}"), &[matmul.dispatch()], bytes, 2 * r * k64 * n64)
                    .await?;
            }
            if wants_quantize {
                quantize.set_rows(gpu, 1)?;
                let bytes = k as u64 * 4 + k as u64 + 8;
                self.time(qname, format!("M=1 K={k}"), &[&quantize.dispatch], bytes, 3 * k as u64).await?;
            }
        }
        Ok(())
    }

    /// GEMV with f16 and f32 weights at the ternary shapes (the baseline the
    /// ternary kernel must beat), and the f16 prefill GEMM.
    async fn dense(&mut self) -> Result<()> {
        let tokens = self.shapes.prefill_tokens;
        for (k, n) in self.shapes.linears() {
            let f16_gemv = format!("f16 gemv {k}->{n}");
            let f16_gemm = format!("f16 gemm {tokens}x {k}->{n}");
            let f32_gemv = format!("f32 gemv {k}->{n}");
            let values = || pseudo_random((n * k) as usize, n.wrapping_mul(7) ^ k);
            if self.wants(&f16_gemv) || self.wants(&f16_gemm) {
                let halves: Vec<f16> = values().iter().map(|v| f16::from_f32(*v)).collect();
                let weight = DenseWeight::upload_f16(self.gpu, "bench.w", &halves, n, k)?;
                drop(halves);
                for (rows, name) in [(1, f16_gemv), (tokens, f16_gemm)] {
                    if self.wants(&name) {
                        self.dense_matmul(name, &weight, rows).await?;
                    }
                }
            }
            if self.wants(&f32_gemv) {
                let weight = DenseWeight::upload_f32(self.gpu, "bench.w", &values(), n, k)?;
                self.dense_matmul(f32_gemv, &weight, 1).await?;
            }
        }
        Ok(())
    }

    /// GGUF block GEMVs at SmolLM2's shapes (Q4_1 linears, the tied Q8_0
    /// lm_head) beside the f32 GEMV the dequantized path runs, and the Q8
    /// activation quantization that feeds them.
    async fn quant(&mut self) -> Result<()> {
        let (hidden, inter, vocab) = (self.shapes.gguf_hidden, self.shapes.gguf_intermediate, self.shapes.gguf_vocab);
        let cases = [
            (BlockFormat::Q4_1, hidden, inter),
            (BlockFormat::Q4_1, inter, hidden),
            (BlockFormat::Q8_0, hidden, vocab),
        ];
        for (format, k, n) in cases {
            let block_name = format!("{} gemv {k}->{n}", format!("{format:?}").to_lowercase());
            let f32_name = format!("f32 gemv {k}->{n}");
            let values = || pseudo_random((n * k) as usize, n.wrapping_mul(3) ^ k);
            let qname = format!("quantize q8 {k}");
            let wants_quantize = n == inter && self.wants(&qname);
            let wants_block = self.wants(&block_name);
            if wants_block || wants_quantize {
                let gpu = self.gpu;
                let blocks = quantize_blocks(format, &values());
                let weight = QuantWeight::upload(gpu, "bench.blocks", format, &blocks, n, k)?;
                drop(blocks);
                let x = gpu.storage_from("bench.x", &pseudo_random(k as usize, 43))?;
                let act = Q8Activations::new(gpu, "bench.act", 1, k)?;
                let out = gpu.storage("bench.out", n as u64 * 4)?;
                let quantize = QuantizeQ8::new(gpu, &x, &act)?;
                gpu.run("bench.quantize_q8", &[&quantize.dispatch])?;
                let matmul = QuantMatmul::new(gpu, &act, &weight, &out)?;
                let dispatches: Vec<&Dispatch> = matmul.dispatches().iter().collect();
                // int8 activations with 12 bytes of (d, s, sum) per block.
                let bytes = weight.bytes() + k as u64 + k as u64 / 32 * 12 + n as u64 * 4;
                if wants_block {
                    let (shape, ops) = (format!("M=1 K={k} N={n}"), 2 * k as u64 * n as u64);
                    self.time(block_name, shape, &dispatches, bytes, ops).await?;
                }
                if wants_quantize {
                    let bytes = k as u64 * 4 + k as u64 + k as u64 / 32 * 12;
                    self.time(qname, format!("M=1 K={k}"), &[&quantize.dispatch], bytes, 3 * k as u64).await?;
                }
            }
            if self.wants(&f32_name) {
                let weight = DenseWeight::upload_f32(self.gpu, "bench.w", &values(), n, k)?;
                self.dense_matmul(f32_name, &weight, 1).await?;
            }
        }
        Ok(())
    }

    /// `tokens` rows through a dense weight, with the kernel the engine
    /// would pick for that many.
    async fn dense_matmul(&mut self, name: String, weight: &DenseWeight, tokens: u32) -> Result<()> {
        let (n, k) = (weight.rows, weight.cols);
        let x = self.gpu.storage_from("bench.x", &pseudo_random((tokens * k) as usize, 5))?;
        let y = self.gpu.storage("bench.y", tokens as u64 * n as u64 * 4)?;
        let mut op = Matmul::new(self.gpu, weight, &x, &y, tokens)?;
        op.set_rows(self.gpu, tokens)?;
        let dispatches: Vec<&Dispatch> = op.dispatches().iter().collect();
        let (m, k64, n64) = (tokens as u64, k as u64, n as u64);
        let bytes = weight.bytes() + m * k64 * 4 + m * n64 * 4;
        let shape = format!("M={tokens} K={k} N={n}, {} chunk(s)", weight.chunks.len());
        self.time(name, shape, &dispatches, bytes, 2 * m * k64 * n64).await
    }

    /// The tied lm_heads (vocab × hidden, f16), split into chunks that fit a
    /// binding as the engine loads them.
    async fn lm_heads(&mut self) -> Result<()> {
        let vocab = self.shapes.vocab;
        for (model, hidden) in [("bitnet", self.shapes.hidden), ("llama", self.shapes.llama_hidden)] {
            let name = format!("lm_head f16 gemv {hidden}->{vocab} ({model})");
            if !self.wants(&name) {
                continue;
            }
            let halves: Vec<f16> =
                pseudo_random(vocab as usize * hidden as usize, hidden).iter().map(|v| f16::from_f32(*v)).collect();
            let weight = DenseWeight::upload_f16(self.gpu, "bench.lm_head", &halves, vocab, hidden)?;
            drop(halves);
            self.dense_matmul(name, &weight, 1).await?;
        }
        Ok(())
    }

    async fn rmsnorm(&mut self) -> Result<()> {
        let dim = self.shapes.hidden;
        let name = format!("rmsnorm {dim}");
        if !self.wants(&name) {
            return Ok(());
        }
        let x = self.gpu.storage_from("bench.x", &pseudo_random(dim as usize, 13))?;
        let w = self.gpu.storage_from("bench.w", &pseudo_random(dim as usize, 17))?;
        let out = self.gpu.storage("bench.out", dim as u64 * 4)?;
        let op = RmsNorm::new(self.gpu, &x, &w, &out, 1, dim, 1e-5)?;
        self.time(name, format!("1 row of {dim}"), &[&op.dispatch], 3 * dim as u64 * 4, 4 * dim as u64).await
    }

    async fn rope(&mut self) -> Result<()> {
        let s = &self.shapes;
        let (heads, kv_heads, head_dim) = (s.heads, s.kv_heads, s.head_dim);
        let name = format!("rope {heads}+{kv_heads} heads x {head_dim}");
        if !self.wants(&name) {
            return Ok(());
        }
        let positions = s.contexts.iter().copied().max().unwrap_or(1);
        let table = RopeTable::new(self.gpu, head_dim, 500_000.0, None, positions)?;
        let q = self.gpu.storage_from("bench.q", &pseudo_random((heads * head_dim) as usize, 19))?;
        let k = self.gpu.storage_from("bench.k", &pseudo_random((kv_heads * head_dim) as usize, 23))?;
        let mut op = Rope::new(self.gpu, &table, &q, &k, 1, heads, kv_heads)?;
        op.set_step(self.gpu, 1, positions - 1)?;
        let values = ((heads + kv_heads) * head_dim) as u64;
        // q and k in and out, one (cos, sin) pair per rotated pair.
        let bytes = values * 8 + values * 4;
        self.time(name, format!("1 token at position {}", positions - 1), &[&op.dispatch], bytes, 3 * values).await
    }

    async fn argmax(&mut self) -> Result<()> {
        let n = self.shapes.vocab;
        let name = format!("argmax {n}");
        if !self.wants(&name) {
            return Ok(());
        }
        let logits = self.gpu.storage_from("bench.logits", &pseudo_random(n as usize, 41))?;
        let result = self.gpu.storage("bench.result", 4)?;
        let op = Argmax::new(self.gpu, &logits, &result, n)?;
        self.time(name, format!("{n} logits"), &op.dispatches(), n as u64 * 4 + 4, n as u64).await
    }
}

/// What the kernel suite measured, and the cases it left out (with why).
pub struct SuiteResults {
    pub rows: Vec<KernelRow>,
    pub skipped: Vec<String>,
}

/// Run every selected kernel case. `progress` gets one line per row counted
/// by [`count`], timed or skipped.
pub async fn run(
    gpu: &Gpu,
    timer: &Timer,
    options: &BenchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<SuiteResults> {
    let shapes = Shapes::for_options(options);
    let mut suite =
        Suite { gpu, timer, options, shapes, rows: Vec::new(), skipped: Vec::new(), progress, counted: None };
    suite.run_all().await?;
    Ok(SuiteResults { rows: suite.rows, skipped: suite.skipped })
}

/// How many rows [`run`] would time for `options` (for progress bars):
/// the suite walks its cases by name and allocates nothing.
pub async fn count(gpu: &Gpu, options: &BenchOptions) -> Result<usize> {
    let timer = Timer::new(gpu, true);
    let mut progress = |_: &str| {};
    let counted = Some(std::cell::RefCell::new(Vec::new()));
    let shapes = Shapes::for_options(options);
    let mut suite = Suite {
        gpu,
        timer: &timer,
        options,
        shapes,
        rows: Vec::new(),
        skipped: Vec::new(),
        progress: &mut progress,
        counted,
    };
    suite.run_all().await?;
    let mut names = suite.counted.map(|c| c.into_inner()).unwrap_or_default();
    names.sort();
    names.dedup();
    Ok(names.len())
}

impl Suite<'_> {
    async fn run_all(&mut self) -> Result<()> {
        self.copy().await?;
        self.ternary().await?;
        self.dense().await?;
        self.lm_heads().await?;
        self.quant().await?;
        self.rmsnorm().await?;
        self.rope().await?;
        self.attention().await?;
        self.delta().await?;
        self.argmax().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefill_cases_are_skipped_only_when_predicted_too_slow() {
        // 5.5 s at 1024 predicts 22 s at 2048: skipped, with the command that forces it.
        let why = too_slow((1024, 5_500.0), 2048).expect("skipped");
        assert!(why.contains("~22 s") && why.contains("--filter \"prefill ctx 2048\""), "{why}");
        // 1.2 s at 512 predicts 4.8 s at 1024: kept; a real GPU's milliseconds are kept too.
        assert_eq!(too_slow((512, 1_200.0), 1024), None);
        assert_eq!(too_slow((1024, 3.0), 2048), None);
    }
}
