//! BitNet b1.58 ternary weights and their int8 activations as they are
//! stored: the Hugging Face release's packing, our GPU layout (read by
//! `shaders/matmul_ternary.wgsl`) and the packed int8 activation rows
//! (written by `shaders/quantize_int8.wgsl`). The arithmetic on them is the
//! CPU reference in `crate::cpu::ternary` (docs/DESIGN.md §3).

use crate::error::{Error, Result};

/// How the checkpoint's `weight_scale` enters the output. The HF BitNet
/// release (`quant_method: "bitnet"`, default linear class) divides; an
/// `autobitlinear` checkpoint with offline weights multiplies. Decide from
/// config.json's `quantization_config`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScaleConvention {
    #[default]
    Divide,
    Multiply,
}

/// Ternary codes (weight + 1) per u32 word of the GPU layout.
pub const CODES_PER_WORD: usize = 16;

/// The number of input columns after padding K to whole GPU words.
pub fn padded_k(k: usize) -> usize {
    k.div_ceil(CODES_PER_WORD) * CODES_PER_WORD
}

fn ternary_code(op: &'static str, w: i8) -> Result<u32> {
    match w {
        -1..=1 => Ok((w + 1) as u32),
        _ => Err(Error::shape(op, format!("weight {w} is not ternary (-1, 0 or 1)"))),
    }
}

fn check_matrix_len(op: &'static str, what: &str, len: usize, rows: usize, cols: usize) -> Result<()> {
    match rows.checked_mul(cols) {
        Some(need) if need == len => Ok(()),
        _ => Err(Error::shape(op, format!("{what} has {len} elements, expected {rows}×{cols}"))),
    }
}

/// Unpack a Hugging Face BitNet weight: `packed` is uint8 `[out/4][in]`, and
/// with `R = out/4`, `W[i·R + r][c] = ((P[r][c] >> 2i) & 3) − 1` for
/// `i = 0..3` (the packing runs along the output dimension). Returns the
/// ternary matrix `[out][in]`, row-major.
pub fn unpack_hf_packed(packed: &[u8], out_features: usize, in_features: usize) -> Result<Vec<i8>> {
    const OP: &str = "unpack_hf_packed";
    if !out_features.is_multiple_of(4) {
        return Err(Error::shape(OP, format!("out_features {out_features} is not a multiple of 4")));
    }
    let rows_per_plane = out_features / 4;
    check_matrix_len(OP, "packed weight", packed.len(), rows_per_plane, in_features)?;
    let mut w = vec![0i8; out_features * in_features];
    for (r, packed_row) in packed.chunks_exact(in_features.max(1)).enumerate().take(rows_per_plane) {
        for (c, &byte) in packed_row.iter().enumerate() {
            for i in 0..4 {
                let code = (byte >> (2 * i)) & 3;
                if code == 3 {
                    return Err(Error::shape(
                        OP,
                        format!("packed byte ({r}, {c}) holds code 3, which is not a ternary weight"),
                    ));
                }
                w[(i * rows_per_plane + r) * in_features + c] = code as i8 - 1;
            }
        }
    }
    Ok(w)
}

/// The inverse of [`unpack_hf_packed`]: ternary `[out][in]` to uint8 `[out/4][in]`.
pub fn pack_hf_packed(w: &[i8], out_features: usize, in_features: usize) -> Result<Vec<u8>> {
    const OP: &str = "pack_hf_packed";
    if !out_features.is_multiple_of(4) {
        return Err(Error::shape(OP, format!("out_features {out_features} is not a multiple of 4")));
    }
    check_matrix_len(OP, "weight", w.len(), out_features, in_features)?;
    let rows_per_plane = out_features / 4;
    let mut packed = vec![0u8; rows_per_plane * in_features];
    for (row, w_row) in w.chunks_exact(in_features.max(1)).enumerate().take(out_features) {
        let (plane, r) = (row / rows_per_plane, row % rows_per_plane);
        for (c, &value) in w_row.iter().enumerate() {
            packed[r * in_features + c] |= (ternary_code(OP, value)? as u8) << (2 * plane);
        }
    }
    Ok(packed)
}

