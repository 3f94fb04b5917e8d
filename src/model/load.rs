//! Building a [`Model`] from a [`WeightSource`], one part at a time.

use super::delta::DeltaState;
use super::layer::{Activations, LayerBuilder};
use super::linear::{LinearWeight, embedding_op, linear_op, quantize_op};
use super::sequence::SequenceReport;
use super::{Model, ModelOptions, arch};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::ops::rope::RopeTable;
use crate::ops::sampling::Argmax;
use crate::ops::{Op, RmsNorm};
use crate::routing::Routing;
use crate::weights::WeightSource;

impl Model {
    /// Build every op and upload the weights of `source` one part at a
    /// time (embedding, each layer, norm, head), dropping each part's host
    /// copy before asking for the next, and calling `progress(done, total)`
    /// after the embedding, each layer and the head. Between layers it lets
    /// the GPU settle (in a browser: the queue drains and the page can paint),
    /// so an out-of-memory error names the layer it happened in.
    pub async fn load_from(
        gpu: &Gpu,
        source: &dyn WeightSource,
        options: ModelOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let c = source.config().clone();
        c.validate()?;
        if let Some(d) = &options.delta {
            d.validate()?;
        }
        let max_context = match options.max_context {
            0 => (c.max_position_embeddings as u32).min(4096),
            n => n,
        };
        // A step never holds more tokens than the context.
        let mut options = options;
        // DeltaLLM's key build walks a step's rows in one loop of bounded length.
        let step_cap = if options.delta.is_some() { crate::ops::delta::MAX_STEP_ROWS } else { u32::MAX };
        options.prefill_chunk = options.prefill_chunk.clamp(1, max_context.min(step_cap));
        let rows = options.prefill_chunk;
        let logit_rows = if options.all_logits { rows } else { 1 };
        let native_quant = options.native_quant;
        let act = Activations::new(gpu, &c, rows, logit_rows, &source.formats(), native_quant)?;

        let rope_table = RopeTable::from_inv_freq(gpu, c.head_dim as u32, source.rope_inv_freq(), max_context)?;
        let embed_matrix = source.embed_tokens().await?;
        let embed = LinearWeight::upload(gpu, "embed_tokens", &embed_matrix, options.weight_chunk_rows, native_quant)?;
        drop(embed_matrix);
        let embedding = embedding_op(gpu, &embed, &act.ids, act.get(super::layer::Act::H), rows)?;
        let layer_count = source.layer_count();
        let upload_steps = layer_count + 2;
        gpu.settle("the upload of the embedding").await?;
        progress(1, upload_steps);

        let delta = options.delta.as_ref().map(|d| (d, d.threshold));
        let mut layers = Vec::with_capacity(layer_count);
        for i in 0..layer_count {
            // This layer's host copy lives until the end of the iteration only.
            let w = source.layer(i).await?;
            log::debug!("uploading layer {i}");
            let chunk_rows = options.weight_chunk_rows;
            let mut b =
                LayerBuilder::new(gpu, &c, &act, &rope_table, i, rows, max_context, chunk_rows, native_quant, delta);
            arch::build_layer(c.architecture, &mut b, &w)?;
            layers.push(b.finish()?);
            gpu.settle(&format!("the upload of layer {i}")).await?;
            progress(i + 2, upload_steps);
        }

        let final_norm_weight = gpu.storage_from("norm", &source.norm().await?)?;
        let final_in = if options.all_logits { act.get(super::layer::Act::H) } else { &act.last };
        let hidden = c.hidden_size as u32;
        let final_norm =
            RmsNorm::new(gpu, final_in, &final_norm_weight, &act.final_x, logit_rows, hidden, c.rms_norm_eps)?;
        let lm_head_weight = match source.lm_head().await? {
            Some(m) => LinearWeight::upload(gpu, "lm_head", &m, options.weight_chunk_rows, native_quant)?,
            None => embed,
        };
        let mut head: Vec<Box<dyn Op>> = vec![Box::new(final_norm)];
        if let Some(x8) = &act.x8_final {
            head.push(quantize_op(gpu, &act.final_x, x8)?);
        }
        head.push(linear_op(gpu, &lm_head_weight, &act.final_x, act.x8_final.as_ref(), &act.logits, logit_rows)?);
        let argmax = Argmax::new(gpu, &act.logits, &act.next_token, c.vocab_size as u32)?;
        gpu.settle("the upload of the output head").await?;
        progress(upload_steps, upload_steps);
        let delta = options.delta.as_ref().map(|d| DeltaState::new(d, layers.len()));
        let routing = Routing::plain(layers.len());
        Ok(Model {
            routing,
            delta,
            config: c,
            options,
            max_context,
            act,
            embedding,
            layers,
            head,
            argmax,
            _rope_table: rope_table,
            position: 0,
            logit_rows: 0,
            sequence: SequenceReport::default(),
            last_step_dispatches: 0,
        })
    }
}
