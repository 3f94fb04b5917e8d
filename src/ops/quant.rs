//! GGUF block-quantized linears on the GPU (`shaders/quantize_q8.wgsl`,
//! `shaders/matmul_q.wgsl`), and the embedding gather from the same blocks
//! (`shaders/embedding_q.wgsl`); CPU twin [`crate::cpu::quant`].
//!
//! Like a BitNet linear, a Q4_0/Q4_1/Q8_0 linear is two ops: [`QuantizeQ8`]
//! rounds f32 activations to int8 blocks of 32 ([`Q8Activations`], shared
//! by every linear reading the same input), and [`QuantMatmul`] multiplies
//! them by a [`QuantWeight`] with exact i32 block sums. This is llama.cpp's
//! arithmetic, and reads 4.5 to 8.5 bits per weight instead of 32.
//!
//! GPU layouts (the shader headers have the details):
//! - weights: per chunk of rows, u32 `[K/32 · words_per_block][rows]` of the
//!   blocks' `qs` bytes, row-interleaved, plus f32 `d` (and `m`) per block
//!   ([`crate::format::blocks::pack_gpu`]);
//! - activations: u32 `[rows][K/4]` of int8, `x_scales` vec2<f32>
//!   `[rows][K/32]` of (d, s), `x_sum` i32 `[rows][K/32]`.
//!
//! Why chunks: as for [`super::matmul::DenseWeight`], one storage binding may
//! hold only `gpu.max_binding_bytes()`; a weight is split along its rows and
//! each chunk's dispatch writes its own columns of the output.

use super::check_len;
use crate::error::{Error, Result};
use crate::format::blocks::{BLOCK, BlockFormat, check_blocks, pack_gpu};
use crate::gpu::{Dispatch, Gpu, GpuBuffer, KernelKey};

/// Output rows per workgroup of both entry points (`WG * ROWS` in the shader).
const ROWS_PER_WORKGROUP: u32 = 64 * 4;
/// Tokens per invocation of the `gemm` entry point (`TOKENS` in the shader).
const GEMM_TOKENS_PER_INVOCATION: u32 = 4;
/// Blocks quantized per workgroup (`WG` in quantize_q8.wgsl).
const QUANTIZE_BLOCKS_PER_WORKGROUP: u32 = 64;

fn block_defines(key: KernelKey, format: BlockFormat) -> KernelKey {
    key.define_if(format != BlockFormat::Q8_0, "Q4")
        .define_if(format == BlockFormat::Q4_0, "Q4_0")
        .define_if(format == BlockFormat::Q4_1, "Q4_1")
}

/// Rows `first_row .. first_row + rows` of a [`QuantWeight`].
#[derive(Clone, Debug)]
pub struct QuantChunk {
    /// u32 `[K/32 · words_per_block][rows]`.
    pub qs: GpuBuffer,
    /// f32 `[K/32][rows]` of `d`, or `[K/32][rows][2]` of `(d, m)` for Q4_1.
    pub scales: GpuBuffer,
    pub first_row: u32,
    pub rows: u32,
}

/// A `[rows][cols]` matrix of GGUF blocks on the GPU (a linear's
/// `[out_features][in_features]`), split along the rows to fit the binding limit.
#[derive(Clone, Debug)]
pub struct QuantWeight {
    pub label: String,
    pub format: BlockFormat,
    pub rows: u32,
    pub cols: u32,
    pub chunks: Vec<QuantChunk>,
}

impl QuantWeight {
    /// Upload `blocks`, the tensor's bytes as the GGUF file stores them (row-major blocks).
    pub fn upload(gpu: &Gpu, label: &str, format: BlockFormat, blocks: &[u8], rows: u32, cols: u32) -> Result<Self> {
        Self::upload_with_chunk_rows(gpu, label, format, blocks, rows, cols, None)
    }

