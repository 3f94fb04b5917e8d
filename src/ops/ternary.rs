//! Ternary BitLinear on the GPU (`shaders/quantize_int8.wgsl`,
//! `shaders/matmul_ternary.wgsl`); CPU twin [`crate::cpu::ternary`].
//!
//! A BitNet linear layer is two ops: [`QuantizeInt8`] turns f32 activations
//! into per-token int8 ([`Int8Activations`]), and [`TernaryMatmul`]
//! multiplies them by a [`TernaryWeight`] with i32 accumulation and applies
//! both scales. Several matmuls may share one quantization (q, k and v read
//! the same normalised input).
//!
//! GPU layouts (the shader headers have the details):
//! - weights: u32 `[K_pad/16][n]`, 16 two-bit codes (w + 1) per word, column
//!   `16g + 4j + b` at bits `8b + 2j`, K padded to 16 with weight 0
//!   ([`crate::format::ternary::pack_gpu`]);
//! - activations: u32 `[rows][K_pad/4]`, four int8 per word, zero padded
//!   ([`crate::format::ternary::pack_int8_rows`]), plus `x_scale` f32 `[rows]`
//!   and `x_sum` i32 `[rows]` (the sum of the int8 values of each row).

use super::check_len;
use crate::error::{Error, Result};
use crate::format::ternary::{CODES_PER_WORD, pack_gpu, padded_k, unpack_hf_packed};
use crate::gpu::{Dispatch, Gpu, GpuBuffer, KernelKey};

pub use crate::format::ternary::ScaleConvention;

/// Output rows per workgroup of both entry points (`WG * ROWS` in the shader).
const ROWS_PER_WORKGROUP: u32 = 64 * 4;
/// Tokens per invocation of the `gemm` entry point (`TOKENS` in the shader).
const GEMM_TOKENS_PER_INVOCATION: u32 = 4;

/// A ternary weight `[n][k]` uploaded in the GPU layout, with its scale.
pub struct TernaryWeight {
    /// u32 `[K_pad/16][n]`; see the module doc.
    pub words: GpuBuffer,
    /// Output features.
    pub n: u32,
    /// Input features (before padding).
    pub k: u32,
    pub weight_scale: f32,
    pub convention: ScaleConvention,
}

impl TernaryWeight {
    /// Upload a ternary matrix `w` `[n][k]` (values in {-1, 0, 1}).
    pub fn from_ternary(
        gpu: &Gpu,
        label: &str,
        w: &[i8],
        n: u32,
        k: u32,
        weight_scale: f32,
        convention: ScaleConvention,
    ) -> Result<Self> {
        if n == 0 || k == 0 {
            return Err(Error::shape("ternary weight", format!("'{label}' is {n}×{k}; both must be positive")));
        }
        if !weight_scale.is_finite() || weight_scale == 0.0 {
            return Err(Error::Invalid(format!(
                "ternary weight '{label}': weight_scale {weight_scale} must be finite and non-zero"
            )));
        }
        let words = pack_gpu(w, n as usize, k as usize)?;
        let words = gpu.storage_from(label, &words)?;
        Ok(TernaryWeight { words, n, k, weight_scale, convention })
    }

    /// Upload a weight as the Hugging Face BitNet release stores it: uint8
    /// `[out_features/4][in_features]`, packed along the output dimension
    /// (see [`crate::format::ternary::unpack_hf_packed`]).
    pub fn from_hf_packed(
        gpu: &Gpu,
        label: &str,
        packed: &[u8],
        out_features: u32,
        in_features: u32,
        weight_scale: f32,
        convention: ScaleConvention,
    ) -> Result<Self> {
        let w = unpack_hf_packed(packed, out_features as usize, in_features as usize)?;
        Self::from_ternary(gpu, label, &w, out_features, in_features, weight_scale, convention)
    }

    /// Number of 16-column groups (u32 words per row).
    pub fn k_groups(&self) -> u32 {
        (padded_k(self.k as usize) / CODES_PER_WORD) as u32
    }
}

