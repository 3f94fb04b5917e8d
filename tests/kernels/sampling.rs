use crate::common::*;
use deltallm::cpu::sampling as reference;
use deltallm::ops::sampling::{Argmax, NONE, TOPK_MAX_K, TopK, TopKEntry};
use rand::Rng;

/// Lengths around the workgroup size (256) and the chunk size of both
/// kernels (2048), and the real vocabulary (128256).
const LENGTHS: &[usize] = &[1, 7, 255, 256, 257, 2048, 2049, 5000, 128256];

/// Random logits with what makes selection hard planted in: copies of the
/// maximum far apart (ties across workgroups), runs of duplicates, ±0.0,
/// -inf and NaN.
fn tricky_logits(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    let mut logits = random_f32(rng, n, 8.0);
    if n < 4 {
        return logits;
    }
    let max = logits.iter().cloned().fold(f32::MIN, f32::max);
    for _ in 0..3 {
        let at = rng.random_range(0..n);
        logits[at] = max;
    }
    for _ in 0..n / 8 {
        let (from, to) = (rng.random_range(0..n), rng.random_range(0..n));
        logits[to] = logits[from];
    }
    let at = |rng: &mut dyn rand::RngCore| rng.random_range(0..n);
    logits[at(rng)] = 0.0;
    logits[at(rng)] = -0.0;
    logits[at(rng)] = f32::NEG_INFINITY;
    logits[at(rng)] = f32::NAN;
    logits
}

/// The GPU's padded top-k output as the CPU reference describes it.
fn expected_top_k(logits: &[f32], k: usize) -> Vec<(u32, u32)> {
    let mut expected: Vec<(u32, u32)> = reference::top_k(logits, k).iter().map(|&(i, v)| (i, v.to_bits())).collect();
    expected.resize(k, (NONE, f32::NEG_INFINITY.to_bits()));
    expected
}

fn poisoned_entries(n: usize) -> deltallm::gpu::GpuBuffer {
    let poison = vec![TopKEntry { id: 0xdead_beef, value: f32::NAN }; n];
    gpu().storage_from("topk.out", &poison).unwrap()
}

fn read_entries(out: &deltallm::gpu::GpuBuffer, k: usize) -> Vec<(u32, u32)> {
    let entries: Vec<TopKEntry> = gpu().read(out).unwrap();
    entries[..k].iter().map(|e| (e.id, e.value.to_bits())).collect()
}

#[test]
fn argmax_matches_cpu_with_ties_and_nan() {
    let gpu = gpu();
    for (case, &n) in LENGTHS.iter().enumerate() {
        let mut rng = rng(100 + case as u64);
        let logits = tricky_logits(&mut rng, n);
        let logits_buf = gpu.storage_from("logits", &logits).unwrap();
        let result = gpu.storage_from("argmax.result", &[0xdead_beefu32]).unwrap();
        let op = Argmax::new(gpu, &logits_buf, &result, n as u32).unwrap();
        gpu.run("argmax", &op.dispatches()).unwrap();
        let got: Vec<u32> = gpu.read(&result).unwrap();
        assert_eq!(Some(got[0]), reference::argmax(&logits), "argmax of {n} logits");
    }
}

#[test]
fn argmax_of_all_nan_is_none_and_ties_go_to_the_lowest_index() {
    let gpu = gpu();
    let n = 3000;
    let result = gpu.storage_from("argmax.result", &[0u32]).unwrap();
    let nan = gpu.storage_from("logits", &vec![f32::NAN; n]).unwrap();
    let op = Argmax::new(gpu, &nan, &result, n as u32).unwrap();
    gpu.run("argmax", &op.dispatches()).unwrap();
    assert_eq!(gpu.read::<u32>(&result).unwrap()[0], NONE);

    // The same value everywhere after a NaN prefix: the first number wins.
    let mut flat = vec![1.5f32; n];
    flat[..1500].fill(f32::NAN);
    let flat_buf = gpu.storage_from("logits", &flat).unwrap();
    let op = Argmax::new(gpu, &flat_buf, &result, n as u32).unwrap();
    gpu.run("argmax", &op.dispatches()).unwrap();
    assert_eq!(gpu.read::<u32>(&result).unwrap()[0], 1500);
}

#[test]
fn argmax_set_range_selects_one_row_of_a_batch() {
    let gpu = gpu();
    let mut rng = rng(7);
    let (rows, vocab) = (3usize, 4100usize);
    let logits = tricky_logits(&mut rng, rows * vocab);
    let logits_buf = gpu.storage_from("logits", &logits).unwrap();
    let result = gpu.storage_from("argmax.result", &[0xdead_beefu32]).unwrap();
    let mut op = Argmax::new(gpu, &logits_buf, &result, vocab as u32).unwrap();
    for row in 0..rows {
        let row_logits = &logits[row * vocab..(row + 1) * vocab];
        op.set_range(gpu, (row * vocab) as u32, vocab as u32).unwrap();
        gpu.run("argmax", &op.dispatches()).unwrap();
        assert_eq!(Some(gpu.read::<u32>(&result).unwrap()[0]), reference::argmax(row_logits), "row {row}");
    }
    // A shorter range, then ranges the op or the buffer cannot hold.
    op.set_range(gpu, 10, 300).unwrap();
    gpu.run("argmax", &op.dispatches()).unwrap();
    assert_eq!(Some(gpu.read::<u32>(&result).unwrap()[0]), reference::argmax(&logits[10..310]));
    assert!(op.set_range(gpu, 0, 0).is_err());
    assert!(op.set_range(gpu, 0, vocab as u32 + 1).is_err());
    assert!(op.set_range(gpu, (rows * vocab) as u32 - 10, vocab as u32).is_err());
}

