use crate::common::*;
use deltallm::cpu::attention::causal_attention;
use deltallm::cpu::delta::{delta_keys, delta_stats, hybrid_attention};
use deltallm::gpu::GpuBuffer;
use deltallm::ops::attention::{Attention, KvCache};
use deltallm::ops::delta::{DeltaCache, DeltaKeys, HybridAttention, MAX_STEP_ROWS};
use rand::Rng;

/// f32 dot products, an f32 prefix sum of up to a few hundred q·Δk terms and
/// an f32 online softmax against an f64 reference.
const TOLERANCE: f64 = 1e-5;

/// Random q and v, and keys on smooth trajectories (k_t = k_{t−1} + noise of
/// `step`), so that the delta rule zeroes a realistic share of elements.
fn smooth_sequence(seed: u64, len: usize, heads: usize, kv_heads: usize, head_dim: usize) -> [Vec<f32>; 3] {
    let mut rng = rng(seed);
    let width = kv_heads * head_dim;
    let mut k = random_f32(&mut rng, width, 2.0);
    for t in 1..len {
        for i in 0..width {
            let step: f32 = rng.random_range(-0.15..0.15);
            k.push(k[(t - 1) * width + i] + step);
        }
    }
    [random_f32(&mut rng, len * heads * head_dim, 2.0), k, random_f32(&mut rng, len * width, 1.0)]
}

/// One layer: the dense op (for its append, and as the Θ = 0 reference),
/// the delta build and the hybrid attention over the same caches.
struct Layer {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    q: GpuBuffer,
    k: GpuBuffer,
    v: GpuBuffer,
    out: GpuBuffer,
    dense_out: GpuBuffer,
    deltas: DeltaCache,
    dense: Attention,
    build: DeltaKeys,
    hybrid: HybridAttention,
}

impl Layer {
    #[allow(clippy::too_many_arguments)]
    fn new(
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        max_rows: usize,
        max_seq: usize,
        theta: f32,
        window: u32,
        sinks: u32,
    ) -> Layer {
        let gpu = gpu();
        let q_len = max_rows * heads * head_dim;
        let kv_len = max_rows * kv_heads * head_dim;
        let q = gpu.storage("q", q_len as u64 * 4).unwrap();
        let k = gpu.storage("k", kv_len as u64 * 4).unwrap();
        let v = gpu.storage("v", kv_len as u64 * 4).unwrap();
        let out = poisoned(gpu, "out", q_len);
        let dense_out = poisoned(gpu, "dense_out", q_len);
        let cache = KvCache::new(gpu, "cache", kv_heads as u32, head_dim as u32, max_seq as u32).unwrap();
        let deltas = DeltaCache::new(gpu, "deltas", kv_heads as u32, head_dim as u32, max_seq as u32).unwrap();
        let nan_values = vec![f32::NAN; (deltas.values.size / 4) as usize];
        gpu.write(&deltas.values, 0, bytemuck::cast_slice(&nan_values));
        let (max_rows, heads32) = (max_rows as u32, heads as u32);
        let dense = Attention::new(gpu, &cache, &q, &k, &v, &dense_out, max_rows, heads32).unwrap();
        let build = DeltaKeys::new(gpu, &deltas, &k, max_rows, theta).unwrap();
        let hybrid = HybridAttention::new(gpu, &cache, &deltas, &q, &out, max_rows, heads32, window, sinks).unwrap();
        Layer { heads, kv_heads, head_dim, q, k, v, out, dense_out, deltas, dense, build, hybrid }
    }

    /// Run one step of `rows` tokens at `pos0..` from full-sequence arrays;
    /// returns the hybrid and the dense outputs of the step's rows.
    fn step(&mut self, seq: &[Vec<f32>; 3], rows: usize, pos0: usize) -> (Vec<f32>, Vec<f32>) {
        let gpu = gpu();
        let (q_width, kv_width) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
        let kv_rows = pos0 * kv_width..(pos0 + rows) * kv_width;
        gpu.write(&self.q, 0, bytemuck::cast_slice(&seq[0][pos0 * q_width..(pos0 + rows) * q_width]));
        gpu.write(&self.k, 0, bytemuck::cast_slice(&seq[1][kv_rows.clone()]));
        gpu.write(&self.v, 0, bytemuck::cast_slice(&seq[2][kv_rows]));
        let poison = vec![f32::NAN; (self.out.size / 4) as usize];
        gpu.write(&self.out, 0, bytemuck::cast_slice(&poison));
        gpu.write(&self.dense_out, 0, bytemuck::cast_slice(&poison));
        let (rows32, pos32) = (rows as u32, pos0 as u32);
        self.dense.set_step(gpu, rows32, pos32).unwrap();
        self.build.set_step(gpu, rows32, pos32).unwrap();
        self.hybrid.set_step(gpu, rows32, pos32).unwrap();
        let [append, attend] = self.dense.dispatches();
        gpu.run("delta step", &[append, &self.build.build, &self.hybrid.attend, attend]).unwrap();
        let read = |buf: &GpuBuffer| {
            let mut got: Vec<f32> = gpu.read(buf).unwrap();
            assert!(got[rows * q_width..].iter().all(|x| x.is_nan()), "rows past the step were written");
            got.truncate(rows * q_width);
            got
        };
        (read(&self.out), read(&self.dense_out))
    }

