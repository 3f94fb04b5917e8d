//! `deltallm eval` (issue 7): perplexity and multiple choice on a tiny
//! fixture model against the CPU reference forward, the WinoGrande pairing
//! rule on hand-written items, sweep parsing, a CLI sweep writing its table,
//! CSV and SVG, SQuAD-v2 parsing, scoring and greedy answers against the CPU
//! reference, and SmolLM2's perplexity against llama.cpp's.

mod support;
use support::{gpu, smollm2};

use deltallm::engine::ModelFiles;
use deltallm::eval::mc::{self, McItem};
use deltallm::eval::ppl::{self, PplOptions};
use deltallm::eval::sweep::{self, Axis, Knob};
use deltallm::eval::{CpuSource, GpuSource};
use deltallm::model::{DeltaOptions, Model, ModelOptions};
use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn tiny_llama() -> ModelFiles {
    ModelFiles::load(repo("tests/data/fixtures/tiny-llama")).unwrap()
}

fn load(files: &ModelFiles, max_context: u32, delta: Option<DeltaOptions>) -> Model {
    let options = ModelOptions { max_context, prefill_chunk: 8, all_logits: true, delta, ..Default::default() };
    Model::load(gpu(), &files.weights, options).unwrap()
}

fn relative(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

#[test]
fn perplexity_on_a_tiny_model_equals_the_cpu_reference() {
    let files = tiny_llama();
    let text = std::fs::read_to_string(repo("tests/data/eval/tiny.txt")).unwrap();
    let ids = files.tokenizer.as_ref().unwrap().encode(&text, true).unwrap();
    // Chunks of 13 (not a multiple of the prefill step of 8), and a short last one.
    let options = PplOptions { ctx: 13, limit_tokens: Some(50), ..Default::default() };
    let chunks = ppl::chunks(&ids, &options).unwrap();
    assert!(ids.len() >= 50, "the fixture text tokenizes to {} tokens", ids.len());
    assert_eq!(chunks.iter().map(|(_, c)| c.len()).collect::<Vec<_>>(), [13, 13, 13, 11]);

    let expected = ppl::perplexity(&mut CpuSource { weights: &files.weights }, &ids, &options).unwrap();
    let mut model = load(&files, 13, None);
    let got = ppl::perplexity(&mut GpuSource { gpu: gpu(), model: &mut model }, &ids, &options).unwrap();
    assert_eq!(got.scored, 12 * 3 + 10);
    assert_eq!(expected.scored, got.scored);
    let err = relative(got.metric, expected.metric);
    eprintln!("tiny-llama perplexity: GPU {} vs CPU reference {} (relative {err:e})", got.metric, expected.metric);
    assert!(err < 1e-4, "relative error {err:e}");
    assert!(got.sparsity.is_none(), "dense attention reports no DeltaLLM statistics");

    // DeltaLLM at Θ = 0 is dense attention through the delta kernels.
    let mut model = load(&files, 13, Some(DeltaOptions { threshold: 0.0, ..Default::default() }));
    let delta = ppl::perplexity(&mut GpuSource { gpu: gpu(), model: &mut model }, &ids, &options).unwrap();
    assert!(relative(delta.metric, expected.metric) < 1e-4, "Θ = 0: {} vs {}", delta.metric, expected.metric);
    let sparsity = delta.sparsity.unwrap();
    assert_eq!(sparsity.sequences, 4, "one DeltaReport per chunk");
    assert_eq!(sparsity.phases.total.mac_sparsity, 0.0);
}

#[test]
fn winogrande_pairs_follow_the_harness() {
    let items = mc::parse_jsonl(&std::fs::read_to_string(repo("tests/data/eval/winogrande.jsonl")).unwrap()).unwrap();
    assert_eq!(items.len(), 3, "the blank line is skipped");
    assert_eq!(items[1].answer, 2);
    assert_eq!(
        items[0].pair(2),
        (
            "The trophy doesn't fit into the brown suitcase because the suitcase".to_string(),
            " is too large.".to_string()
        )
    );
    // A space before the blank stays with the context's option; one after it is the target delimiter.
    let item = McItem { sentence: "A _  b ".into(), option1: "x ".into(), option2: "y".into(), answer: 1 };
    assert_eq!(item.pair(1), ("A x".to_string(), "  b".to_string()));
    for bad in [
        r#"{"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"}"#,
        r#"{"sentence": "_", "option1": "a", "option2": "b", "answer": "3"}"#,
    ] {
        assert!(mc::parse_jsonl(bad).is_err(), "{bad}");
    }
}

#[test]
fn multiple_choice_on_a_tiny_model_matches_cpu_reference_log_likelihoods() {
    let files = tiny_llama();
    let tokenizer = files.tokenizer.as_ref().unwrap();
    let items = mc::parse_jsonl(&std::fs::read_to_string(repo("tests/data/eval/winogrande.jsonl")).unwrap()).unwrap();
    let encoded = mc::encode_items(tokenizer, &items).unwrap();
    let longest = encoded.iter().flatten().map(|o| o.tokens.len()).max().unwrap();
    let mut model = load(&files, longest as u32, None);
    let got = mc::evaluate(&mut GpuSource { gpu: gpu(), model: &mut model }, &items, &encoded, None, false).unwrap();
    let mut cpu = CpuSource { weights: &files.weights };
    let results = got.items.as_array().unwrap();
    let mut correct = 0;
    for ((item, options), result) in items.iter().zip(&encoded).zip(results) {
        let expected: Vec<f64> = options.iter().map(|o| mc::option_log_likelihood(&mut cpu, o).unwrap()).collect();
        let ours: Vec<f64> =
            result["log_likelihoods"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        for (a, b) in ours.iter().zip(&expected) {
            assert!(relative(*a, *b) < 1e-4, "{}: log-likelihood {a} vs CPU {b}", item.sentence);
        }
        let choice: u8 = if expected[1] > expected[0] { 2 } else { 1 };
        assert!((expected[1] - expected[0]).abs() > 1e-3, "{}: options too close to test selection", item.sentence);
        assert_eq!(result["choice"].as_u64().unwrap(), choice as u64, "{}", item.sentence);
        correct += usize::from(choice == item.answer);
    }
    assert_eq!(got.metric, correct as f64 / items.len() as f64);
    let limited = mc::evaluate(&mut cpu, &items, &encoded, Some(1), false).unwrap();
    assert_eq!(limited.scored, 1);
}

#[test]
fn sweep_specs_parse_and_combine() {
    let a: Axis = "delta-threshold=0,0.5,1".parse().unwrap();
    let b: Axis = "window-scale=0.02,0.05".parse().unwrap();
    assert_eq!(a.knob, Knob::DeltaThreshold);
    let all = sweep::combinations(&[a, b]);
    assert_eq!(all.len(), 6);
    assert_eq!(all[1], vec![(Knob::DeltaThreshold, 0.0), (Knob::WindowScale, 0.05)]);
    for bad in ["theta=1", "delta-threshold", "delta-threshold=1,x", "window=1.5", "sinks=-1"] {
        assert!(bad.parse::<Axis>().is_err(), "{bad}");
    }
}

#[test]
fn cli_sweep_on_a_tiny_model_writes_table_csv_json_and_svg() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("sweep");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_deltallm"))
        .args(["eval", "-m"])
        .arg(repo("tests/data/fixtures/tiny-llama"))
        .args(["--task", "ppl", "--data"])
        .arg(repo("tests/data/eval/tiny.txt"))
        .args(["--ctx", "16", "--limit", "2", "--sweep", "delta-threshold=0,1", "--sweep", "window-scale=0.1", "--out"])
        .arg(&prefix)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "eval failed:\n{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "header, rule and two rows:\n{stdout}");
    assert!(lines[0].contains("perplexity") && lines[0].contains("MAC sparsity"), "{}", lines[0]);
    assert!(lines[2].starts_with("| 0 | 0.1 |") && lines[3].starts_with("| 1 | 0.1 |"), "{stdout}");
    let csv = std::fs::read_to_string(prefix.with_extension("csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("delta-threshold,window-scale,perplexity,"), "{csv}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(prefix.with_extension("json")).unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 2);
    assert_eq!(json["rows"][0]["report"]["items"].as_array().unwrap().len(), 2, "two chunks");
    let svg = std::fs::read_to_string(prefix.with_extension("svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>") && svg.matches("<circle").count() == 2);
}

/// `models/make_references.py smollm2-ppl`: llama.cpp's perplexity on the
/// first 8 chunks of 128 tokens of the GPL-3 text, same tokens and chunking.
/// The engine's default path runs the Q4_1 blocks with llama.cpp's int8
/// rounding of matmul inputs, so it is held within 1 % of llama.cpp's Q4_1
/// run; the f32 function (weights dequantized, llama.cpp on the F32 twin) is
/// checked by the teacher-forcing tests. Fewer chunks would not do: int8
/// rounding flips swing a 2-chunk perplexity by ~1 % between f32-equivalent
/// summation orders (models/make_references.py says more).
#[test]
fn smollm2_perplexity_matches_llama_cpp() {
    let Some(path) = smollm2() else { return };
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("tests/data/fixtures/ref-smollm2-ppl.llamacpp.json")).unwrap(),
    )
    .unwrap();
    let text = std::fs::read_to_string(reference["text"].as_str().unwrap()).unwrap();
    let files = ModelFiles::load(&path).unwrap();
    let ids = files.tokenizer.as_ref().unwrap().encode(&text, true).unwrap();
    assert_eq!(ids.len() as u64, reference["text_tokens"].as_u64().unwrap(), "token count of the text");
    let ctx = reference["ctx"].as_u64().unwrap() as usize;
    let chunks = reference["chunks"].as_array().unwrap();
    for c in chunks {
        let start = c["start"].as_u64().unwrap() as usize;
        let expected: Vec<u32> = c["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        assert_eq!(&ids[start..start + ctx], expected.as_slice(), "tokens of the chunk at {start}");
    }
    let options = PplOptions { ctx, limit: Some(chunks.len()), ..Default::default() };
    let delta = DeltaOptions { threshold: 0.0, ..Default::default() };
    let mut model = load(&files, ctx as u32, Some(delta));
    let got = ppl::perplexity(&mut GpuSource { gpu: gpu(), model: &mut model }, &ids, &options).unwrap();
    let expected = reference["q4_1"]["perplexity"].as_f64().unwrap();
    let err = relative(got.metric, expected);
    let f32_twin = reference["perplexity"].as_f64().unwrap();
    eprintln!(
        "SmolLM2 perplexity (Θ = 0): ours {:.4}, llama.cpp Q4_1 {expected:.4} (relative {err:.2e}), \
         llama.cpp F32 twin {f32_twin:.4}",
        got.metric
    );
    assert_eq!(got.scored as u64, reference["scored"].as_u64().unwrap());
    assert!(err < 0.01, "perplexity {} vs llama.cpp's Q4_1 run {expected}: relative {err:.4} > 1 %", got.metric);
}

/// The sweep path on the real model, kept small for CI (2 chunks of 32
/// tokens of the GPL-3 text, two thresholds): it must run, sparsify and stay
/// a sane perplexity.
#[test]
fn smollm2_sweep_runs_from_the_cli() {
    let Some(path) = smollm2() else { return };
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("smollm2");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_deltallm"))
        .args(["eval", "-m"])
        .arg(&path)
        .args(["--task", "ppl", "--data", "/usr/share/common-licenses/GPL-3", "--ctx", "32", "--limit", "2"])
        .args(["--sweep", "delta-threshold=0,1", "--out"])
        .arg(&prefix)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "eval failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(prefix.with_extension("json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{stdout}");
    for row in rows {
        let ppl = row["report"]["metric"].as_f64().unwrap();
        assert!(ppl.is_finite() && ppl > 1.0 && ppl < 1000.0, "perplexity {ppl}: {stdout}");
    }
    let sparsity =
        |row: &serde_json::Value| row["report"]["sparsity"]["phases"]["total"]["delta_sparsity"].as_f64().unwrap();
    assert_eq!(sparsity(&rows[0]), 0.0, "Θ = 0 is dense");
    assert!(sparsity(&rows[1]) > 0.3, "Θ = 1 sparsifies SmolLM2's keys: {stdout}");
    assert!(std::fs::read_to_string(prefix.with_extension("svg")).unwrap().contains("<circle"));
}

#[test]
fn squad2_file_parses_and_bad_files_are_clear_errors() {
    use deltallm::eval::squad;
    let items = squad::parse(&std::fs::read_to_string(repo("tests/data/eval/squad2.json")).unwrap()).unwrap();
    let ids: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["q1", "q2", "q3"]);
    assert_eq!(items[0].answers, ["on the mat", "the mat"]);
    assert!(items[1].answers.is_empty(), "unanswerable: plausible answers are not gold");
    assert_eq!(items[2].context, "Rome was founded in 753 BC.");
    for (bad, says) in [("[]", "no \"data\""), ("{\"data\": []}", "no questions"), ("{", "not JSON")] {
        let err = squad::parse(bad).err().expect(bad).to_string();
        assert!(err.contains(says), "{bad}: {err}");
    }
}

