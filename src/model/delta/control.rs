//! DeltaLLM on a loaded [`Model`]: the window fixed from the prompt, Θ per
//! layer (one copy, [`DeltaState::thresholds`], written to the GPU from
//! there), the calibration phase, switching the options, and the
//! statistics read back from the delta caches.

use super::{DeltaOptions, DeltaReport, DeltaState, calibrate_threshold, k_cache_bytes, keys_from_cache};
use super::{layer_stats, report, row_nnz};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::model::Model;
use crate::model::attention::{AttentionBlock, AttentionShape};
use crate::routing::LayerAction;

impl Model {
    /// Fix DeltaLLM's window for a prompt of `prompt_len` tokens (nothing
    /// without DeltaLLM); returns the target sparsity Θ must be calibrated
    /// for, if any.
    pub(in crate::model) fn fix_delta_window(&mut self, gpu: &Gpu, prompt_len: u32) -> Result<Option<f32>> {
        let (Some(state), Some(options)) = (&mut self.delta, &self.options.delta) else { return Ok(None) };
        state.prompt_len = prompt_len;
        state.window = options.window(prompt_len);
        for layer in &mut self.layers {
            for block in layer.blocks_mut() {
                if let Some(d) = &mut block.delta {
                    d.hybrid.set_window(gpu, state.window, options.sinks)?;
                }
            }
        }
        Ok(options.target_sparsity)
    }

    /// Write every layer's Θ from [`DeltaState::thresholds`] to its delta ops.
    fn write_thresholds(&mut self, gpu: &Gpu) -> Result<()> {
        let Some(state) = &self.delta else { return Ok(()) };
        for (layer, &theta) in self.layers.iter_mut().zip(&state.thresholds) {
            for block in layer.blocks_mut() {
                if let Some(d) = &mut block.delta {
                    d.set_theta(gpu, theta)?;
                }
            }
        }
        Ok(())
    }

    /// Θ = `theta` in every layer.
    pub(in crate::model) fn set_all_thresholds(&mut self, gpu: &Gpu, theta: f32) -> Result<()> {
        if let Some(state) = &mut self.delta {
            state.thresholds.iter_mut().for_each(|t| *t = theta);
        }
        self.write_thresholds(gpu)
    }

