use crate::common::*;
use deltallm::cpu::ternary as cpu_ternary;
use deltallm::format::ternary::{self as ternary_layout, ScaleConvention};
use deltallm::ops::ternary::{Int8Activations, QuantizeInt8, TernaryMatmul, TernaryWeight};
use rand::Rng;

fn random_ternary(rng: &mut impl Rng, n: usize) -> Vec<i8> {
    (0..n).map(|_| rng.random_range(-1i8..=1)).collect()
}

/// Activations with a few large outliers, as BitNet's are.
fn random_activations(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    let mut x = random_f32(rng, n, 2.0);
    for v in x.iter_mut().step_by(17) {
        *v *= 8.0;
    }
    x
}

// ---------------------------------------------------------------- CPU only

#[test]
fn hf_packing_round_trips_and_follows_the_release_layout() {
    let mut rng = rng(10);
    for &(out, inp) in &[(4usize, 1usize), (8, 5), (36, 70), (128, 33)] {
        let w = random_ternary(&mut rng, out * inp);
        let packed = ternary_layout::pack_hf_packed(&w, out, inp).unwrap();
        assert_eq!(packed.len(), out / 4 * inp);
        assert_eq!(ternary_layout::unpack_hf_packed(&packed, out, inp).unwrap(), w);
    }
    // W[i·R + r][c] = ((P[r][c] >> 2i) & 3) − 1, with R = out/4 = 2 here.
    let packed = [0b10_01_00_10u8, 0b00_00_00_01, 0b01_01_01_01, 0b10_10_10_10];
    let w = ternary_layout::unpack_hf_packed(&packed, 8, 2).unwrap();
    #[rustfmt::skip]
    let expected: [i8; 16] = [
        1, 0,    // row 0 = plane 0 of P[0]
        0, 1,    // row 1 = plane 0 of P[1]
        -1, -1,  // row 2 = plane 1 of P[0]
        0, 1,
        0, -1,
        0, 1,
        1, -1,
        0, 1,
    ];
    assert_eq!(w, expected);
}

#[test]
fn hf_packing_rejects_bad_input() {
    assert!(ternary_layout::unpack_hf_packed(&[0u8; 6], 8, 2).is_err(), "wrong length");
    assert!(ternary_layout::unpack_hf_packed(&[0u8; 6], 6, 4).is_err(), "out not a multiple of 4");
    assert!(ternary_layout::unpack_hf_packed(&[0b11_00_00_00u8, 0], 4, 2).is_err(), "code 3");
    assert!(ternary_layout::pack_hf_packed(&[0i8; 12], 6, 2).is_err(), "out not a multiple of 4");
    assert!(ternary_layout::pack_hf_packed(&[0i8; 7], 4, 2).is_err(), "wrong length");
    assert!(ternary_layout::pack_hf_packed(&[2i8; 8], 4, 2).is_err(), "not ternary");
}

#[test]
fn gpu_packing_round_trips_and_pads_with_weight_zero() {
    let mut rng = rng(11);
    for &(n, k) in &[(1usize, 1usize), (3, 16), (5, 17), (37, 70), (2, 300)] {
        let w = random_ternary(&mut rng, n * k);
        let words = ternary_layout::pack_gpu(&w, n, k).unwrap();
        assert_eq!(words.len(), n * k.div_ceil(16));
        assert_eq!(ternary_layout::unpack_gpu(&words, n, k).unwrap(), w);
        // Padding columns carry code 1 (weight 0).
        let padded = ternary_layout::unpack_gpu(&words, n, ternary_layout::padded_k(k)).unwrap();
        let kp = ternary_layout::padded_k(k);
        assert!((0..n).all(|r| padded[r * kp + k..(r + 1) * kp].iter().all(|&v| v == 0)));
    }
    // Column 4j + b of a group at bits 8b + 2j: column 5 (j 1, b 1) → bits 10..11.
    let mut w = vec![0i8; 16];
    w[5] = 1;
    let words = ternary_layout::pack_gpu(&w, 1, 16).unwrap();
    assert_eq!(words[0], 0x5555_5555 + (1 << 10));
    assert!(ternary_layout::pack_gpu(&[0i8; 5], 2, 3).is_err());
    assert!(ternary_layout::pack_gpu(&[3i8; 6], 2, 3).is_err());
    assert!(ternary_layout::unpack_gpu(&[0u32; 3], 2, 17).is_err());
}

