//! A sequence's phases. The first forward after a reset is the prompt, and
//! before its prefill the model may run it in up to two extra phases, each a
//! named method here and a line of [`SequenceReport`]:
//!
//! 1. **routing** (only with [`Routers`]): the prompt runs one layer at a
//!    time with the residual stream read back before each layer, so each
//!    layer's router can choose skip / execute / repeat (`crate::routing`);
//! 2. **calibration** (only with a DeltaLLM target sparsity): a Θ = 0
//!    prefill whose keys are read back to choose Θ per layer
//!    (`delta/control.rs`);
//! 3. **prefill** of the prompt in steps of `prefill_chunk` tokens, with the
//!    plan and Θ fixed; then **decode**, one forward per call.
//!
//! The caches the first two phases fill are overwritten by the prefill, so
//! the sequence's logits and cache are those of a prefill with that plan and
//! Θ given up front.

use super::Model;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, GpuBuffer};
use crate::ops::Step;
use crate::routing::{LayerAction, LayerPlan, PlanSource, Routers, RoutingReport};
use serde::Serialize;

use super::attention::AttentionBlock;
use super::layer::Act;

/// A named phase of a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The prompt run layer by layer for the routers.
    Routing,
    /// The Θ = 0 prefill that calibrates Θ per layer.
    Calibration,
    /// The prompt's prefill.
    Prefill,
    /// The forwards after the prompt.
    Decode,
}

/// One phase as it ran: tokens through the model and GPU submits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PhaseRun {
    pub phase: Phase,
    pub tokens: u32,
    pub submits: u32,
}

/// The phases the current sequence has run, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SequenceReport {
    pub phases: Vec<PhaseRun>,
}

impl SequenceReport {
    fn record(&mut self, phase: Phase, tokens: u32, submits: u32) {
        match self.phases.last_mut() {
            Some(last) if last.phase == phase => {
                last.tokens += tokens;
                last.submits += submits;
            }
            _ => self.phases.push(PhaseRun { phase, tokens, submits }),
        }
    }

    /// How many times the prompt went through the model (1 without routing
    /// and calibration).
    pub fn prompt_passes(&self) -> usize {
        self.phases.iter().filter(|p| p.phase != Phase::Decode).count()
    }

    /// One line: `routing 12 tokens (60 submits) → calibration … → prefill … → decode …`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .phases
            .iter()
            .map(|p| {
                let name = format!("{:?}", p.phase).to_lowercase();
                format!("{name} {} tokens ({} submits)", p.tokens, p.submits)
            })
            .collect();
        format!("sequence: {}", parts.join(" → "))
    }
}

impl Model {
    /// Forget the sequence (the cache is overwritten from position 0).
    pub fn reset(&mut self) {
        self.position = 0;
        self.logit_rows = 0;
        self.sequence = SequenceReport::default();
        if let (Some(d), Some(options)) = (&mut self.delta, &self.options.delta) {
            // The next forward is a new prompt: it fixes the window (and Θ) again.
            d.prompt_len = 0;
            d.window = options.window_min;
        }
    }

    /// The phases the current sequence has run.
    pub fn sequence_report(&self) -> &SequenceReport {
        &self.sequence
    }

    /// Run `tokens` through the model after the tokens already cached, in
    /// steps of at most `prefill_chunk` tokens. Afterwards [`Model::logits`]
    /// holds the last step's logits.
    ///
    /// The first forward of a sequence (at position 0) is its prompt: its
    /// routing and calibration phases run first ([`Model::start_sequence`]).
    pub async fn forward_async(&mut self, gpu: &Gpu, tokens: &[u32]) -> Result<()> {
        self.check_tokens(tokens)?;
        let phase = if self.position == 0 {
            self.start_sequence(gpu, tokens).await?;
            Phase::Prefill
        } else {
            Phase::Decode
        };
        self.run_steps(gpu, tokens, phase)
    }

    /// `tokens` through the model in steps of at most `prefill_chunk`, recorded as `phase`.
    fn run_steps(&mut self, gpu: &Gpu, tokens: &[u32], phase: Phase) -> Result<()> {
        for chunk in tokens.chunks(self.options.prefill_chunk.max(1) as usize) {
            self.step(gpu, chunk)?;
            self.sequence.record(phase, chunk.len() as u32, 1);
        }
        Ok(())
    }

