//! Embedding gather (`shaders/embedding.wgsl`): `out[t] = table[ids[t]]` as
//! f32; CPU twin [`crate::cpu::embedding`].
//!
//! The table is a [`DenseWeight`] `[vocab][dim]` in f32, f16 or bf16, split
//! along the vocabulary into chunks that each fit one binding; one dispatch
//! per chunk writes the tokens whose id falls in it. The same table can
//! serve as a tied lm_head through [`super::matmul::Matmul`].
//!
//! Ids usually live only on the GPU (the sampler writes them), so the
//! shader guards them: an id `>= vocab` reads nothing and its output row is
//! filled with NaN, which makes the bug visible downstream instead of
//! silently embedding another token. Host code that has the ids can reject
//! them first with [`Embedding::check_ids`].

use super::check_len;
use super::matmul::{DenseWeight, WeightFormat};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, GpuBuffer, KernelKey};

gpu_params! {
    Params {
        tokens: u32, dim: u32, row_words: u32, first_row: u32, chunk_rows: u32, vocab: u32, owns_invalid: u32,
        invalid_value: f32,
    }
}

/// `out[t][:] = table[ids[t]][:]` for up to `max_tokens` ids (u32) and an
/// f32 output `[tokens][dim]`.
pub struct Embedding {
    dispatches: Vec<Dispatch>,
    params: Vec<GpuBuffer>,
    /// (first row, rows) of each table chunk.
    chunks: Vec<(u32, u32)>,
    vocab: u32,
    dim: u32,
    row_words: u32,
    max_tokens: u32,
    /// Bytes of the table's chunks together.
    table_size: u64,
}

impl Embedding {
    /// Build for up to `max_tokens` ids (the buffers must hold that many);
    /// starts with `tokens = max_tokens`.
    pub fn new(gpu: &Gpu, table: &DenseWeight, ids: &GpuBuffer, out: &GpuBuffer, max_tokens: u32) -> Result<Self> {
        let (vocab, dim) = (table.rows, table.cols);
        if max_tokens == 0 {
            return Err(Error::shape("embedding", "max_tokens must be positive"));
        }
        check_len("embedding", ids, max_tokens as u64, 4)?;
        check_len("embedding", out, max_tokens as u64 * dim as u64, 4)?;
        let mut covered = 0;
        for chunk in &table.chunks {
            if chunk.first_row != covered || chunk.rows == 0 {
                return Err(Error::shape("embedding", format!("table '{}' has a gap in its chunks", table.label)));
            }
            check_len("embedding", &chunk.buffer, chunk.rows as u64 * table.row_words() as u64, 4)?;
            covered += chunk.rows;
        }
        if covered != vocab {
            return Err(Error::shape(
                "embedding",
                format!("table '{}' chunks cover {covered} of {vocab} rows", table.label),
            ));
        }
        let key = KernelKey::new("embedding", "main")
            .define_if(table.format != WeightFormat::F32, "PACKED")
            .define_if(table.format == WeightFormat::Bf16, "BF16");
        let mut op = Embedding {
            dispatches: Vec::new(),
            params: Vec::new(),
            chunks: table.chunks.iter().map(|c| (c.first_row, c.rows)).collect(),
            vocab,
            dim,
            row_words: table.row_words(),
            max_tokens,
            table_size: table.bytes(),
        };
        for (index, chunk) in table.chunks.iter().enumerate() {
            let params = gpu.uniform_from(
                &format!("{}.gather params[{index}]", table.label),
                &op.chunk_params(index, max_tokens),
            )?;
            let label = format!("embedding {}[{index}]", table.label);
            op.dispatches.push(gpu.dispatch(
                &label,
                &key,
                &[&params, ids, &chunk.buffer, out],
                gpu.grid(max_tokens),
            )?);
            op.params.push(params);
        }
        Ok(op)
    }

    /// Weight bytes a gather of `tokens` ids reads: one table row each.
    pub fn weight_bytes(&self, tokens: u32) -> u64 {
        self.table_size / self.vocab as u64 * tokens as u64
    }

    /// The dispatches to record, one per table chunk.
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// Record and submit on its own (tests).
    pub fn run(&self, gpu: &Gpu) -> Result<()> {
        let dispatches: Vec<&Dispatch> = self.dispatches.iter().collect();
        gpu.run("embedding", &dispatches)
    }

    /// Gather `tokens` ids in the next submit (no allocation).
    pub fn set_rows(&mut self, gpu: &Gpu, tokens: u32) -> Result<()> {
        if tokens > self.max_tokens {
            return Err(Error::shape("embedding", format!("{tokens} tokens > {} allocated", self.max_tokens)));
        }
        for index in 0..self.chunks.len() {
            gpu.write(&self.params[index], 0, bytemuck::bytes_of(&self.chunk_params(index, tokens)));
            self.dispatches[index].set_workgroups(gpu.grid(tokens));
        }
        Ok(())
    }

    /// Reject ids outside the vocabulary before they reach the GPU.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().position(|&id| id >= self.vocab) {
            Some(at) => Err(Error::Invalid(format!(
                "token id {} at position {at} is outside the vocabulary of {} tokens (wrong tokenizer for this model?)",
                ids[at], self.vocab
            ))),
            None => Ok(()),
        }
    }

    fn chunk_params(&self, index: usize, tokens: u32) -> Params {
        let (first_row, chunk_rows) = self.chunks[index];
        Params {
            tokens,
            dim: self.dim,
            row_words: self.row_words,
            first_row,
            chunk_rows,
            vocab: self.vocab,
            owns_invalid: (index == 0) as u32,
            invalid_value: f32::NAN,
        }
    }
}
