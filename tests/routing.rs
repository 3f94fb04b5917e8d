//! Dynamic layer routing (Dr.LLM) on tiny random models: fixed layer plans
//! against the plain model and the plan-aware CPU reference, decode against
//! prefill, router inference against a plain f64 reference, routers forcing
//! a known plan, and bad plans and router files.

#[allow(dead_code)]
mod support;
use support::{TOKENS, forcing_routers, gpu};
use support::{assert_decoding_creates_no_pipelines, rel_l2};

use deltallm::cpu::model::{forward_all_planned, forward_all_routed};
use deltallm::loader::config::Architecture;
use deltallm::loader::safetensors::SafeTensors;
use deltallm::model::{Model, ModelOptions};
use deltallm::routing::{
    LayerAction, LayerPlan, PlanSource, ROUTER_ACTIONS, ROUTER_HIDDEN, Router, Routers, window_means,
};
use deltallm::weights::{ModelWeights, synthetic};
use rand::{Rng, SeedableRng, rngs::StdRng};

const HIDDEN: usize = 96;
const LAYERS: usize = 4;

/// hidden 96, 4 layers (more than support::tiny's 2, so plans can skip and
/// repeat in the middle), GQA 6/2, head_dim 16, vocab 300.
fn tiny(arch: Architecture, seed: u64) -> ModelWeights {
    let config = synthetic::config(arch, HIDDEN, 200, LAYERS, 6, 2, 300);
    synthetic::random_weights(&config, seed)
}

/// Chunks of 4 so the 11 tokens take three prefill steps (GEMM and GEMV paths).
fn all_logits_options() -> ModelOptions {
    ModelOptions { max_context: 32, prefill_chunk: 4, all_logits: true, ..Default::default() }
}

fn plan(codes: &[u32]) -> LayerPlan {
    LayerPlan::from_codes(codes).unwrap()
}

fn tolerance(arch: Architecture) -> f64 {
    // As in tests/model.rs: int8 activation rounding can flip on float-order differences.
    match arch {
        Architecture::Llama => 1e-4,
        Architecture::BitNet => 2e-3,
    }
}