/// Bit position of column `col % 16` inside its GPU word. Column `4j + b`
/// of a 16-column group sits at bits `8b + 2j`, so `(word >> 2j) & 0x03030303`
/// holds the codes of columns `4j .. 4j+3` in bytes 0..3: the byte order of
/// one packed int8 activation word, ready for `dot4I8Packed`.
fn gpu_bit(col_in_group: usize) -> usize {
    8 * (col_in_group % 4) + 2 * (col_in_group / 4)
}

/// Pack ternary `w` `[n][k]` into the GPU layout read by
/// `shaders/matmul_ternary.wgsl`: u32 `[K_pad/16][n]` (group-major: word
/// `(g, row)` holds the 16 codes of `row`, columns `16g .. 16g+15`, so
/// neighbouring rows are neighbouring words), code = w + 1, column `16g+4j+b`
/// at bits `8b + 2j`, and columns past `k` padded with code 1 (weight 0).
pub fn pack_gpu(w: &[i8], n: usize, k: usize) -> Result<Vec<u32>> {
    const OP: &str = "pack_gpu";
    check_matrix_len(OP, "weight", w.len(), n, k)?;
    let groups = padded_k(k) / CODES_PER_WORD;
    let mut words = vec![0u32; groups * n];
    for row in 0..n {
        for g in 0..groups {
            let mut word = 0u32;
            for i in 0..CODES_PER_WORD {
                let col = g * CODES_PER_WORD + i;
                let code = if col < k { ternary_code(OP, w[row * k + col])? } else { 1 };
                word |= code << gpu_bit(i);
            }
            words[g * n + row] = word;
        }
    }
    Ok(words)
}

/// The inverse of [`pack_gpu`] (padding dropped).
pub fn unpack_gpu(words: &[u32], n: usize, k: usize) -> Result<Vec<i8>> {
    const OP: &str = "unpack_gpu";
    let groups = padded_k(k) / CODES_PER_WORD;
    check_matrix_len(OP, "packed weight", words.len(), groups, n)?;
    let mut w = vec![0i8; n * k];
    for row in 0..n {
        for col in 0..k {
            let word = words[(col / CODES_PER_WORD) * n + row];
            let code = (word >> gpu_bit(col % CODES_PER_WORD)) & 3;
            if code == 3 {
                return Err(Error::shape(OP, format!("weight ({row}, {col}) has code 3")));
            }
            w[row * k + col] = code as i8 - 1;
        }
    }
    Ok(w)
}

/// Pack int8 rows `[m][k]` into the GPU activation layout written by
/// `shaders/quantize_int8.wgsl`: u32 `[m][K_pad/4]` (K_pad = [`padded_k`]),
/// column `4i + b` in byte `b` of word `i`, zero padding.
pub fn pack_int8_rows(x_q: &[i8], k: usize) -> Vec<u32> {
    assert!(k > 0 && x_q.len().is_multiple_of(k), "x_q has {} elements, not a multiple of k = {k}", x_q.len());
    let words_per_row = padded_k(k) / 4;
    let mut words = Vec::with_capacity(x_q.len() / k * words_per_row);
    for row in x_q.chunks_exact(k) {
        for i in 0..words_per_row {
            let mut word = 0u32;
            for b in 0..4 {
                let v = row.get(4 * i + b).copied().unwrap_or(0);
                word |= (v as u8 as u32) << (8 * b);
            }
            words.push(word);
        }
    }
    words
}

/// The inverse of [`pack_int8_rows`] (padding dropped).
pub fn unpack_int8_rows(words: &[u32], m: usize, k: usize) -> Vec<i8> {
    let words_per_row = padded_k(k) / 4;
    assert_eq!(words.len(), m * words_per_row, "packed activations have the wrong length");
    let mut x_q = Vec::with_capacity(m * k);
    for row in words.chunks_exact(words_per_row) {
        x_q.extend((0..k).map(|col| (row[col / 4] >> (8 * (col % 4))) as u8 as i8));
    }
    x_q
}