    /// [`QuantWeight::upload`] with at most `chunk_rows` rows per chunk
    /// (`None`: as many as fit one binding).
    pub fn upload_with_chunk_rows(
        gpu: &Gpu,
        label: &str,
        format: BlockFormat,
        blocks: &[u8],
        rows: u32,
        cols: u32,
        chunk_rows: Option<u32>,
    ) -> Result<Self> {
        check_blocks("quant weight", format, blocks.len(), rows as usize, cols as usize).map_err(|e| match e {
            Error::Shape { op, message } => Error::Shape { op, message: format!("'{label}': {message}") },
            other => other,
        })?;
        // The qs words are the larger of the two buffers of a chunk.
        let row_bytes = (cols as usize / BLOCK * format.words_per_block() * 4) as u64;
        let fit = (gpu.max_binding_bytes() / row_bytes).min(u32::MAX as u64) as u32;
        let chunk_rows = match chunk_rows {
            Some(0) => return Err(Error::shape("quant weight", format!("'{label}': chunk_rows must be positive"))),
            Some(requested) => requested,
            None if fit == 0 => {
                return Err(Error::BufferTooLarge {
                    label: format!("{label} (one row)"),
                    size: row_bytes,
                    limit: gpu.max_binding_bytes(),
                    what: "storage binding (maxStorageBufferBindingSize)",
                    hint: " (a single weight row must fit one binding)",
                });
            }
            None => fit,
        };
        let file_row_bytes = format.row_bytes(cols as usize);
        let count = rows.div_ceil(chunk_rows);
        let mut chunks = Vec::with_capacity(count as usize);
        for index in 0..count {
            let first_row = index * chunk_rows;
            let chunk_len = chunk_rows.min(rows - first_row);
            let name = if count == 1 { label.to_string() } else { format!("{label}[chunk {index}]") };
            let bytes = &blocks[first_row as usize * file_row_bytes..(first_row + chunk_len) as usize * file_row_bytes];
            let packed = pack_gpu(format, bytes, chunk_len as usize, cols as usize)?;
            chunks.push(QuantChunk {
                qs: gpu.storage_from(&format!("{name}.qs"), &packed.qs)?,
                scales: gpu.storage_from(&format!("{name}.scales"), &packed.scales)?,
                first_row,
                rows: chunk_len,
            });
        }
        Ok(QuantWeight { label: label.to_string(), format, rows, cols, chunks })
    }

    /// Bytes on the GPU, all chunks together.
    pub fn bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.qs.size + c.scales.size).sum()
    }
}

/// Activations quantized to Q8 blocks for up to `max_rows` tokens of `k`
/// features, written by [`QuantizeQ8`] and read by [`QuantMatmul`].
pub struct Q8Activations {
    /// u32 `[max_rows][k/4]`, four int8 per word.
    pub x_q: GpuBuffer,
    /// vec2<f32> `[max_rows][k/32]`: `(d, s)`, both f16-rounded.
    pub x_scales: GpuBuffer,
    /// i32 `[max_rows][k/32]`: each block's sum of q.
    pub x_sum: GpuBuffer,
    pub max_rows: u32,
    pub k: u32,
}

impl Q8Activations {
    pub fn new(gpu: &Gpu, label: &str, max_rows: u32, k: u32) -> Result<Self> {
        if max_rows == 0 || k == 0 || !k.is_multiple_of(BLOCK as u32) {
            return Err(Error::shape(
                "q8 activations",
                format!("'{label}' is {max_rows}×{k}; both must be positive and k a multiple of {BLOCK}"),
            ));
        }
        let blocks = max_rows as u64 * (k / BLOCK as u32) as u64;
        Ok(Q8Activations {
            x_q: gpu.storage(&format!("{label}.x_q"), max_rows as u64 * k as u64)?,
            x_scales: gpu.storage(&format!("{label}.x_scales"), blocks * 8)?,
            x_sum: gpu.storage(&format!("{label}.x_sum"), blocks * 4)?,
            max_rows,
            k,
        })
    }

