//! Dequantization against gguf-py (the committed fixture) and hand-built
//! blocks for what gguf-py cannot write (I2_S) or to pin a layout down.

use deltallm::loader::quants::{I2_S_BLOCK, I2_S_TAIL};
use deltallm::loader::{GgmlType, Gguf, LoadError, dequantize, extract_ternary};
use rand::Rng;

use super::{data_path, load_err, rng};

fn expected_values() -> Vec<f32> {
    std::fs::read(data_path("quants_expected.bin"))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Distance in units in the last place (same-sign finite floats).
fn ulps(a: f32, b: f32) -> u32 {
    if a == b {
        return 0;
    }
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs().min(u32::MAX as u64) as u32
}

#[test]
fn dequantize_matches_gguf_py() {
    let g = Gguf::open(data_path("quants.gguf")).unwrap();
    let expected = expected_values();
    let mut at = 0;
    let mut types = Vec::new();
    for t in g.tensors() {
        let ours = g.tensor_f32(&t.name).unwrap();
        let theirs = &expected[at..at + t.n_elements as usize];
        at += t.n_elements as usize;
        // Our arithmetic follows ggml's order, so the match is exact; allow
        // 1 ulp in case a platform reorders a product.
        for (i, (&a, &b)) in ours.iter().zip(theirs).enumerate() {
            assert!(ulps(a, b) <= 1, "{} ({:?}) element {i}: ours {a}, gguf-py {b}", t.name, t.ggml_type);
        }
        let exact = ours.iter().zip(theirs).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
        assert_eq!(exact, ours.len(), "{}: {} of {} bit-exact", t.name, exact, ours.len());
        types.push(t.ggml_type);
    }
    assert_eq!(at, expected.len(), "expected file has values for more tensors");
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
    ] {
        assert!(types.contains(&ty), "fixture lacks {ty:?}");
    }
}

#[test]
fn ternary_extraction_agrees_with_dequantization() {
    let g = Gguf::open(data_path("quants.gguf")).unwrap();
    for name in ["tq1_0", "tq2_0", "tq1_0_raw"] {
        let t = g.tensor_ternary(name).unwrap();
        assert_eq!(t.block_size, 256);
        assert!(t.values.iter().all(|v| (-1..=1).contains(v)));
        assert!(t.values.contains(&-1) && t.values.contains(&0) && t.values.contains(&1), "{name}");
        assert_eq!(t.to_f32(), g.tensor_f32(name).unwrap(), "{name}");
    }
    // Random TQ2_0 bytes contain code 3, which ggml decodes as +2: a
    // dequantizer may pass it through, ternary extraction must refuse it.
    let message = g.tensor_ternary("tq2_0_raw").unwrap_err().to_string();
    assert!(message.contains("code 3") && message.contains("tq2_0_raw"), "{message}");
    assert!(matches!(load_err(g.tensor_ternary("q8_0")), LoadError::Quant { .. }));
}

/// Pack ternary values as I2_S (x86 layout): per 128 elements 32 bytes,
/// byte j holding elements j, j+32, j+64, j+96 from the high bits down,
/// code = value + 1; then the f32 scale and padding to 32 bytes.
fn pack_i2_s(values: &[i8], scale: f32) -> Vec<u8> {
    let mut out = vec![0u8; values.len() / 4];
    for (block, chunk) in values.chunks(I2_S_BLOCK).enumerate() {
        for (i, &v) in chunk.iter().enumerate() {
            let (group, j) = (i / 32, i % 32);
            out[block * 32 + j] |= ((v + 1) as u8) << (6 - 2 * group);
        }
    }
    out.extend_from_slice(&scale.to_le_bytes());
    out.resize(values.len() / 4 + I2_S_TAIL, 0);
    out
}

#[test]
fn i2_s_layout_by_hand() {
    // Element 0 = +1 (code 2), 32 = −1 (code 0), 64 = 0 (code 1), 96 = +1
    // (code 2): byte 0 = 0b10_00_01_10; every other element 0 (code 1).
    let mut bytes = vec![0x55u8; 32];
    bytes[0] = 0b10_00_01_10;
    bytes.extend_from_slice(&1.5f32.to_le_bytes());
    bytes.resize(32 + I2_S_TAIL, 0);
    let t = extract_ternary(GgmlType::I2_S, &bytes, 128).unwrap();
    let mut want = vec![0i8; 128];
    want[0] = 1;
    want[32] = -1;
    want[96] = 1;
    assert_eq!(t.values, want);
    assert_eq!((t.scales.as_slice(), t.block_size), ([1.5f32].as_slice(), 128));
    let f = dequantize(GgmlType::I2_S, &bytes, 128).unwrap();
    assert_eq!((f[0], f[32], f[64], f[96], f[1]), (1.5, -1.5, 0.0, 1.5, 0.0));
}

