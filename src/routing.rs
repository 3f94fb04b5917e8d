//! Dynamic layer routing (Dr.LLM, arXiv 2510.12773): each layer of a
//! sequence is skipped, executed, or executed twice in a row, from a fixed
//! [`LayerPlan`] or from per-layer [`Routers`] that read the prompt.
//!
//! The plan is fixed per sequence, so the KV cache stays consistent:
//!
//! - a skipped layer is the identity and writes no keys; no later token of the
//!   sequence runs it, so its stale cache is never read;
//! - a repeated layer's second pass is the same block (same weights, same ops)
//!   attending through a cache slot of its own (`model::attention::AttentionBlock`): its keys are
//!   computed from the first pass's output, a different stream than the first
//!   pass's keys, so sharing one cache would mix the two. The slot (a KV
//!   cache, an attention op, and DeltaLLM's ops when DeltaLLM is on) is
//!   allocated the first time a plan repeats that layer and kept afterwards,
//!   so steps still allocate nothing.
//!
//! Decode after prefill therefore equals one prefill with the plan, exactly
//! as for the plain model.
//!
//! A router (one per layer) reads the residual stream just before its layer
//! over the whole prompt of T tokens:
//!
//! ```text
//! W = min(8, T) windows of ⌊T/W⌋ tokens each (trailing tokens dropped)
//! p_w = mean of window w's hidden states                 [hidden]
//! z_w = linear2(gelu_tanh(linear1(p_w)))                 [3]: skip, execute, repeat
//! z   = mean_w z_w + bias · [+1, 0, −1]
//! action = argmax z (ties go to the lower action)
//! ```
//!
//! The bias (`--route-bias`) moves the decision boundary: a positive bias
//! favours skipping (and disfavours repeating), a negative one favours
//! repeating; 0 leaves the routers as trained.
//!
//! The routers decide once, on the prompt, and the plan they chose then
//! holds for decoding. The model runs the prompt layer by layer, reads the
//! hidden states back before each layer, and runs the tiny router MLP on
//! the CPU (2·128·hidden multiply-adds per window: microseconds beside a
//! layer), then runs the prompt again with the chosen plan as a plain
//! prefill, so the routed prefill leaves the same cache and logits as a
//! prefill with that plan given up front. Routing thus costs about one extra
//! prefill; a GPU router kernel could remove the read-backs but not the
//! layer-by-layer order the decisions impose.

use crate::error::{Error, Result};
use crate::loader::safetensors::SafeTensors;
use serde::Serialize;
use std::path::Path;

/// What a sequence does with one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerAction {
    /// The identity: the residual stream passes unchanged.
    Skip = 0,
    /// The layer runs once, as in the plain model.
    Execute = 1,
    /// The layer runs twice in a row, the second pass on the first's output.
    Repeat = 2,
}

impl LayerAction {
    /// The action of a plan code: 0 skip, 1 execute, 2 repeat.
    pub fn from_code(code: u32) -> Result<Self> {
        match code {
            0 => Ok(LayerAction::Skip),
            1 => Ok(LayerAction::Execute),
            2 => Ok(LayerAction::Repeat),
            other => {
                Err(Error::Invalid(format!("layer action {other} is not one of 0 (skip), 1 (execute), 2 (repeat)")))
            }
        }
    }

    pub fn code(self) -> u32 {
        self as u32
    }

    /// How many times the layer's block runs.
    pub fn passes(self) -> usize {
        self as usize
    }
}

/// One action per layer, fixed for a sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerPlan {
    pub actions: Vec<LayerAction>,
}

impl LayerPlan {
    /// The plain model: every layer once.
    pub fn plain(layers: usize) -> Self {
        LayerPlan { actions: vec![LayerAction::Execute; layers] }
    }

    pub fn from_codes(codes: &[u32]) -> Result<Self> {
        Ok(LayerPlan { actions: codes.iter().map(|&c| LayerAction::from_code(c)).collect::<Result<_>>()? })
    }

    /// Parse `1,1,0,2,…` (spaces allowed).
    pub fn parse(text: &str) -> Result<Self> {
        let codes = text
            .split(',')
            .map(|s| {
                s.trim().parse::<u32>().map_err(|_| {
                    Error::Invalid(format!(
                        "layer plan entry '{}' is not 0 (skip), 1 (execute) or 2 (repeat); write e.g. 1,1,0,2",
                        s.trim()
                    ))
                })
            })
            .collect::<Result<Vec<u32>>>()?;
        Self::from_codes(&codes)
    }

    pub fn codes(&self) -> Vec<u32> {
        self.actions.iter().map(|a| a.code()).collect()
    }

