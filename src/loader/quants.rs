//! ggml tensor types: sizes, dequantization to f32, and ternary extraction.
//!
//! Block layouts (little-endian; `d`, `dmin`, `m` are f16 unless noted), as
//! defined by ggml's `block_*` structs and Microsoft's BitNet fork:
//!
//! | type  | elems | bytes | layout → value |
//! |-------|-------|-------|----------------|
//! | Q8_0  | 32  | 34  | d, i8 q[32]: `d·q[j]` |
//! | Q4_0  | 32  | 18  | d, u8 qs[16]: elem j = low nibble of qs[j], elem j+16 = high nibble; `d·(q−8)` |
//! | Q4_1  | 32  | 20  | d, m, qs[16] (as Q4_0): `d·q + m` |
//! | Q4_K  | 256 | 144 | d, dmin, scales[12] (eight 6-bit scale/min pairs), qs[128]: 8 sub-blocks of 32; `d·sc·q − dmin·m` |
//! | Q6_K  | 256 | 210 | ql[128] (low 4 bits), qh[64] (high 2 bits), i8 scales[16], d: `d·scale·(q−32)` |
//! | TQ1_0 | 256 | 54  | qs[48] (5 trits per byte), qh[4] (4 trits per byte), d: `d·(t−1)` |
//! | TQ2_0 | 256 | 66  | qs[64] (4 codes per byte), d: `d·(code−1)` |
//! | I2_S  | 128 | 32  | per tensor: n/4 bytes of codes then an f32 scale (32 bytes reserved): `scale·(code−1)` |
//!
//! Ternary values are recovered exactly: the engine runs TQ1_0, TQ2_0 and
//! I2_S natively as {−1, 0, +1} with their scales ([`extract_ternary`]).

use super::error::LoadError;
use crate::Result;

/// A ggml tensor type, identified in GGUF by its numeric id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    /// Microsoft BitNet's 2-bit ternary type (its fork's id 36).
    I2_S,
    MXFP4,
}

/// Elements per I2_S packing block: byte j of a block holds elements
/// j, j+32, j+64, j+96 (x86 layout).
pub const I2_S_BLOCK: usize = 128;
/// Bytes after the I2_S codes: an f32 scale padded to 32 bytes.
pub const I2_S_TAIL: usize = 32;

