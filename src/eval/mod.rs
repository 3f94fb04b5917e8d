//! `deltallm eval`: accuracy on real tasks beside the sparsity DeltaLLM
//! reached while computing it, so a user can choose Θ and the window on
//! their own model and data (issue 7, docs/DESIGN.md §2.4).
//!
//! A task reads its data, asks a [`LogitSource`] for teacher-forced logits
//! of token sequences, and scores them with log-softmax in f64 on the CPU:
//!
//! - [`ppl`]: perplexity over non-overlapping chunks, each from an empty cache;
//! - [`mc`]: WinoGrande-style two-option multiple choice, scored as
//!   lm-evaluation-harness scores winogrande (partial evaluation);
//! - [`squad`]: SQuAD-v2 greedy answers scored as the official script;
//! - [`sweep`]: every combination of DeltaLLM settings, one table, CSV, JSON
//!   and an SVG plot of the metric against MAC sparsity;
//! - [`run`]: `deltallm eval` from the data file to the files written.
//!
//! The logit source is the GPU model ([`GpuSource`]) or the plain CPU
//! reference ([`CpuSource`]); tests run a task on both and compare.

pub mod mc;
pub mod ppl;
pub mod progress;
pub mod run;
pub mod squad;
pub mod sweep;

use crate::error::Result;
use crate::gpu::Gpu;
use crate::model::delta::{DeltaCounts, KCacheBytes, Phases, Sparsity};
use crate::model::{DeltaReport, Model};
use crate::weights::ModelWeights;
use serde::Serialize;

pub use progress::Progress;

/// Something that gives teacher-forced logits for a token sequence from an
/// empty cache: `[tokens.len()][vocab]`, row t predicting token t + 1.
pub trait LogitSource {
    fn vocab_size(&self) -> usize;
    fn forward_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>>;
    /// DeltaLLM statistics of the sequence of the last `forward_all`
    /// (`None` when attention is dense).
    fn delta_stats(&mut self) -> Result<Option<DeltaReport>> {
        Ok(None)
    }
    /// Greedy continuation of `prompt` from an empty cache: at most
    /// `max_new` tokens, stopping before any of `stop`. The default
    /// recomputes the whole sequence per token (fine for the CPU reference on
    /// tiny models); the GPU model decodes with its KV cache.
    fn greedy(&mut self, prompt: &[u32], max_new: usize, stop: &[u32]) -> Result<Vec<u32>> {
        let vocab = self.vocab_size();
        let mut sequence = prompt.to_vec();
        let mut out = Vec::new();
        while out.len() < max_new {
            let logits = self.forward_all(&sequence)?;
            let last = &logits[logits.len() - vocab..];
            let next = crate::cpu::sampling::argmax(last)
                .ok_or_else(|| crate::error::Error::Invalid("greedy: the logits are all NaN".into()))?;
            if stop.contains(&next) {
                break;
            }
            out.push(next);
            sequence.push(next);
        }
        Ok(out)
    }
}

/// The GPU model (loaded with `all_logits` and a context as long as the
/// longest sequence a task scores).
pub struct GpuSource<'a> {
    pub gpu: &'a Gpu,
    pub model: &'a mut Model,
}

impl LogitSource for GpuSource<'_> {
    fn vocab_size(&self) -> usize {
        self.model.config.vocab_size
    }

    fn forward_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        self.model.forward_all(self.gpu, tokens)
    }

    fn delta_stats(&mut self) -> Result<Option<DeltaReport>> {
        self.model.delta_stats(self.gpu)
    }

    fn greedy(&mut self, prompt: &[u32], max_new: usize, stop: &[u32]) -> Result<Vec<u32>> {
        self.model.reset();
        self.model.forward(self.gpu, prompt)?;
        let mut out = Vec::new();
        while out.len() < max_new {
            let next = self.model.argmax(self.gpu)?;
            if stop.contains(&next) {
                break;
            }
            out.push(next);
            if out.len() == max_new {
                break;
            }
            self.model.forward(self.gpu, &[next])?;
        }
        Ok(out)
    }
}