    pub fn len(&self) -> usize {
        self.actions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    pub fn is_plain(&self) -> bool {
        self.actions.iter().all(|&a| a == LayerAction::Execute)
    }

    /// Layer blocks run per token (a repeat counts twice).
    pub fn executions(&self) -> usize {
        self.actions.iter().map(|a| a.passes()).sum()
    }

    /// Blocks saved per token against the plain model (negative when the
    /// plan repeats more layers than it skips).
    pub fn layers_saved(&self) -> i64 {
        self.len() as i64 - self.executions() as i64
    }

    /// An error unless the plan has one action per layer of a `layers`-layer model.
    pub fn check_layers(&self, layers: usize) -> Result<()> {
        if self.len() != layers {
            return Err(Error::Invalid(format!(
                "the layer plan has {} entries but the model has {layers} layers; give one action \
                 (0 skip, 1 execute, 2 repeat) per layer",
                self.len()
            )));
        }
        Ok(())
    }
}

impl std::fmt::Display for LayerPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let codes: Vec<String> = self.actions.iter().map(|a| a.code().to_string()).collect();
        write!(f, "{}", codes.join(","))
    }
}

/// Where the plan of a sequence came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanSource {
    /// No plan was set: every layer once.
    Plain,
    /// A plan given by the caller (`--layer-plan`).
    Fixed,
    /// Chosen by the routers on the prompt (`--routers`).
    Routers,
}

/// The plan a sequence used and what it saved (for `--stats` and JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoutingReport {
    pub source: PlanSource,
    /// One code per layer: 0 skip, 1 execute, 2 repeat.
    pub plan: Vec<u32>,
    pub skipped: usize,
    pub repeated: usize,
    /// Layer blocks run per token with the plan …
    pub executions: usize,
    /// … and without (the layer count).
    pub plain_executions: usize,
    /// `plain_executions − executions` (negative when repeats outnumber skips).
    pub layers_saved: i64,
    /// The route bias the routers used (0 without routers).
    pub route_bias: f32,
}

impl RoutingReport {
    pub fn new(source: PlanSource, plan: &LayerPlan, route_bias: f32) -> Self {
        let count = |action| plan.actions.iter().filter(|&&a| a == action).count();
        RoutingReport {
            source,
            plan: plan.codes(),
            skipped: count(LayerAction::Skip),
            repeated: count(LayerAction::Repeat),
            executions: plan.executions(),
            plain_executions: plan.len(),
            layers_saved: plan.layers_saved(),
            route_bias,
        }
    }

    /// One line for stderr.
    pub fn summary(&self) -> String {
        let plan: Vec<String> = self.plan.iter().map(|c| c.to_string()).collect();
        format!(
            "layer plan ({:?}): {} | skipped {}, repeated {}, {} of {} layer executions per token, {} saved",
            self.source,
            plan.join(","),
            self.skipped,
            self.repeated,
            self.executions,
            self.plain_executions,
            self.layers_saved
        )
    }
}

/// Width of a router's hidden layer.
pub const ROUTER_HIDDEN: usize = 128;
/// A router's outputs: one logit per [`LayerAction`].
pub const ROUTER_ACTIONS: usize = 3;
/// At most this many pooling windows over the prompt.
pub const MAX_WINDOWS: usize = 8;

/// One layer's router MLP, `Linear(hidden, 128) → GELU(tanh) → Linear(128, 3)`.
#[derive(Clone, Debug)]
pub struct Router {
    pub linear1_weight: Vec<f32>, // [128][hidden]
    pub linear1_bias: Vec<f32>,   // [128]
    pub linear2_weight: Vec<f32>, // [3][128]
    pub linear2_bias: Vec<f32>,   // [3]
}

impl Router {
    /// The three logits (skip, execute, repeat) of one pooled window `[hidden]`.
    pub fn logits(&self, pooled: &[f32]) -> [f32; ROUTER_ACTIONS] {
        let hidden = pooled.len();
        let inner: Vec<f32> = (0..ROUTER_HIDDEN)
            .map(|j| {
                let row = &self.linear1_weight[j * hidden..(j + 1) * hidden];
                let dot: f32 = row.iter().zip(pooled).map(|(w, x)| w * x).sum();
                gelu_tanh(dot + self.linear1_bias[j])
            })
            .collect();
        std::array::from_fn(|a| {
            let row = &self.linear2_weight[a * ROUTER_HIDDEN..(a + 1) * ROUTER_HIDDEN];
            row.iter().zip(&inner).map(|(w, x)| w * x).sum::<f32>() + self.linear2_bias[a]
        })
    }
}

