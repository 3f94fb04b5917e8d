use crate::common::*;
use deltallm::cpu::rope::apply_rope;
use deltallm::format::rope::{Llama3RopeScaling, rope_inv_freq, rope_table};
use deltallm::ops::rope::{Rope, RopeTable};

/// Two f32 products and a sum per element against an f64 reference.
const TOLERANCE: f64 = 1e-6;

struct Case {
    rows: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    pos0: u32,
    max_positions: u32,
    scaling: Option<Llama3RopeScaling>,
}

fn rope_matches_cpu(case: &Case, seed: u64) {
    let gpu = gpu();
    let mut rng = rng(seed);
    let Case { rows, heads, kv_heads, head_dim, pos0, max_positions, scaling } = *case;
    let theta = 500000.0;
    let q = random_f32(&mut rng, (rows * heads * head_dim) as usize, 2.0);
    let k = random_f32(&mut rng, (rows * kv_heads * head_dim) as usize, 2.0);
    let q_buffer = gpu.storage_from("q", &q).unwrap();
    let k_buffer = gpu.storage_from("k", &k).unwrap();
    let table = RopeTable::new(gpu, head_dim, theta, scaling, max_positions).unwrap();
    let mut op = Rope::new(gpu, &table, &q_buffer, &k_buffer, rows, heads, kv_heads).unwrap();
    op.set_step(gpu, rows, pos0).unwrap();
    gpu.run("rope", &[&op.dispatch]).unwrap();

    let cpu_table = rope_table(&rope_inv_freq(head_dim as usize, theta, scaling), max_positions as usize);
    let (mut q_expected, mut k_expected) = (q.clone(), k.clone());
    let (rows, hd, pos0) = (rows as usize, head_dim as usize, pos0 as usize);
    apply_rope(&mut q_expected, rows, heads as usize, hd, pos0, &cpu_table);
    apply_rope(&mut k_expected, rows, kv_heads as usize, hd, pos0, &cpu_table);
    let what = format!("rows {rows} heads {heads}/{kv_heads} hd {hd} pos0 {pos0}");
    assert_close(&format!("q, {what}"), &gpu.read::<f32>(&q_buffer).unwrap(), &q_expected, TOLERANCE);
    assert_close(&format!("k, {what}"), &gpu.read::<f32>(&k_buffer).unwrap(), &k_expected, TOLERANCE);
}

#[test]
fn rope_matches_cpu_bitnet_shape_at_late_positions() {
    let case = Case { rows: 3, heads: 20, kv_heads: 5, head_dim: 128, pos0: 4093, max_positions: 4096, scaling: None };
    rope_matches_cpu(&case, 11);
}

#[test]
fn rope_matches_cpu_with_llama3_scaling() {
    let case = Case {
        rows: 5,
        heads: 4,
        kv_heads: 1,
        head_dim: 64,
        pos0: 0,
        max_positions: 5,
        scaling: Some(Llama3RopeScaling::LLAMA_3_2),
    };
    rope_matches_cpu(&case, 12);
}

#[test]
fn rope_matches_cpu_on_odd_shapes() {
    for (i, &(rows, heads, kv_heads, head_dim, pos0)) in
        [(1, 1, 1, 2, 6), (7, 3, 3, 40, 13), (2, 5, 1, 6, 0)].iter().enumerate()
    {
        let case = Case { rows, heads, kv_heads, head_dim, pos0, max_positions: 64, scaling: None };
        rope_matches_cpu(&case, 20 + i as u64);
    }
}

#[test]
fn set_step_rotates_only_the_step_rows() {
    let gpu = gpu();
    let mut rng = rng(13);
    let (max_rows, heads, kv_heads, head_dim) = (4u32, 2u32, 1u32, 8u32);
    let q = random_f32(&mut rng, (max_rows * heads * head_dim) as usize, 1.0);
    let k = random_f32(&mut rng, (max_rows * kv_heads * head_dim) as usize, 1.0);
    let q_buffer = gpu.storage_from("q", &q).unwrap();
    let k_buffer = gpu.storage_from("k", &k).unwrap();
    let table = RopeTable::new(gpu, head_dim, 10000.0, None, 16).unwrap();
    let mut op = Rope::new(gpu, &table, &q_buffer, &k_buffer, max_rows, heads, kv_heads).unwrap();
    let pipelines = gpu.pipelines_created();
    op.set_step(gpu, 1, 9).unwrap();
    gpu.run("rope decode", &[&op.dispatch]).unwrap();
    assert_eq!(gpu.pipelines_created(), pipelines, "set_step must not build pipelines");

    let cpu_table = rope_table(&rope_inv_freq(head_dim as usize, 10000.0, None), 16);
    let row = (heads * head_dim) as usize;
    let mut expected = q.clone();
    apply_rope(&mut expected[..row], 1, heads as usize, head_dim as usize, 9, &cpu_table);
    let got: Vec<f32> = gpu.read(&q_buffer).unwrap();
    assert_close("decode row", &got[..row], &expected[..row], TOLERANCE);
    assert_eq!(&got[row..], &q[row..], "rows past the step were changed");

    assert!(op.set_step(gpu, max_rows + 1, 0).is_err(), "more rows than allocated");
    let err = op.set_step(gpu, 2, 15).expect_err("positions past the table");
    assert!(err.to_string().contains("16 positions"), "{err}");
    op.set_step(gpu, 1, 15).unwrap();
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = gpu();
    assert!(RopeTable::new(gpu, 7, 10000.0, None, 8).is_err(), "odd head_dim");
    assert!(RopeTable::new(gpu, 0, 10000.0, None, 8).is_err(), "zero head_dim");
    assert!(RopeTable::new(gpu, 8, 10000.0, None, 0).is_err(), "no positions");
    assert!(RopeTable::new(gpu, 8, f64::NAN, None, 8).is_err(), "bad theta");
    let table = RopeTable::new(gpu, 8, 10000.0, None, 8).unwrap();
    let q = gpu.storage_from("q", &[1.0f32; 2 * 4 * 8]).unwrap();
    let k = gpu.storage_from("k", &[1.0f32; 2 * 8]).unwrap();
    assert!(Rope::new(gpu, &table, &q, &k, 2, 4, 1).is_ok());
    assert!(Rope::new(gpu, &table, &q, &k, 3, 4, 1).is_err(), "buffers too small for 3 rows");
    assert!(Rope::new(gpu, &table, &q, &k, 2, 4, 2).is_err(), "k too small for 2 kv heads");
    assert!(Rope::new(gpu, &table, &q, &q, 2, 4, 1).is_err(), "q aliases k");
    assert!(Rope::new(gpu, &table, &q, &k, 2, 0, 1).is_err(), "no heads");
    assert!(Rope::new(gpu, &table, &q, &k, 9, 1, 1).is_err(), "more rows than positions");
}
