//! Whole models against implementations nobody here wrote (docs/DESIGN.md §7):
//! the tiny fixtures of `models/make_fixtures.py` against llama.cpp and HF
//! transformers outputs committed in `tests/data/fixtures/`, and the SmolLM2
//! package model (fetched by `models/fetch-smollm2.sh`) against llama.cpp,
//! both on its Q4_1 path and on the F32 twin of the same weights (see
//! models/README.md, "Tolerances to expect", for why both).
//!
//! Logits are compared by relative L2 error with a stated tolerance;
//! greedy continuations token by token up to the first step where the
//! oracle's own top-1/top-2 margin is so small that float-order differences
//! may legitimately flip it.

mod support;
use support::smollm2;
use support::{argmax, rel_l2};

use deltallm::engine::{Engine, ModelFiles};
use deltallm::model::ModelOptions;
use deltallm::{Gpu, GpuOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures")
}

fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn engine(path: &Path, all_logits: bool) -> Engine {
    engine_with(path, ModelOptions { all_logits, ..Default::default() })
}

/// GGUF block weights dequantized to f32 (the F32 twin's function).
fn f32_engine(path: &Path, all_logits: bool) -> Engine {
    engine_with(path, ModelOptions { all_logits, native_quant: false, ..Default::default() })
}

fn engine_with(path: &Path, options: ModelOptions) -> Engine {
    let gpu = Gpu::new_blocking(&GpuOptions::from_env()).expect("a GPU adapter");
    let files = ModelFiles::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let options = ModelOptions { max_context: 512, prefill_chunk: 32, ..options };
    Engine::new(gpu, files, options).unwrap()
}

/// Greedy tokens after `prompt`, never stopping early.
fn greedy(engine: &mut Engine, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut options = engine.default_options(n);
    options.stop_tokens.clear();
    engine.generate(prompt, &options, |_| Ok(())).unwrap().tokens
}

/// Compare greedy tokens up to the first step whose oracle margin is below
/// `min_margin` (a near-tie that float-order differences may flip; the
/// continuations may part from there); returns how many were compared.
fn assert_greedy_matches(what: &str, got: &[u32], expected: &[u32], margins: &[f32], min_margin: f32) -> usize {
    let mut compared = 0;
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        if margins[i] < min_margin {
            break;
        }
        assert_eq!(g, e, "{what}: greedy token {i} differs (got {got:?}, expected {expected:?})");
        compared += 1;
    }
    assert_eq!(got.len(), expected.len(), "{what}: generation stopped early");
    compared
}

/// Every prompt of one reference file: full logits within `tolerance`, top-1
/// at ≥ `top1_agreement` of positions, greedy continuation.
fn check_reference(model: &Path, prompts: &[Value], tolerance: f64, top1_agreement: f64, min_margin: f32) {
    let mut e = engine(model, true);
    let vocab = e.model.config.vocab_size;
    let mut worst: f64 = 0.0;
    for p in prompts {
        let name = p["name"].as_str().unwrap();
        let ids = u32s(&p["ids"]);
        let expected: Vec<f32> = p["logits"].as_array().unwrap().iter().flat_map(f32s).collect();
        let got = e.model.forward_all(&e.gpu, &ids).unwrap();
        let err = rel_l2(&got, &expected);
        worst = worst.max(err);
        assert!(err < tolerance, "{}: {name}: logits relative L2 {err:e} > {tolerance:e}", model.display());
        let agree = got.chunks(vocab).zip(expected.chunks(vocab)).filter(|(g, x)| argmax(g) == argmax(x)).count();
        let rate = agree as f64 / ids.len() as f64;
        assert!(rate >= top1_agreement, "{name}: top-1 agrees at {rate:.3} of positions");
    }
    // Greedy continuations need a model without all_logits (argmax on the GPU).
    let mut e = engine(model, false);
    for p in prompts {
        let name = p["name"].as_str().unwrap();
        let expected = u32s(&p["greedy"]);
        let got = greedy(&mut e, &u32s(&p["ids"]), expected.len());
        let n = assert_greedy_matches(name, &got, &expected, &f32s(&p["greedy_margins"]), min_margin);
        eprintln!("{}: {name}: {n} greedy tokens compared", model.display());
    }
    eprintln!("{}: worst logits relative L2 {worst:e}", model.display());
}

#[test]
fn tiny_llama_safetensors_matches_transformers() {
    for name in ["tiny-llama", "tiny-llama3rope"] {
        let reference = json(&format!("ref-{name}.hf.json"));
        // bf16 weights widened exactly on both sides; f32 arithmetic in a different order.
        check_reference(&fixtures().join(name), reference["prompts"].as_array().unwrap(), 1e-4, 1.0, 0.01);
    }
}

