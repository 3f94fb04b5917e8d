use crate::common::*;
use deltallm::cpu::elementwise as reference;
use deltallm::ops::elementwise::{AddInPlace, GatedActivation, GatedMul};

/// f32 rounding of one product against an f64 reference.
const TOLERANCE: f64 = 1e-6;

fn gated_mul_matches_cpu(activation: GatedActivation, seed: u64) {
    let gpu = gpu();
    let mut rng = rng(seed);
    // 300² · 3 ≈ 2.7e5: relu² of such gates passes f16's 65504.
    for &(rows, dim, scale) in &[(1u32, 7u32, 3.0f32), (3, 300, 300.0), (2, 1000, 20.0)] {
        let n = (rows * dim) as usize;
        let gate = random_f32(&mut rng, n, scale);
        let up = random_f32(&mut rng, n, 3.0);
        let gate_buffer = gpu.storage_from("gate", &gate).unwrap();
        let up_buffer = gpu.storage_from("up", &up).unwrap();
        let out = poisoned(gpu, "out", n);
        let op = GatedMul::new(gpu, activation, &gate_buffer, &up_buffer, &out, rows, dim).unwrap();
        gpu.run("gated_mul", &[&op.dispatch]).unwrap();
        let got: Vec<f32> = gpu.read(&out).unwrap();
        let expected = match activation {
            GatedActivation::Relu2 => reference::relu2_mul(&gate, &up),
            GatedActivation::Silu => reference::silu_mul(&gate, &up),
        };
        if activation == GatedActivation::Relu2 && scale > 256.0 {
            assert!(expected.iter().any(|v| v.abs() > 65504.0), "test data should pass f16's range");
        }
        assert_close(&format!("{activation:?} {rows}x{dim}"), &got, &expected, TOLERANCE);
    }
}

#[test]
fn relu2_mul_matches_cpu_past_f16_range() {
    gated_mul_matches_cpu(GatedActivation::Relu2, 31);
}

#[test]
fn silu_mul_matches_cpu() {
    gated_mul_matches_cpu(GatedActivation::Silu, 32);
}

#[test]
fn silu_mul_is_finite_for_very_negative_gates() {
    let gpu = gpu();
    let gate = vec![-200.0f32, -100.0, -89.0, 0.0, 89.0, 200.0, -1e30, 1e30];
    let up = vec![1.5f32; gate.len()];
    let gate_buffer = gpu.storage_from("gate", &gate).unwrap();
    let up_buffer = gpu.storage_from("up", &up).unwrap();
    let out = poisoned(gpu, "out", gate.len());
    let op = GatedMul::new(gpu, GatedActivation::Silu, &gate_buffer, &up_buffer, &out, 1, 8).unwrap();
    gpu.run("silu_mul", &[&op.dispatch]).unwrap();
    let got: Vec<f32> = gpu.read(&out).unwrap();
    assert_close("silu extremes", &got, &reference::silu_mul(&gate, &up), TOLERANCE);
}

#[test]
fn add_inplace_matches_cpu() {
    let gpu = gpu();
    let mut rng = rng(33);
    for &(rows, dim) in &[(1u32, 5u32), (3, 2560), (4, 333)] {
        let n = (rows * dim) as usize;
        let h = random_f32(&mut rng, n, 50.0);
        let x = random_f32(&mut rng, n, 2.0);
        let h_buffer = gpu.storage_from("h", &h).unwrap();
        let x_buffer = gpu.storage_from("x", &x).unwrap();
        let op = AddInPlace::new(gpu, &h_buffer, &x_buffer, rows, dim).unwrap();
        gpu.run("add_inplace", &[&op.dispatch]).unwrap();
        let got: Vec<f32> = gpu.read(&h_buffer).unwrap();
        let mut expected = h.clone();
        reference::add_inplace(&mut expected, &x);
        // f32 addition is exact to the last bit on both sides.
        assert_eq!(got, expected, "add_inplace {rows}x{dim}");
    }
}

#[test]
fn set_rows_limits_the_elements_touched() {
    let gpu = gpu();
    let mut rng = rng(34);
    let (rows, dim) = (5u32, 77u32);
    let n = (rows * dim) as usize;
    let gate = random_f32(&mut rng, n, 4.0);
    let up = random_f32(&mut rng, n, 4.0);
    let gate_buffer = gpu.storage_from("gate", &gate).unwrap();
    let up_buffer = gpu.storage_from("up", &up).unwrap();
    let out = poisoned(gpu, "out", n);
    let mut op = GatedMul::new(gpu, GatedActivation::Relu2, &gate_buffer, &up_buffer, &out, rows, dim).unwrap();
    let mut add = AddInPlace::new(gpu, &up_buffer, &gate_buffer, rows, dim).unwrap();
    let pipelines = gpu.pipelines_created();
    op.set_rows(gpu, 2).unwrap();
    add.set_rows(gpu, 3).unwrap();
    gpu.run("set_rows", &[&op.dispatch, &add.dispatch]).unwrap();
    assert_eq!(gpu.pipelines_created(), pipelines, "set_rows must not build pipelines");

    let got: Vec<f32> = gpu.read(&out).unwrap();
    let split = 2 * dim as usize;
    assert_close("first rows", &got[..split], &reference::relu2_mul(&gate[..split], &up[..split]), TOLERANCE);
    assert!(got[split..].iter().all(|v| v.is_nan()), "rows past set_rows were written");

    let summed: Vec<f32> = gpu.read(&up_buffer).unwrap();
    let split = 3 * dim as usize;
    let mut expected = up[..split].to_vec();
    reference::add_inplace(&mut expected, &gate[..split]);
    assert_eq!(&summed[..split], &expected[..]);
    assert_eq!(&summed[split..], &up[split..], "rows past set_rows were changed");

    assert!(op.set_rows(gpu, rows + 1).is_err());
    assert!(add.set_rows(gpu, rows + 1).is_err());
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = gpu();
    let small = gpu.storage_from("small", &[1.0f32; 10]).unwrap();
    let big = gpu.storage_from("big", &[1.0f32; 100]).unwrap();
    let other = gpu.storage_from("other", &[1.0f32; 100]).unwrap();
    let relu2 = GatedActivation::Relu2;
    assert!(GatedMul::new(gpu, relu2, &big, &other, &small, 2, 50).is_err(), "out too small");
    assert!(GatedMul::new(gpu, relu2, &small, &other, &big, 2, 50).is_err(), "gate too small");
    assert!(GatedMul::new(gpu, relu2, &big, &other, &big, 2, 50).is_err(), "out aliases gate");
    assert!(GatedMul::new(gpu, relu2, &big, &other, &small, 1, 0).is_err(), "zero dim");
    assert!(AddInPlace::new(gpu, &big, &small, 2, 50).is_err(), "x too small");
    assert!(AddInPlace::new(gpu, &big, &big, 2, 50).is_err(), "h aliases x");
    assert!(AddInPlace::new(gpu, &big, &other, u32::MAX, 2).is_err(), "length overflows");
}
