//! What a user asks of the engine, as the CLI's flags and the web API's
//! request fields give it, and the one mapping from there to the engine's
//! options. Both front ends fill these structs and nothing else, so a
//! default or a rule (when DeltaLLM is on, when sampling replaces greedy
//! decoding) is decided here once:
//!
//! - sampling is greedy unless a positive temperature is given (or the web's
//!   `greedy: false`); when it samples, it keeps the top 40 tokens and the
//!   top 0.95 of the probability ([`SamplingSettings::default`]);
//! - DeltaLLM is on as soon as any of its knobs is given; the knobs left
//!   out take [`DeltaOptions::for_architecture`]'s values.

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::loader::config::Architecture;
use crate::model::{DeltaOptions, DeltaStage, LayerPlan, Model, ModelOptions, Routers};
use crate::sampler::SamplerConfig;
use std::path::PathBuf;

/// Tokens kept when sampling (`--top-k`, `topK`).
pub const DEFAULT_TOP_K: usize = 40;
/// Probability mass kept when sampling (`--top-p`, `topP`).
pub const DEFAULT_TOP_P: f32 = 0.95;
/// The temperature of the web's `greedy: false` without a `temperature`.
pub const DEFAULT_TEMPERATURE: f32 = 0.8;

/// How to choose each next token. `Default` is greedy decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingSettings {
    /// `Some(true)`: greedy whatever the temperature; `Some(false)`: sample,
    /// at [`DEFAULT_TEMPERATURE`] when no temperature is given; `None`:
    /// greedy unless a positive temperature is given.
    pub greedy: Option<bool>,
    /// Softmax temperature; 0 is greedy.
    pub temperature: Option<f32>,
    /// Sample only among the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Sample only among the smallest set of tokens whose probability reaches this.
    pub top_p: f32,
    /// Above 1 makes tokens already in the prompt or output less likely (1 = off).
    pub repetition_penalty: f32,
    /// The same seed gives the same tokens.
    pub seed: u64,
}

impl Default for SamplingSettings {
    fn default() -> Self {
        SamplingSettings {
            greedy: None,
            temperature: None,
            top_k: DEFAULT_TOP_K,
            top_p: DEFAULT_TOP_P,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl SamplingSettings {
    pub fn sampler(&self) -> SamplerConfig {
        let temperature = match self.greedy {
            Some(true) => 0.0,
            Some(false) => self.temperature.unwrap_or(DEFAULT_TEMPERATURE),
            None => self.temperature.unwrap_or(0.0),
        };
        SamplerConfig {
            temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
        }
    }
}

/// DeltaLLM attention (docs/DESIGN.md §2): off unless a knob is given; then the
/// knobs left out take their defaults.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeltaSettings {
    /// Θ of the delta-key rule (0 = dense attention, through the DeltaLLM kernels).
    pub threshold: Option<f32>,
    /// Calibrate Θ per layer on the prompt so this fraction of the key deltas is zero.
    pub target_sparsity: Option<f32>,
    /// W_min, the smallest local window of exact keys.
    pub window: Option<u32>,
    /// The window grows with the prompt: W = max(W_min, round(S · prompt length)).
    pub window_scale: Option<f32>,
    /// Sink tokens at the start, always scored exactly.
    pub sinks: Option<u32>,
    /// Hybrid attention in the prompt only, or in decode steps too.
    pub stage: Option<DeltaStage>,
}

impl DeltaSettings {
    /// Any knob given turns DeltaLLM on.
    pub fn enabled(&self) -> bool {
        self.threshold.is_some()
            || self.target_sparsity.is_some()
            || self.window.is_some()
            || self.window_scale.is_some()
            || self.sinks.is_some()
            || self.stage.is_some()
    }

    /// The options for a model of `architecture`, checked; `None` when off.
    pub fn options(&self, architecture: Architecture) -> Result<Option<DeltaOptions>> {
        if !self.enabled() {
            return Ok(None);
        }
        let defaults = DeltaOptions::for_architecture(architecture);
        let options = DeltaOptions {
            threshold: self.threshold.unwrap_or(defaults.threshold),
            target_sparsity: self.target_sparsity,
            window_min: self.window.unwrap_or(defaults.window_min),
            window_scale: self.window_scale.unwrap_or(defaults.window_scale),
            sinks: self.sinks.unwrap_or(defaults.sinks),
            stage: self.stage.unwrap_or(defaults.stage),
            ..defaults
        };
        options.validate()?;
        Ok(Some(options))
    }
}

/// A generation's sampling and DeltaLLM knobs together (the web API's
/// request; the CLI sets DeltaLLM at load instead, [`ModelSettings`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationSettings {
    pub sampling: SamplingSettings,
    pub delta: DeltaSettings,
}

impl GenerationSettings {
    /// The sampler and DeltaLLM's options (`None`: dense attention) for a
    /// model of `architecture`.
    pub fn resolve(&self, architecture: Architecture) -> Result<(SamplerConfig, Option<DeltaOptions>)> {
        Ok((self.sampling.sampler(), self.delta.options(architecture)?))
    }
}

/// Dynamic layer routing (Dr.LLM): a fixed plan or routers that read the prompt.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoutingSettings {
    /// One action per layer as text, `1,1,0,2,…` ([`LayerPlan::parse`]).
    pub layer_plan: Option<String>,
    /// Router weights (safetensors); they choose each prompt's plan.
    pub routers: Option<PathBuf>,
    /// Added to the routers' averaged logits as x·[+1 skip, 0 execute, −1 repeat] (default 0).
    pub route_bias: Option<f32>,
}