#[test]
fn tiny_llama_gguf_matches_llama_cpp() {
    for name in ["tiny-llama", "tiny-llama3rope"] {
        let reference = json(&format!("ref-{name}.llamacpp.json"));
        for run in reference["runs"].as_array().unwrap() {
            let gguf = fixtures().join(run["gguf"].as_str().unwrap());
            match run["weights"].as_str().unwrap() {
                // llama.cpp keeps its KV cache in f16: ~1e-3 relative error.
                "f32" => check_reference(&gguf, run["prompts"].as_array().unwrap(), 1e-2, 1.0, 0.02),
                // Native Q8_0 blocks with llama.cpp's int8 rounding of matmul inputs:
                // 1.3e-6 here, except a prompt where one rounding lands on a tie within
                // an f32 ulp and the flip spreads (4.5e-3 on "chat").
                _ => check_reference(&gguf, run["prompts"].as_array().unwrap(), 1e-2, 0.95, 0.05),
            }
        }
    }
}

#[test]
fn tiny_bitnet_matches_transformers_for_both_scale_conventions() {
    for name in ["tiny-bitnet", "tiny-bitnet-autobitlinear"] {
        let reference = json(&format!("ref-{name}.hf.json"));
        // Int8 activation rounding can flip on a last-bit difference (docs/DESIGN.md §3).
        check_reference(&fixtures().join(name), reference["prompts"].as_array().unwrap(), 1e-2, 0.95, 0.05);
    }
}

#[test]
fn fixture_tokenizer_matches_the_committed_ids() {
    let prompts = json("prompts.json");
    let files = ModelFiles::load(fixtures().join("tiny-llama")).unwrap();
    let tokenizer = files.tokenizer.unwrap();
    for p in prompts["prompts"].as_array().unwrap() {
        let Some(text) = p["text"].as_str() else { continue };
        if p["name"] == "chat" {
            continue;
        }
        assert_eq!(tokenizer.encode(text, true).unwrap(), u32s(&p["ids"]), "{text:?}");
    }
}

#[test]
fn smollm2_tokenizer_matches_llama_cpp() {
    let Some(path) = smollm2() else { return };
    let reference = json("ref-smollm2.llamacpp.json");
    let tokenizer = ModelFiles::load(&path).unwrap().tokenizer.unwrap();
    for case in reference["tokenize"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tokenizer.encode(text, true).unwrap(), u32s(&case["ids_add_special"]), "{text:?} (with special)");
        assert_eq!(tokenizer.encode(text, false).unwrap(), u32s(&case["ids"]), "{text:?}");
        let detok = tokenizer.decode(&u32s(&case["ids"])).unwrap();
        assert_eq!(detok, case["detok"].as_str().unwrap(), "{text:?} decoded");
    }
}

/// Teacher forcing over every text of `reference`: top-1 must equal the
/// oracle's wherever the oracle's top-1/top-2 margin exceeds 1.0; returns
/// (agreeing positions, positions).
fn teacher_forcing(e: &mut Engine, reference: &Value) -> (usize, usize) {
    let vocab = e.model.config.vocab_size;
    let (mut positions, mut agree) = (0, 0);
    for case in reference["teacher_forcing"].as_array().unwrap() {
        let ids = u32s(&case["ids"]);
        let logits = e.model.forward_all(&e.gpu, &ids).unwrap();
        let margins = f32s(&case["margin"]);
        for (t, row) in logits.chunks(vocab).enumerate() {
            let expected_top1 = case["top5"][t][0][0].as_u64().unwrap() as usize;
            let ours = argmax(row);
            positions += 1;
            if ours == expected_top1 {
                agree += 1;
            } else {
                let ref_ids: Vec<u64> = (0..5).map(|j| case["top5"][t][j][0].as_u64().unwrap()).collect();
                eprintln!(
                    "  disagree at {t}: oracle margin {} ours {ours} oracle top-5 {ref_ids:?} our logits of them {:?}",
                    margins[t],
                    ref_ids.iter().map(|&i| row[i as usize]).collect::<Vec<_>>()
                );
            }
            if margins[t] > 1.0 {
                assert_eq!(
                    ours, expected_top1,
                    "position {t} of {:?}: the oracle is sure (margin {})",
                    &case["text"], margins[t]
                );
            }
        }
    }
    assert!(positions >= 256);
    (agree, positions)
}

/// The oracle that computes our function: llama.cpp on the F32 twin of the
/// Q4_1 file (every tensor dequantized to F32 by gguf-py, so no int8
/// rounding of activations), `models/make_references.py smollm2-f32`.
#[test]
fn smollm2_teacher_forcing_agrees_with_llama_cpp_on_the_f32_twin() {
    let Some(path) = smollm2() else { return };
    let reference = json("ref-smollm2-f32.llamacpp.json");
    let (agree, positions) = teacher_forcing(&mut f32_engine(&path, true), &reference);
    let rate = agree as f64 / positions as f64;
    eprintln!("SmolLM2 vs llama.cpp F32 twin: top-1 agrees at {agree}/{positions} = {rate:.4}");
    assert!(rate >= 0.98, "top-1 agreement {rate:.4} < 0.98");
}

