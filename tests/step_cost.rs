//! `Model::step_cost` against what a step does: the dispatches it counts
//! equal those `Model::step` recorded, and the bytes it sums equal an
//! independent count from the host weights' shapes and formats plus the
//! dense f32 K/V cache at the step's context, for Llama and BitNet, with
//! weights split into chunks and a plan that skips and repeats layers.

mod support;
use support::{TOKENS, gpu};

use deltallm::loader::config::Architecture;
use deltallm::model::{DeltaOptions, LayerAction, LayerPlan, Model, ModelOptions};
use deltallm::weights::{Matrix, MatrixData, ModelWeights, synthetic};
use half::{bf16, f16};

const LAYERS: usize = 4;

/// 4 layers (so a plan can skip and repeat), hidden 96, GQA 6/2, head_dim
/// 16, vocabulary 300; Llama's linears in all three dense formats and an
/// untied lm_head, so every upload path is counted.
fn weights(arch: Architecture) -> ModelWeights {
    let config = synthetic::config(arch, 96, 200, LAYERS, 6, 2, 300);
    let mut w = synthetic::random_weights(&config, 5);
    let to = |m: &mut Matrix, f16s: bool| {
        if let MatrixData::F32(v) = &m.data {
            m.data = match f16s {
                true => MatrixData::F16(v.iter().map(|x| f16::from_f32(*x)).collect()),
                false => MatrixData::Bf16(v.iter().map(|x| bf16::from_f32(*x)).collect()),
            };
        }
    };
    to(&mut w.embed_tokens, false);
    if arch == Architecture::Llama {
        for layer in &mut w.layers {
            to(&mut layer.q_proj, true);
            to(&mut layer.gate_proj, false);
        }
        let mut head = w.embed_tokens.clone();
        to(&mut head, true);
        w.lm_head = Some(head);
    }
    w
}

/// Bytes of `m` as uploaded, from its shape and format alone: 16-bit
/// values two to a u32 word per row, ternary 16 two-bit codes per word
/// along K (padded), f32 as is.
fn matrix_bytes(m: &Matrix) -> u64 {
    let (rows, cols) = (m.rows as u64, m.cols as u64);
    match &m.data {
        MatrixData::F32(_) => rows * cols * 4,
        MatrixData::F16(_) | MatrixData::Bf16(_) => rows * cols.div_ceil(2) * 4,
        MatrixData::Ternary { .. } => cols.div_ceil(16) * rows * 4,
        MatrixData::Quantized { .. } => panic!("no GGUF blocks in these models"),
    }
}

/// The bytes one step of `rows` tokens at `pos0` reads under `plan`:
/// the embedding rows gathered, every weight of every pass once, the
/// output head, and dense f32 K and V at the context after the step.
fn expected_bytes(w: &ModelWeights, plan: &LayerPlan, rows: u64, pos0: u64) -> u64 {
    let c = &w.config;
    let embed_row = matrix_bytes(&w.embed_tokens) / c.vocab_size as u64;
    let kv = 2 * (pos0 + rows) * c.kv_dim() as u64 * 4;
    let layer = |l: &deltallm::weights::LayerWeights| -> u64 {
        let norms = [
            Some(&l.input_layernorm),
            Some(&l.post_attention_layernorm),
            l.attn_sub_norm.as_ref(),
            l.ffn_sub_norm.as_ref(),
        ];
        let norm_bytes: u64 = norms.iter().flatten().map(|n| n.len() as u64 * 4).sum();
        let linears = [&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj, &l.gate_proj, &l.up_proj, &l.down_proj];
        norm_bytes + linears.iter().map(|m| matrix_bytes(m)).sum::<u64>() + kv
    };
    let passes = |a: &LayerAction| match a {
        LayerAction::Skip => 0,
        LayerAction::Execute => 1,
        LayerAction::Repeat => 2,
    };
    let layers: u64 = w.layers.iter().zip(&plan.actions).map(|(l, a)| passes(a) * layer(l)).sum();
    embed_row * rows + layers + w.norm.len() as u64 * 4 + matrix_bytes(w.output())
}

fn options(delta: Option<DeltaOptions>) -> ModelOptions {
    // Chunks of 64 rows split q (96 rows), gate/up (200) and the head (300).
    ModelOptions { max_context: 32, prefill_chunk: 8, weight_chunk_rows: Some(64), delta, ..Default::default() }
}

/// Prefill then decode under `plan`; each step's predicted cost against the step.
fn check(arch: Architecture, plan: LayerPlan, delta: Option<DeltaOptions>) {
    let w = weights(arch);
    let mut model = Model::load(gpu(), &w, options(delta)).unwrap();
    model.set_layer_plan(gpu(), plan.clone()).unwrap();
    let prompt = &TOKENS[..7];
    let prefill = model.prefill_cost(prompt.len() as u32);
    model.forward(gpu(), prompt).unwrap();
    assert_eq!(prefill.dispatches, model.last_step_dispatches(), "{arch:?} {plan}: prefill dispatches");
    assert_eq!(prefill.bytes(), expected_bytes(&w, &plan, 7, 0), "{arch:?} {plan}: prefill bytes");
    for token in [3, 9] {
        let context = model.position();
        let decode = model.decode_cost(context);
        model.forward(gpu(), &[token]).unwrap();
        assert_eq!(decode.dispatches, model.last_step_dispatches(), "{arch:?} {plan}: decode dispatches");
        assert_eq!(decode.bytes(), expected_bytes(&w, &plan, 1, context as u64), "{arch:?} {plan}: decode bytes");
        assert_eq!(decode.head_weight_bytes, w.norm.len() as u64 * 4 + matrix_bytes(w.output()));
        assert_eq!(decode.kv_bytes, 2 * (context as u64 + 1) * w.config.kv_dim() as u64 * 4 * plan_passes(&plan));
    }
}

fn plan_passes(plan: &LayerPlan) -> u64 {
    plan.actions.iter().map(|a| *a as u64).sum()
}

fn skip_repeat() -> LayerPlan {
    LayerPlan { actions: vec![LayerAction::Repeat, LayerAction::Execute, LayerAction::Skip, LayerAction::Repeat] }
}

#[test]
fn llama_step_cost_matches_the_step() {
    check(Architecture::Llama, LayerPlan::plain(LAYERS), None);
    check(Architecture::Llama, skip_repeat(), None);
}

#[test]
fn bitnet_step_cost_matches_the_step() {
    check(Architecture::BitNet, LayerPlan::plain(LAYERS), None);
    check(Architecture::BitNet, skip_repeat(), None);
}

#[test]
fn deltallm_step_cost_counts_its_extra_dispatch() {
    let delta = DeltaOptions::for_architecture(Architecture::Llama);
    check(Architecture::Llama, skip_repeat(), Some(delta));
    // One delta-key dispatch more per attention pass than dense.
    let w = weights(Architecture::Llama);
    let dense = Model::load(gpu(), &w, options(None)).unwrap().decode_cost(4);
    let delta = DeltaOptions::for_architecture(Architecture::Llama);
    let hybrid = Model::load(gpu(), &w, options(Some(delta))).unwrap().decode_cost(4);
    assert_eq!(hybrid.dispatches, dense.dispatches + LAYERS as u32);
}