/// The generation side on the tiny model: the GPU's greedy answers (KV-cache
/// decoding) are the CPU reference's (whole-sequence recomputation), and the
/// report's EM/F1 are the official scores of those answers.
#[test]
fn squad2_on_a_tiny_model_matches_the_cpu_reference() {
    use deltallm::eval::squad;
    let files = tiny_llama();
    let tokenizer = files.tokenizer.as_ref().unwrap();
    let items = squad::parse(&std::fs::read_to_string(repo("tests/data/eval/squad2.json")).unwrap()).unwrap();
    let prompts: Vec<Vec<u32>> = items
        .iter()
        .map(|i| squad::encode(tokenizer, files.chat_template.as_ref(), i, "unanswerable").unwrap())
        .collect();
    let longest = prompts.iter().map(Vec::len).max().unwrap() + squad::MAX_ANSWER_TOKENS;
    let stop = tokenizer.stop_ids().to_vec();
    let mut model = load(&files, longest as u32, None);
    let run = |source: &mut dyn deltallm::eval::LogitSource| {
        squad::evaluate(source, tokenizer, &items, &prompts, "unanswerable", &stop, None, false).unwrap()
    };
    let got = run(&mut GpuSource { gpu: gpu(), model: &mut model });
    let expected = run(&mut CpuSource { weights: &files.weights });
    let questions = |r: &deltallm::eval::TaskReport| r.items["questions"].as_array().unwrap().clone();
    for (g, e) in questions(&got).iter().zip(&questions(&expected)) {
        assert_eq!(g["generated"], e["generated"], "{}", g["id"]);
        let answers = &items.iter().find(|i| i.id == g["id"].as_str().unwrap()).unwrap().answers;
        let (em, f1) = squad::score(answers, g["prediction"].as_str().unwrap());
        assert_eq!((g["exact"].as_f64().unwrap(), g["f1"].as_f64().unwrap()), (em, f1));
    }
    assert_eq!(got.scored, 3);
    assert_eq!(got.metric, expected.metric);
    assert_eq!(got.items["has_answer"]["questions"], 2);
    assert_eq!(got.items["no_answer"]["questions"], 1);
}

