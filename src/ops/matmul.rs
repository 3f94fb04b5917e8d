//! Dense matmul `y = x · Wᵀ` (`shaders/matmul_dense.wgsl`, f32 or packed
//! 16-bit weights by define) for the unquantised linears and the lm_head,
//! and [`DenseWeight`], the row-chunked weight it shares with the embedding
//! gather; CPU twin [`crate::cpu::matmul`].
//!
//! Why chunks: one storage binding may hold only `gpu.max_binding_bytes()`
//! (128 MiB on the WebGPU baseline), while the tied lm_head of the 128256-token
//! vocabulary is 656 MB in 16-bit. A [`DenseWeight`] is therefore a list of
//! buffers, each holding whole consecutive rows (output features, or
//! vocabulary entries), and [`Matmul`] issues one dispatch per chunk, each
//! writing its own columns of `y`. Small weights are a single chunk.
//!
//! Precision: weights stay in the format they were uploaded in (f32, f16 or
//! bf16, no conversion), are widened to f32 in the shader and accumulated in
//! f32.

use super::check_len;
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, GpuBuffer, KernelKey};
use half::{bf16, f16};
use std::borrow::Cow;

/// How the elements of a [`DenseWeight`] are stored in its GPU words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightFormat {
    /// One f32 per u32 word.
    F32,
    /// IEEE binary16, two per word: element 2j in the low half, 2j + 1 in the
    /// high half; a row of odd length ends with a zero half.
    F16,
    /// bfloat16, packed like [`WeightFormat::F16`].
    Bf16,
}

impl WeightFormat {
    /// u32 words one stored row of `cols` elements takes.
    pub fn row_words(self, cols: u32) -> u32 {
        match self {
            WeightFormat::F32 => cols,
            WeightFormat::F16 | WeightFormat::Bf16 => cols.div_ceil(2),
        }
    }
}

/// Rows `first_row .. first_row + rows` of a [`DenseWeight`], in one buffer.
#[derive(Clone, Debug)]
pub struct WeightChunk {
    pub buffer: GpuBuffer,
    pub first_row: u32,
    pub rows: u32,
}

/// A row-major `[rows][cols]` matrix on the GPU, split along the rows into
/// chunks that each fit one storage binding. A linear's weight has
/// `rows = out_features, cols = in_features`; an embedding table has
/// `rows = vocab, cols = hidden`. The same value can feed both
/// [`Matmul`] and [`super::embedding::Embedding`] (tied embeddings); chunks
/// share their buffers when cloned.
#[derive(Clone, Debug)]
pub struct DenseWeight {
    pub label: String,
    pub format: WeightFormat,
    pub rows: u32,
    pub cols: u32,
    pub chunks: Vec<WeightChunk>,
}

impl DenseWeight {
    /// Upload f32 `data` `[rows][cols]`, split to fit the device's binding limit.
    pub fn upload_f32(gpu: &Gpu, label: &str, data: &[f32], rows: u32, cols: u32) -> Result<Self> {
        Self::upload_f32_with_chunk_rows(gpu, label, data, rows, cols, None)
    }

    /// Upload IEEE f16 `data` `[rows][cols]`, packed two per word.
    pub fn upload_f16(gpu: &Gpu, label: &str, data: &[f16], rows: u32, cols: u32) -> Result<Self> {
        Self::upload_f16_with_chunk_rows(gpu, label, data, rows, cols, None)
    }

    /// Upload bf16 `data` `[rows][cols]` as is (packed two per word), e.g. a
    /// checkpoint's bf16 embedding table; the shaders widen it exactly.
    pub fn upload_bf16(gpu: &Gpu, label: &str, data: &[bf16], rows: u32, cols: u32) -> Result<Self> {
        Self::upload_bf16_with_chunk_rows(gpu, label, data, rows, cols, None)
    }

    /// [`DenseWeight::upload_f32`] with at most `chunk_rows` rows per chunk
    /// (`None`: as many as fit one binding). Tests use it to split tiny weights;
    /// a chunk over the binding limit is an [`Error::BufferTooLarge`].
    pub fn upload_f32_with_chunk_rows(
        gpu: &Gpu,
        label: &str,
        data: &[f32],
        rows: u32,
        cols: u32,
        chunk_rows: Option<u32>,
    ) -> Result<Self> {
        check_data_len(label, data.len(), rows, cols)?;
        let cols_usize = cols as usize;
        Self::upload(gpu, label, WeightFormat::F32, rows, cols, chunk_rows, |first, count| {
            Cow::Borrowed(bytemuck::cast_slice(&data[first * cols_usize..(first + count) * cols_usize]))
        })
    }