#[test]
fn cpu_quantization_and_scales_follow_the_formula() {
    let x = [0.5f32, -1.0, 0.25, 0.0, 127.0, -0.5, 1.5, 2.5];
    let (q, s) = cpu_ternary::quantize_int8(&x, 4);
    // Row 0: s = 127; 63.5 rounds to even 64, 31.75 → 32.
    assert_eq!(s[0], 127.0);
    assert_eq!(&q[..4], &[64, -127, 32, 0]);
    // Row 1: s = 1; halves round to even.
    assert_eq!(s[1], 1.0);
    assert_eq!(&q[4..], &[127, 0, 2, 2]);
    let (q, s) = cpu_ternary::quantize_int8(&[0.0; 3], 3);
    assert_eq!((q, s[0]), (vec![0, 0, 0], 127.0 / 1e-5));

    let acc = cpu_ternary::matmul_ternary_i32(&[3, -2], &[1, 1, -1, 0], 1, 2, 2);
    assert_eq!(acc, vec![1, -3]);
    let div = cpu_ternary::scale_output(&[254], &[127.0], 1, 2.0, ScaleConvention::Divide);
    let mul = cpu_ternary::scale_output(&[254], &[127.0], 1, 2.0, ScaleConvention::Multiply);
    assert_eq!((div[0], mul[0]), (1.0, 4.0));
    let words = ternary_layout::pack_int8_rows(&[1, -1, 127, -128, 5], 5);
    assert_eq!(words.len(), 4);
    assert_eq!(words[0], 0x80_7f_ff_01);
    assert_eq!(ternary_layout::unpack_int8_rows(&words, 1, 5), vec![1, -1, 127, -128, 5]);
}

// ---------------------------------------------------------------- GPU

/// Quantize `x` on the GPU; returns (x_q, scales, sums) read back.
fn gpu_quantize(x: &[f32], m: u32, k: u32) -> (Vec<i8>, Vec<f32>, Vec<i32>) {
    let gpu = gpu();
    let xb = gpu.storage_from("x", x).unwrap();
    let act = Int8Activations::new(gpu, "act", m, k).unwrap();
    let kw = act.k_words() as usize;
    gpu.write(&act.x_q, 0, bytemuck::cast_slice(&vec![0xdead_beefu32; m as usize * kw]));
    gpu.write(&act.x_scale, 0, bytemuck::cast_slice(&vec![f32::NAN; m as usize]));
    let op = QuantizeInt8::new(gpu, &xb, &act).unwrap();
    gpu.run("quantize", &[&op.dispatch]).unwrap();
    let words: Vec<u32> = gpu.read(&act.x_q).unwrap();
    let padding_ok = words.chunks_exact(kw).all(|row| {
        let bytes: Vec<u8> = row.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes[k as usize..].iter().all(|&b| b == 0)
    });
    assert!(padding_ok, "padding of x_q is not zero");
    let x_q = ternary_layout::unpack_int8_rows(&words, m as usize, k as usize);
    (x_q, gpu.read(&act.x_scale).unwrap(), gpu.read(&act.x_sum).unwrap())
}

#[test]
fn quantize_int8_matches_cpu() {
    let mut rng = rng(20);
    for &(m, k) in &[(1u32, 2560u32), (3, 70), (5, 300), (2, 7), (4, 16)] {
        let x = random_activations(&mut rng, (m * k) as usize);
        let (q, s, sums) = gpu_quantize(&x, m, k);
        let (q_cpu, s_cpu) = cpu_ternary::quantize_int8(&x, k as usize);
        // Same f32 operations, and WGSL's round() rounds half to even: exact.
        assert_eq!(s, s_cpu, "scales {m}x{k}");
        assert_eq!(q, q_cpu, "x_q {m}x{k}");
        let sums_cpu: Vec<i32> = q_cpu.chunks_exact(k as usize).map(|r| r.iter().map(|&v| v as i32).sum()).collect();
        assert_eq!(sums, sums_cpu, "row sums {m}x{k}");
    }
}

#[test]
fn quantize_int8_rounds_ties_to_even() {
    // max|x| = 127 gives s_x = 1, so x·s_x keeps the exact halves.
    let x = [127.0f32, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -127.0, 3.49];
    let (q, s, _) = gpu_quantize(&x, 1, x.len() as u32);
    assert_eq!(s, vec![1.0]);
    assert_eq!(q, vec![127, 0, 2, 2, 0, -2, -2, 126, -127, 3]);
}

