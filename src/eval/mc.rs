//! Two-option multiple choice in WinoGrande's format, scored the way
//! lm-evaluation-harness scores `winogrande` ("partial evaluation"):
//!
//! - the sentence has one `_`; for each option the context is the sentence
//!   up to `_` with the option substituted, and the continuation is the
//!   text after `_` (stripped, joined by one space), the same for both;
//! - as the harness's `_encode_pair`: whole = encode(context + continuation),
//!   context = encode(context), continuation tokens = whole[len(context)..]
//!   (both with the model's BOS, which Llama-family models expect);
//! - each option's score is the summed log-likelihood of the continuation
//!   tokens; the larger one is chosen (ties go to option 1).

use super::{LogitSource, Progress, RunSparsity, TaskReport, token_log_likelihoods};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use serde::Serialize;
use web_time::Instant;

/// One WinoGrande item (`answer` is 1 or 2).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct McItem {
    pub sentence: String,
    pub option1: String,
    pub option2: String,
    pub answer: u8,
}

impl McItem {
    pub fn option(&self, which: u8) -> &str {
        if which == 1 { &self.option1 } else { &self.option2 }
    }

    /// (context, continuation) for option 1 or 2.
    pub fn pair(&self, which: u8) -> (String, String) {
        let blank = self.sentence.find('_').expect("checked at parse");
        let context = format!("{}{}", &self.sentence[..blank], self.option(which));
        let continuation = format!(" {}", self.sentence[blank + 1..].trim());
        // As the harness, trailing spaces of the context move to the continuation.
        let trimmed = context.trim_end_matches(' ');
        let spaces = context.len() - trimmed.len();
        (trimmed.to_string(), format!("{}{continuation}", " ".repeat(spaces)))
    }
}

/// Items of a WinoGrande JSON-lines file (blank lines skipped).
pub fn parse_jsonl(text: &str) -> Result<Vec<McItem>> {
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let bad = |what: &str| Error::Invalid(format!("line {}: {what} (WinoGrande format expected)", n + 1));
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(&format!("not JSON: {e}")))?;
        let field = |name: &str| -> Result<String> {
            match &v[name] {
                serde_json::Value::String(s) => Ok(s.clone()),
                serde_json::Value::Number(x) => Ok(x.to_string()),
                _ => Err(bad(&format!("no string field \"{name}\""))),
            }
        };
        let sentence = field("sentence")?;
        if sentence.matches('_').count() != 1 {
            return Err(bad("the sentence must contain exactly one `_`"));
        }
        let answer = match field("answer")?.trim() {
            "1" => 1,
            "2" => 2,
            other => return Err(bad(&format!("answer must be \"1\" or \"2\", got {other:?}"))),
        };
        items.push(McItem { sentence, option1: field("option1")?, option2: field("option2")?, answer });
    }
    Ok(items)
}

/// Tokens of one option: the whole sequence and where its continuation starts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EncodedOption {
    pub tokens: Vec<u32>,
    pub continuation_start: usize,
}

pub fn encode_option(tokenizer: &Tokenizer, item: &McItem, which: u8) -> Result<EncodedOption> {
    let (context, continuation) = item.pair(which);
    let tokens = tokenizer.encode(&format!("{context}{continuation}"), true)?;
    let continuation_start = tokenizer.encode(&context, true)?.len().max(1);
    if continuation_start >= tokens.len() {
        return Err(Error::Invalid(format!("{:?}: the continuation after `_` has no tokens", item.sentence)));
    }
    Ok(EncodedOption { tokens, continuation_start })
}

/// Both options of every item.
pub fn encode_items(tokenizer: &Tokenizer, items: &[McItem]) -> Result<Vec<[EncodedOption; 2]>> {
    items.iter().map(|item| Ok([encode_option(tokenizer, item, 1)?, encode_option(tokenizer, item, 2)?])).collect()
}

/// Summed log-likelihood of an option's continuation.
pub fn option_log_likelihood(source: &mut dyn LogitSource, option: &EncodedOption) -> Result<f64> {
    let logits = source.forward_all(&option.tokens)?;
    Ok(token_log_likelihoods(&logits, source.vocab_size(), &option.tokens, option.continuation_start).iter().sum())
}

#[derive(Clone, Debug, Serialize)]
pub struct McResult {
    pub index: usize,
    pub sentence: String,
    pub log_likelihoods: [f64; 2],
    /// 1 or 2.
    pub choice: u8,
    pub answer: u8,
    pub correct: bool,
}

/// Accuracy over `items` (the first `limit`), with `encoded` from [`encode_items`].
pub fn evaluate(
    source: &mut dyn LogitSource,
    items: &[McItem],
    encoded: &[[EncodedOption; 2]],
    limit: Option<usize>,
    show_progress: bool,
) -> Result<TaskReport> {
    let n = items.len().min(encoded.len()).min(limit.unwrap_or(usize::MAX));
    if n == 0 {
        return Err(Error::Invalid("no multiple-choice items to score".into()));
    }
    let start_time = Instant::now();
    let mut progress = Progress::new("mc items", n, show_progress);
    let (mut correct, mut forward_tokens) = (0usize, 0usize);
    let mut sparsity: Option<RunSparsity> = None;
    let mut results = Vec::with_capacity(n);
    for (index, (item, options)) in items.iter().zip(encoded).take(n).enumerate() {
        let mut log_likelihoods = [0.0; 2];
        for (ll, option) in log_likelihoods.iter_mut().zip(options) {
            *ll = option_log_likelihood(source, option)?;
            forward_tokens += option.tokens.len();
            if let Some(report) = source.delta_stats()? {
                sparsity.get_or_insert_with(RunSparsity::default).add(&report);
            }
        }
        let choice = if log_likelihoods[1] > log_likelihoods[0] { 2 } else { 1 };
        correct += usize::from(choice == item.answer);
        results.push(McResult {
            index,
            sentence: item.sentence.clone(),
            log_likelihoods,
            choice,
            answer: item.answer,
            correct: choice == item.answer,
        });
        progress.step(&format!("accuracy {:.3}", correct as f64 / (index + 1) as f64));
    }
    let seconds = start_time.elapsed().as_secs_f64();
    Ok(TaskReport {
        task: "mc",
        metric_name: "accuracy",
        metric: correct as f64 / n as f64,
        scored: n,
        forward_tokens,
        seconds,
        tokens_per_second: forward_tokens as f64 / seconds.max(1e-9),
        sparsity,
        items: serde_json::to_value(results).map_err(|e| Error::Invalid(e.to_string()))?,
    })
}