/// GELU, tanh form: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub fn gelu_tanh(x: f32) -> f32 {
    let c = (2.0 / std::f32::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

/// The pooling windows' means of `h` `[tokens][hidden]`: `min(8, tokens)`
/// windows of `⌊tokens / windows⌋` consecutive tokens from the start, the
/// trailing remainder dropped. `[windows][hidden]`.
pub fn window_means(h: &[f32], tokens: usize, hidden: usize) -> Vec<Vec<f32>> {
    let windows = MAX_WINDOWS.min(tokens);
    if windows == 0 {
        return Vec::new();
    }
    let size = tokens / windows;
    (0..windows)
        .map(|w| {
            let mut mean = vec![0f32; hidden];
            for t in w * size..(w + 1) * size {
                for (m, x) in mean.iter_mut().zip(&h[t * hidden..(t + 1) * hidden]) {
                    *m += x;
                }
            }
            mean.iter_mut().for_each(|m| *m /= size as f32);
            mean
        })
        .collect()
}

/// The index of the largest value, ties to the lower index.
fn argmax(z: &[f32; ROUTER_ACTIONS]) -> usize {
    let mut best = 0;
    for (i, &v) in z.iter().enumerate() {
        if v > z[best] {
            best = i;
        }
    }
    best
}

/// One router per layer, with the bias knob.
#[derive(Clone, Debug)]
pub struct Routers {
    pub hidden: usize,
    pub layers: Vec<Router>,
    /// Added as `bias · [+1, 0, −1]` to the averaged logits: > 0 favours
    /// skipping, < 0 repeating.
    pub bias: f32,
}

impl Routers {
    /// Routers for a model of `layers` layers of width `hidden` from a
    /// safetensors file holding `model.routers.{i}.linear{1,2}.{weight,bias}`.
    pub fn load(path: impl AsRef<Path>, layers: usize, hidden: usize) -> Result<Self> {
        let path = path.as_ref();
        let file = SafeTensors::open(path)?;
        Self::from_safetensors(&file, layers, hidden).map_err(|e| match e {
            Error::Invalid(m) => Error::Invalid(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn from_safetensors(file: &SafeTensors, layers: usize, hidden: usize) -> Result<Self> {
        let mut routers = Vec::with_capacity(layers);
        for i in 0..layers {
            let name = |part: &str| format!("model.routers.{i}.{part}");
            if !file.contains(&name("linear1.weight")) {
                return Err(Error::Invalid(format!(
                    "the router file has no router for layer {i} (no tensor '{}'); it needs one router \
                     per layer, 0..{layers}",
                    name("linear1.weight")
                )));
            }
            let tensor = |part: &str, shape: &[usize]| -> Result<Vec<f32>> {
                let view = file.tensor(&name(part))?;
                if view.shape() != shape {
                    return Err(Error::Invalid(format!(
                        "router tensor '{}' has shape {:?}, expected {shape:?} (the model's hidden size is {hidden})",
                        name(part),
                        view.shape()
                    )));
                }
                view.to_f32()
            };
            routers.push(Router {
                linear1_weight: tensor("linear1.weight", &[ROUTER_HIDDEN, hidden])?,
                linear1_bias: tensor("linear1.bias", &[ROUTER_HIDDEN])?,
                linear2_weight: tensor("linear2.weight", &[ROUTER_ACTIONS, ROUTER_HIDDEN])?,
                linear2_bias: tensor("linear2.bias", &[ROUTER_ACTIONS])?,
            });
        }
        if let Some(extra) = file.names().into_iter().find(|n| {
            n.strip_prefix("model.routers.")
                .and_then(|rest| rest.split('.').next())
                .and_then(|i| i.parse::<usize>().ok())
                .is_some_and(|i| i >= layers)
        }) {
            return Err(Error::Invalid(format!(
                "the router file has '{extra}' but the model has only {layers} layers (routers for another model?)"
            )));
        }
        Ok(Routers { hidden, layers: routers, bias: 0.0 })
    }

    /// Layer `layer`'s averaged, biased logits (skip, execute, repeat) over
    /// the prompt's hidden states `h` `[tokens][hidden]` before that layer.
    pub fn logits(&self, layer: usize, h: &[f32], tokens: usize) -> Result<[f32; ROUTER_ACTIONS]> {
        let router = self.layers.get(layer).ok_or_else(|| Error::Invalid(format!("no router for layer {layer}")))?;
        if tokens == 0 || h.len() != tokens * self.hidden {
            return Err(Error::Invalid(format!(
                "routing needs the hidden states of at least one token ([{tokens}][{}]), got {} values",
                self.hidden,
                h.len()
            )));
        }
        let windows = window_means(h, tokens, self.hidden);
        let mut z = [0f32; ROUTER_ACTIONS];
        for pooled in &windows {
            for (zi, li) in z.iter_mut().zip(router.logits(pooled)) {
                *zi += li;
            }
        }
        let shift = [self.bias, 0.0, -self.bias];
        Ok(std::array::from_fn(|a| z[a] / windows.len() as f32 + shift[a]))
    }

    /// Layer `layer`'s action for a prompt whose hidden states before it are `h`.
    pub fn decide(&self, layer: usize, h: &[f32], tokens: usize) -> Result<LayerAction> {
        let z = self.logits(layer, h, tokens)?;
        LayerAction::from_code(argmax(&z) as u32)
    }
}

/// The model's routing state: the plan of the current sequence, and the
/// routers that choose it per prompt when set.
pub(crate) struct Routing {
    pub plan: LayerPlan,
    pub source: PlanSource,
    pub routers: Option<Routers>,
}

impl Routing {
    pub fn plain(layers: usize) -> Self {
        Routing { plan: LayerPlan::plain(layers), source: PlanSource::Plain, routers: None }
    }

    pub fn report(&self) -> RoutingReport {
        RoutingReport::new(self.source, &self.plan, self.routers.as_ref().map_or(0.0, |r| r.bias))
    }
}