fn random_vec(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

fn random_router(rng: &mut StdRng, hidden: usize) -> Router {
    Router {
        linear1_weight: random_vec(rng, ROUTER_HIDDEN * hidden, 1.0 / (hidden as f32).sqrt()),
        linear1_bias: random_vec(rng, ROUTER_HIDDEN, 0.5),
        linear2_weight: random_vec(rng, ROUTER_ACTIONS * ROUTER_HIDDEN, 0.3),
        linear2_bias: random_vec(rng, ROUTER_ACTIONS, 0.5),
    }
}

fn random_routers(seed: u64, layers: usize, hidden: usize) -> Routers {
    let mut rng = StdRng::seed_from_u64(seed);
    Routers { hidden, layers: (0..layers).map(|_| random_router(&mut rng, hidden)).collect(), bias: 0.0 }
}

#[test]
fn a_plan_of_all_ones_equals_the_plain_model_exactly() {
    for arch in [Architecture::Llama, Architecture::BitNet] {
        let weights = tiny(arch, 3);
        let mut model = Model::load(gpu(), &weights, all_logits_options()).unwrap();
        let plain = model.forward_all(gpu(), &TOKENS).unwrap();
        model.set_layer_plan(gpu(), LayerPlan::plain(LAYERS)).unwrap();
        let planned = model.forward_all(gpu(), &TOKENS).unwrap();
        assert!(plain == planned, "{arch:?}: an all-1s plan changed the logits");
        assert_eq!(model.routing_report().layers_saved, 0);
    }
}

#[test]
fn plans_with_skips_and_repeats_match_the_cpu_reference() {
    for arch in [Architecture::Llama, Architecture::BitNet] {
        let weights = tiny(arch, 7);
        let mut model = Model::load(gpu(), &weights, all_logits_options()).unwrap();
        for codes in [[2, 0, 1, 2], [0, 1, 0, 1], [2, 2, 2, 2]] {
            let plan = plan(&codes);
            let expected = forward_all_planned(&weights, &TOKENS, &plan);
            model.set_layer_plan(gpu(), plan.clone()).unwrap();
            let got = model.forward_all(gpu(), &TOKENS).unwrap();
            let err = rel_l2(&got, &expected);
            assert!(err < tolerance(arch), "{arch:?} plan {plan}: logits relative L2 {err:e}");
            // The plan really changes the model.
            let plain = deltallm::cpu::model::forward_all(&weights, &TOKENS);
            assert!(rel_l2(&plain, &expected) > 1e-2, "{arch:?} plan {plan} made no difference");
        }
    }
}

#[test]
fn decode_after_prefill_equals_one_prefill_with_the_plan() {
    for arch in [Architecture::Llama, Architecture::BitNet] {
        let weights = tiny(arch, 11);
        let options = ModelOptions { max_context: 32, prefill_chunk: 8, ..Default::default() };
        let plan = plan(&[1, 2, 0, 2]);
        let mut whole = Model::load(gpu(), &weights, options.clone()).unwrap();
        whole.set_layer_plan(gpu(), plan.clone()).unwrap();
        whole.forward(gpu(), &TOKENS).unwrap();
        let expected = whole.logits(gpu()).unwrap();

        let mut stepwise = Model::load(gpu(), &weights, options).unwrap();
        stepwise.set_layer_plan(gpu(), plan.clone()).unwrap();
        stepwise.forward(gpu(), &TOKENS[..6]).unwrap();
        for &t in &TOKENS[6..] {
            stepwise.forward(gpu(), &[t]).unwrap();
        }
        let err = rel_l2(&stepwise.logits(gpu()).unwrap(), &expected);
        assert!(err < 1e-5, "{arch:?}: decode vs prefill relative L2 {err:e}");
        // reset() keeps the plan.
        stepwise.reset();
        assert_eq!(stepwise.layer_plan(), &plan);
    }
}

#[test]
fn repeated_layers_with_delta_attention_decode_as_they_prefill() {
    // DeltaLLM on: the second pass has delta ops of its own, fed by its own cache.
    let weights = tiny(Architecture::Llama, 13);
    let delta = deltallm::model::DeltaOptions { threshold: 0.5, window_min: 2, ..Default::default() };
    let options = ModelOptions { max_context: 32, prefill_chunk: 8, delta: Some(delta), ..Default::default() };
    let plan = plan(&[2, 1, 0, 2]);
    let mut whole = Model::load(gpu(), &weights, options.clone()).unwrap();
    whole.set_layer_plan(gpu(), plan.clone()).unwrap();
    whole.forward(gpu(), &TOKENS).unwrap();
    let expected = whole.logits(gpu()).unwrap();
    let mut plain = Model::load(gpu(), &weights, options.clone()).unwrap();
    plain.forward(gpu(), &TOKENS).unwrap();
    assert!(rel_l2(&plain.logits(gpu()).unwrap(), &expected) > 1e-2, "the plan made no difference");

    let mut stepwise = Model::load(gpu(), &weights, options).unwrap();
    stepwise.set_layer_plan(gpu(), plan).unwrap();
    stepwise.forward(gpu(), &TOKENS[..6]).unwrap();
    for &t in &TOKENS[6..] {
        stepwise.forward(gpu(), &[t]).unwrap();
    }
    let err = rel_l2(&stepwise.logits(gpu()).unwrap(), &expected);
    assert!(err < 1e-5, "decode vs prefill relative L2 {err:e}");
}

#[test]
fn decode_steps_with_a_plan_create_no_pipelines() {
    let weights = tiny(Architecture::Llama, 5);
    let options = ModelOptions { max_context: 32, ..Default::default() };
    assert_decoding_creates_no_pipelines(
        |gpu| {
            let mut model = Model::load(gpu, &weights, options).unwrap();
            model.set_layer_plan(gpu, plan(&[2, 0, 1, 2])).unwrap();
            model
        },
        3,
    );
}

#[test]
fn a_plan_of_the_wrong_length_or_with_bad_codes_is_a_clear_error() {
    let weights = tiny(Architecture::Llama, 5);
    let mut model = Model::load(gpu(), &weights, ModelOptions { max_context: 32, ..Default::default() }).unwrap();
    let err = model.set_layer_plan(gpu(), plan(&[1, 1, 0])).unwrap_err().to_string();
    assert!(err.contains("3 entries") && err.contains("4 layers"), "{err}");
    let err = LayerPlan::parse("1,1,3,1").unwrap_err().to_string();
    assert!(err.contains("3 is not one of"), "{err}");
    let err = LayerPlan::parse("1,x").unwrap_err().to_string();
    assert!(err.contains("'x'"), "{err}");
    assert_eq!(LayerPlan::parse("1, 0,2").unwrap().to_string(), "1,0,2");
    let saved = plan(&[0, 0, 2, 1]);
    assert_eq!((saved.executions(), saved.layers_saved()), (3, 1));
}

/// The router of docs/DESIGN.md §8 in f64, written out step by step.
fn reference_logits(router: &Router, h: &[f32], tokens: usize, hidden: usize, bias: f32) -> [f64; 3] {
    let windows = 8.min(tokens);
    let size = tokens / windows;
    let mut sum = [0f64; 3];
    for w in 0..windows {
        let mut pooled = vec![0f64; hidden];
        for t in w * size..(w + 1) * size {
            for (d, p) in pooled.iter_mut().enumerate() {
                *p += h[t * hidden + d] as f64 / size as f64;
            }
        }
        let inner: Vec<f64> = (0..ROUTER_HIDDEN)
            .map(|j| {
                let x: f64 = (0..hidden).map(|d| router.linear1_weight[j * hidden + d] as f64 * pooled[d]).sum::<f64>()
                    + router.linear1_bias[j] as f64;
                0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
            })
            .collect();
        for (a, s) in sum.iter_mut().enumerate() {
            *s +=
                (0..ROUTER_HIDDEN).map(|j| router.linear2_weight[a * ROUTER_HIDDEN + j] as f64 * inner[j]).sum::<f64>()
                    + router.linear2_bias[a] as f64;
        }
    }
    let shift = [bias as f64, 0.0, -bias as f64];
    std::array::from_fn(|a| sum[a] / windows as f64 + shift[a])
}

#[test]
fn router_inference_matches_the_f64_reference() {
    let hidden = 24;
    let mut rng = StdRng::seed_from_u64(42);
    let mut routers = random_routers(1, 3, hidden);
    // 1 and 5 tokens: fewer than 8 windows; 11 and 21: trailing tokens dropped; 16: exact.
    for tokens in [1, 5, 11, 16, 21] {
        let h = random_vec(&mut rng, tokens * hidden, 2.0);
        for bias in [0.0, 0.7, -1.3] {
            routers.bias = bias;
            for layer in 0..3 {
                let got = routers.logits(layer, &h, tokens).unwrap();
                let expected = reference_logits(&routers.layers[layer], &h, tokens, hidden, bias);
                for a in 0..3 {
                    assert!(
                        (got[a] as f64 - expected[a]).abs() < 1e-4,
                        "T={tokens} layer {layer}: {got:?} vs {expected:?}"
                    );
                }
                let best = (0..3).fold(0, |b, a| if expected[a] > expected[b] { a } else { b });
                assert_eq!(routers.decide(layer, &h, tokens).unwrap().code() as usize, best);
            }
        }
    }
    // The trailing tokens really are dropped: changing them changes nothing.
    let tokens = 11;
    let mut h = random_vec(&mut rng, tokens * hidden, 2.0);
    let before = routers.logits(0, &h, tokens).unwrap();
    h[8 * hidden..].iter_mut().for_each(|x| *x += 5.0);
    assert_eq!(routers.logits(0, &h, tokens).unwrap(), before);
    assert_eq!(window_means(&h, tokens, hidden).len(), 8);
}

#[test]
fn the_route_bias_shifts_toward_skip_or_repeat() {
    // Routers with all-zero weights give logits [0, 0, 0]: the bias decides.
    let mut routers = forcing_routers(&LayerPlan::plain(1), 4);
    routers.layers[0].linear2_bias = vec![0.0; 3];
    let h = [1.0f32; 8];
    routers.bias = 0.5;
    assert_eq!(routers.decide(0, &h, 2).unwrap(), LayerAction::Skip);
    routers.bias = -0.5;
    assert_eq!(routers.decide(0, &h, 2).unwrap(), LayerAction::Repeat);
}

#[test]
fn routers_on_the_gpu_choose_the_cpu_reference_plan() {
    for (arch, seed) in [(Architecture::Llama, 21), (Architecture::BitNet, 22)] {
        let weights = tiny(arch, seed);
        let routers = random_routers(seed, LAYERS, HIDDEN);
        let (expected_plan, expected) = forward_all_routed(&weights, &TOKENS, &routers);
        let mut model = Model::load(gpu(), &weights, all_logits_options()).unwrap();
        model.set_routers(Some(routers)).unwrap();
        let got = model.forward_all(gpu(), &TOKENS).unwrap();
        assert_eq!(model.layer_plan(), &expected_plan, "{arch:?}");
        eprintln!("{arch:?}: routers chose {expected_plan}");
        let distinct = [LayerAction::Skip, LayerAction::Execute, LayerAction::Repeat]
            .iter()
            .filter(|a| expected_plan.actions.contains(a))
            .count();
        assert!(distinct >= 2, "{arch:?}: pick a seed whose routers disagree across layers ({expected_plan})");
        let err = rel_l2(&got, &expected);
        assert!(err < tolerance(arch), "{arch:?}: routed logits relative L2 {err:e}");
    }
}

#[test]
fn routers_built_to_force_a_plan_give_that_plan_and_its_logits() {
    let weights = tiny(Architecture::Llama, 9);
    let forced = plan(&[2, 0, 1, 0]);
    let options = ModelOptions { max_context: 32, prefill_chunk: 4, ..Default::default() };
    let mut fixed = Model::load(gpu(), &weights, options.clone()).unwrap();
    fixed.set_layer_plan(gpu(), forced.clone()).unwrap();
    fixed.forward(gpu(), &TOKENS[..7]).unwrap();
    fixed.forward(gpu(), &TOKENS[7..8]).unwrap();
    let expected = fixed.logits(gpu()).unwrap();

    let mut routed = Model::load(gpu(), &weights, options).unwrap();
    routed.set_routers(Some(forcing_routers(&forced, HIDDEN))).unwrap();
    routed.forward(gpu(), &TOKENS[..7]).unwrap();
    // The plan holds for decoding.
    routed.forward(gpu(), &TOKENS[7..8]).unwrap();
    assert_eq!(routed.layer_plan(), &forced);
    let report = routed.routing_report();
    assert_eq!(report.source, PlanSource::Routers);
    assert_eq!((report.skipped, report.repeated, report.layers_saved), (2, 1, 1));
    assert!(routed.logits(gpu()).unwrap() == expected, "routed and fixed plans disagree");
}

/// A safetensors file with the given router tensors, named as in the checkpoint.
fn router_file(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, data)| {
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                shape.clone(),
                bytemuck::cast_slice(data),
            )
            .unwrap();
            (name.clone(), view)
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

fn router_tensors(layers: usize, hidden: usize) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = StdRng::seed_from_u64(3);
    let mut out = Vec::new();
    for i in 0..layers {
        for (part, shape) in [
            ("linear1.weight", vec![ROUTER_HIDDEN, hidden]),
            ("linear1.bias", vec![ROUTER_HIDDEN]),
            ("linear2.weight", vec![ROUTER_ACTIONS, ROUTER_HIDDEN]),
            ("linear2.bias", vec![ROUTER_ACTIONS]),
        ] {
            let n = shape.iter().product();
            out.push((format!("model.routers.{i}.{part}"), shape, random_vec(&mut rng, n, 0.1)));
        }
    }
    out
}