/// The plain-Rust CPU reference forward (dense attention): slow, for tests.
pub struct CpuSource<'a> {
    pub weights: &'a ModelWeights,
}

impl LogitSource for CpuSource<'_> {
    fn vocab_size(&self) -> usize {
        self.weights.config.vocab_size
    }

    fn forward_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        Ok(crate::cpu::model::forward_all(self.weights, tokens))
    }
}

/// log p(next | row) for one row of logits, by log-softmax in f64.
pub fn log_probability(row: &[f32], next: u32) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let log_sum = row.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln() + max;
    row[next as usize] as f64 - log_sum
}

/// Log-likelihoods of `tokens[from..]`, each given the tokens before it,
/// from the logits of a `forward_all` over `tokens` (`from` ≥ 1).
pub fn token_log_likelihoods(logits: &[f32], vocab: usize, tokens: &[u32], from: usize) -> Vec<f64> {
    assert!(from >= 1, "the first token has no prediction");
    (from..tokens.len()).map(|t| log_probability(&logits[(t - 1) * vocab..t * vocab], tokens[t])).collect()
}

/// DeltaLLM statistics summed over the sequences of a run (each chunk or
/// item is its own sequence): counts add, ratios are recomputed from the
/// sums; the authors' figure is the mean of theirs weighted by delta elements.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunSparsity {
    pub sequences: usize,
    pub phases: Phases,
    pub k_cache: KCacheBytes,
    /// Σ compressed / Σ dense f16 K-cache bytes.
    pub k_cache_ratio: f64,
    #[serde(skip)]
    authors_weighted: [f64; 3],
}

impl RunSparsity {
    pub fn add(&mut self, report: &DeltaReport) {
        self.sequences += 1;
        let ours = [&mut self.phases.prefill, &mut self.phases.decode, &mut self.phases.total];
        let theirs = [&report.phases.prefill, &report.phases.decode, &report.phases.total];
        for (i, (sum, one)) in ours.into_iter().zip(theirs).enumerate() {
            let mut counts = sum.counts;
            counts.add(&one.counts);
            self.authors_weighted[i] += one.authors_sparsity * one.counts.delta_elements as f64;
            *sum = combined(counts, self.authors_weighted[i]);
        }
        self.k_cache.dense_f16 += report.k_cache.dense_f16;
        self.k_cache.compressed_f16 += report.k_cache.compressed_f16;
        self.k_cache.allocated += report.k_cache.allocated;
        self.k_cache_ratio = ratio(self.k_cache.compressed_f16, self.k_cache.dense_f16);
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

fn combined(counts: DeltaCounts, authors_weighted: f64) -> Sparsity {
    let delta_elements = counts.delta_elements.max(1) as f64;
    Sparsity {
        delta_sparsity: ratio(counts.delta_zeros, counts.delta_elements),
        mac_sparsity: if counts.macs_dense == 0 { 0.0 } else { 1.0 - ratio(counts.macs_done, counts.macs_dense) },
        authors_sparsity: authors_weighted / delta_elements,
        counts,
    }
}

/// What a task run reports: its metric, per-item results, the tokens it ran
/// through the model, and DeltaLLM's sparsity over the run.
#[derive(Clone, Debug, Serialize)]
pub struct TaskReport {
    pub task: &'static str,
    /// "perplexity" or "accuracy".
    pub metric_name: &'static str,
    pub metric: f64,
    /// Tokens scored (ppl) or items (mc).
    pub scored: usize,
    /// Tokens run through the model (for tok/s).
    pub forward_tokens: usize,
    pub seconds: f64,
    pub tokens_per_second: f64,
    pub sparsity: Option<RunSparsity>,
    pub items: serde_json::Value,
}
