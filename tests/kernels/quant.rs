use crate::common::*;
use deltallm::cpu::quant::{self as cpu_quant, Q8Rows};
use deltallm::format::blocks::{self as gpu_blocks, BLOCK, BlockFormat};
use deltallm::ops::quant::{Q8Activations, QuantEmbedding, QuantMatmul, QuantWeight, QuantizeQ8};
use half::f16;
use rand::Rng;

const FORMATS: [BlockFormat; 3] = [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0];

/// Fresh random GGUF blocks `[n][k]`: scales of either sign and a spread of magnitudes, random qs bytes.
fn random_blocks(rng: &mut impl Rng, format: BlockFormat, n: usize, k: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(n * format.row_bytes(k));
    for _ in 0..n * k / BLOCK {
        let start = bytes.len();
        bytes.extend(f16::from_f32(rng.random_range(-0.05f32..0.05)).to_le_bytes());
        if format.has_min() {
            bytes.extend(f16::from_f32(rng.random_range(-0.4f32..0.4)).to_le_bytes());
        }
        while bytes.len() < start + format.block_bytes() {
            bytes.push(rng.random());
        }
    }
    bytes
}

/// Activations with a few outliers and one block of tiny values (f16-subnormal d).
fn random_activations(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    let mut x = random_f32(rng, n, 2.0);
    for v in x.iter_mut().step_by(19) {
        *v *= 8.0;
    }
    if n >= 2 * BLOCK {
        for v in &mut x[BLOCK..2 * BLOCK] {
            *v *= 1e-4;
        }
    }
    x
}

// ---------------------------------------------------------------- quantization

/// Quantize on the GPU, read everything back as [`Q8Rows`].
fn gpu_quantize(x: &[f32], rows: u32, k: u32) -> Q8Rows {
    let gpu = gpu();
    let xb = gpu.storage_from("x", x).unwrap();
    let act = Q8Activations::new(gpu, "act", rows, k).unwrap();
    let blocks = (rows * k) as usize / BLOCK;
    gpu.write(&act.x_q, 0, bytemuck::cast_slice(&vec![0xdead_beefu32; (rows * k / 4) as usize]));
    gpu.write(&act.x_scales, 0, bytemuck::cast_slice(&vec![f32::NAN; 2 * blocks]));
    gpu.write(&act.x_sum, 0, bytemuck::cast_slice(&vec![i32::MIN; blocks]));
    let op = QuantizeQ8::new(gpu, &xb, &act).unwrap();
    gpu.run("quantize_q8", &[&op.dispatch]).unwrap();
    let scales: Vec<f32> = gpu.read(&act.x_scales).unwrap();
    Q8Rows {
        k: k as usize,
        q: gpu_blocks::unpack_q8_rows(&gpu.read::<u32>(&act.x_q).unwrap()),
        d: scales.iter().step_by(2).copied().collect(),
        s: scales.iter().skip(1).step_by(2).copied().collect(),
        sum: gpu.read(&act.x_sum).unwrap(),
    }
}

#[test]
fn quantize_q8_matches_cpu_exactly() {
    let mut rng = rng(40);
    for &(rows, k) in &[(1u32, 576u32), (3, 96), (5, 224), (2, 32), (70, 64)] {
        let x = random_activations(&mut rng, (rows * k) as usize);
        let got = gpu_quantize(&x, rows, k);
        let expected = cpu_quant::quantize_q8(&x, k as usize).unwrap();
        // Same f32 operations, round() ties to even, f16 rounding done on the bits: exact.
        assert_eq!(got.q, expected.q, "q {rows}x{k}");
        assert_eq!(got.d, expected.d, "d {rows}x{k}");
        assert_eq!(got.s, expected.s, "s {rows}x{k}");
        assert_eq!(got.sum, expected.sum, "sum {rows}x{k}");
    }
}

#[test]
fn quantize_q8_rounds_ties_to_even_and_handles_zero_blocks() {
    let mut x = vec![0.0f32; 64];
    // Block 0: amax 127 gives id = 1, so halves stay exact.
    x[..8].copy_from_slice(&[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.49]);
    // Block 1 stays all zero: d = s = 0, q = 0.
    let got = gpu_quantize(&x, 1, 64);
    assert_eq!(&got.q[..8], &[127, 0, 2, 2, 0, -2, -2, 3]);
    assert!(got.q[32..].iter().all(|&q| q == 0));
    assert_eq!((got.d[1], got.s[1], got.sum[1]), (0.0, 0.0, 0));
    assert_eq!(got, cpu_quant::quantize_q8(&x, 64).unwrap());
}

// ---------------------------------------------------------------- matmul