fn load_routers(tensors: &[(String, Vec<usize>, Vec<f32>)], layers: usize, hidden: usize) -> Result<Routers, String> {
    let file = SafeTensors::from_bytes(vec![("routers.safetensors".into(), router_file(tensors))]).unwrap();
    Routers::from_safetensors(&file, layers, hidden).map_err(|e| e.to_string())
}

#[test]
fn router_files_load_and_bad_ones_are_clear_errors() {
    let good = router_tensors(3, 16);
    let routers = load_routers(&good, 3, 16).unwrap();
    assert_eq!(routers.layers.len(), 3);
    assert_eq!(routers.layers[2].linear1_weight, good[8].2);

    // Through a file on disk too.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routers.safetensors");
    std::fs::write(&path, router_file(&good)).unwrap();
    assert_eq!(Routers::load(&path, 3, 16).unwrap().layers.len(), 3);

    let missing: Vec<_> = good.iter().filter(|t| !t.0.starts_with("model.routers.1.")).cloned().collect();
    let err = load_routers(&missing, 3, 16).unwrap_err();
    assert!(err.contains("no router for layer 1"), "{err}");

    let err = load_routers(&good, 3, 24).unwrap_err();
    assert!(err.contains("model.routers.0.linear1.weight") && err.contains("[128, 24]"), "{err}");

    let mut bad_out = good.clone();
    bad_out[3] = ("model.routers.0.linear2.bias".into(), vec![4], vec![0.0; 4]);
    let err = load_routers(&bad_out, 3, 16).unwrap_err();
    assert!(err.contains("linear2.bias") && err.contains("[3]"), "{err}");

    let err = load_routers(&good, 2, 16).unwrap_err();
    assert!(err.contains("only 2 layers"), "{err}");

    let mut no_bias = good.clone();
    no_bias.remove(1);
    let err = load_routers(&no_bias, 3, 16).unwrap_err();
    assert!(err.contains("model.routers.0.linear1.bias"), "{err}");

    // Routers for another width are refused by the model.
    let weights = tiny(Architecture::Llama, 5);
    let mut model = Model::load(gpu(), &weights, ModelOptions { max_context: 32, ..Default::default() }).unwrap();
    let err = model.set_routers(Some(random_routers(1, LAYERS, 16))).unwrap_err().to_string();
    assert!(err.contains("width 16"), "{err}");
}

