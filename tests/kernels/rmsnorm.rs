use crate::common::*;
use deltallm::{cpu, ops};

#[test]
fn rmsnorm_matches_cpu_on_random_rows() {
    let gpu = gpu();
    let mut rng = rng(1);
    for &(rows, dim) in &[(1u32, 64u32), (3, 2560), (5, 300), (2, 7)] {
        let n = (rows * dim) as usize;
        let x = random_f32(&mut rng, n, 3.0);
        let w = random_f32(&mut rng, dim as usize, 1.5);
        let xb = gpu.storage_from("x", &x).unwrap();
        let wb = gpu.storage_from("w", &w).unwrap();
        let out = poisoned(gpu, "out", n);
        let op = ops::RmsNorm::new(gpu, &xb, &wb, &out, rows, dim, 1e-5).unwrap();
        gpu.run("rmsnorm", &[&op.dispatch]).unwrap();
        let got: Vec<f32> = gpu.read(&out).unwrap();
        assert_close(&format!("rmsnorm {rows}x{dim}"), &got, &cpu::rmsnorm(&x, &w, dim as usize, 1e-5), 1e-6);
    }
}

#[test]
fn rmsnorm_set_rows_processes_only_those_rows() {
    let gpu = gpu();
    let mut rng = rng(2);
    let (rows, dim) = (4u32, 96u32);
    let x = random_f32(&mut rng, (rows * dim) as usize, 2.0);
    let w = random_f32(&mut rng, dim as usize, 1.0);
    let xb = gpu.storage_from("x", &x).unwrap();
    let wb = gpu.storage_from("w", &w).unwrap();
    let out = poisoned(gpu, "out", (rows * dim) as usize);
    let mut op = ops::RmsNorm::new(gpu, &xb, &wb, &out, rows, dim, 1e-5).unwrap();
    op.set_rows(gpu, 2).unwrap();
    gpu.run("rmsnorm", &[&op.dispatch]).unwrap();
    let got: Vec<f32> = gpu.read(&out).unwrap();
    let split = 2 * dim as usize;
    assert_close("first rows", &got[..split], &cpu::rmsnorm(&x[..split], &w, dim as usize, 1e-5), 1e-6);
    assert!(got[split..].iter().all(|v| v.is_nan()), "rows past set_rows were written");
    assert!(op.set_rows(gpu, 5).is_err());
}
