//! SQuAD v2 scoring, as the official evaluation script (v2.0) computes it:
//! answers are normalized (lower case, ASCII punctuation removed, the
//! articles a/an/the removed, whitespace collapsed); exact match and token
//! F1 take the best over the gold answers; a question without gold answers
//! is unanswerable, its only gold answer being "" (so an empty prediction
//! scores 1 and any other 0).
//!
//! The generation side (prompt, greedy decoding) is not built yet.

use std::collections::HashMap;

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