fn deltallm(command: &str, args: &[&str]) -> std::process::Output {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures/tiny-llama");
    std::process::Command::new(env!("CARGO_BIN_EXE_deltallm"))
        .arg(command)
        .arg("-m")
        .arg(fixture)
        .args(["-p", "Hello world, hello routing", "--context", "64"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn cli_runs_with_a_layer_plan_or_routers_and_reports_the_layers_saved() {
    // The tiny-llama fixture: 2 layers of width 64.
    let out = deltallm("run", &["--max-tokens", "4", "--layer-plan", "0,2", "--stats", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let routing = &json["routing"];
    assert_eq!(routing["source"], "fixed");
    assert_eq!(routing["plan"], serde_json::json!([0, 2]));
    assert_eq!((routing["executions"].as_u64(), routing["layers_saved"].as_i64()), (Some(2), Some(0)));
    assert!(stderr.contains("layer plan (Fixed): 0,2"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routers.safetensors");
    let forced = plan(&[1, 0]);
    let routers = forcing_routers(&forced, 64);
    let mut tensors = Vec::new();
    for (i, r) in routers.layers.iter().enumerate() {
        let name = |part: &str| format!("model.routers.{i}.{part}");
        tensors.push((name("linear1.weight"), vec![ROUTER_HIDDEN, 64], r.linear1_weight.clone()));
        tensors.push((name("linear1.bias"), vec![ROUTER_HIDDEN], r.linear1_bias.clone()));
        tensors.push((name("linear2.weight"), vec![ROUTER_ACTIONS, ROUTER_HIDDEN], r.linear2_weight.clone()));
        tensors.push((name("linear2.bias"), vec![ROUTER_ACTIONS], r.linear2_bias.clone()));
    }
    std::fs::write(&path, router_file(&tensors)).unwrap();
    let routers_arg = path.to_str().unwrap();
    let out = deltallm("run", &["--max-tokens", "3", "--routers", routers_arg, "--route-bias", "-1", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["routing"]["source"], "routers");
    assert_eq!(json["routing"]["plan"], serde_json::json!([1, 0]));
    assert_eq!(json["routing"]["layers_saved"], 1);

    let out = deltallm("logits", &["--layer-plan", "2,1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    for (args, needle) in [
        (vec!["--layer-plan", "1,1,1"], "2 layers"),
        (vec!["--layer-plan", "1,5"], "5 is not one of"),
        (vec!["--route-bias", "1"], "--routers"),
        (vec!["--routers", "/nonexistent/routers.safetensors"], "routers.safetensors"),
    ] {
        let out = deltallm("run", &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