    /// Logits for every position of `tokens` from an empty cache
    /// (teacher forcing); needs `all_logits`.
    pub async fn forward_all_async(&mut self, gpu: &Gpu, tokens: &[u32]) -> Result<Vec<f32>> {
        if !self.options.all_logits {
            return Err(Error::Invalid("forward_all needs a model loaded with all_logits".into()));
        }
        self.reset();
        self.check_tokens(tokens)?;
        self.start_sequence(gpu, tokens).await?;
        let mut out = Vec::with_capacity(tokens.len() * self.config.vocab_size);
        for chunk in tokens.chunks(self.options.prefill_chunk.max(1) as usize) {
            self.step(gpu, chunk)?;
            self.sequence.record(Phase::Prefill, chunk.len() as u32, 1);
            out.extend(self.step_logits_async(gpu).await?);
        }
        Ok(out)
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::Invalid("forward needs at least one token".into()));
        }
        let end = self.position as u64 + tokens.len() as u64;
        if end > self.max_context as u64 {
            return Err(Error::Invalid(format!(
                "the sequence would be {end} tokens but the context holds {}; shorten the prompt, ask for fewer \
                 tokens, or load the model with a longer context (--context)",
                self.max_context
            )));
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// The per-sequence set-up before the prompt's prefill: DeltaLLM's
    /// context-aware window, the routing phase (with routers) and the
    /// calibration phase (with a target sparsity). Routing runs first, under
    /// Θ = 0 when Θ will be calibrated, so that Θ fits the routed layers.
    async fn start_sequence(&mut self, gpu: &Gpu, prompt: &[u32]) -> Result<()> {
        let target = self.fix_delta_window(gpu, prompt.len() as u32)?;
        if target.is_some() {
            self.set_all_thresholds(gpu, 0.0)?;
        }
        self.route_prompt(gpu, prompt).await?;
        if let Some(target) = target {
            self.calibrate_thresholds(gpu, prompt, target).await?;
        }
        Ok(())
    }

    /// Run the calibration prefill of `prompt` (Θ as set now).
    pub(super) fn run_calibration_prefill(&mut self, gpu: &Gpu, prompt: &[u32]) -> Result<()> {
        self.run_steps(gpu, prompt, Phase::Calibration)
    }

    /// Run every sequence from now on with `plan` (one action per layer;
    /// replaces any routers). Builds the second-pass attention blocks of
    /// repeated layers that have none yet, and starts a new sequence.
    pub fn set_layer_plan(&mut self, gpu: &Gpu, plan: LayerPlan) -> Result<()> {
        plan.check_layers(self.layers.len())?;
        for (i, &action) in plan.actions.iter().enumerate() {
            if action == LayerAction::Repeat {
                self.ensure_repeat(gpu, i)?;
            }
        }
        self.routing.source = if plan.is_plain() { PlanSource::Plain } else { PlanSource::Fixed };
        self.routing.plan = plan;
        self.routing.routers = None;
        self.reset();
        Ok(())
    }

    /// Let `routers` choose each prompt's plan (`None`: back to the plain
    /// model); starts a new sequence.
    pub fn set_routers(&mut self, routers: Option<Routers>) -> Result<()> {
        if let Some(r) = &routers {
            if r.layers.len() != self.layers.len() || r.hidden != self.config.hidden_size {
                return Err(Error::Invalid(format!(
                    "the routers are for {} layers of width {}, the model has {} layers of width {}",
                    r.layers.len(),
                    r.hidden,
                    self.layers.len(),
                    self.config.hidden_size
                )));
            }
            self.routing.source = PlanSource::Routers;
        } else {
            self.routing.source = PlanSource::Plain;
        }
        self.routing.plan = LayerPlan::plain(self.layers.len());
        self.routing.routers = routers;
        self.reset();
        Ok(())
    }

    /// The plan of the current sequence (chosen by the routers once its prompt ran).
    pub fn layer_plan(&self) -> &LayerPlan {
        &self.routing.plan
    }

    /// The plan of the current sequence, where it came from and the layers it saves.
    pub fn routing_report(&self) -> RoutingReport {
        self.routing.report()
    }

    /// Give layer `layer` the attention block of a second pass (its own
    /// cache, laid out like the first's) if it has none yet.
    pub(super) fn ensure_repeat(&mut self, gpu: &Gpu, layer: usize) -> Result<()> {
        if self.layers[layer].repeat.is_some() {
            return Ok(());
        }
        let delta =
            self.options.delta.as_ref().map(|d| (d, self.delta.as_ref().map_or(d.threshold, |s| s.thresholds[layer])));
        let heads = self.config.num_attention_heads as u32;
        let label = format!("layers.{layer}");
        let first = &self.layers[layer].attention;
        let block = AttentionBlock::repeat_of(
            gpu,
            &label,
            first,
            self.options.prefill_chunk,
            heads,
            self.act.attention(),
            delta,
        )?;
        self.layers[layer].repeat = Some(block);
        Ok(())
    }

    /// The routing phase: choose the plan of this prompt with the routers
    /// (nothing without them), leaving the position at 0.
    async fn route_prompt(&mut self, gpu: &Gpu, prompt: &[u32]) -> Result<()> {
        let Some(routers) = self.routing.routers.take() else { return Ok(()) };
        let result = self.route_prompt_with(gpu, prompt, &routers).await;
        self.routing.routers = Some(routers);
        self.routing.plan = LayerPlan { actions: result? };
        self.position = 0;
        self.logit_rows = 0;
        Ok(())
    }

    /// Run the prompt one layer at a time, keeping its residual stream on
    /// the CPU, and let each layer's router read it before the layer runs.
    async fn route_prompt_with(&mut self, gpu: &Gpu, prompt: &[u32], routers: &Routers) -> Result<Vec<LayerAction>> {
        let hidden = self.config.hidden_size;
        let chunk = self.options.prefill_chunk.max(1) as usize;
        async fn read_rows(gpu: &Gpu, buffer: &GpuBuffer, rows: usize, hidden: usize) -> Result<Vec<f32>> {
            let mut v: Vec<f32> = gpu.read_async(buffer).await?;
            v.truncate(rows * hidden);
            Ok(v)
        }
        let mut h = Vec::with_capacity(prompt.len() * hidden);
        for ids in prompt.chunks(chunk) {
            gpu.write(&self.act.ids, 0, bytemuck::cast_slice(ids));
            self.embedding.set_step(gpu, Step { rows: ids.len() as u32, pos0: 0 })?;
            let mut encoder = gpu.encoder("route embedding");
            let mut dispatches: Vec<&Dispatch> = Vec::new();
            self.embedding.dispatches(&mut dispatches);
            gpu.record(&mut encoder, "embedding", &dispatches);
            gpu.submit(encoder)?;
            self.sequence.record(Phase::Routing, 0, 1);
            h.extend(read_rows(gpu, self.act.get(Act::H), ids.len(), hidden).await?);
        }
        self.sequence.record(Phase::Routing, prompt.len() as u32, 0);
        let mut actions = Vec::with_capacity(self.layers.len());
        for i in 0..self.layers.len() {
            let action = routers.decide(i, &h, prompt.len())?;
            actions.push(action);
            if action == LayerAction::Repeat {
                self.ensure_repeat(gpu, i)?;
            }
            if action == LayerAction::Skip {
                continue;
            }
            for (c, ids) in prompt.chunks(chunk).enumerate() {
                let (pos0, rows) = (c * chunk, ids.len());
                let range = pos0 * hidden..(pos0 + rows) * hidden;
                gpu.write(self.act.get(Act::H), 0, bytemuck::cast_slice(&h[range.clone()]));
                self.set_layer_step(gpu, i, Step { rows: rows as u32, pos0: pos0 as u32 })?;
                let mut encoder = gpu.encoder("route layer");
                let mut dispatches: Vec<&Dispatch> = Vec::new();
                self.layers[i].dispatches(action, &mut dispatches);
                gpu.record(&mut encoder, "layer", &dispatches);
                gpu.submit(encoder)?;
                self.sequence.record(Phase::Routing, 0, 1);
                h[range].copy_from_slice(&read_rows(gpu, self.act.get(Act::H), rows, hidden).await?);
            }
        }
        log::info!("routers chose the layer plan {}", LayerPlan { actions: actions.clone() });
        Ok(actions)
    }
}