    /// [`DenseWeight::upload_f16`] with at most `chunk_rows` rows per chunk.
    pub fn upload_f16_with_chunk_rows(
        gpu: &Gpu,
        label: &str,
        data: &[f16],
        rows: u32,
        cols: u32,
        chunk_rows: Option<u32>,
    ) -> Result<Self> {
        check_data_len(label, data.len(), rows, cols)?;
        let bits: &[u16] = bytemuck::cast_slice(data);
        Self::upload(gpu, label, WeightFormat::F16, rows, cols, chunk_rows, |first, count| {
            packed_rows_bytes(bits, cols as usize, first, count)
        })
    }

    /// [`DenseWeight::upload_bf16`] with at most `chunk_rows` rows per chunk.
    pub fn upload_bf16_with_chunk_rows(
        gpu: &Gpu,
        label: &str,
        data: &[bf16],
        rows: u32,
        cols: u32,
        chunk_rows: Option<u32>,
    ) -> Result<Self> {
        check_data_len(label, data.len(), rows, cols)?;
        let bits: &[u16] = bytemuck::cast_slice(data);
        Self::upload(gpu, label, WeightFormat::Bf16, rows, cols, chunk_rows, |first, count| {
            packed_rows_bytes(bits, cols as usize, first, count)
        })
    }

    /// The most rows of `cols` elements in `format` that fit one storage binding.
    pub fn max_chunk_rows(gpu: &Gpu, format: WeightFormat, cols: u32) -> u32 {
        let row_bytes = format.row_words(cols).max(1) as u64 * 4;
        (gpu.max_binding_bytes() / row_bytes).min(u32::MAX as u64) as u32
    }

    /// u32 words per stored row.
    pub fn row_words(&self) -> u32 {
        self.format.row_words(self.cols)
    }

    /// Bytes on the GPU, all chunks together.
    pub fn bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.buffer.size).sum()
    }

    /// Create the chunk buffers and fill each with `chunk_bytes(first_row, rows)`.
    fn upload<'a>(
        gpu: &Gpu,
        label: &str,
        format: WeightFormat,
        rows: u32,
        cols: u32,
        chunk_rows: Option<u32>,
        chunk_bytes: impl Fn(usize, usize) -> Cow<'a, [u8]>,
    ) -> Result<Self> {
        let fit = Self::max_chunk_rows(gpu, format, cols);
        let chunk_rows = match chunk_rows {
            Some(0) => {
                return Err(Error::shape("dense weight", format!("'{label}': chunk_rows must be positive")));
            }
            Some(requested) => requested,
            None if fit == 0 => {
                return Err(Error::BufferTooLarge {
                    label: format!("{label} (one row)"),
                    size: format.row_words(cols) as u64 * 4,
                    limit: gpu.max_binding_bytes(),
                    what: "storage binding (maxStorageBufferBindingSize)",
                    hint: " (a single weight row must fit one binding)",
                });
            }
            None => fit,
        };
        let count = rows.div_ceil(chunk_rows);
        let mut chunks = Vec::with_capacity(count as usize);
        for index in 0..count {
            let first_row = index * chunk_rows;
            let chunk_len = chunk_rows.min(rows - first_row);
            let name = if count == 1 { label.to_string() } else { format!("{label}[chunk {index}]") };
            let buffer = gpu.storage(&name, chunk_len as u64 * format.row_words(cols) as u64 * 4)?;
            gpu.write(&buffer, 0, &chunk_bytes(first_row as usize, chunk_len as usize));
            chunks.push(WeightChunk { buffer, first_row, rows: chunk_len });
        }
        Ok(DenseWeight { label: label.to_string(), format, rows, cols, chunks })
    }
}

fn check_data_len(label: &str, len: usize, rows: u32, cols: u32) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(Error::shape("dense weight", format!("'{label}' is {rows}x{cols}; both must be positive")));
    }
    if len as u64 != rows as u64 * cols as u64 {
        return Err(Error::shape(
            "dense weight",
            format!("'{label}' has {len} elements, expected {rows}x{cols} = {}", rows as u64 * cols as u64),
        ));
    }
    Ok(())
}

/// 16-bit values of rows `first .. first + count` as packed words: element
/// 2j in the low half of word j, odd-length rows padded with a zero half.
/// Even-length rows are already in that layout on a little-endian host (all
/// wgpu targets), so they are borrowed, not copied.
fn packed_rows_bytes(bits: &[u16], cols: usize, first: usize, count: usize) -> Cow<'_, [u8]> {
    let rows = &bits[first * cols..(first + count) * cols];
    if cols.is_multiple_of(2) && cfg!(target_endian = "little") {
        return Cow::Borrowed(bytemuck::cast_slice(rows));
    }
    Cow::Owned(bytemuck::cast_slice(&pack_halves(rows, cols)).to_vec())
}

