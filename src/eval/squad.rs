//! SQuAD v2 scoring, as the official evaluation script (v2.0) computes it:
//! answers are normalized (lower case, ASCII punctuation removed, the
//! articles a/an/the removed, whitespace collapsed); exact match and token
//! F1 take the best over the gold answers; a question without gold answers
//! is unanswerable, its only gold answer being "" (so an empty prediction
//! scores 1 and any other 0).
//!
//! The task ([`evaluate`]): each question is asked with [`PROMPT`] (inside
//! the model's chat template when it has one), the answer is decoded
//! greedily up to [`MAX_ANSWER_TOKENS`] tokens or the first line break, and
//! an answer equal to the configurable "unanswerable" string counts as the
//! empty prediction.

use super::{LogitSource, Progress, RunSparsity, TaskReport};
use crate::chat::{ChatTemplate, Message};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Instant;

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The official `normalize_answer`.
pub fn normalize(text: &str) -> String {
    let lower: String = text.to_lowercase().chars().filter(|c| !c.is_ascii_punctuation()).collect();
    let no_articles = remove_articles(&lower);
    no_articles.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `re.sub(r"\b(a|an|the)\b", " ", text)`.
fn remove_articles(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let starts_word = i == 0 || !is_word(chars[i - 1]);
        // As the regex: the first alternative that ends at a word boundary.
        let article = ["a", "an", "the"]
            .into_iter()
            .find(|a| {
                let n = a.len();
                starts_word
                    && chars.len() >= i + n
                    && a.chars().eq(chars[i..i + n].iter().copied())
                    && chars.get(i + n).is_none_or(|&c| !is_word(c))
            })
            .map(str::len);
        match article {
            Some(n) => {
                out.push(' ');
                i += n;
            }
            None => {
                out.push(chars[i]);
                i += 1;
            }
        }
    }
    out
}

pub fn exact_match(gold: &str, prediction: &str) -> f64 {
    f64::from(u8::from(normalize(gold) == normalize(prediction)))
}