#[test]
fn squad2_from_the_cli_writes_em_and_f1() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("squad.json");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_deltallm"))
        .args(["eval", "-m"])
        .arg(repo("tests/data/fixtures/tiny-llama"))
        .args(["--task", "squad2", "--data"])
        .arg(repo("tests/data/eval/squad2.json"))
        .args(["--limit", "2", "--unanswerable", "no answer", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "eval failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("F1"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let items = &report["report"]["items"];
    assert_eq!(items["questions"].as_array().unwrap().len(), 2);
    assert_eq!(items["unanswerable_string"], "no answer");
    assert!(report["model"].as_str().unwrap().ends_with("tiny-llama"), "the model's path: {}", report["model"]);
    assert!(items["exact"].as_f64().is_some() && items["f1"].as_f64().is_some());
}

#[test]
fn squad2_scoring_follows_the_official_script() {
    use deltallm::eval::squad::{exact_match, f1, normalize, prediction, score};
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("tests/data/eval/squad2_scoring.json")).unwrap()).unwrap();
    for case in cases["normalize"].as_array().unwrap() {
        assert_eq!(normalize(case[0].as_str().unwrap()), case[1].as_str().unwrap(), "{case}");
    }
    for case in cases["score"].as_array().unwrap() {
        let golds: Vec<String> =
            case["golds"].as_array().unwrap().iter().map(|g| g.as_str().unwrap().to_string()).collect();
        let (em, f) = score(&golds, case["prediction"].as_str().unwrap());
        let (want_em, want_f1) = (case["em"].as_f64().unwrap(), case["f1"].as_f64().unwrap());
        assert_eq!(em, want_em, "EM of {case}");
        assert!((f - want_f1).abs() < 1e-9, "F1 {f} of {case}");
    }
    assert_eq!(exact_match("The Cat!", "cat"), 1.0);
    assert_eq!(f1("", ""), 1.0);
    assert_eq!(prediction(" Unanswerable.\n", "unanswerable"), "");
    assert_eq!(prediction(" Paris ", "unanswerable"), "Paris");
}