/// Pack rows of `cols` 16-bit values two per u32 (see [`WeightFormat::F16`]).
pub fn pack_halves(bits: &[u16], cols: usize) -> Vec<u32> {
    bits.chunks_exact(cols)
        .flat_map(|row| row.chunks(2).map(|pair| pair[0] as u32 | (pair.get(1).copied().unwrap_or(0) as u32) << 16))
        .collect()
}

/// Which kernel a [`Matmul`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    /// Matrix-vector: a reduction per output; best for one token (decode).
    Gemv,
    /// Tiled matrix-matrix: each weight tile serves 64 tokens (prefill).
    Gemm,
}

impl MatmulKernel {
    /// The kernel [`Matmul::set_rows`] picks for `tokens` rows of x.
    pub fn for_tokens(tokens: u32) -> Self {
        if tokens <= 1 { MatmulKernel::Gemv } else { MatmulKernel::Gemm }
    }

    fn entry(self) -> &'static str {
        match self {
            MatmulKernel::Gemv => "gemv",
            MatmulKernel::Gemm => "gemm",
        }
    }

    fn workgroups(self, tokens: u32, rows: u32) -> u64 {
        match self {
            MatmulKernel::Gemv => tokens as u64 * rows.div_ceil(GEMV_ROWS) as u64,
            MatmulKernel::Gemm => tokens.div_ceil(GEMM_TILE) as u64 * rows.div_ceil(GEMM_TILE) as u64,
        }
    }
}

/// Rows per GEMV workgroup and the GEMM tile side, as in the shaders.
const GEMV_ROWS: u32 = 64;
const GEMM_TILE: u32 = 64;

gpu_params! {
    Params {
        tokens: u32, rows: u32, k: u32, row_words: u32, out_offset: u32, out_stride: u32, _pad: [u32; 2],
    }
}

/// `y[t][n] = Σ_k W[n][k] · x[t][k]` for a [`DenseWeight`] `W` `[N][K]`,
/// x f32 `[tokens][K]` and y f32 `[tokens][N]`: one dispatch per weight
/// chunk, GEMV or GEMM by token count.
pub struct Matmul {
    gemv: Vec<Dispatch>,
    gemm: Vec<Dispatch>,
    params: Vec<GpuBuffer>,
    /// (first row, rows) of each weight chunk.
    chunks: Vec<(u32, u32)>,
    n: u32,
    k: u32,
    row_words: u32,
    max_tokens: u32,
    kernel: MatmulKernel,
    /// Bytes of the weight's chunks together.
    weight_size: u64,
}

impl Matmul {
    /// Build for up to `max_tokens` rows of x (the buffers must hold that
    /// many); starts with `tokens = max_tokens`.
    pub fn new(gpu: &Gpu, weight: &DenseWeight, x: &GpuBuffer, y: &GpuBuffer, max_tokens: u32) -> Result<Self> {
        let (n, k) = (weight.rows, weight.cols);
        if max_tokens == 0 {
            return Err(Error::shape("matmul", "max_tokens must be positive"));
        }
        check_len("matmul", x, max_tokens as u64 * k as u64, 4)?;
        check_len("matmul", y, max_tokens as u64 * n as u64, 4)?;
        let mut covered = 0;
        for chunk in &weight.chunks {
            if chunk.first_row != covered || chunk.rows == 0 {
                return Err(Error::shape("matmul", format!("weight '{}' has a gap in its chunks", weight.label)));
            }
            check_len("matmul", &chunk.buffer, chunk.rows as u64 * weight.row_words() as u64, 4)?;
            covered += chunk.rows;
        }
        if covered != n {
            return Err(Error::shape(
                "matmul",
                format!("weight '{}' chunks cover {covered} of {n} rows", weight.label),
            ));
        }
        let mut op = Matmul {
            gemv: Vec::new(),
            gemm: Vec::new(),
            params: Vec::new(),
            chunks: weight.chunks.iter().map(|c| (c.first_row, c.rows)).collect(),
            n,
            k,
            row_words: weight.row_words(),
            max_tokens,
            kernel: MatmulKernel::for_tokens(max_tokens),
            weight_size: weight.bytes(),
        };
        for (index, chunk) in weight.chunks.iter().enumerate() {
            let params =
                gpu.uniform_from(&format!("{}.params[{index}]", weight.label), &op.chunk_params(index, max_tokens))?;
            for kernel in [MatmulKernel::Gemv, MatmulKernel::Gemm] {
                let key = KernelKey::new("matmul_dense", kernel.entry())
                    .define_if(weight.format != WeightFormat::F32, "PACKED")
                    .define_if(weight.format == WeightFormat::Bf16, "BF16");
                let label = format!("matmul {} {}[{index}]", kernel.entry(), weight.label);
                let grid = op.grid(gpu, kernel, max_tokens, chunk.rows)?;
                let dispatch = gpu.dispatch(&label, &key, &[&params, x, &chunk.buffer, y], grid)?;
                match kernel {
                    MatmulKernel::Gemv => op.gemv.push(dispatch),
                    MatmulKernel::Gemm => op.gemm.push(dispatch),
                }
            }
            op.params.push(params);
        }
        Ok(op)
    }