impl GgmlType {
    pub fn from_id(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            16 => IQ2_XXS,
            17 => IQ2_XS,
            18 => IQ3_XXS,
            19 => IQ1_S,
            20 => IQ4_NL,
            21 => IQ3_S,
            22 => IQ2_S,
            23 => IQ4_XS,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            29 => IQ1_M,
            30 => BF16,
            34 => TQ1_0,
            35 => TQ2_0,
            36 => I2_S,
            39 => MXFP4,
            _ => return None,
        })
    }

    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2_K => 10,
            Q3_K => 11,
            Q4_K => 12,
            Q5_K => 13,
            Q6_K => 14,
            Q8_K => 15,
            IQ2_XXS => 16,
            IQ2_XS => 17,
            IQ3_XXS => 18,
            IQ1_S => 19,
            IQ4_NL => 20,
            IQ3_S => 21,
            IQ2_S => 22,
            IQ4_XS => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            IQ1_M => 29,
            BF16 => 30,
            TQ1_0 => 34,
            TQ2_0 => 35,
            I2_S => 36,
            MXFP4 => 39,
        }
    }

    /// (elements per block, bytes per block). I2_S is per tensor rather than
    /// per block (see [`GgmlType::tensor_bytes`]); its entry gives the code
    /// bytes of one 128-element packing block.
    pub fn block_layout(self) -> (usize, usize) {
        use GgmlType::*;
        match self {
            F32 => (1, 4),
            F16 => (1, 2),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 40),
            Q2_K => (256, 84),
            Q3_K => (256, 110),
            Q4_K => (256, 144),
            Q5_K => (256, 176),
            Q6_K => (256, 210),
            Q8_K => (256, 292),
            IQ2_XXS => (256, 66),
            IQ2_XS => (256, 74),
            IQ3_XXS => (256, 98),
            IQ1_S => (256, 50),
            IQ4_NL => (32, 18),
            IQ3_S => (256, 110),
            IQ2_S => (256, 82),
            IQ4_XS => (256, 136),
            I8 => (1, 1),
            I16 => (1, 2),
            I32 => (1, 4),
            I64 => (1, 8),
            F64 => (1, 8),
            IQ1_M => (256, 56),
            BF16 => (1, 2),
            TQ1_0 => (256, 54),
            TQ2_0 => (256, 66),
            I2_S => (I2_S_BLOCK, I2_S_BLOCK / 4),
            MXFP4 => (32, 17),
        }
    }

    pub fn is_ternary(self) -> bool {
        matches!(self, GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S)
    }

    /// Whether [`dequantize`] handles this type.
    pub fn can_dequantize(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_1 | Q4_K | Q6_K | TQ1_0 | TQ2_0 | I2_S)
    }

    /// Bytes a tensor of these ggml-order dims occupies. Rows (`dims[0]`)
    /// must hold whole blocks; I2_S packs the whole tensor in 128-element
    /// blocks followed by a 32-byte scale tail.
    pub fn tensor_bytes(self, dims: &[u64]) -> Result<u64, String> {
        let n: u64 = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("dimensions {dims:?} overflow the element count"))?;
        let (block, block_bytes) = self.block_layout();
        if self == GgmlType::I2_S {
            if !n.is_multiple_of(I2_S_BLOCK as u64) {
                return Err(format!("I2_S needs a multiple of {I2_S_BLOCK} elements, got {n}"));
            }
            return Ok(n / 4 + I2_S_TAIL as u64);
        }
        let row = dims.first().copied().unwrap_or(1);
        if row % block as u64 != 0 {
            return Err(format!("{self:?} needs rows (dims[0]) that are a multiple of {block}, got {row}"));
        }
        (n / block as u64)
            .checked_mul(block_bytes as u64)
            .ok_or_else(|| format!("byte size of dimensions {dims:?} overflows"))
    }
}

/// A ternary weight tensor: `w[i] = values[i] · scales[i / block_size]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ternary {
    /// Each in {−1, 0, +1}, in element (ggml row-major) order.
    pub values: Vec<i8>,
    /// One scale per `block_size` consecutive elements.
    pub scales: Vec<f32>,
    /// 256 for TQ1_0/TQ2_0; the whole tensor (one scale) for I2_S.
    pub block_size: usize,
}

impl Ternary {
    /// Expand to f32 values.
    pub fn to_f32(&self) -> Vec<f32> {
        self.values.iter().enumerate().map(|(i, &v)| v as f32 * self.scales[i / self.block_size.max(1)]).collect()
    }
}

fn quant_error(message: String) -> crate::Error {
    LoadError::Quant { message }.into()
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

fn expected_len(ty: GgmlType, bytes: &[u8], n: usize) -> Result<()> {
    let expected = ty.tensor_bytes(&[n as u64]).map_err(quant_error)?;
    if bytes.len() as u64 != expected {
        return Err(quant_error(format!("{ty:?} with {n} elements needs {expected} bytes, got {}", bytes.len())));
    }
    Ok(())
}

/// Dequantize `n` elements of type `ty` from `bytes` (exactly the tensor's
/// bytes) to f32. Arithmetic follows ggml's reference order, so results
/// match ggml/gguf-py bit for bit.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    expected_len(ty, bytes, n)?;
    let mut out = vec![0f32; n];
    use GgmlType::*;
    match ty {
        F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        F16 => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f16_at(bytes, 2 * i);
            }
        }
        BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
        }
        Q8_0 => blocks(bytes, &mut out, 34, 32, dequantize_q8_0),
        Q4_0 => blocks(bytes, &mut out, 18, 32, dequantize_q4_0),
        Q4_1 => blocks(bytes, &mut out, 20, 32, dequantize_q4_1),
        Q4_K => blocks(bytes, &mut out, 144, 256, dequantize_q4_k),
        Q6_K => blocks(bytes, &mut out, 210, 256, dequantize_q6_k),
        TQ1_0 | TQ2_0 | I2_S => {
            let ternary = extract_ternary_lenient(ty, bytes, n)?;
            // Same product as ggml: (code − 1) as f32 times the scale.
            for (i, o) in out.iter_mut().enumerate() {
                *o = ternary.values[i] as f32 * ternary.scales[i / ternary.block_size];
            }
        }
        other => {
            return Err(LoadError::Unsupported {
                message: format!("dequantizing ggml type {other:?} is not implemented; re-quantize the model to one of F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K, TQ1_0, TQ2_0, I2_S"),
            }
            .into());
        }
    }
    Ok(out)
}