/// Q8 activations uploaded from the CPU quantization, so the matmul is tested on its own.
fn upload_q8(q8: &Q8Rows, rows: u32) -> Q8Activations {
    let gpu = gpu();
    let act = Q8Activations::new(gpu, "act", rows, q8.k as u32).unwrap();
    gpu.write(&act.x_q, 0, bytemuck::cast_slice(&gpu_blocks::pack_q8_rows(&q8.q)));
    let scales: Vec<f32> = q8.d.iter().zip(&q8.s).flat_map(|(&d, &s)| [d, s]).collect();
    gpu.write(&act.x_scales, 0, bytemuck::cast_slice(&scales));
    gpu.write(&act.x_sum, 0, bytemuck::cast_slice(&q8.sum));
    act
}

// f32 accumulation of f32 block terms against the f64 reference: K ≤ 224 here.
const MATMUL_TOLERANCE: f64 = 1e-6;

fn check_matmul(format: BlockFormat, n: u32, k: u32, tokens: &[u32], chunk_rows: Option<u32>, seed: u64) {
    let gpu = gpu();
    let mut rng = rng(seed);
    let max_rows = *tokens.iter().max().unwrap();
    let blocks = random_blocks(&mut rng, format, n as usize, k as usize);
    let weight = QuantWeight::upload_with_chunk_rows(gpu, "w", format, &blocks, n, k, chunk_rows).unwrap();
    let x = random_activations(&mut rng, (max_rows * k) as usize);
    let q8 = cpu_quant::quantize_q8(&x, k as usize).unwrap();
    let act = upload_q8(&q8, max_rows);
    let out = poisoned(gpu, "out", (max_rows * n) as usize);
    let mut op = QuantMatmul::new(gpu, &act, &weight, &out).unwrap();
    let expected = cpu_quant::matmul_q(format, &blocks, n as usize, k as usize, &q8).unwrap();
    for &rows in tokens {
        gpu.write(&out.clone(), 0, bytemuck::cast_slice(&vec![f32::NAN; (max_rows * n) as usize]));
        op.set_rows(gpu, rows).unwrap();
        op.run(gpu).unwrap();
        let got: Vec<f32> = gpu.read(&out).unwrap();
        let what = format!("{format:?} {rows}x{k}->{n} chunks {chunk_rows:?}");
        assert_close(&what, &got[..(rows * n) as usize], &expected[..(rows * n) as usize], MATMUL_TOLERANCE);
        assert!(got[(rows * n) as usize..].iter().all(|v| v.is_nan()), "{what}: wrote past the rows");
    }
}

#[test]
fn gemv_matches_cpu() {
    for (i, format) in FORMATS.into_iter().enumerate() {
        // Odd block counts, n not a multiple of the 256 rows of a workgroup.
        for &(n, k) in &[(37u32, 96u32), (300, 160), (1, 32), (513, 224)] {
            check_matmul(format, n, k, &[1], None, 50 + i as u64);
        }
    }
}

#[test]
fn gemm_matches_cpu() {
    for (i, format) in FORMATS.into_iter().enumerate() {
        for &(n, k) in &[(37u32, 96u32), (300, 160), (259, 32)] {
            // 7 tokens: one full group of 4 and a partial one; then fewer rows.
            check_matmul(format, n, k, &[7, 2, 1, 5], None, 60 + i as u64);
        }
    }
}

#[test]
fn weights_split_into_chunks_give_the_same_result() {
    for (i, format) in FORMATS.into_iter().enumerate() {
        check_matmul(format, 300, 96, &[1, 6], Some(70), 70 + i as u64);
    }
}

