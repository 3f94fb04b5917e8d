//! The model layer's structure on tiny random models: each architecture's
//! layer runs its ops in the order its builder lists them, and a sequence
//! names the phases it ran (routing, Θ calibration, prefill, decode) with
//! the tokens and submits of each, so the prompt's extra passes are visible.

#[allow(dead_code)]
mod support;
use support::{TOKENS, forcing_routers, gpu, tiny};

use deltallm::loader::config::Architecture;
use deltallm::model::{DeltaOptions, Model, ModelOptions, Phase, PhaseRun};
use deltallm::routing::LayerPlan;

/// Chunks of 4: the 11 tokens take three prefill steps.
fn options(delta: Option<DeltaOptions>) -> ModelOptions {
    ModelOptions { max_context: 32, prefill_chunk: 4, delta, ..Default::default() }
}

fn run(phase: Phase, tokens: u32, submits: u32) -> PhaseRun {
    PhaseRun { phase, tokens, submits }
}

#[test]
fn layers_run_their_architectures_ops_in_forward_order() {
    let llama = [
        "input_layernorm",
        "q_proj",
        "k_proj",
        "v_proj",
        "rope",
        "attention",
        "o_proj",
        "attn_residual",
        "post_attention_layernorm",
        "gate_proj",
        "up_proj",
        "act_mul",
        "down_proj",
        "ffn_residual",
    ];
    let model = Model::load(gpu(), &tiny(Architecture::Llama, 1), options(None)).unwrap();
    for layer in 0..model.config.num_hidden_layers {
        assert_eq!(model.layer_ops(layer).unwrap(), llama, "llama layer {layer}");
    }
    assert!(model.layer_ops(model.config.num_hidden_layers).is_none());

    // BitNet: int8 activations quantized once per linear input, and the sub-norms.
    let bitnet = [
        "input_layernorm",
        "quantize q_proj",
        "q_proj",
        "k_proj",
        "v_proj",
        "rope",
        "attention",
        "attn_sub_norm",
        "quantize o_proj",
        "o_proj",
        "attn_residual",
        "post_attention_layernorm",
        "quantize gate_proj",
        "gate_proj",
        "up_proj",
        "act_mul",
        "ffn_sub_norm",
        "quantize down_proj",
        "down_proj",
        "ffn_residual",
    ];
    let model = Model::load(gpu(), &tiny(Architecture::BitNet, 1), options(None)).unwrap();
    assert_eq!(model.layer_ops(0).unwrap(), bitnet);
}

#[test]
fn a_plain_sequence_is_one_prefill_then_decode() {
    let mut model = Model::load(gpu(), &tiny(Architecture::Llama, 2), options(None)).unwrap();
    assert!(model.sequence_report().phases.is_empty());
    model.forward(gpu(), &TOKENS).unwrap();
    model.forward(gpu(), &[5]).unwrap();
    model.forward(gpu(), &[6]).unwrap();
    let report = model.sequence_report();
    assert_eq!(report.phases, [run(Phase::Prefill, 11, 3), run(Phase::Decode, 2, 2)]);
    assert_eq!(report.prompt_passes(), 1);
    assert_eq!(report.summary(), "sequence: prefill 11 tokens (3 submits) → decode 2 tokens (2 submits)");
    model.reset();
    assert!(model.sequence_report().phases.is_empty());
}

#[test]
fn a_target_sparsity_adds_a_calibration_phase_and_a_fixed_theta_does_not() {
    for arch in [Architecture::Llama, Architecture::BitNet] {
        let calibrated = DeltaOptions { target_sparsity: Some(0.5), window_min: 2, ..Default::default() };
        let mut model = Model::load(gpu(), &tiny(arch, 3), options(Some(calibrated))).unwrap();
        model.forward(gpu(), &TOKENS).unwrap();
        let report = model.sequence_report().clone();
        assert_eq!(report.phases, [run(Phase::Calibration, 11, 3), run(Phase::Prefill, 11, 3)], "{arch:?}");
        assert_eq!(report.prompt_passes(), 2);
        // Θ was chosen per layer, and fixing it skips the calibration.
        let thresholds = model.delta_thresholds().unwrap().to_vec();
        assert!(thresholds.iter().all(|&t| t > 0.0), "{arch:?}: {thresholds:?}");
        model.set_delta_thresholds(gpu(), &thresholds).unwrap();
        model.forward(gpu(), &TOKENS).unwrap();
        assert_eq!(model.sequence_report().phases, [run(Phase::Prefill, 11, 3)], "{arch:?}");
        assert_eq!(model.delta_thresholds().unwrap(), thresholds);
    }
}

#[test]
fn routers_add_a_routing_phase_of_one_submit_per_chunk_and_layer_run() {
    let weights = tiny(Architecture::Llama, 4);
    let layers = weights.config.num_hidden_layers;
    let hidden = weights.config.hidden_size;
    // Routers that skip layer 0 and execute the rest, whatever the input.
    let plan = LayerPlan::from_codes(&[0, 1]).unwrap();
    assert_eq!(layers, plan.len());
    let routers = forcing_routers(&plan, hidden);
    let mut model = Model::load(gpu(), &weights, options(None)).unwrap();
    model.set_routers(Some(routers)).unwrap();
    model.forward(gpu(), &TOKENS).unwrap();
    assert_eq!(model.layer_plan(), &plan);
    // 3 embedding chunks, then 3 chunks of the one executed layer.
    assert_eq!(model.sequence_report().phases, [run(Phase::Routing, 11, 6), run(Phase::Prefill, 11, 3)]);
}