fn blocks(bytes: &[u8], out: &mut [f32], block_bytes: usize, block: usize, f: fn(&[u8], &mut [f32])) {
    for (b, o) in bytes.chunks_exact(block_bytes).zip(out.chunks_exact_mut(block)) {
        f(b, o);
    }
}

fn dequantize_q8_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    for (j, o) in out.iter_mut().enumerate() {
        *o = d * (b[2 + j] as i8) as f32;
    }
}

fn dequantize_q4_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        out[j] = d * ((qs[j] & 0x0F) as i32 - 8) as f32;
        out[j + 16] = d * ((qs[j] >> 4) as i32 - 8) as f32;
    }
}

fn dequantize_q4_1(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let m = f16_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        out[j] = d * (qs[j] & 0x0F) as f32 + m;
        out[j + 16] = d * (qs[j] >> 4) as f32 + m;
    }
}

/// Scale and min of Q4_K sub-block `j` (0..8) from the 12 packed bytes:
/// sub-blocks 0..4 keep 6 bits in bytes j / j+4; sub-blocks 4..8 take their
/// low 4 bits from byte j+4 and their top 2 bits from the spare high bits
/// of bytes j−4 / j.
fn q4_k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

fn dequantize_q4_k(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    // Four chunks of 64 elements; each chunk's 32 bytes give two sub-blocks
    // (low nibbles first, then high nibbles).
    for chunk in 0..4 {
        let q = &qs[32 * chunk..32 * chunk + 32];
        let (sc1, m1) = q4_k_scale_min(2 * chunk, scales);
        let (sc2, m2) = q4_k_scale_min(2 * chunk + 1, scales);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
        let o = &mut out[64 * chunk..64 * chunk + 64];
        for l in 0..32 {
            o[l] = d1 * (q[l] & 0x0F) as f32 - min1;
            o[l + 32] = d2 * (q[l] >> 4) as f32 - min2;
        }
    }
}