    /// Delta rows `[len][kv_heads · head_dim]` (position-major, as the CPU
    /// reference returns them) unpacked from the compressed rows, the masks,
    /// and the reference k̂. Checks that the rows are packed back to back and
    /// that no value past the last row was written.
    fn read_deltas(&self, len: usize) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
        let gpu = gpu();
        let values: Vec<f32> = gpu.read(&self.deltas.values).unwrap();
        let masks: Vec<u32> = gpu.read(&self.deltas.masks).unwrap();
        let starts: Vec<u32> = gpu.read(&self.deltas.row_starts).unwrap();
        let max_seq = self.deltas.max_seq as usize;
        let words = self.deltas.mask_words() as usize;
        let head_dim = self.head_dim;
        let mut rows = vec![0.0f32; len * self.kv_heads * head_dim];
        let mut row_masks = vec![0u32; len * self.kv_heads * words];
        for g in 0..self.kv_heads {
            let head_values = &values[g * max_seq * head_dim..][..max_seq * head_dim];
            let mut next = 0usize;
            for t in 0..len {
                let row = g * max_seq + t;
                assert_eq!(
                    starts[row] as usize,
                    next,
                    "row {t} of KV head {g} does not start where {} ended",
                    t as i64 - 1
                );
                let mask = &masks[row * words..][..words];
                row_masks[(t * self.kv_heads + g) * words..][..words].copy_from_slice(mask);
                for i in 0..head_dim {
                    if mask[i / 32] & (1 << (i % 32)) != 0 {
                        rows[(t * self.kv_heads + g) * head_dim + i] = head_values[next];
                        next += 1;
                    }
                }
            }
            assert!(
                head_values[next..].iter().all(|x| x.is_nan()),
                "KV head {g}: values past the last row were written"
            );
        }
        (rows, row_masks, gpu.read(&self.deltas.reference).unwrap())
    }
}

/// The masks the delta rows imply, in the layout of `read_deltas`.
fn masks_of(deltas: &[f32], head_dim: usize) -> Vec<u32> {
    deltas
        .chunks(head_dim)
        .flat_map(|row| {
            let mut words = vec![0u32; head_dim.div_ceil(32)];
            for (i, x) in row.iter().enumerate() {
                if *x != 0.0 {
                    words[i / 32] |= 1 << (i % 32);
                }
            }
            words
        })
        .collect()
}

#[test]
fn delta_build_matches_cpu_exactly_through_prefill_and_decode() {
    // (kv_heads, head_dim): a full mask word, an odd partial one, two and a half words.
    for (case, &(kv_heads, head_dim)) in [(2, 64), (3, 40), (1, 80), (1, 128)].iter().enumerate() {
        for theta in [0.0, 0.05, 0.5] {
            let (prompt, len) = (37, 42);
            let seq = smooth_sequence(70 + case as u64, len, kv_heads, kv_heads, head_dim);
            let mut layer = Layer::new(kv_heads, kv_heads, head_dim, prompt, len + 2, theta, 4, 0);
            layer.step(&seq, prompt, 0);
            // Decode: three single rows, then a step of two.
            for pos in prompt..prompt + 3 {
                layer.step(&seq, 1, pos);
            }
            layer.step(&seq, 2, prompt + 3);
            let width = kv_heads * head_dim;
            let (want, _, want_reference) = delta_keys(&seq[1], len, kv_heads, head_dim, theta, None);
            let (got, got_masks, got_reference) = layer.read_deltas(len);
            let what = format!("kv_heads {kv_heads} hd {head_dim} Θ {theta}");
            assert_eq!(got, want, "{what}: delta rows");
            assert_eq!(got_masks, masks_of(&want, head_dim), "{what}: masks");
            assert_eq!(got_reference, want_reference, "{what}: reference");
            let zeros = want[width..].iter().filter(|x| **x == 0.0).count() as f64 / want[width..].len() as f64;
            if theta >= 0.5 {
                assert!(zeros > 0.8, "{what}: smooth keys should give sparse deltas, got {zeros}");
            }
        }
    }
}

