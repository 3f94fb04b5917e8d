//! Perplexity: the text is tokenized once (with the model's BOS) and cut
//! into non-overlapping chunks of `ctx` tokens; each chunk runs from an
//! empty cache and every token after the first of its chunk is scored.
//! perplexity = exp(mean negative log-likelihood over the scored tokens).
//! A last chunk shorter than `ctx` is kept when it has at least 2 tokens.

use super::{LogitSource, Progress, RunSparsity, TaskReport, token_log_likelihoods};
use crate::error::{Error, Result};
use serde::Serialize;
use web_time::Instant;

#[derive(Clone, Debug)]
pub struct PplOptions {
    /// Tokens per chunk.
    pub ctx: usize,
    /// Use only the first N tokens of the text.
    pub limit_tokens: Option<usize>,
    /// Use only the first N chunks.
    pub limit: Option<usize>,
    pub progress: bool,
}

impl Default for PplOptions {
    fn default() -> Self {
        PplOptions { ctx: 512, limit_tokens: None, limit: None, progress: false }
    }
}

/// One chunk's result.
#[derive(Clone, Debug, Serialize)]
pub struct ChunkResult {
    pub index: usize,
    /// Offset of the chunk's first token in the tokenized text.
    pub start: usize,
    pub tokens: usize,
    pub scored: usize,
    /// Σ −log p over the scored tokens.
    pub nll: f64,
    pub perplexity: f64,
}

/// The chunks `perplexity` scores, as (start, tokens).
pub fn chunks<'a>(ids: &'a [u32], options: &PplOptions) -> Result<Vec<(usize, &'a [u32])>> {
    if options.ctx < 2 {
        return Err(Error::Invalid(format!("--ctx must be at least 2 tokens, got {}", options.ctx)));
    }
    let ids = &ids[..options.limit_tokens.unwrap_or(usize::MAX).min(ids.len())];
    let mut out: Vec<(usize, &[u32])> =
        ids.chunks(options.ctx).enumerate().map(|(i, c)| (i * options.ctx, c)).filter(|(_, c)| c.len() >= 2).collect();
    out.truncate(options.limit.unwrap_or(usize::MAX));
    if out.is_empty() {
        return Err(Error::Invalid("the text has fewer than 2 tokens to score".into()));
    }
    Ok(out)
}

/// Perplexity of the tokenized text `ids` under `source`.
pub fn perplexity(source: &mut dyn LogitSource, ids: &[u32], options: &PplOptions) -> Result<TaskReport> {
    let chunks = chunks(ids, options)?;
    let vocab = source.vocab_size();
    let start_time = Instant::now();
    let mut progress = Progress::new("ppl chunks", chunks.len(), options.progress);
    let (mut nll_sum, mut scored, mut forward_tokens) = (0.0f64, 0usize, 0usize);
    let mut sparsity: Option<RunSparsity> = None;
    let mut items = Vec::with_capacity(chunks.len());
    for (index, (start, chunk)) in chunks.into_iter().enumerate() {
        let logits = source.forward_all(chunk)?;
        let nll: f64 = -token_log_likelihoods(&logits, vocab, chunk, 1).iter().sum::<f64>();
        if let Some(report) = source.delta_stats()? {
            sparsity.get_or_insert_with(RunSparsity::default).add(&report);
        }
        let n = chunk.len() - 1;
        nll_sum += nll;
        scored += n;
        forward_tokens += chunk.len();
        items.push(ChunkResult {
            index,
            start,
            tokens: chunk.len(),
            scored: n,
            nll,
            perplexity: (nll / n as f64).exp(),
        });
        progress.step(&format!("ppl {:.4}", (nll_sum / scored as f64).exp()));
    }
    let seconds = start_time.elapsed().as_secs_f64();
    Ok(TaskReport {
        task: "ppl",
        metric_name: "perplexity",
        metric: (nll_sum / scored as f64).exp(),
        scored,
        forward_tokens,
        seconds,
        tokens_per_second: forward_tokens as f64 / seconds.max(1e-9),
        sparsity,
        items: serde_json::to_value(items).map_err(|e| Error::Invalid(e.to_string()))?,
    })
}