    /// Weight bytes a step reads: every chunk once, whatever the token count.
    pub fn weight_bytes(&self, _tokens: u32) -> u64 {
        self.weight_size
    }

    /// The dispatches to record for the current token count, one per chunk.
    pub fn dispatches(&self) -> &[Dispatch] {
        match self.kernel {
            MatmulKernel::Gemv => &self.gemv,
            MatmulKernel::Gemm => &self.gemm,
        }
    }

    /// Record and submit on its own (tests, benchmarks).
    pub fn run(&self, gpu: &Gpu) -> Result<()> {
        let dispatches: Vec<&Dispatch> = self.dispatches().iter().collect();
        gpu.run("matmul", &dispatches)
    }

    /// The kernel the next submit runs.
    pub fn kernel(&self) -> MatmulKernel {
        self.kernel
    }

    /// Multiply `tokens` rows of x in the next submit, with the kernel
    /// [`MatmulKernel::for_tokens`] picks (no allocation).
    pub fn set_rows(&mut self, gpu: &Gpu, tokens: u32) -> Result<()> {
        self.set_rows_with(gpu, tokens, MatmulKernel::for_tokens(tokens))
    }

    /// [`Matmul::set_rows`] with an explicit kernel (both work for any token count).
    pub fn set_rows_with(&mut self, gpu: &Gpu, tokens: u32, kernel: MatmulKernel) -> Result<()> {
        if tokens > self.max_tokens {
            return Err(Error::shape("matmul", format!("{tokens} tokens > {} allocated", self.max_tokens)));
        }
        for index in 0..self.chunks.len() {
            let grid = self.grid(gpu, kernel, tokens, self.chunks[index].1)?;
            gpu.write(&self.params[index], 0, bytemuck::bytes_of(&self.chunk_params(index, tokens)));
            let dispatch = match kernel {
                MatmulKernel::Gemv => &mut self.gemv[index],
                MatmulKernel::Gemm => &mut self.gemm[index],
            };
            dispatch.set_workgroups(grid);
        }
        self.kernel = kernel;
        Ok(())
    }

    fn chunk_params(&self, index: usize, tokens: u32) -> Params {
        let (first_row, rows) = self.chunks[index];
        Params {
            tokens,
            rows,
            k: self.k,
            row_words: self.row_words,
            out_offset: first_row,
            out_stride: self.n,
            _pad: [0; 2],
        }
    }

    fn grid(&self, gpu: &Gpu, kernel: MatmulKernel, tokens: u32, rows: u32) -> Result<[u32; 3]> {
        let count = kernel.workgroups(tokens, rows);
        let count = u32::try_from(count).map_err(|_| {
            Error::shape("matmul", format!("{count} workgroups for {tokens} tokens x {rows} rows is too many"))
        })?;
        Ok(gpu.grid(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_pack_low_first_and_pad_odd_rows() {
        let bits: Vec<u16> = vec![1, 2, 3, 4, 5, 6];
        assert_eq!(pack_halves(&bits, 3), vec![1 | 2 << 16, 3, 4 | 5 << 16, 6]);
        assert_eq!(pack_halves(&bits, 2), vec![1 | 2 << 16, 3 | 4 << 16, 5 | 6 << 16]);
        let borrowed = packed_rows_bytes(&bits, 2, 1, 2);
        assert_eq!(bytemuck::pod_collect_to_vec::<u8, u32>(&borrowed), vec![3 | 4 << 16, 5 | 6 << 16]);
    }

    #[test]
    fn row_words_round_packed_rows_up() {
        assert_eq!(WeightFormat::F32.row_words(7), 7);
        assert_eq!(WeightFormat::F16.row_words(7), 4);
        assert_eq!(WeightFormat::Bf16.row_words(8), 4);
    }
}