    /// Blocks per token row.
    pub fn blocks(&self) -> u32 {
        self.k / BLOCK as u32
    }
}

gpu_params! { QuantizeParams { rows: u32, blocks: u32, _pad: [u32; 2] } }

/// Quantize f32 `x` `[rows][k]` into a [`Q8Activations`].
pub struct QuantizeQ8 {
    pub dispatch: Dispatch,
    params: GpuBuffer,
    blocks: u32,
    max_rows: u32,
}

impl QuantizeQ8 {
    /// Build for up to `act.max_rows` rows; starts with all of them.
    pub fn new(gpu: &Gpu, x: &GpuBuffer, act: &Q8Activations) -> Result<Self> {
        let (max_rows, blocks) = (act.max_rows, act.blocks());
        check_len("quantize_q8", x, max_rows as u64 * act.k as u64, 4)?;
        check_len("quantize_q8", &act.x_q, max_rows as u64 * act.k as u64 / 4, 4)?;
        check_len("quantize_q8", &act.x_scales, max_rows as u64 * blocks as u64, 8)?;
        check_len("quantize_q8", &act.x_sum, max_rows as u64 * blocks as u64, 4)?;
        let params =
            gpu.uniform_from("quantize_q8.params", &QuantizeParams { rows: max_rows, blocks, _pad: [0; 2] })?;
        let dispatch = gpu.dispatch(
            "quantize_q8",
            &KernelKey::new("quantize_q8", "main"),
            &[&params, x, &act.x_q, &act.x_scales, &act.x_sum],
            [1, 1, 1],
        )?;
        let mut op = QuantizeQ8 { dispatch, params, blocks, max_rows };
        op.set_rows(gpu, max_rows)?;
        Ok(op)
    }

    /// Quantize `rows` rows in the next submit (no allocation).
    pub fn set_rows(&mut self, gpu: &Gpu, rows: u32) -> Result<()> {
        if rows > self.max_rows {
            return Err(Error::shape("quantize_q8", format!("{rows} rows > {} allocated", self.max_rows)));
        }
        let p = QuantizeParams { rows, blocks: self.blocks, _pad: [0; 2] };
        gpu.write(&self.params, 0, bytemuck::bytes_of(&p));
        self.dispatch.set_workgroups(gpu.grid((rows * self.blocks).div_ceil(QUANTIZE_BLOCKS_PER_WORKGROUP)));
        Ok(())
    }
}

gpu_params! { MatmulParams { rows: u32, n: u32, blocks: u32, out_offset: u32, out_stride: u32, _pad: [u32; 3] } }

/// `out[t] = x_q[t] · weightᵀ` with llama.cpp's block arithmetic for `rows`
/// tokens: f32 `[rows][n]`. One dispatch per weight chunk; one token runs
/// the `gemv` entry point, more run `gemm`.
pub struct QuantMatmul {
    gemv: Vec<Dispatch>,
    gemm: Vec<Dispatch>,
    params: Vec<(MatmulParams, GpuBuffer)>,
    max_rows: u32,
    rows: u32,
    /// Bytes of the weight's blocks and scales, all chunks.
    weight_size: u64,
}

