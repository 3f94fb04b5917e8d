use crate::common::*;
use deltallm::cpu::quantize_q8::quantize_q8_blocks;
use deltallm::ops::quantize_q8::QuantizeQ8Blocks;

#[test]
fn q8_block_round_trip_matches_cpu_exactly() {
    let gpu = gpu();
    let mut rng = rng(21);
    for &(rows, dim) in &[(1u32, 32u32), (3, 576), (5, 1536), (2, 64)] {
        let n = (rows * dim) as usize;
        let mut x = random_f32(&mut rng, n, 4.0);
        x[3] = 0.0;
        if n >= 64 {
            // An all-zero block must give zeros, not NaN.
            x[32..64].iter_mut().for_each(|v| *v = 0.0);
        }
        let xb = gpu.storage_from("x", &x).unwrap();
        let out = poisoned(gpu, "out", n);
        let op = QuantizeQ8Blocks::new(gpu, &xb, &out, rows, dim).unwrap();
        gpu.run("q8", &[&op.dispatch]).unwrap();
        let got: Vec<f32> = gpu.read(&out).unwrap();
        let expected = quantize_q8_blocks(&x);
        let mismatches = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
        // Exact except where x/d lands on a rounding boundary after 1/d's rounding (rare).
        assert!(mismatches * 1000 <= n, "{mismatches} of {n} values differ");
        assert_close("q8 round trip", &got, &expected, 1e-3);
        assert_close("q8 round trip is close to x", &got, &x, 2e-2);
    }
}

#[test]
fn q8_bad_shapes_are_errors() {
    let gpu = gpu();
    let x = gpu.storage_from("x", &[1.0f32; 64]).unwrap();
    let out = poisoned(gpu, "out", 64);
    assert!(QuantizeQ8Blocks::new(gpu, &x, &out, 1, 48).is_err());
    assert!(QuantizeQ8Blocks::new(gpu, &x, &out, 4, 32).is_err());
    assert!(QuantizeQ8Blocks::new(gpu, &x, &x, 1, 32).is_err());
}