/// Per-token int8 activations for up to `max_rows` tokens of `k` features,
/// written by [`QuantizeInt8`] and read by [`TernaryMatmul`].
pub struct Int8Activations {
    /// u32 `[max_rows][K_pad/4]`, four int8 per word.
    pub x_q: GpuBuffer,
    /// f32 `[max_rows]`: `s_x = 127 / max|x|`.
    pub x_scale: GpuBuffer,
    /// i32 `[max_rows]`: the sum of each row's int8 values.
    pub x_sum: GpuBuffer,
    pub max_rows: u32,
    pub k: u32,
}

impl Int8Activations {
    pub fn new(gpu: &Gpu, label: &str, max_rows: u32, k: u32) -> Result<Self> {
        if max_rows == 0 || k == 0 {
            return Err(Error::shape(
                "int8 activations",
                format!("'{label}' is {max_rows}×{k}; both must be positive"),
            ));
        }
        let words = max_rows as u64 * (padded_k(k as usize) / 4) as u64;
        Ok(Int8Activations {
            x_q: gpu.storage(&format!("{label}.x_q"), words * 4)?,
            x_scale: gpu.storage(&format!("{label}.x_scale"), max_rows as u64 * 4)?,
            x_sum: gpu.storage(&format!("{label}.x_sum"), max_rows as u64 * 4)?,
            max_rows,
            k,
        })
    }

    /// u32 words per token row.
    pub fn k_words(&self) -> u32 {
        (padded_k(self.k as usize) / 4) as u32
    }
}

gpu_params! { QuantizeParams { rows: u32, k: u32, k_words: u32, _pad: u32 } }

/// Quantize f32 `x` `[rows][k]` into an [`Int8Activations`].
pub struct QuantizeInt8 {
    pub dispatch: Dispatch,
    params: GpuBuffer,
    k: u32,
    k_words: u32,
    max_rows: u32,
}

impl QuantizeInt8 {
    /// Build for up to `act.max_rows` rows; starts with all of them.
    pub fn new(gpu: &Gpu, x: &GpuBuffer, act: &Int8Activations) -> Result<Self> {
        let (max_rows, k, k_words) = (act.max_rows, act.k, act.k_words());
        check_len("quantize_int8", x, max_rows as u64 * k as u64, 4)?;
        check_len("quantize_int8", &act.x_q, max_rows as u64 * k_words as u64, 4)?;
        check_len("quantize_int8", &act.x_scale, max_rows as u64, 4)?;
        check_len("quantize_int8", &act.x_sum, max_rows as u64, 4)?;
        let p = QuantizeParams { rows: max_rows, k, k_words, _pad: 0 };
        let params = gpu.uniform_from("quantize_int8.params", &p)?;
        let dispatch = gpu.dispatch(
            "quantize_int8",
            &KernelKey::new("quantize_int8", "main"),
            &[&params, x, &act.x_q, &act.x_scale, &act.x_sum],
            gpu.grid(max_rows),
        )?;
        Ok(QuantizeInt8 { dispatch, params, k, k_words, max_rows })
    }

    /// Quantize `rows` rows in the next submit (no allocation).
    pub fn set_rows(&mut self, gpu: &Gpu, rows: u32) -> Result<()> {
        if rows > self.max_rows {
            return Err(Error::shape("quantize_int8", format!("{rows} rows > {} allocated", self.max_rows)));
        }
        let p = QuantizeParams { rows, k: self.k, k_words: self.k_words, _pad: 0 };
        gpu.write(&self.params, 0, bytemuck::bytes_of(&p));
        self.dispatch.set_workgroups(gpu.grid(rows));
        Ok(())
    }
}

gpu_params! { MatmulParams { rows: u32, n: u32, k_groups: u32, convention: u32, weight_scale: f32, _pad: [u32; 3] } }

/// `out[t] = bitlinear(x_q[t], weight)` for `rows` tokens: f32 `[rows][n]`.
/// One token runs the `gemv` entry point, more run `gemm`.
pub struct TernaryMatmul {
    gemv: Dispatch,
    gemm: Dispatch,
    params: MatmulParams,
    params_buffer: GpuBuffer,
    max_rows: u32,
    /// Bytes of the packed weight (2 bits per weight; its scale is a parameter).
    weight_size: u64,
}