impl QuantMatmul {
    /// Build for up to `act.max_rows` tokens; starts with all of them.
    pub fn new(gpu: &Gpu, act: &Q8Activations, weight: &QuantWeight, out: &GpuBuffer) -> Result<Self> {
        const OP: &str = "matmul_q";
        if act.k != weight.cols {
            return Err(Error::shape(
                OP,
                format!("activations have {} features but weight '{}' expects {}", act.k, weight.label, weight.cols),
            ));
        }
        let blocks = act.blocks();
        check_len(OP, &act.x_q, act.max_rows as u64 * act.k as u64 / 4, 4)?;
        check_len(OP, &act.x_scales, act.max_rows as u64 * blocks as u64, 8)?;
        check_len(OP, &act.x_sum, act.max_rows as u64 * blocks as u64, 4)?;
        check_len(OP, out, act.max_rows as u64 * weight.rows as u64, 4)?;
        let format = weight.format;
        let key = |entry| block_defines(KernelKey::new("matmul_q", entry), format);
        let scale_words = if format.has_min() { 2 } else { 1 };
        let mut op = QuantMatmul {
            gemv: Vec::new(),
            gemm: Vec::new(),
            params: Vec::new(),
            max_rows: act.max_rows,
            rows: 0,
            weight_size: weight.bytes(),
        };
        let mut covered = 0;
        for (index, chunk) in weight.chunks.iter().enumerate() {
            if chunk.first_row != covered || chunk.rows == 0 {
                return Err(Error::shape(OP, format!("weight '{}' has a gap in its chunks", weight.label)));
            }
            covered += chunk.rows;
            check_len(OP, &chunk.qs, blocks as u64 * format.words_per_block() as u64 * chunk.rows as u64, 4)?;
            check_len(OP, &chunk.scales, blocks as u64 * chunk.rows as u64 * scale_words, 4)?;
            let params = MatmulParams {
                rows: act.max_rows,
                n: chunk.rows,
                blocks,
                out_offset: chunk.first_row,
                out_stride: weight.rows,
                _pad: [0; 3],
            };
            let buffer = gpu.uniform_from(&format!("{}.params[{index}]", weight.label), &params)?;
            let mut buffers = vec![&buffer, &act.x_q, &act.x_scales];
            if format == BlockFormat::Q4_0 {
                buffers.push(&act.x_sum);
            }
            buffers.extend([&chunk.qs, &chunk.scales, out]);
            let label = |entry| format!("matmul_q {entry} {}[{index}]", weight.label);
            op.gemv.push(gpu.dispatch(&label("gemv"), &key("gemv"), &buffers, [1, 1, 1])?);
            op.gemm.push(gpu.dispatch(&label("gemm"), &key("gemm"), &buffers, [1, 1, 1])?);
            op.params.push((params, buffer));
        }
        if covered != weight.rows {
            return Err(Error::shape(
                OP,
                format!("weight '{}' chunks cover {covered} of {} rows", weight.label, weight.rows),
            ));
        }
        op.set_rows(gpu, act.max_rows)?;
        Ok(op)
    }

    /// Multiply `rows` tokens in the next submit (no allocation).
    pub fn set_rows(&mut self, gpu: &Gpu, rows: u32) -> Result<()> {
        if rows == 0 || rows > self.max_rows {
            return Err(Error::shape("matmul_q", format!("{rows} rows; 1 to {} allowed", self.max_rows)));
        }
        for (index, (params, buffer)) in self.params.iter_mut().enumerate() {
            params.rows = rows;
            gpu.write(buffer, 0, bytemuck::bytes_of(params));
            let row_blocks = params.n.div_ceil(ROWS_PER_WORKGROUP);
            self.gemv[index].set_workgroups(gpu.grid(row_blocks));
            self.gemm[index].set_workgroups(gpu.grid(row_blocks * rows.div_ceil(GEMM_TOKENS_PER_INVOCATION)));
        }
        self.rows = rows;
        Ok(())
    }

    /// The dispatches for the current number of rows, one per chunk: `gemv` for one token.
    pub fn dispatches(&self) -> &[Dispatch] {
        if self.rows == 1 { &self.gemv } else { &self.gemm }
    }

    /// Weight bytes a step reads: every chunk's blocks and scales once.
    pub fn weight_bytes(&self, _rows: u32) -> u64 {
        self.weight_size
    }

    /// Record and submit on its own (tests, benchmarks).
    pub fn run(&self, gpu: &Gpu) -> Result<()> {
        let dispatches: Vec<&Dispatch> = self.dispatches().iter().collect();
        gpu.run("matmul_q", &dispatches)
    }
}

gpu_params! {
    GatherParams {
        tokens: u32, blocks: u32, first_row: u32, chunk_rows: u32, vocab: u32, owns_invalid: u32, invalid_value: f32,
        _pad: u32,
    }
}