/// Integer accumulators of the GPU matmul on CPU-quantized activations.
fn gpu_raw_accumulators(x_q: &[i8], w: &[i8], m: u32, n: u32, k: u32) -> Vec<i32> {
    let gpu = gpu();
    let act = Int8Activations::new(gpu, "act", m, k).unwrap();
    gpu.write(&act.x_q, 0, bytemuck::cast_slice(&ternary_layout::pack_int8_rows(x_q, k as usize)));
    gpu.write(&act.x_scale, 0, bytemuck::cast_slice(&vec![1.0f32; m as usize]));
    let sums: Vec<i32> = x_q.chunks_exact(k as usize).map(|r| r.iter().map(|&v| v as i32).sum()).collect();
    gpu.write(&act.x_sum, 0, bytemuck::cast_slice(&sums));
    let weight = TernaryWeight::from_ternary(gpu, "w", w, n, k, 1.0, ScaleConvention::Divide).unwrap();
    let out = poisoned(gpu, "out", (m * n) as usize);
    let op = TernaryMatmul::new_raw_accumulator(gpu, &act, &weight, &out).unwrap();
    gpu.run("matmul_ternary", &[op.dispatch()]).unwrap();
    gpu.read(&out).unwrap()
}

#[test]
fn gemv_and_gemm_accumulators_are_bit_exact() {
    let mut rng = rng(30);
    let shapes = [
        (1u32, 37u32, 70u32),
        (1, 64, 2560),
        (1, 1, 1),
        (1, 129, 16),
        (5, 129, 300),
        (2, 37, 70),
        (9, 64, 2560),
        (17, 3, 33),
        // More rows than one workgroup covers (256), not a multiple of it.
        (6, 517, 48),
        (1, 700, 20),
    ];
    for &(m, n, k) in &shapes {
        // Full-range int8, including -128, to exercise the extremes.
        let x_q: Vec<i8> = (0..m * k).map(|_| rng.random::<i8>()).collect();
        let w = random_ternary(&mut rng, (n * k) as usize);
        let got = gpu_raw_accumulators(&x_q, &w, m, n, k);
        let expected = cpu_ternary::matmul_ternary_i32(&x_q, &w, m as usize, n as usize, k as usize);
        assert_eq!(got, expected, "accumulators {m}x{n}x{k}");
    }
}

#[test]
fn extreme_accumulators_are_exact() {
    // Every product is ±128·1: the largest sums a row can reach.
    let (m, n, k) = (2u32, 3u32, 2560u32);
    let x_q = vec![-128i8; (m * k) as usize];
    let mut w = vec![1i8; (n * k) as usize];
    w[k as usize..2 * k as usize].fill(-1);
    w[2 * k as usize..].fill(0);
    let got = gpu_raw_accumulators(&x_q, &w, m, n, k);
    assert_eq!(got, vec![-327680, 327680, 0, -327680, 327680, 0]);
}

/// The whole BitLinear on the GPU: quantize, matmul, scales.
fn gpu_bitlinear(x: &[f32], weight: &TernaryWeight, m: u32, rows: u32) -> Vec<f32> {
    let gpu = gpu();
    let xb = gpu.storage_from("x", x).unwrap();
    let act = Int8Activations::new(gpu, "act", m, weight.k).unwrap();
    let out = poisoned(gpu, "out", (m * weight.n) as usize);
    let mut quantize = QuantizeInt8::new(gpu, &xb, &act).unwrap();
    let mut matmul = TernaryMatmul::new(gpu, &act, weight, &out).unwrap();
    quantize.set_rows(gpu, rows).unwrap();
    matmul.set_rows(gpu, rows).unwrap();
    gpu.run("bitlinear", &[&quantize.dispatch, matmul.dispatch()]).unwrap();
    gpu.read(&out).unwrap()
}