#[test]
fn a_new_sequence_at_position_zero_ignores_the_old_reference() {
    let (kv_heads, head_dim, len) = (2, 64, 9);
    let first = smooth_sequence(80, len, kv_heads, kv_heads, head_dim);
    let second = smooth_sequence(81, len, kv_heads, kv_heads, head_dim);
    let mut layer = Layer::new(kv_heads, kv_heads, head_dim, len, len, 0.05, 2, 0);
    layer.step(&first, len, 0);
    // Only the values check needs this: the first sequence's tail may be longer.
    let nan_values = vec![f32::NAN; (layer.deltas.values.size / 4) as usize];
    gpu().write(&layer.deltas.values, 0, bytemuck::cast_slice(&nan_values));
    layer.step(&second, len, 0);
    let (want, _, want_reference) = delta_keys(&second[1], len, kv_heads, head_dim, 0.05, None);
    let (got, _, got_reference) = layer.read_deltas(len);
    assert_eq!((got, got_reference), (want, want_reference));
}

/// The hybrid CPU reference for the step's rows.
fn expected(
    seq: &[Vec<f32>; 3],
    layer: &Layer,
    theta: f32,
    window: usize,
    sinks: usize,
    rows: usize,
    pos0: usize,
) -> Vec<f32> {
    let (q_width, kv_width) = (layer.heads * layer.head_dim, layer.kv_heads * layer.head_dim);
    let len = pos0 + rows;
    let (_, k_hat, _) = delta_keys(&seq[1][..len * kv_width], len, layer.kv_heads, layer.head_dim, theta, None);
    hybrid_attention(
        &seq[0][pos0 * q_width..len * q_width],
        &seq[1][..len * kv_width],
        &k_hat,
        &seq[2][..len * kv_width],
        rows,
        pos0,
        layer.heads,
        layer.kv_heads,
        layer.head_dim,
        window,
        sinks,
    )
}

#[test]
fn hybrid_attention_matches_cpu_over_theta_window_sinks_gqa_and_head_dims() {
    // Every (Θ, window) pair; GQA ratio, head_dim and sinks rotate so each
    // value meets several others. Lengths cross several key blocks of 64.
    let mut case = 0u64;
    for theta in [0.0f32, 0.05, 0.5] {
        for window in [1usize, 4, 64] {
            let (heads, kv_heads) = if case.is_multiple_of(2) { (2, 2) } else { (4, 1) };
            let head_dim = if case % 3 == 2 { 128 } else { 64 };
            let sinks = if (case / 2).is_multiple_of(2) { 0 } else { 4 };
            let (len, prompt) = if case.is_multiple_of(4) { (300, 297) } else { (150, 147) };
            let seq = smooth_sequence(90 + case, len, heads, kv_heads, head_dim);
            let mut layer = Layer::new(heads, kv_heads, head_dim, prompt, len, theta, window as u32, sinks as u32);
            let what = format!("Θ {theta} window {window} sinks {sinks} heads {heads}/{kv_heads} hd {head_dim}");
            let (got, dense) = layer.step(&seq, prompt, 0);
            let want = expected(&seq, &layer, theta, window, sinks, prompt, 0);
            assert_close(&format!("{what}: prefill {prompt}"), &got, &want, TOLERANCE);
            if theta > 0.0 && window < 64 {
                // The approximation must show, or the comparison above proves little.
                let drift = rel_l2(&got, &dense);
                assert!(drift > 10.0 * TOLERANCE, "{what}: hybrid only {drift:e} from dense");
                let kv_width = kv_heads * head_dim;
                let (deltas, _, _) = delta_keys(&seq[1][..prompt * kv_width], prompt, kv_heads, head_dim, theta, None);
                let stats = delta_stats(&deltas, prompt, kv_heads, head_dim, window, sinks);
                eprintln!("{what}: drift from dense {drift:.2e}, {stats:?}");
            }
            let (got, _) = layer.step(&seq, len - prompt, prompt);
            let want = expected(&seq, &layer, theta, window, sinks, len - prompt, prompt);
            assert_close(&format!("{what}: {} rows at {prompt}", len - prompt), &got, &want, TOLERANCE);
            case += 1;
        }
    }
}