/// Token F1 between one gold answer and the prediction.
pub fn f1(gold: &str, prediction: &str) -> f64 {
    let gold = normalize(gold);
    let prediction = normalize(prediction);
    let gold: Vec<&str> = gold.split_whitespace().collect();
    let prediction: Vec<&str> = prediction.split_whitespace().collect();
    if gold.is_empty() || prediction.is_empty() {
        return f64::from(u8::from(gold == prediction));
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &gold {
        *counts.entry(t).or_default() += 1;
    }
    let mut same = 0usize;
    for t in &prediction {
        if let Some(c) = counts.get_mut(t)
            && *c > 0
        {
            *c -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / prediction.len() as f64;
    let recall = same as f64 / gold.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// (exact match, F1) of a prediction against a question's gold answers
/// (those that normalize to nothing are dropped; none left = unanswerable).
pub fn score(golds: &[String], prediction: &str) -> (f64, f64) {
    let mut golds: Vec<&str> = golds.iter().map(String::as_str).filter(|g| !normalize(g).is_empty()).collect();
    if golds.is_empty() {
        golds.push("");
    }
    let em = golds.iter().map(|g| exact_match(g, prediction)).fold(0.0, f64::max);
    let f = golds.iter().map(|g| f1(g, prediction)).fold(0.0, f64::max);
    (em, f)
}

/// A generated answer as a SQuAD v2 prediction: "" when it says the
/// question is unanswerable (compared after normalization).
pub fn prediction(generated: &str, unanswerable: &str) -> String {
    let answer = generated.trim();
    if normalize(answer) == normalize(unanswerable) { String::new() } else { answer.to_string() }
}

/// The instruction every question is asked with; `{unanswerable}`,
/// `{context}` and `{question}` are filled in.
pub const PROMPT: &str = "Answer the question with a short span copied from the context. \
If the context does not contain the answer, reply exactly: {unanswerable}\n\n\
Context: {context}\n\nQuestion: {question}";

/// Answers are short spans; generation stops here at the latest.
pub const MAX_ANSWER_TOKENS: usize = 32;

/// One question of a SQuAD v2 file (`data[].paragraphs[].qas[]`).
#[derive(Clone, Debug, Serialize)]
pub struct SquadItem {
    pub id: String,
    pub context: String,
    pub question: String,
    /// Gold answer texts; empty for an unanswerable question.
    pub answers: Vec<String>,
}

/// Every question of the official SQuAD v2 JSON, in file order.
pub fn parse(json: &str) -> Result<Vec<SquadItem>> {
    let bad = |what: &str| Error::Invalid(format!("SQuAD file: {what} (expected the official dev-v2.0.json layout)"));
    let root: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let mut items = Vec::new();
    for article in root["data"].as_array().ok_or_else(|| bad("no \"data\" array"))? {
        for paragraph in article["paragraphs"].as_array().ok_or_else(|| bad("an article without \"paragraphs\""))? {
            let context = paragraph["context"].as_str().ok_or_else(|| bad("a paragraph without \"context\""))?;
            for qa in paragraph["qas"].as_array().ok_or_else(|| bad("a paragraph without \"qas\""))? {
                let text = |key: &str| {
                    qa[key].as_str().map(str::to_string).ok_or_else(|| bad(&format!("a question without \"{key}\"")))
                };
                let answers = match qa["answers"].as_array() {
                    Some(a) => a.iter().filter_map(|x| x["text"].as_str().map(str::to_string)).collect(),
                    None => Vec::new(),
                };
                items.push(SquadItem {
                    id: text("id")?,
                    context: context.to_string(),
                    question: text("question")?,
                    answers,
                });
            }
        }
    }
    if items.is_empty() {
        return Err(bad("no questions"));
    }
    Ok(items)
}

/// The prompt tokens of one question: [`PROMPT`] as a user message in the
/// chat template with the generation prompt, or the plain text followed by
/// "\nAnswer:" for a model without a template.
pub fn encode(
    tokenizer: &Tokenizer,
    template: Option<&ChatTemplate>,
    item: &SquadItem,
    unanswerable: &str,
) -> Result<Vec<u32>> {
    let text = PROMPT
        .replace("{unanswerable}", unanswerable)
        .replace("{context}", &item.context)
        .replace("{question}", &item.question);
    match template {
        Some(t) => tokenizer.encode(&t.render(&[Message::user(text)], true)?, false),
        None => tokenizer.encode(&format!("{text}\nAnswer:"), true),
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct SquadResult {
    pub id: String,
    pub generated: String,
    pub prediction: String,
    pub answerable: bool,
    pub exact: f64,
    pub f1: f64,
}

/// Exact match and F1 (in %, as the official script prints them) over the
/// first `limit` questions; the report's metric is F1, `items` holds each
/// question's result and the summary holds EM and the answerable /
/// unanswerable split.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    source: &mut dyn LogitSource,
    tokenizer: &Tokenizer,
    items: &[SquadItem],
    prompts: &[Vec<u32>],
    unanswerable: &str,
    stop: &[u32],
    limit: Option<usize>,
    show_progress: bool,
) -> Result<TaskReport> {
    let n = items.len().min(prompts.len()).min(limit.unwrap_or(usize::MAX));
    if n == 0 {
        return Err(Error::Invalid("no SQuAD questions to score".into()));
    }
    let start_time = Instant::now();
    let mut progress = Progress::new("squad2 questions", n, show_progress);
    let (mut exact, mut f1_sum, mut forward_tokens) = (0.0, 0.0, 0usize);
    let mut sparsity: Option<RunSparsity> = None;
    let mut results = Vec::with_capacity(n);
    for (item, prompt) in items.iter().zip(prompts).take(n) {
        let tokens = source.greedy(prompt, MAX_ANSWER_TOKENS, stop)?;
        forward_tokens += prompt.len() + tokens.len();
        if let Some(report) = source.delta_stats()? {
            sparsity.get_or_insert_with(RunSparsity::default).add(&report);
        }
        let generated = tokenizer.decode(&tokens)?;
        let first_line = generated.trim_start().lines().next().unwrap_or("").to_string();
        let predicted = prediction(&first_line, unanswerable);
        let (em, f) = score(&item.answers, &predicted);
        exact += em;
        f1_sum += f;
        results.push(SquadResult {
            id: item.id.clone(),
            generated,
            prediction: predicted,
            answerable: item.answers.iter().any(|a| !normalize(a).is_empty()),
            exact: em,
            f1: f,
        });
        let done = results.len() as f64;
        progress.step(&format!("EM {:.1} F1 {:.1}", 100.0 * exact / done, 100.0 * f1_sum / done));
    }
    let seconds = start_time.elapsed().as_secs_f64();
    let split = |answerable: bool| {
        let part: Vec<&SquadResult> = results.iter().filter(|r| r.answerable == answerable).collect();
        let count = part.len().max(1) as f64;
        serde_json::json!({
            "questions": part.len(),
            "exact": 100.0 * part.iter().map(|r| r.exact).sum::<f64>() / count,
            "f1": 100.0 * part.iter().map(|r| r.f1).sum::<f64>() / count,
        })
    };
    let items_json = serde_json::json!({
        "exact": 100.0 * exact / n as f64,
        "f1": 100.0 * f1_sum / n as f64,
        "has_answer": split(true),
        "no_answer": split(false),
        "unanswerable_string": unanswerable,
        "questions": results,
    });
    Ok(TaskReport {
        task: "squad2",
        metric_name: "F1",
        metric: 100.0 * f1_sum / n as f64,
        scored: n,
        forward_tokens,
        seconds,
        tokens_per_second: forward_tokens as f64 / seconds.max(1e-9),
        sparsity,
        items: items_json,
    })
}