/// `out[t] = dequantize(table[ids[t]])`: the embedding gather from a table
/// of GGUF blocks ([`QuantWeight`], `[vocab][dim]`), so a tied table serves
/// the lm_head and the embedding from one copy. One dispatch per chunk; an
/// id past the vocabulary gives a NaN row (see `shaders/embedding_q.wgsl`).
pub struct QuantEmbedding {
    dispatches: Vec<Dispatch>,
    params: Vec<(GatherParams, GpuBuffer)>,
    max_tokens: u32,
    /// Bytes of one table row's blocks and scales.
    row_size: u64,
}

impl QuantEmbedding {
    /// Build for up to `max_tokens` ids (u32 `[max_tokens]`) and `out` f32 `[max_tokens][dim]`.
    pub fn new(gpu: &Gpu, table: &QuantWeight, ids: &GpuBuffer, out: &GpuBuffer, max_tokens: u32) -> Result<Self> {
        const OP: &str = "embedding_q";
        if max_tokens == 0 {
            return Err(Error::shape(OP, "max_tokens must be positive"));
        }
        check_len(OP, ids, max_tokens as u64, 4)?;
        check_len(OP, out, max_tokens as u64 * table.cols as u64, 4)?;
        let key = block_defines(KernelKey::new("embedding_q", "main"), table.format);
        let blocks = table.cols / BLOCK as u32;
        let row_size = table.bytes() / table.rows as u64;
        let mut op = QuantEmbedding { dispatches: Vec::new(), params: Vec::new(), max_tokens, row_size };
        let mut covered = 0;
        for (index, chunk) in table.chunks.iter().enumerate() {
            if chunk.first_row != covered || chunk.rows == 0 {
                return Err(Error::shape(OP, format!("table '{}' has a gap in its chunks", table.label)));
            }
            covered += chunk.rows;
            let params = GatherParams {
                tokens: max_tokens,
                blocks,
                first_row: chunk.first_row,
                chunk_rows: chunk.rows,
                vocab: table.rows,
                owns_invalid: (index == 0) as u32,
                invalid_value: f32::NAN,
                _pad: 0,
            };
            let buffer = gpu.uniform_from(&format!("{}.gather params[{index}]", table.label), &params)?;
            let label = format!("embedding_q {}[{index}]", table.label);
            let buffers = [&buffer, ids, &chunk.qs, &chunk.scales, out];
            op.dispatches.push(gpu.dispatch(&label, &key, &buffers, gpu.grid(max_tokens))?);
            op.params.push((params, buffer));
        }
        if covered != table.rows {
            return Err(Error::shape(
                OP,
                format!("table '{}' chunks cover {covered} of {} rows", table.label, table.rows),
            ));
        }
        Ok(op)
    }

    /// Gather `tokens` ids in the next submit (no allocation).
    pub fn set_rows(&mut self, gpu: &Gpu, tokens: u32) -> Result<()> {
        if tokens > self.max_tokens {
            return Err(Error::shape("embedding_q", format!("{tokens} tokens > {} allocated", self.max_tokens)));
        }
        for (index, (params, buffer)) in self.params.iter_mut().enumerate() {
            params.tokens = tokens;
            gpu.write(buffer, 0, bytemuck::bytes_of(params));
            self.dispatches[index].set_workgroups(gpu.grid(tokens));
        }
        Ok(())
    }

    /// One dispatch per chunk.
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// Weight bytes a gather of `tokens` ids reads: one table row each.
    pub fn weight_bytes(&self, tokens: u32) -> u64 {
        self.row_size * tokens as u64
    }

    /// Record and submit on its own (tests).
    pub fn run(&self, gpu: &Gpu) -> Result<()> {
        let dispatches: Vec<&Dispatch> = self.dispatches.iter().collect();
        gpu.run("embedding_q", &dispatches)
    }
}