#[test]
fn theta_zero_equals_the_dense_attention_op() {
    for (heads, kv_heads, head_dim, window, sinks) in [(4, 1, 64, 1, 0), (2, 2, 128, 4, 4), (3, 3, 40, 0, 0)] {
        let len = 130;
        let seq = smooth_sequence(100 + head_dim as u64, len, heads, kv_heads, head_dim);
        let mut layer = Layer::new(heads, kv_heads, head_dim, len, len, 0.0, window, sinks);
        let (hybrid, dense) = layer.step(&seq, len, 0);
        let (q_width, kv_width) = (heads * head_dim, kv_heads * head_dim);
        let reference = causal_attention(
            &seq[0][..len * q_width],
            &seq[1][..len * kv_width],
            &seq[2],
            len,
            0,
            heads,
            kv_heads,
            head_dim,
        );
        assert_close("dense op vs cpu", &dense, &reference, TOLERANCE);
        assert_close(&format!("Θ = 0 hybrid (window {window}) vs dense op"), &hybrid, &dense, TOLERANCE);
    }
}

#[test]
fn decode_after_prefill_equals_one_prefill() {
    let (heads, kv_heads, head_dim, len, prompt, theta, window, sinks) = (4, 2, 64, 140, 125, 0.05, 4, 4);
    let seq = smooth_sequence(110, len, heads, kv_heads, head_dim);
    let mut whole = Layer::new(heads, kv_heads, head_dim, len, len, theta, window, sinks);
    let (full, _) = whole.step(&seq, len, 0);
    assert_close("one prefill", &full, &expected(&seq, &whole, theta, 4, 4, len, 0), TOLERANCE);

    let mut stepped = Layer::new(heads, kv_heads, head_dim, len, len, theta, window, sinks);
    let (mut got, _) = stepped.step(&seq, prompt, 0);
    let pipelines = gpu().pipelines_created();
    for pos in prompt..len {
        got.extend(stepped.step(&seq, 1, pos).0);
    }
    assert_eq!(gpu().pipelines_created(), pipelines, "decode steps must not build pipelines");
    // The same delta rows, blocks and summation order: the same f32 arithmetic.
    assert_close("prefill + decode vs one prefill", &got, &full, 1e-7);
}