/// Against llama.cpp's own Q4_1 path. llama.cpp rounds every matmul input
/// to int8 blocks (Q8_1); with LLM activation outliers one rounding flip
/// moves a whole row by ~1e-3, so its logits are only defined to ~1e-2:
/// llama.cpp batched vs llama.cpp token by token agree at top-1 on 280/287
/// of these positions (`q4_1_self_agreement` in the F32 reference). We hold
/// the same bar: no worse than llama.cpp's agreement with itself, minus
/// 2 % of positions, and exact wherever it is sure.
#[test]
fn smollm2_teacher_forcing_agrees_with_llama_cpp_q4_1() {
    let Some(path) = smollm2() else { return };
    let reference = json("ref-smollm2.llamacpp.json");
    let floor = &json("ref-smollm2-f32.llamacpp.json")["q4_1_self_agreement"];
    let own = floor["top1_agree"].as_f64().unwrap() / floor["positions"].as_f64().unwrap();
    let (agree, positions) = teacher_forcing(&mut engine(&path, true), &reference);
    let rate = agree as f64 / positions as f64;
    eprintln!(
        "SmolLM2 vs llama.cpp Q4_1: top-1 agrees at {agree}/{positions} = {rate:.4} (llama.cpp vs itself: {own:.4})"
    );
    assert!(rate >= own - 0.02, "top-1 agreement {rate:.4} < llama.cpp's own {own:.4} - 0.02");
}

#[test]
fn smollm2_greedy_continuations_match_llama_cpp_on_the_f32_twin() {
    let Some(path) = smollm2() else { return };
    let reference = json("ref-smollm2-f32.llamacpp.json");
    let mut e = f32_engine(&path, false);
    for case in reference["greedy"].as_array().unwrap() {
        let expected = u32s(&case["greedy"]);
        let got = greedy(&mut e, &u32s(&case["prompt_ids"]), expected.len());
        let kind = case["kind"].as_str().unwrap();
        // Whole continuations: both sides compute in f32 (our logits are
        // within ~1e-5 of the f64 reference) and the oracle's closest step
        // is 0.005 logits apart.
        let n = assert_greedy_matches(kind, &got, &expected, &f32s(&case["greedy_margins"]), 0.0);
        assert_eq!(n, expected.len());
        eprintln!("SmolLM2 {kind}: all {n} greedy tokens equal");
    }
}

#[test]
fn smollm2_greedy_continuations_match_llama_cpp_q4_1() {
    let Some(path) = smollm2() else { return };
    let reference = json("ref-smollm2.llamacpp.json");
    let mut e = engine(&path, false);
    for case in reference["greedy"].as_array().unwrap() {
        let expected = u32s(&case["greedy"]);
        let got = greedy(&mut e, &u32s(&case["prompt_ids"]), expected.len());
        let kind = case["kind"].as_str().unwrap();
        // Steps closer than 0.3 logits are inside llama.cpp's own noise: its
        // batched and token-by-token runs disagree at margins up to 0.26.
        let n = assert_greedy_matches(kind, &got, &expected, &f32s(&case["greedy_margins"]), 0.3);
        eprintln!("SmolLM2 {kind}: {n} of {} greedy tokens compared and equal", expected.len());
        if kind == "chat" {
            assert_eq!(n, expected.len(), "the chat reply has no near-ties and must match whole");
        }
    }
}

#[test]
fn smollm2_chat_prompt_renders_as_llama_cpp_did() {
    let Some(path) = smollm2() else { return };
    let reference = json("ref-smollm2.llamacpp.json");
    let e = engine(&path, false);
    let case = reference["greedy"].as_array().unwrap().iter().find(|c| c["kind"] == "chat").unwrap();
    let ids = u32s(&case["prompt_ids"]);
    let text = e.tokenizer().unwrap().decode(&ids).unwrap();
    assert_eq!(e.tokenizer().unwrap().encode(&text, false).unwrap(), ids, "prompt ids round-trip");
}

#[test]
fn smollm2_gpu_logits_match_the_cpu_reference() {
    let Some(path) = smollm2() else { return };
    let reference = json("ref-smollm2.llamacpp.json");
    let ids: Vec<u32> = u32s(&reference["teacher_forcing"][0]["ids"]).into_iter().take(24).collect();
    let files = ModelFiles::load(&path).unwrap();
    // The f32 function: with int8 rounding of activations (the native path)
    // a last-bit difference flips a rounding and moves logits by ~1e-2, so
    // that path is checked kernel by kernel (tests/kernels/quant.rs).
    let expected = deltallm::cpu::model::forward_all(&files.weights.dequantized(), &ids);
    let mut e = f32_engine(&path, true);
    let got = e.model.forward_all(&e.gpu, &ids).unwrap();
    let err = rel_l2(&got, &expected);
    eprintln!("SmolLM2 GPU vs CPU reference over {} positions: relative L2 {err:e}", ids.len());
    // f32 GPU arithmetic against the f64-accumulating reference, 30 layers deep.
    assert!(err < 1e-4, "relative L2 {err:e}");
    let vocab = e.model.config.vocab_size;
    for (t, (g, x)) in got.chunks(vocab).zip(expected.chunks(vocab)).enumerate() {
        assert_eq!(argmax(g), argmax(x), "top-1 at position {t}");
    }
}