#[test]
fn argmax_rejects_bad_shapes() {
    let gpu = gpu();
    let logits = gpu.storage_from("logits", &[1.0f32; 100]).unwrap();
    let result = gpu.storage("argmax.result", 4).unwrap();
    assert!(Argmax::new(gpu, &logits, &result, 0).is_err());
    assert!(Argmax::new(gpu, &logits, &result, 101).is_err());
}

#[test]
fn topk_matches_cpu_for_each_k() {
    let gpu = gpu();
    for (case, &n) in LENGTHS.iter().enumerate() {
        let mut rng = rng(200 + case as u64);
        let logits = tricky_logits(&mut rng, n);
        let logits_buf = gpu.storage_from("logits", &logits).unwrap();
        let out = poisoned_entries(TOPK_MAX_K as usize);
        let mut op = TopK::new(gpu, &logits_buf, &out, n as u32, 1).unwrap();
        for k in [1usize, 5, 40, 64] {
            op.set_k(gpu, k as u32).unwrap();
            gpu.run("topk", &op.dispatches()).unwrap();
            assert_eq!(read_entries(&out, k), expected_top_k(&logits, k), "top-{k} of {n} logits");
        }
    }
}

#[test]
fn topk_orders_a_wide_tie_by_id() {
    // 3000 copies of the maximum spread over both chunks: every pick is a
    // tie, so the output must be the lowest ids in order.
    let gpu = gpu();
    let mut rng = rng(301);
    let n = 5000;
    let mut logits = random_f32(&mut rng, n, 1.0);
    for value in logits.iter_mut() {
        if rng.random_range(0..5) < 3 {
            *value = 2.5;
        }
    }
    let logits_buf = gpu.storage_from("logits", &logits).unwrap();
    let out = poisoned_entries(64);
    let op = TopK::new(gpu, &logits_buf, &out, n as u32, 64).unwrap();
    gpu.run("topk", &op.dispatches()).unwrap();
    let got = read_entries(&out, 64);
    assert_eq!(got, expected_top_k(&logits, 64));
    assert!(got.iter().all(|&(_, v)| v == 2.5f32.to_bits()));
}

#[test]
fn topk_merges_more_chunks_than_lanes() {
    // Past 256 chunks (n > 524288) a merge lane owns several candidate lists.
    let gpu = gpu();
    let mut rng = rng(303);
    let n = 530_000;
    let logits = tricky_logits(&mut rng, n);
    let logits_buf = gpu.storage_from("logits", &logits).unwrap();
    let out = poisoned_entries(64);
    let mut op = TopK::new(gpu, &logits_buf, &out, n as u32, 64).unwrap();
    for k in [64usize, 5] {
        op.set_k(gpu, k as u32).unwrap();
        gpu.run("topk", &op.dispatches()).unwrap();
        assert_eq!(read_entries(&out, k), expected_top_k(&logits, k), "top-{k} of {n} logits");
    }
}

#[test]
fn topk_set_range_and_padding() {
    let gpu = gpu();
    let mut rng = rng(302);
    let logits = tricky_logits(&mut rng, 6000);
    let logits_buf = gpu.storage_from("logits", &logits).unwrap();
    let out = poisoned_entries(40);
    let mut op = TopK::new(gpu, &logits_buf, &out, 3000, 40).unwrap();
    op.set_range(gpu, 2999, 2500).unwrap();
    gpu.run("topk", &op.dispatches()).unwrap();
    assert_eq!(read_entries(&out, 40), expected_top_k(&logits[2999..5499], 40));

    // Fewer numbers than k: two numbers among NaNs, the rest padding.
    let few = [f32::NAN, -3.0, f32::NAN, 7.0, f32::NAN];
    let few_buf = gpu.storage_from("logits", &few).unwrap();
    let op = TopK::new(gpu, &few_buf, &out, few.len() as u32, 40).unwrap();
    gpu.run("topk", &op.dispatches()).unwrap();
    let got = read_entries(&out, 40);
    assert_eq!(got, expected_top_k(&few, 40));
    assert_eq!(got[..2], [(3, 7.0f32.to_bits()), (1, (-3.0f32).to_bits())]);
    let entries: Vec<TopKEntry> = gpu.read(&out).unwrap();
    assert_eq!(TopKEntry::pairs(&entries), vec![(3, 7.0), (1, -3.0)]);
}

#[test]
fn topk_rejects_bad_params() {
    let gpu = gpu();
    let logits = gpu.storage_from("logits", &[1.0f32; 100]).unwrap();
    let out = poisoned_entries(8);
    assert!(TopK::new(gpu, &logits, &out, 100, 0).is_err());
    assert!(TopK::new(gpu, &logits, &out, 100, TOPK_MAX_K + 1).is_err());
    assert!(TopK::new(gpu, &logits, &out, 0, 4).is_err());
    assert!(TopK::new(gpu, &logits, &out, 101, 4).is_err());
    assert!(TopK::new(gpu, &logits, &out, 100, 9).is_err(), "out holds only 8 entries");
    let mut op = TopK::new(gpu, &logits, &out, 100, 8).unwrap();
    assert!(op.set_k(gpu, 0).is_err());
    assert!(op.set_k(gpu, 9).is_err());
    assert!(op.set_range(gpu, 0, 0).is_err());
    assert!(op.set_range(gpu, 1, 100).is_err());
    assert_eq!(op.k(), 8, "a rejected set_k keeps the old k");
}