#[test]
fn bitlinear_float_output_matches_cpu_in_both_conventions() {
    let gpu = gpu();
    let mut rng = rng(40);
    for &(m, n, k) in &[(1u32, 37u32, 70u32), (5, 129, 300), (1, 64, 2560), (3, 20, 16), (2, 300, 40)] {
        let x = random_activations(&mut rng, (m * k) as usize);
        let w = random_ternary(&mut rng, (n * k) as usize);
        for convention in [ScaleConvention::Divide, ScaleConvention::Multiply] {
            let weight_scale = 0.37f32;
            let weight = TernaryWeight::from_ternary(gpu, "w", &w, n, k, weight_scale, convention).unwrap();
            let got = gpu_bitlinear(&x, &weight, m, m);
            let expected = cpu_ternary::bitlinear(&x, &w, m as usize, n as usize, k as usize, weight_scale, convention);
            // The integers are exact; only the final f32 divide/multiply may round differently.
            assert_close(&format!("bitlinear {m}x{n}x{k} {convention:?}"), &got, &expected, 1e-6);
        }
    }
}

#[test]
fn weight_from_hf_packed_bytes_matches_the_unpacked_matrix() {
    let gpu = gpu();
    let mut rng = rng(41);
    let (m, n, k) = (3u32, 36u32, 70u32);
    let w = random_ternary(&mut rng, (n * k) as usize);
    let packed = ternary_layout::pack_hf_packed(&w, n as usize, k as usize).unwrap();
    let weight = TernaryWeight::from_hf_packed(gpu, "w", &packed, n, k, 1.7, ScaleConvention::Divide).unwrap();
    let x = random_activations(&mut rng, (m * k) as usize);
    let got = gpu_bitlinear(&x, &weight, m, m);
    let expected = cpu_ternary::bitlinear(&x, &w, m as usize, n as usize, k as usize, 1.7, ScaleConvention::Divide);
    assert_close("hf packed weight", &got, &expected, 1e-6);
}

#[test]
fn set_rows_switches_between_gemv_and_gemm_and_leaves_other_rows() {
    let gpu = gpu();
    let mut rng = rng(42);
    let (m, n, k) = (11u32, 70u32, 45u32);
    let x = random_activations(&mut rng, (m * k) as usize);
    let w = random_ternary(&mut rng, (n * k) as usize);
    let weight = TernaryWeight::from_ternary(gpu, "w", &w, n, k, 0.8, ScaleConvention::Divide).unwrap();
    for rows in [1u32, 2, 9] {
        let got = gpu_bitlinear(&x, &weight, m, rows);
        let split = (rows * n) as usize;
        let expected = cpu_ternary::bitlinear(
            &x[..(rows * k) as usize],
            &w,
            rows as usize,
            n as usize,
            k as usize,
            0.8,
            ScaleConvention::Divide,
        );
        assert_close(&format!("{rows} rows"), &got[..split], &expected, 1e-6);
        assert!(got[split..].iter().all(|v| v.is_nan()), "rows past set_rows({rows}) were written");
    }
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = gpu();
    let w = vec![0i8; 6];
    let ok = |n, k| TernaryWeight::from_ternary(gpu, "w", &w, n, k, 1.0, ScaleConvention::Divide);
    assert!(ok(2, 3).is_ok());
    assert!(ok(3, 3).is_err(), "weight length does not match n×k");
    assert!(ok(0, 3).is_err(), "empty weight");
    assert!(TernaryWeight::from_ternary(gpu, "w", &w, 2, 3, 0.0, ScaleConvention::Divide).is_err(), "zero scale");
    assert!(TernaryWeight::from_hf_packed(gpu, "w", &[0u8; 3], 6, 2, 1.0, ScaleConvention::Divide).is_err());
    assert!(Int8Activations::new(gpu, "act", 0, 3).is_err());

    let weight = ok(2, 3).unwrap();
    let act = Int8Activations::new(gpu, "act", 4, 5).unwrap();
    let out = poisoned(gpu, "out", 8);
    assert!(TernaryMatmul::new(gpu, &act, &weight, &out).is_err(), "k mismatch");
    let act = Int8Activations::new(gpu, "act", 4, 3).unwrap();
    let small = poisoned(gpu, "out", 7);
    assert!(TernaryMatmul::new(gpu, &act, &weight, &small).is_err(), "output too small");
    let mut matmul = TernaryMatmul::new(gpu, &act, &weight, &out).unwrap();
    assert!(matmul.set_rows(gpu, 5).is_err());
    let x = gpu.storage_from("x", &[1.0f32; 11]).unwrap();
    assert!(QuantizeInt8::new(gpu, &x, &act).is_err(), "x too small");
    let x = gpu.storage_from("x", &[1.0f32; 12]).unwrap();
    let mut quantize = QuantizeInt8::new(gpu, &x, &act).unwrap();
    assert!(quantize.set_rows(gpu, 5).is_err());
}