#[test]
fn quantize_then_matmul_matches_the_cpu_linear() {
    let gpu = gpu();
    let mut rng = rng(80);
    let (n, k, rows) = (200u32, 192u32, 3u32);
    for format in FORMATS {
        let blocks = random_blocks(&mut rng, format, n as usize, k as usize);
        let x = random_activations(&mut rng, (rows * k) as usize);
        let weight = QuantWeight::upload(gpu, "w", format, &blocks, n, k).unwrap();
        let xb = gpu.storage_from("x", &x).unwrap();
        let act = Q8Activations::new(gpu, "act", rows, k).unwrap();
        let out = poisoned(gpu, "out", (rows * n) as usize);
        let quantize = QuantizeQ8::new(gpu, &xb, &act).unwrap();
        let matmul = QuantMatmul::new(gpu, &act, &weight, &out).unwrap();
        let mut dispatches = vec![&quantize.dispatch];
        dispatches.extend(matmul.dispatches());
        gpu.run("linear", &dispatches).unwrap();
        let expected = cpu_quant::linear_q(format, &blocks, n as usize, k as usize, &x).unwrap();
        assert_close(&format!("{format:?} linear"), &gpu.read::<f32>(&out).unwrap(), &expected, MATMUL_TOLERANCE);
        // Against the dequantized f32 product: only the activation rounding differs (~1e-2).
        let dense = deltallm::loader::dequantize(format.ggml_type(), &blocks, (n * k) as usize).unwrap();
        let f32_product = deltallm::cpu::matmul::matmul(&dense, &x, rows as usize, n as usize, k as usize);
        assert_close(&format!("{format:?} vs f32"), &expected, &f32_product, 3e-2);
    }
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = gpu();
    let mut rng = rng(90);
    let blocks = random_blocks(&mut rng, BlockFormat::Q4_1, 8, 64);
    assert!(QuantWeight::upload(gpu, "w", BlockFormat::Q4_1, &blocks, 8, 48).is_err(), "k not whole blocks");
    assert!(QuantWeight::upload(gpu, "w", BlockFormat::Q4_1, &blocks[1..], 8, 64).is_err(), "short data");
    assert!(QuantWeight::upload(gpu, "w", BlockFormat::Q8_0, &blocks, 8, 64).is_err(), "wrong format size");
    assert!(QuantWeight::upload_with_chunk_rows(gpu, "w", BlockFormat::Q4_1, &blocks, 8, 64, Some(0)).is_err());
    assert!(Q8Activations::new(gpu, "a", 2, 40).is_err(), "k not whole blocks");
    let weight = QuantWeight::upload(gpu, "w", BlockFormat::Q4_1, &blocks, 8, 64).unwrap();
    let act = Q8Activations::new(gpu, "a", 2, 96).unwrap();
    let out = gpu.storage("out", 2 * 8 * 4).unwrap();
    assert!(QuantMatmul::new(gpu, &act, &weight, &out).is_err(), "k mismatch");
    let act = Q8Activations::new(gpu, "a", 2, 64).unwrap();
    let small = gpu.storage("out", 8 * 4).unwrap();
    assert!(QuantMatmul::new(gpu, &act, &weight, &small).is_err(), "output too small");
    let mut op = QuantMatmul::new(gpu, &act, &weight, &out).unwrap();
    assert!(op.set_rows(gpu, 3).is_err(), "more rows than allocated");
    let x = gpu.storage("x", 64 * 4).unwrap();
    assert!(QuantizeQ8::new(gpu, &x, &act).is_err(), "x too small");
}

// ---------------------------------------------------------------- gather

#[test]
fn embedding_gather_dequantizes_exactly() {
    let gpu = gpu();
    let mut rng = rng(100);
    let (vocab, dim) = (75u32, 96u32);
    let ids: Vec<u32> = vec![3, 74, 0, 40, 3, 1000, 69];
    for format in FORMATS {
        let blocks = random_blocks(&mut rng, format, vocab as usize, dim as usize);
        let table = deltallm::loader::dequantize(format.ggml_type(), &blocks, (vocab * dim) as usize).unwrap();
        // One chunk, and chunks of 32 rows (the last partial).
        for chunk_rows in [None, Some(32)] {
            let weight =
                QuantWeight::upload_with_chunk_rows(gpu, "t", format, &blocks, vocab, dim, chunk_rows).unwrap();
            let id_buffer = gpu.storage_from("ids", &ids).unwrap();
            let out = poisoned(gpu, "out", ids.len() * dim as usize);
            let mut op = QuantEmbedding::new(gpu, &weight, &id_buffer, &out, ids.len() as u32).unwrap();
            op.set_rows(gpu, ids.len() as u32).unwrap();
            op.run(gpu).unwrap();
            let got: Vec<f32> = gpu.read(&out).unwrap();
            for (t, &id) in ids.iter().enumerate() {
                let row = &got[t * dim as usize..(t + 1) * dim as usize];
                if id >= vocab {
                    assert!(row.iter().all(|v| v.is_nan()), "{format:?}: id {id} past the vocabulary gives NaN");
                } else {
                    let expected = &table[(id * dim) as usize..((id + 1) * dim) as usize];
                    // d·q is exact in f32: bit-for-bit equal to the CPU dequantizer.
                    assert_eq!(row, expected, "{format:?} chunks {chunk_rows:?}: token {t} (id {id})");
                }
            }
        }
    }
    let weight =
        QuantWeight::upload(gpu, "t", BlockFormat::Q8_0, &random_blocks(&mut rng, BlockFormat::Q8_0, 4, 32), 4, 32)
            .unwrap();
    let ids = gpu.storage("ids", 8).unwrap();
    let small = gpu.storage("out", 32 * 4).unwrap();
    assert!(QuantEmbedding::new(gpu, &weight, &ids, &small, 2).is_err(), "output too small");
    assert!(QuantEmbedding::new(gpu, &weight, &ids, &small, 0).is_err(), "no tokens");
}