impl TernaryMatmul {
    /// Build for up to `act.max_rows` tokens; starts with all of them.
    pub fn new(gpu: &Gpu, act: &Int8Activations, weight: &TernaryWeight, out: &GpuBuffer) -> Result<Self> {
        Self::build(gpu, act, weight, out, false)
    }

    /// Like [`TernaryMatmul::new`], but `out` receives the raw i32
    /// accumulators `Σ x_q · w` (bit patterns, read them back as i32), for
    /// bit-exact tests of the integer product.
    pub fn new_raw_accumulator(
        gpu: &Gpu,
        act: &Int8Activations,
        weight: &TernaryWeight,
        out: &GpuBuffer,
    ) -> Result<Self> {
        Self::build(gpu, act, weight, out, true)
    }

    fn build(gpu: &Gpu, act: &Int8Activations, weight: &TernaryWeight, out: &GpuBuffer, raw: bool) -> Result<Self> {
        const OP: &str = "matmul_ternary";
        if act.k != weight.k {
            return Err(Error::shape(
                OP,
                format!("activations have {} features but weight '{}' expects {}", act.k, weight.words.label, weight.k),
            ));
        }
        let k_groups = weight.k_groups();
        check_len(OP, &weight.words, k_groups as u64 * weight.n as u64, 4)?;
        check_len(OP, &act.x_q, act.max_rows as u64 * act.k_words() as u64, 4)?;
        check_len(OP, &act.x_scale, act.max_rows as u64, 4)?;
        check_len(OP, &act.x_sum, act.max_rows as u64, 4)?;
        check_len(OP, out, act.max_rows as u64 * weight.n as u64, 4)?;
        let params = MatmulParams {
            rows: act.max_rows,
            n: weight.n,
            k_groups,
            convention: match weight.convention {
                ScaleConvention::Divide => 0,
                ScaleConvention::Multiply => 1,
            },
            weight_scale: weight.weight_scale,
            _pad: [0; 3],
        };
        let params_buffer = gpu.uniform_from("matmul_ternary.params", &params)?;
        let buffers = [&params_buffer, &act.x_q, &act.x_scale, &act.x_sum, &weight.words, out];
        let key = |entry| KernelKey::new("matmul_ternary", entry).define_if(raw, "RAW_I32");
        let gemv = gpu.dispatch("matmul_ternary.gemv", &key("gemv"), &buffers, [0, 1, 1])?;
        let gemm = gpu.dispatch("matmul_ternary.gemm", &key("gemm"), &buffers, [0, 1, 1])?;
        let weight_size = weight.words.size;
        let mut op = TernaryMatmul { gemv, gemm, params, params_buffer, max_rows: act.max_rows, weight_size };
        op.set_rows(gpu, act.max_rows)?;
        Ok(op)
    }

    /// Multiply `rows` tokens in the next submit (no allocation).
    pub fn set_rows(&mut self, gpu: &Gpu, rows: u32) -> Result<()> {
        if rows > self.max_rows {
            return Err(Error::shape("matmul_ternary", format!("{rows} rows > {} allocated", self.max_rows)));
        }
        self.params.rows = rows;
        gpu.write(&self.params_buffer, 0, bytemuck::bytes_of(&self.params));
        let row_blocks = self.params.n.div_ceil(ROWS_PER_WORKGROUP);
        let token_blocks = rows.div_ceil(GEMM_TOKENS_PER_INVOCATION);
        self.gemv.set_workgroups(gpu.grid(row_blocks));
        self.gemm.set_workgroups(gpu.grid(row_blocks * token_blocks));
        Ok(())
    }

    /// Weight bytes a step reads: the packed weight once, whatever the rows.
    pub fn weight_bytes(&self, _rows: u32) -> u64 {
        self.weight_size
    }

    /// The dispatch for the current number of rows: `gemv` for one token.
    pub fn dispatch(&self) -> &Dispatch {
        if self.params.rows == 1 { &self.gemv } else { &self.gemm }
    }
}