#[test]
fn i2_s_random_round_trip() {
    let mut rng = rng(36);
    let n = 3 * I2_S_BLOCK;
    let values: Vec<i8> = (0..n).map(|_| rng.random_range(-1..=1)).collect();
    let bytes = pack_i2_s(&values, 0.03125);
    assert_eq!(bytes.len(), n / 4 + 32);
    let t = extract_ternary(GgmlType::I2_S, &bytes, n).unwrap();
    assert_eq!(t.values, values);
    let f = dequantize(GgmlType::I2_S, &bytes, n).unwrap();
    for (a, &v) in f.iter().zip(&values) {
        assert_eq!(*a, v as f32 * 0.03125);
    }
    // Code 3 is not a ternary value: both paths refuse it.
    let mut bad = bytes.clone();
    bad[5] = 0xFF;
    assert!(matches!(load_err(extract_ternary(GgmlType::I2_S, &bad, n)), LoadError::Quant { .. }));
    assert!(matches!(load_err(dequantize(GgmlType::I2_S, &bad, n)), LoadError::Quant { .. }));
}

#[test]
fn tq2_0_and_tq1_0_by_hand() {
    // TQ2_0: byte m of group g holds elements 128g + 32l + m in bit pair l.
    let mut block = vec![0x55u8; 64];
    block[0] = 0b00_01_10_00; // elements 0 → −1, 32 → +1, 64 → 0, 96 → −1
    block.extend_from_slice(&half::f16::from_f32(2.0).to_le_bytes());
    let t = extract_ternary(GgmlType::TQ2_0, &block, 256).unwrap();
    assert_eq!((t.values[0], t.values[32], t.values[64], t.values[96]), (-1, 1, 0, -1));
    assert_eq!(t.scales, [2.0]);
    // TQ1_0: byte q holds trits (t0..t4) as ceil(256·Σ t_k·3^(4−k) / 243).
    let encode = |trits: [u8; 5]| -> u8 {
        let v = trits.iter().fold(0u16, |acc, &t| acc * 3 + t as u16);
        ((v * 256).div_ceil(243)) as u8
    };
    let mut block = vec![encode([1; 5]); 48];
    block.extend_from_slice(&[encode([1, 1, 1, 1, 0]); 4]);
    block[0] = encode([2, 0, 1, 2, 0]);
    block.extend_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
    let t = extract_ternary(GgmlType::TQ1_0, &block, 256).unwrap();
    // Trit k of qs byte m (m < 32) is element 32k + m.
    assert_eq!([t.values[0], t.values[32], t.values[64], t.values[96], t.values[128]], [1, -1, 0, 1, -1]);
    assert!(t.values[1..32].iter().all(|&v| v == 0));
    assert!(t.values[240..].iter().all(|&v| v == 0));
}

#[test]
fn q4_k_scale_packing_by_hand() {
    // Sub-block 5's scale takes its low 4 bits from scales[9] and its top
    // 2 bits from scales[1] >> 6; its min from scales[9] >> 4 and scales[5] >> 6.
    let mut block = vec![0u8; 144];
    block[0..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
    block[2..4].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
    let scales = &mut block[4..16];
    scales[1] = 0b11_000000 | 7; // sub-block 1 scale 7, top bits of sub-block 5 scale = 3
    scales[5] = 0b01_000000 | 2; // sub-block 1 min 2, top bits of sub-block 5 min = 1
    scales[9] = (4 << 4) | 9; // sub-block 5: scale low 9, min low 4
    for q in &mut block[16..144] {
        *q = 0x21; // low nibble 1, high nibble 2
    }
    let f = dequantize(GgmlType::Q4_K, &block, 256).unwrap();
    // Sub-block 1 = elements 32..64 (high nibbles of bytes 0..32): 7·2 − 0.5·2.
    assert_eq!(f[32], 13.0);
    // Sub-block 5 = elements 160..192 (high nibbles of bytes 64..96):
    // scale 3<<4 | 9 = 57, min 1<<4 | 4 = 20: 57·2 − 0.5·20.
    assert_eq!(f[160], 104.0);
    // Sub-block 0 has scale 0 and min 0.
    assert_eq!(f[0], 0.0);
}

#[test]
fn wrong_byte_counts_are_errors() {
    assert!(matches!(load_err(dequantize(GgmlType::Q8_0, &[0; 33], 32)), LoadError::Quant { .. }));
    assert!(matches!(load_err(dequantize(GgmlType::Q4_K, &[0; 144], 255)), LoadError::Quant { .. }));
    assert!(matches!(load_err(dequantize(GgmlType::I2_S, &[0; 32], 128)), LoadError::Quant { .. }));
    assert!(matches!(load_err(dequantize(GgmlType::Q5_K, &[0; 176], 256)), LoadError::Unsupported { .. }));
}