fn dequantize_q6_k(b: &[u8], out: &mut [f32]) {
    let ql_all = &b[0..128];
    let qh_all = &b[128..192];
    let sc_all = &b[192..208];
    let d = f16_at(b, 208);
    // Two halves of 128 elements, each using 64 ql bytes, 32 qh bytes and
    // 8 scales (one per 16 elements).
    for half in 0..2 {
        let ql = &ql_all[64 * half..64 * half + 64];
        let qh = &qh_all[32 * half..32 * half + 32];
        let sc = &sc_all[8 * half..8 * half + 8];
        let o = &mut out[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            o[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            o[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            o[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            o[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// Ternary values and scales of a TQ1_0, TQ2_0 or I2_S tensor of `n`
/// elements. A 2-bit code of 3 (not a ternary value) is an error.
pub fn extract_ternary(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Ternary> {
    let ternary = extract_ternary_lenient(ty, bytes, n)?;
    if let Some(i) = ternary.values.iter().position(|&v| v == 2) {
        return Err(quant_error(format!(
            "{ty:?} element {i} has code 3, which is not a ternary value; the file is corrupt"
        )));
    }
    Ok(ternary)
}

/// Like [`extract_ternary`] but TQ2_0's code 3 decodes to 2, as in ggml's
/// dequantizer; I2_S code 3 is always an error (BitNet defines only 0..2).
fn extract_ternary_lenient(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Ternary> {
    expected_len(ty, bytes, n)?;
    let mut values = vec![0i8; n];
    let scales = match ty {
        GgmlType::TQ1_0 => {
            let mut scales = Vec::with_capacity(n / 256);
            for (b, v) in bytes.chunks_exact(54).zip(values.chunks_exact_mut(256)) {
                decode_tq1_0(b, v);
                scales.push(f16_at(b, 52));
            }
            scales
        }
        GgmlType::TQ2_0 => {
            let mut scales = Vec::with_capacity(n / 256);
            for (b, v) in bytes.chunks_exact(66).zip(values.chunks_exact_mut(256)) {
                // Two groups of 32 bytes; within a group, bit pair l of
                // byte m is element 32·l + m.
                for group in 0..2 {
                    for l in 0..4 {
                        for m in 0..32 {
                            let code = (b[32 * group + m] >> (2 * l)) & 3;
                            v[128 * group + 32 * l + m] = code as i8 - 1;
                        }
                    }
                }
                scales.push(f16_at(b, 64));
            }
            scales
        }
        GgmlType::I2_S => {
            let codes = &bytes[..n / 4];
            for (b, v) in codes.chunks_exact(32).zip(values.chunks_exact_mut(I2_S_BLOCK)) {
                for j in 0..32 {
                    for group in 0..4 {
                        let code = (b[j] >> (6 - 2 * group)) & 3;
                        v[32 * group + j] = code as i8 - 1;
                    }
                }
            }
            if let Some(i) = values.iter().position(|&v| v == 2) {
                return Err(quant_error(format!(
                    "I2_S element {i} has code 3, which is not a ternary value; the file is corrupt"
                )));
            }
            let tail = &bytes[n / 4..n / 4 + 4];
            vec![f32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]])]
        }
        other => {
            return Err(quant_error(format!("{other:?} is not a ternary type (expected TQ1_0, TQ2_0 or I2_S)")));
        }
    };
    let block_size = if ty == GgmlType::I2_S { n.max(1) } else { 256 };
    Ok(Ternary { values, scales, block_size })
}

/// TQ1_0 stores trits in base 3 as a fixed-point fraction: byte q encodes
/// t0 t1 t2 t3 t4 as q ≈ 256·(t0/3 + t1/9 + …); multiplying by 3^k (mod
/// 256) shifts trit k to the top, and (q·3) >> 8 reads it.
fn decode_tq1_0(b: &[u8], v: &mut [i8]) {
    const POW3: [u8; 5] = [1, 3, 9, 27, 81];
    let trit = |byte: u8, k: usize| (((byte.wrapping_mul(POW3[k]) as u16) * 3) >> 8) as i8 - 1;
    // qs[0..32]: 5 trits each, elements 32·k + m.
    for k in 0..5 {
        for m in 0..32 {
            v[32 * k + m] = trit(b[m], k);
        }
    }
    // qs[32..48]: 5 trits each, elements 160 + 16·k + m.
    for k in 0..5 {
        for m in 0..16 {
            v[160 + 16 * k + m] = trit(b[32 + m], k);
        }
    }
    // qh[0..4]: 4 trits each, elements 240 + 4·k + m.
    for k in 0..4 {
        for m in 0..4 {
            v[240 + 4 * k + m] = trit(b[48 + m], k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_ids_round_trip() {
        let mut known = 0;
        for id in 0..64 {
            if let Some(ty) = GgmlType::from_id(id) {
                assert_eq!(ty.id(), id);
                known += 1;
            }
        }
        assert_eq!(known, 33);
    }

    #[test]
    fn tensor_bytes_follow_block_layouts() {
        assert_eq!(GgmlType::Q4_K.tensor_bytes(&[512, 3]), Ok(6 * 144));
        assert_eq!(GgmlType::TQ1_0.tensor_bytes(&[256]), Ok(54));
        assert_eq!(GgmlType::I2_S.tensor_bytes(&[2560, 640]), Ok(2560 * 640 / 4 + 32));
        assert_eq!(GgmlType::BF16.tensor_bytes(&[]), Ok(2));
        assert!(GgmlType::Q8_0.tensor_bytes(&[16, 2]).is_err());
        assert!(GgmlType::F32.tensor_bytes(&[u64::MAX, 2]).is_err());
    }
}