impl RoutingSettings {
    /// The parsed plan, `None` when none was given.
    pub fn plan(&self) -> Result<Option<LayerPlan>> {
        self.layer_plan.as_deref().map(LayerPlan::parse).transpose()
    }

    /// Set the plan or the routers on a loaded model.
    pub fn apply(&self, gpu: &Gpu, model: &mut Model) -> Result<()> {
        if let Some(plan) = self.plan()? {
            model.set_layer_plan(gpu, plan)?;
        }
        if let Some(path) = &self.routers {
            let c = &model.config;
            let mut routers = Routers::load(path, c.num_hidden_layers, c.hidden_size)?;
            routers.bias = self.route_bias.unwrap_or(0.0);
            if !routers.bias.is_finite() {
                return Err(Error::Invalid(format!("--route-bias must be a finite number, got {}", routers.bias)));
            }
            model.set_routers(Some(routers))?;
        }
        Ok(())
    }
}

/// How to size and set up a model at load.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSettings {
    /// KV-cache length in tokens (0 = the model's maximum, at most 4096).
    pub context: u32,
    /// Tokens per prefill step.
    pub prefill_chunk: u32,
    pub delta: DeltaSettings,
    pub routing: RoutingSettings,
}

impl ModelSettings {
    /// Check what can be checked before the (slow) load: DeltaLLM's values
    /// and the layer plan.
    pub fn validate(&self) -> Result<()> {
        // The architecture changes only Θ's default, which is always valid.
        self.delta.options(Architecture::Llama)?;
        self.routing.plan()?;
        Ok(())
    }

    /// The options to load a model of `architecture` with.
    pub fn model_options(&self, architecture: Architecture, all_logits: bool) -> Result<ModelOptions> {
        Ok(ModelOptions {
            max_context: self.context,
            prefill_chunk: self.prefill_chunk,
            all_logits,
            delta: self.delta.options(architecture)?,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_unless_a_temperature_is_given() {
        let greedy = SamplingSettings::default().sampler();
        assert_eq!(greedy.temperature, 0.0);
        assert_eq!((greedy.top_k, greedy.top_p), (DEFAULT_TOP_K, DEFAULT_TOP_P));
        let sampled = SamplingSettings { temperature: Some(0.7), ..Default::default() };
        assert_eq!(sampled.sampler().temperature, 0.7);
        let forced = SamplingSettings { greedy: Some(true), temperature: Some(0.7), ..Default::default() };
        assert_eq!(forced.sampler().temperature, 0.0);
        let asked = SamplingSettings { greedy: Some(false), ..Default::default() };
        assert_eq!(asked.sampler().temperature, DEFAULT_TEMPERATURE);
    }

    #[test]
    fn any_delta_knob_turns_deltallm_on_with_the_other_defaults() {
        assert_eq!(DeltaSettings::default().options(Architecture::Llama).unwrap(), None);
        let window = DeltaSettings { window: Some(4), ..Default::default() };
        let options = window.options(Architecture::BitNet).unwrap().unwrap();
        assert_eq!(options, DeltaOptions { window_min: 4, ..DeltaOptions::for_architecture(Architecture::BitNet) });
        let dense = DeltaSettings { threshold: Some(0.0), ..Default::default() };
        assert_eq!(dense.options(Architecture::Llama).unwrap().unwrap().threshold, 0.0);
        assert!(DeltaSettings { threshold: Some(-1.0), ..Default::default() }.options(Architecture::Llama).is_err());
    }
}