    /// The calibration phase: run `prompt` with Θ = 0, read each layer's
    /// keys back and choose its Θ for `target` delta sparsity; the position
    /// is back at 0 afterwards.
    pub(in crate::model) async fn calibrate_thresholds(
        &mut self,
        gpu: &Gpu,
        prompt: &[u32],
        target: f32,
    ) -> Result<()> {
        self.run_calibration_prefill(gpu, prompt)?;
        let mut thresholds = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let kv = &layer.attention.cache;
            let width = (kv.kv_heads * kv.head_dim) as usize;
            let k = if kv.full_keys() {
                keys_from_cache(
                    &gpu.read_async::<f32>(&kv.k).await?,
                    prompt.len(),
                    kv.kv_heads as usize,
                    kv.head_dim as usize,
                    kv.max_seq as usize,
                )
            } else {
                // Only deltas are kept: k̂ at Θ = 0 is k up to f16 rounding.
                let deltas = layer.attention.delta.as_ref().expect("a key ring comes with DeltaLLM");
                let mut k = deltas.cache.read_deltas_async(gpu, prompt.len() as u32).await?;
                for t in 1..prompt.len() {
                    let (done, row) = k.split_at_mut(t * width);
                    for (x, previous) in row[..width].iter_mut().zip(&done[(t - 1) * width..]) {
                        *x += previous;
                    }
                }
                k
            };
            thresholds.push(calibrate_threshold(&k, prompt.len(), width, target));
        }
        log::info!("DeltaLLM Θ per layer for {:.0} % delta sparsity: {thresholds:?}", 100.0 * target);
        if let Some(state) = &mut self.delta {
            state.thresholds = thresholds;
        }
        self.write_thresholds(gpu)?;
        self.position = 0;
        self.logit_rows = 0;
        Ok(())
    }

    /// Change DeltaLLM's knobs of a model loaded with [`crate::model::ModelOptions::delta`]
    /// (the delta caches are allocated at load); starts a new sequence.
    pub fn set_delta_options(&mut self, gpu: &Gpu, options: DeltaOptions) -> Result<()> {
        options.validate()?;
        if self.layers.iter().any(|l| l.attention.delta.is_none()) {
            return Err(Error::Invalid(
                "this model was loaded without DeltaLLM attention; load it with ModelOptions::delta set".into(),
            ));
        }
        let rows = self.options.prefill_chunk;
        let layout = options.key_ring(self.max_context, rows);
        let c = &self.config;
        if self.layers.first().is_some_and(|l| (l.attention.cache.sink_rows, l.attention.cache.ring_rows) != layout) {
            // The K cache keeps other rows now: rebuild every layer's attention.
            let shape = AttentionShape {
                heads: c.num_attention_heads as u32,
                kv_heads: c.num_key_value_heads as u32,
                head_dim: c.head_dim as u32,
                rows,
                max_context: self.max_context,
            };
            for (i, layer) in self.layers.iter_mut().enumerate() {
                let delta = Some((&options, options.threshold));
                layer.attention = AttentionBlock::new(gpu, &format!("layers.{i}"), shape, self.act.attention(), delta)?;
                layer.repeat = None;
            }
        }
        self.delta = Some(DeltaState::new(&options, self.layers.len()));
        self.options.delta = Some(options);
        let repeated: Vec<usize> =
            (0..self.layers.len()).filter(|&i| self.routing.plan.actions[i] == LayerAction::Repeat).collect();
        for i in repeated {
            self.ensure_repeat(gpu, i)?;
        }
        self.write_thresholds(gpu)?;
        self.reset();
        Ok(())
    }

    /// Fix Θ per layer (e.g. the ones a calibrated prompt chose, from
    /// [`Model::delta_thresholds`]) so later sequences skip calibration;
    /// starts a new sequence.
    pub fn set_delta_thresholds(&mut self, gpu: &Gpu, thresholds: &[f32]) -> Result<()> {
        let Some(state) = &mut self.delta else {
            return Err(Error::Invalid("this model was loaded without DeltaLLM attention".into()));
        };
        if thresholds.len() != self.layers.len() || thresholds.iter().any(|t| !t.is_finite() || *t < 0.0) {
            return Err(Error::Invalid(format!(
                "need {} finite, non-negative thresholds (one per layer), got {thresholds:?}",
                self.layers.len()
            )));
        }
        state.thresholds = thresholds.to_vec();
        if let Some(options) = &mut self.options.delta {
            options.target_sparsity = None;
        }
        self.write_thresholds(gpu)?;
        self.reset();
        Ok(())
    }

    /// Attend densely from now on, keeping the DeltaLLM caches of a model
    /// loaded with [`crate::model::ModelOptions::delta`] ([`Model::set_delta_options`]
    /// switches it back on); starts a new sequence. A model that kept only
    /// a ring of full keys gets its full K cache back first.
    pub fn use_dense_attention(&mut self, gpu: &Gpu) -> Result<()> {
        if let Some(options) = self.options.delta.clone() {
            // Θ = 0 keeps every full key and attends with the dense kernel.
            let dense = DeltaOptions { threshold: 0.0, target_sparsity: None, ..options };
            self.set_delta_options(gpu, dense)?;
        }
        self.delta = None;
        self.options.delta = None;
        self.reset();
        Ok(())
    }

    /// Post-RoPE keys of layer `layer` for the positions so far,
    /// `[position][kv_heads · head_dim]` (read back from its KV cache; for
    /// tests and statistics).
    pub async fn layer_keys_async(&self, gpu: &Gpu, layer: usize) -> Result<Vec<f32>> {
        let kv = &self.layers.get(layer).ok_or_else(|| Error::Invalid(format!("no layer {layer}")))?.attention.cache;
        if !kv.full_keys() {
            return Err(Error::Invalid(
                "this model keeps keys outside the window only as compressed deltas; load it with \
                 DeltaOptions::keep_full_keys to read every key back"
                    .into(),
            ));
        }
        Ok(keys_from_cache(
            &gpu.read_async::<f32>(&kv.k).await?,
            self.position as usize,
            kv.kv_heads as usize,
            kv.head_dim as usize,
            kv.max_seq as usize,
        ))
    }

    /// Blocking form of [`Model::layer_keys_async`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn layer_keys(&self, gpu: &Gpu, layer: usize) -> Result<Vec<f32>> {
        pollster::block_on(self.layer_keys_async(gpu, layer))
    }

    /// Θ of each layer for the current sequence (`None` without DeltaLLM).
    pub fn delta_thresholds(&self) -> Option<&[f32]> {
        self.delta.as_ref().map(|d| d.thresholds.as_slice())
    }

    /// The window fixed from the current prompt (`None` without DeltaLLM).
    pub fn delta_window(&self) -> Option<u32> {
        self.delta.as_ref().map(|d| d.window)
    }

    /// DeltaLLM statistics of the sequence so far (docs/DESIGN.md §2.4), counted on
    /// the CPU from the delta masks read back; `None` without DeltaLLM.
    pub async fn delta_stats_async(&self, gpu: &Gpu) -> Result<Option<DeltaReport>> {
        let (Some(state), Some(options)) = (&self.delta, &self.options.delta) else { return Ok(None) };
        let positions = self.position;
        let mut layers = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            // A skipped layer built no delta rows this sequence; a repeated
            // layer counts its first pass only.
            if self.routing.plan.actions[i] == LayerAction::Skip {
                continue;
            }
            let Some(d) = &layer.attention.delta else { continue };
            let cache = &d.cache;
            let nnz = row_nnz(
                &gpu.read_async::<u32>(&cache.rows).await?,
                cache.kv_heads as usize,
                cache.max_seq as usize,
                cache.mask_words() as usize,
                positions as usize,
            );
            let used: u64 = cache.read_used_async(gpu).await?.iter().map(|&w| w as u64).sum();
            let k_cache = k_cache_bytes(&layer.attention.cache, cache, positions, used);
            layers.push(layer_stats(
                i,
                state.thresholds[i],
                &nnz,
                cache.kv_heads as usize,
                cache.head_dim,
                options,
                state,
                positions,
                k_cache,
            ));
        }
        Ok(Some(report(options, state, positions, layers)))
    }

    /// Blocking form of [`Model::delta_stats_async`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn delta_stats(&self, gpu: &Gpu) -> Result<Option<DeltaReport>> {
        pollster::block_on(self.delta_stats_async(gpu))
    }
}
