use crate::common::*;
use deltallm::cpu::attention::causal_attention;
use deltallm::cpu::delta::{delta_keys, delta_stats, hybrid_attention};
use deltallm::gpu::GpuBuffer;
use deltallm::ops::attention::{Attention, KvCache};
use deltallm::ops::delta::{DeltaCache, DeltaKeys, MAX_STEP_ROWS, unpack_rows};
use deltallm::ops::hybrid::HybridAttention;
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

/// How a test layer keeps its keys and delta values.
#[derive(Clone, Copy)]
struct Spec {
    /// Full keys only for the sinks and a ring of `window + max_rows − 1`
    /// (the model's compressed K cache); else the full cache.
    ring: bool,
    /// Initial value words per KV head (`None`: the default density).
    capacity: Option<u64>,
}

const RING: Spec = Spec { ring: true, capacity: None };

/// One layer: the dense op over a full K cache (the Θ = 0 reference), the
/// delta build, and the hybrid attention over the compressed K cache (a key
/// ring with its own append) or the same full cache.
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
    /// Appends to the key ring (with `Spec::ring`).
    ring_append: Option<Attention>,
    build: DeltaKeys,
    hybrid: HybridAttention,
    /// Values were poisoned at creation: until they grow, nothing past the
    /// last row may have been written.
    poisoned_values: bool,
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
        Self::with(RING, heads, kv_heads, head_dim, max_rows, max_seq, theta, window, sinks)
    }

    #[allow(clippy::too_many_arguments)]
    fn with(
        spec: Spec,
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
        let (kv_heads32, head_dim32, max_seq32) = (kv_heads as u32, head_dim as u32, max_seq as u32);
        let cache = KvCache::new(gpu, "cache", kv_heads32, head_dim32, max_seq32).unwrap();
        let deltas = match spec.capacity {
            Some(words) => {
                DeltaCache::with_capacity(gpu, "deltas", kv_heads32, head_dim32, max_seq32, words, u64::MAX).unwrap()
            }
            None => DeltaCache::new(gpu, "deltas", kv_heads32, head_dim32, max_seq32).unwrap(),
        };
        gpu.write(&deltas.values, 0, &vec![0xff; deltas.values.size as usize]);
        let (max_rows, heads32) = (max_rows as u32, heads as u32);
        let dense = Attention::new(gpu, &cache, &q, &k, &v, &dense_out, max_rows, heads32).unwrap();
        let build = DeltaKeys::new(gpu, &deltas, &k, max_rows, theta).unwrap();
        let (hybrid, ring_append) = if spec.ring {
            let ring_rows = window.max(1) + max_rows - 1;
            let ring =
                KvCache::with_key_ring(gpu, "ring", kv_heads32, head_dim32, max_seq32, sinks, ring_rows).unwrap();
            let append = Attention::new(gpu, &ring, &q, &k, &v, &dense_out, max_rows, heads32).unwrap();
            let hybrid = HybridAttention::new(gpu, &ring, &deltas, &q, &out, max_rows, heads32, window, sinks).unwrap();
            (hybrid, Some(append))
        } else {
            (HybridAttention::new(gpu, &cache, &deltas, &q, &out, max_rows, heads32, window, sinks).unwrap(), None)
        };
        Layer {
            heads,
            kv_heads,
            head_dim,
            q,
            k,
            v,
            out,
            dense_out,
            deltas,
            dense,
            ring_append,
            build,
            hybrid,
            poisoned_values: true,
        }
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
        if self.deltas.reserve(gpu, rows32, pos32).unwrap() {
            self.poisoned_values = false;
        }
        self.dense.set_step(gpu, rows32, pos32).unwrap();
        self.build.set_step(gpu, &self.deltas, rows32, pos32).unwrap();
        self.hybrid.set_step(gpu, &self.deltas, rows32, pos32).unwrap();
        let [append, attend] = self.dense.dispatches();
        let mut dispatches = vec![append];
        if let Some(ring) = &mut self.ring_append {
            ring.set_step(gpu, rows32, pos32).unwrap();
            dispatches.push(&ring.append);
        }
        dispatches.extend([&self.build.build, &self.hybrid.attend, attend]);
        gpu.run("delta step", &dispatches).unwrap();
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
    /// and the reference k̂. Checks that the rows are packed back to back,
    /// odd rows padded with +0.0, the used counts, and (before any growth)
    /// that no value past the last row was written.
    fn read_deltas(&self, len: usize) -> (Vec<f32>, Vec<u32>, Vec<f32>) {
        let gpu = gpu();
        let d = &self.deltas;
        let values: Vec<u32> = gpu.read(&d.values).unwrap();
        let rows: Vec<u32> = gpu.read(&d.rows).unwrap();
        let used = d.read_used(gpu).unwrap();
        let (max_seq, capacity) = (d.max_seq as usize, d.capacity as usize);
        let (words, row_words) = (d.mask_words() as usize, d.row_words() as usize);
        let mut row_masks = vec![0u32; len * self.kv_heads * words];
        for g in 0..self.kv_heads {
            let head_values = &values[g * capacity..][..capacity];
            let mut next = 0usize;
            for t in 0..len {
                let row = &rows[(g * max_seq + t) * row_words..][..row_words];
                assert_eq!(row[words] as usize, next, "row {t} of KV head {g} does not start where the previous ended");
                row_masks[(t * self.kv_heads + g) * words..][..words].copy_from_slice(&row[..words]);
                let nnz: usize = row[..words].iter().map(|w| w.count_ones() as usize).sum();
                next += nnz.div_ceil(2);
                if nnz % 2 == 1 {
                    assert_eq!(head_values[next - 1] >> 16, 0, "row {t} of KV head {g}: padding is not +0.0");
                }
            }
            assert_eq!(used[g] as usize, next, "KV head {g}: used words");
            if self.poisoned_values {
                assert!(
                    head_values[next..].iter().all(|&x| x == u32::MAX),
                    "KV head {g}: values past the last row were written"
                );
            }
        }
        let deltas = unpack_rows(&rows, &values, d.kv_heads, d.head_dim, d.max_seq, d.capacity, len as u32);
        (deltas, row_masks, gpu.read(&d.reference).unwrap())
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
    gpu().write(&layer.deltas.values, 0, &vec![0xff; layer.deltas.values.size as usize]);
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

/// Θ = 0 fires every element, but k̂ moves by f16-rounded deltas: the
/// hybrid path is dense attention up to that rounding (2⁻¹¹ relative per
/// delta, ~1e-3 on these keys of magnitude 2); the model attends densely at
/// Θ = 0 instead.
const F16_DELTA_TOLERANCE: f64 = 5e-3;

#[test]
fn theta_zero_is_the_dense_attention_op_up_to_f16_deltas() {
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
        let what = format!("Θ = 0 hybrid (window {window}) vs dense op");
        assert_close(&what, &hybrid, &dense, F16_DELTA_TOLERANCE);
        eprintln!("{what}: relative L2 {:.1e}", rel_l2(&hybrid, &dense));
    }
}

#[test]
fn query_groups_wider_or_narrower_than_a_workgroup() {
    // A workgroup serves up to 4 query heads of one KV head: 9:1 takes three
    // workgroups (4 + 4 + 1 heads), 3:1 (SmolLM2) one with a lane to spare.
    for (case, (heads, kv_heads)) in [(9, 1), (6, 2), (5, 5)].into_iter().enumerate() {
        let (head_dim, len, prompt, theta, window, sinks) = (48, 80, 70, 0.05, 4, 1);
        let seq = smooth_sequence(140 + case as u64, len, heads, kv_heads, head_dim);
        let mut layer = Layer::new(heads, kv_heads, head_dim, prompt, len, theta, window, sinks);
        let what = format!("heads {heads}/{kv_heads}");
        let (got, _) = layer.step(&seq, prompt, 0);
        assert_close(&what, &got, &expected(&seq, &layer, theta, 4, 1, prompt, 0), TOLERANCE);
        for pos in prompt..len {
            let (got, _) = layer.step(&seq, 1, pos);
            assert_close(&what, &got, &expected(&seq, &layer, theta, 4, 1, 1, pos), TOLERANCE);
        }
    }
}

#[test]
fn decode_after_prefill_equals_one_prefill() {
    let (heads, kv_heads, head_dim, len, prompt, theta, window, sinks) = (4, 2, 64, 140, 125, 0.05, 4, 4);
    let seq = smooth_sequence(110, len, heads, kv_heads, head_dim);
    // One step over everything: its ring holds every key.
    let mut whole = Layer::new(heads, kv_heads, head_dim, len, len, theta, window, sinks);
    let (full, _) = whole.step(&seq, len, 0);
    assert_close("one prefill", &full, &expected(&seq, &whole, theta, 4, 4, len, 0), TOLERANCE);

    // Steps of 8: a ring of 4 + 8 − 1 = 11 keys wraps around 12 times.
    let chunk = 8;
    let mut stepped = Layer::new(heads, kv_heads, head_dim, chunk, len, theta, window, sinks);
    let mut got = Vec::new();
    for pos in (0..prompt).step_by(chunk) {
        got.extend(stepped.step(&seq, chunk.min(prompt - pos), pos).0);
    }
    let pipelines = gpu().pipelines_created();
    for pos in prompt..len {
        got.extend(stepped.step(&seq, 1, pos).0);
    }
    assert_eq!(gpu().pipelines_created(), pipelines, "decode steps must not build pipelines");
    // The same delta rows, blocks and summation order: the same f32 arithmetic.
    assert_close("prefill + decode vs one prefill", &got, &full, 1e-7);
}

#[test]
fn key_ring_wraps_around_many_times() {
    // A ring of window 5 + 6 − 1 = 10 rows after 2 sink rows, over 120
    // positions (12 times round), in steps of 6, 1 and 3 rows.
    let (heads, kv_heads, head_dim, len, window, sinks, chunk) = (4, 2, 40, 120, 5u32, 2u32, 6);
    let seq = smooth_sequence(115, len, heads, kv_heads, head_dim);
    for theta in [0.05f32, 0.5] {
        let mut layer = Layer::new(heads, kv_heads, head_dim, chunk, len, theta, window, sinks);
        let mut pos = 0;
        for rows in std::iter::repeat([chunk, 1, 3]).flatten() {
            if pos == len {
                break;
            }
            let rows = rows.min(len - pos);
            let (got, _) = layer.step(&seq, rows, pos);
            let want = expected(&seq, &layer, theta, window as usize, sinks as usize, rows, pos);
            assert_close(&format!("Θ {theta}: {rows} rows at {pos}"), &got, &want, TOLERANCE);
            pos += rows;
        }
        let (want, _, _) = delta_keys(&seq[1], len, kv_heads, head_dim, theta, None);
        assert_eq!(layer.read_deltas(len).0, want, "Θ {theta}: delta rows");
    }
}

#[test]
fn values_grow_mid_generation() {
    // Room for 22 dense rows per KV head: the prompt's 20 fit, decode outgrows it.
    let (heads, kv_heads, head_dim, len, prompt, theta) = (4, 2, 64, 90, 20, 0.05);
    let seq = smooth_sequence(117, len, heads, kv_heads, head_dim);
    let spec = Spec { ring: true, capacity: Some(700) };
    let mut layer = Layer::with(spec, heads, kv_heads, head_dim, prompt, len, theta, 4, 1);
    let (got, _) = layer.step(&seq, prompt, 0);
    assert_close("prefill", &got, &expected(&seq, &layer, theta, 4, 1, prompt, 0), TOLERANCE);
    assert_eq!(layer.deltas.generation, 0, "the prompt should fit the first area");
    for pos in prompt..len {
        let (got, _) = layer.step(&seq, 1, pos);
        assert_close(&format!("decode at {pos}"), &got, &expected(&seq, &layer, theta, 4, 1, 1, pos), TOLERANCE);
    }
    assert!(layer.deltas.generation >= 1, "never grew");
    let (want, _, want_reference) = delta_keys(&seq[1], len, kv_heads, head_dim, theta, None);
    let (got, _, got_reference) = layer.read_deltas(len);
    assert_eq!((got, got_reference), (want, want_reference));
    // Grown, but not to the dense worst case.
    let worst = len as u32 * head_dim as u32 / 2;
    assert!(layer.deltas.capacity < worst, "capacity {} vs worst case {worst}", layer.deltas.capacity);
}

#[test]
fn growth_past_the_binding_limit_is_a_clear_error() {
    let gpu = gpu();
    let (kv_heads, head_dim, max_seq) = (2, 64, 64);
    // 100 words per KV head to start, at most 1000 bytes in all.
    let mut deltas = DeltaCache::with_capacity(gpu, "small", kv_heads, head_dim, max_seq, 100, 1000).unwrap();
    assert!(deltas.reserve(gpu, 3, 0).is_ok(), "3 dense rows fit 100 words");
    let err = deltas.reserve(gpu, 8, 0).unwrap_err().to_string();
    assert!(err.contains("limit") && err.contains("--context"), "{err}");
    let err = DeltaCache::with_capacity(gpu, "big", kv_heads, head_dim, max_seq, 200, 1000).err().unwrap();
    assert!(err.to_string().contains("limit"), "{err}");
}

#[test]
fn outside_window_scores_are_within_theta_times_q_l1() {
    let (kv_heads, head_dim, len) = (2, 64, 50);
    let seq = smooth_sequence(120, len, kv_heads, kv_heads, head_dim);
    for theta in [0.05f32, 0.5] {
        let (deltas, k_hat, _) = delta_keys(&seq[1], len, kv_heads, head_dim, theta, None);
        // Θ·‖q‖₁ plus the f16 rounding of the stored deltas (2⁻¹¹ relative).
        let largest = deltas.iter().fold(0.0f32, |m, x| m.max(x.abs())) as f64;
        for t in 0..len {
            for g in 0..kv_heads {
                let at = (t * kv_heads + g) * head_dim;
                let query = &seq[0][at..][..head_dim];
                let q_l1: f32 = query.iter().map(|x| x.abs()).sum();
                let dot = |key: &[f32]| query.iter().zip(key).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>();
                let error = (dot(&seq[1][at..][..head_dim]) - dot(&k_hat[at..][..head_dim])).abs();
                let bound = (theta as f64 + largest / 2048.0) * q_l1 as f64;
                assert!(error <= bound * (1.0 + 1e-6), "Θ {theta} key {t} head {g}: {error}");
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
    assert!(build.set_step(gpu, &deltas, 3, 0).is_err(), "more rows than allocated");
    assert!(build.set_step(gpu, &deltas, 1, 16).is_err(), "past the cache");
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
    assert!(hybrid.set_step(gpu, &deltas, 2, 15).is_err(), "past the cache");
    assert!(hybrid.set_step(gpu, &deltas, u32::MAX, u32::MAX).is_err());
    hybrid.set_step(gpu, &deltas, 2, 14).unwrap();
    // A key ring must hold the window and a step's rows, and the sinks.
    let ring = KvCache::with_key_ring(gpu, "ring", 2, 8, 16, 1, 5).unwrap();
    assert!(!ring.full_keys());
    assert!(HybridAttention::new(gpu, &ring, &deltas, &q, &out, 2, 4, 4, 1).is_ok());
    assert!(HybridAttention::new(gpu, &ring, &deltas, &q, &out, 2, 4, 5, 1).is_err(), "window + rows > ring");
    assert!(HybridAttention::new(gpu, &ring, &deltas, &q, &out, 2, 4, 4, 2).is_err(), "more sinks than rows");
    let mut hybrid = HybridAttention::new(gpu, &ring, &deltas, &q, &out, 2, 4, 2, 0).unwrap();
    assert!(hybrid.set_window(gpu, 6, 0).is_err(), "a window past the ring");
    assert!(Attention::new(gpu, &ring, &q, &k, &k, &out, 6, 4).is_err(), "a step longer than the ring");
    assert!(KvCache::with_key_ring(gpu, "wide", 2, 8, 16, 0, 99).unwrap().full_keys(), "a ring over everything");

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
        let spec = Spec { ring: false, capacity: None };
        let mut layer = Layer::with(spec, heads, kv_heads, head_dim, len, len, theta, 16, 4);
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
        layer.hybrid.set_step(gpu, &layer.deltas, 1, len as u32 - 1).unwrap();
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