#[test]
fn outside_window_scores_are_within_theta_times_q_l1() {
    let (kv_heads, head_dim, len) = (2, 64, 50);
    let seq = smooth_sequence(120, len, kv_heads, kv_heads, head_dim);
    for theta in [0.05f32, 0.5] {
        let (_, k_hat, _) = delta_keys(&seq[1], len, kv_heads, head_dim, theta, None);
        for t in 0..len {
            for g in 0..kv_heads {
                let at = (t * kv_heads + g) * head_dim;
                let query = &seq[0][at..][..head_dim];
                let q_l1: f32 = query.iter().map(|x| x.abs()).sum();
                let dot = |key: &[f32]| query.iter().zip(key).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>();
                let error = (dot(&seq[1][at..][..head_dim]) - dot(&k_hat[at..][..head_dim])).abs();
                assert!(error <= (theta * q_l1) as f64 * (1.0 + 1e-6), "Θ {theta} key {t} head {g}: {error}");
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = gpu();
    let buffer = |n: usize| gpu.storage("buffer", n as u64 * 4).unwrap();
    let (q, k, out) = (buffer(2 * 4 * 8), buffer(2 * 2 * 8), buffer(2 * 4 * 8));
    let cache = KvCache::new(gpu, "cache", 2, 8, 16).unwrap();
    let deltas = DeltaCache::new(gpu, "deltas", 2, 8, 16).unwrap();
    assert!(DeltaKeys::new(gpu, &deltas, &k, 2, 0.1).is_ok());
    assert!(DeltaKeys::new(gpu, &deltas, &k, 3, 0.1).is_err(), "k too small for 3 rows");
    assert!(DeltaKeys::new(gpu, &deltas, &k, 0, 0.1).is_err(), "no rows");
    assert!(DeltaKeys::new(gpu, &deltas, &k, 2, -0.1).is_err(), "negative Θ");
    assert!(DeltaKeys::new(gpu, &deltas, &k, 2, f32::NAN).is_err(), "NaN Θ");
    let mut build = DeltaKeys::new(gpu, &deltas, &k, 2, 0.1).unwrap();
    assert!(build.set_step(gpu, 3, 0).is_err(), "more rows than allocated");
    assert!(build.set_step(gpu, 1, 16).is_err(), "past the cache");
    assert!(build.set_theta(gpu, f32::INFINITY).is_err());
    let long = DeltaCache::new(gpu, "long", 1, 8, MAX_STEP_ROWS + 1).unwrap();
    let k_long = buffer((MAX_STEP_ROWS as usize + 1) * 8);
    let err = DeltaKeys::new(gpu, &long, &k_long, MAX_STEP_ROWS + 1, 0.1).err().expect("a step over MAX_STEP_ROWS");
    assert!(err.to_string().contains("in steps"), "{err}");
    assert!(DeltaKeys::new(gpu, &long, &k_long, MAX_STEP_ROWS, 0.1).is_ok());

    assert!(HybridAttention::new(gpu, &cache, &deltas, &q, &out, 2, 4, 4, 0).is_ok());
    assert!(HybridAttention::new(gpu, &cache, &deltas, &q, &out, 2, 3, 4, 0).is_err(), "heads vs kv_heads");
    assert!(HybridAttention::new(gpu, &cache, &deltas, &q, &out, 3, 4, 4, 0).is_err(), "buffers too small");
    assert!(HybridAttention::new(gpu, &cache, &deltas, &q, &q, 2, 4, 4, 0).is_err(), "out aliases q");
    assert!(HybridAttention::new(gpu, &cache, &deltas, &q, &out, 0, 4, 4, 0).is_err(), "no rows");
    let other = DeltaCache::new(gpu, "other", 2, 8, 15).unwrap();
    assert!(HybridAttention::new(gpu, &cache, &other, &q, &out, 2, 4, 4, 0).is_err(), "caches disagree");
    let mut hybrid = HybridAttention::new(gpu, &cache, &deltas, &q, &out, 2, 4, 4, 0).unwrap();
    assert!(hybrid.set_step(gpu, 2, 15).is_err(), "past the cache");
    assert!(hybrid.set_step(gpu, u32::MAX, u32::MAX).is_err());
    hybrid.set_step(gpu, 2, 14).unwrap();

    assert!(DeltaCache::new(gpu, "empty", 0, 8, 16).is_err());
    assert!(DeltaCache::new(gpu, "wide", 1, 257, 16).is_err(), "head_dim over 256");
    assert!(DeltaCache::new(gpu, "huge", 64, 256, 1 << 20).is_err(), "over the binding limit");
}

/// Not a check: wall time of a prefill and of decode steps, hybrid vs dense,
/// on whatever adapter the tests get (`cargo test --release --test kernels
/// delta::timing -- --ignored --nocapture`).
#[test]
#[ignore]
fn timing_hybrid_vs_dense() {
    let gpu = gpu();
    let (heads, kv_heads, head_dim, len) = (20, 5, 128, 512);
    let seq = smooth_sequence(130, len, heads, kv_heads, head_dim);
    for theta in [0.0f32, 0.5] {
        let mut layer = Layer::new(heads, kv_heads, head_dim, len, len, theta, 16, 4);
        let (rows, pos) = (len as u32 - 8, 0);
        layer.step(&seq, rows as usize, pos);
        let time = |label: &str, dispatches: &[&deltallm::gpu::Dispatch]| {
            let start = std::time::Instant::now();
            gpu.run(label, dispatches).unwrap();
            gpu.wait().unwrap();
            start.elapsed().as_secs_f64() * 1e3
        };
        let [_, dense] = layer.dense.dispatches();
        let prefill_dense = time("dense", &[dense]);
        let prefill_hybrid = time("hybrid", &[&layer.hybrid.attend]);
        let prefill_build = time("build", &[&layer.build.build]);
        layer.dense.set_step(gpu, 1, len as u32 - 1).unwrap();
        layer.hybrid.set_step(gpu, 1, len as u32 - 1).unwrap();
        let [_, dense] = layer.dense.dispatches();
        let decode_dense = time("dense", &[dense]);
        let decode_hybrid = time("hybrid", &[&layer.hybrid.attend]);
        eprintln!(
            "Θ {theta}, {heads}/{kv_heads} heads, hd {head_dim}, window 16, sinks 4: prefill of {rows}: \
             dense {prefill_dense:.1} ms, hybrid {prefill_hybrid:.1} ms, delta build {prefill_build:.1} ms; \
             decode at {}: dense {decode_dense:.2} ms, hybrid {decode_hybrid:.2} ms",
            len - 1
        );
    }
}
