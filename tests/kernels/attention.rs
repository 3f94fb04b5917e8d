use crate::common::*;
use deltallm::cpu::attention::causal_attention;
use deltallm::gpu::GpuBuffer;
use deltallm::ops::attention::{Attention, KvCache};

/// f32 dot products and an f32 online softmax against an f64 reference.
const TOLERANCE: f64 = 1e-5;

/// One layer's attention with its input and output buffers.
struct Layer {
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    q: GpuBuffer,
    k: GpuBuffer,
    v: GpuBuffer,
    out: GpuBuffer,
    op: Attention,
}

impl Layer {
    fn new(heads: usize, kv_heads: usize, head_dim: usize, max_rows: usize, max_seq: usize) -> Layer {
        let gpu = gpu();
        let q_len = max_rows * heads * head_dim;
        let kv_len = max_rows * kv_heads * head_dim;
        let q = gpu.storage("q", q_len as u64 * 4).unwrap();
        let k = gpu.storage("k", kv_len as u64 * 4).unwrap();
        let v = gpu.storage("v", kv_len as u64 * 4).unwrap();
        let out = poisoned(gpu, "out", q_len);
        let cache = KvCache::new(gpu, "cache", kv_heads as u32, head_dim as u32, max_seq as u32).unwrap();
        let op = Attention::new(gpu, &cache, &q, &k, &v, &out, max_rows as u32, heads as u32).unwrap();
        Layer { heads, kv_heads, head_dim, q, k, v, out, op }
    }

    /// Run one step of `rows` tokens at `pos0..`, taking their q rows and
    /// k/v rows from full-sequence arrays; returns the step's output rows.
    fn step(&mut self, q: &[f32], k: &[f32], v: &[f32], rows: usize, pos0: usize) -> Vec<f32> {
        let gpu = gpu();
        let (q_width, kv_width) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
        let kv_rows = pos0 * kv_width..(pos0 + rows) * kv_width;
        gpu.write(&self.q, 0, bytemuck::cast_slice(&q[pos0 * q_width..(pos0 + rows) * q_width]));
        gpu.write(&self.k, 0, bytemuck::cast_slice(&k[kv_rows.clone()]));
        gpu.write(&self.v, 0, bytemuck::cast_slice(&v[kv_rows]));
        let poison = vec![f32::NAN; (self.out.size / 4) as usize];
        gpu.write(&self.out, 0, bytemuck::cast_slice(&poison));
        self.op.set_step(gpu, rows as u32, pos0 as u32).unwrap();
        gpu.run("attention step", &self.op.dispatches()).unwrap();
        let mut got: Vec<f32> = gpu.read(&self.out).unwrap();
        assert!(got[rows * q_width..].iter().all(|x| x.is_nan()), "rows past the step were written");
        got.truncate(rows * q_width);
        got
    }
}

/// Random q, k, v for `len` tokens. q and k are large enough that softmax
/// is peaked (score spread ~3 after scaling), so a wrong max or rescale shows.
fn random_sequence(seed: u64, len: usize, heads: usize, kv_heads: usize, head_dim: usize) -> [Vec<f32>; 3] {
    let mut rng = rng(seed);
    [
        random_f32(&mut rng, len * heads * head_dim, 3.0),
        random_f32(&mut rng, len * kv_heads * head_dim, 3.0),
        random_f32(&mut rng, len * kv_heads * head_dim, 1.0),
    ]
}

/// Queries `pos0..pos0 + rows` of the CPU reference over the full arrays.
fn expected(seq: &[Vec<f32>; 3], layer: &Layer, rows: usize, pos0: usize) -> Vec<f32> {
    let (q_width, kv_width) = (layer.heads * layer.head_dim, layer.kv_heads * layer.head_dim);
    causal_attention(
        &seq[0][pos0 * q_width..(pos0 + rows) * q_width],
        &seq[1][..(pos0 + rows) * kv_width],
        &seq[2][..(pos0 + rows) * kv_width],
        rows,
        pos0,
        layer.heads,
        layer.kv_heads,
        layer.head_dim,
    )
}

#[test]
fn attention_matches_cpu_over_gqa_ratios_and_head_dims() {
    // (heads, kv_heads, head_dim, pos0, rows): GQA ratios 1, 4 (BitNet's
    // 20/5), 5 and 8; head dims 64, 128, 256 and odd ones.
    let cases = [
        (2, 2, 64, 0, 5),
        (20, 5, 128, 3, 4),
        (5, 1, 40, 7, 2),
        (8, 1, 64, 2, 3),
        (3, 3, 256, 1, 2),
        (2, 1, 6, 0, 1),
        (4, 2, 18, 5, 1),
    ];
    for (i, &(heads, kv_heads, head_dim, pos0, rows)) in cases.iter().enumerate() {
        let len = pos0 + rows;
        let seq = random_sequence(40 + i as u64, len, heads, kv_heads, head_dim);
        let mut layer = Layer::new(heads, kv_heads, head_dim, pos0.max(rows), len + 3);
        let what = format!("heads {heads}/{kv_heads} hd {head_dim}");
        if pos0 > 0 {
            let got = layer.step(&seq[0], &seq[1], &seq[2], pos0, 0);
            assert_close(&format!("{what} first {pos0}"), &got, &expected(&seq, &layer, pos0, 0), TOLERANCE);
        }
        let got = layer.step(&seq[0], &seq[1], &seq[2], rows, pos0);
        let want = expected(&seq, &layer, rows, pos0);
        assert_close(&format!("{what} rows {rows} at {pos0}"), &got, &want, TOLERANCE);
    }
}

#[test]
fn prefill_then_decode_equals_one_prefill() {
    let (heads, kv_heads, head_dim, len, prompt) = (4, 2, 64, 11, 6);
    let seq = random_sequence(50, len, heads, kv_heads, head_dim);

    let mut whole = Layer::new(heads, kv_heads, head_dim, len, len);
    let full = whole.step(&seq[0], &seq[1], &seq[2], len, 0);
    assert_close("one prefill", &full, &expected(&seq, &whole, len, 0), TOLERANCE);

    let mut stepped = Layer::new(heads, kv_heads, head_dim, len, len);
    let mut got = stepped.step(&seq[0], &seq[1], &seq[2], prompt, 0);
    let pipelines = gpu().pipelines_created();
    for pos in prompt..len {
        got.extend(stepped.step(&seq[0], &seq[1], &seq[2], 1, pos));
    }
    assert_eq!(gpu().pipelines_created(), pipelines, "decode steps must not build pipelines");
    // The same keys in the same blocks and order: the same f32 arithmetic.
    assert_close("prefill + decode vs one prefill", &got, &full, 1e-7);
}

#[test]
fn query_head_groups_that_do_not_fill_a_workgroup() {
    // A workgroup serves up to 4 query heads of one KV head: groups of 9
    // (4 + 4 + 1), 3 (SmolLM2's 9/3), 4, 6 (4 + 2) and 1, over lengths that
    // end inside a block of 64 keys.
    let cases = [(9, 1, 24, 67, 2), (9, 3, 64, 65, 1), (8, 2, 40, 63, 3), (12, 2, 8, 70, 1), (3, 3, 33, 129, 2)];
    for (i, &(heads, kv_heads, head_dim, pos0, rows)) in cases.iter().enumerate() {
        let len = pos0 + rows;
        let seq = random_sequence(70 + i as u64, len, heads, kv_heads, head_dim);
        let mut layer = Layer::new(heads, kv_heads, head_dim, pos0, len);
        let what = format!("heads {heads}/{kv_heads} hd {head_dim}");
        let got = layer.step(&seq[0], &seq[1], &seq[2], pos0, 0);
        assert_close(&format!("{what} prefill of {pos0}"), &got, &expected(&seq, &layer, pos0, 0), TOLERANCE);
        let got = layer.step(&seq[0], &seq[1], &seq[2], rows, pos0);
        let want = expected(&seq, &layer, rows, pos0);
        assert_close(&format!("{what} rows {rows} at {pos0}"), &got, &want, TOLERANCE);
    }
}

#[test]
fn long_context_crosses_many_key_blocks() {
    let (heads, kv_heads, head_dim, len, prompt) = (2, 1, 64, 600, 597);
    let seq = random_sequence(60, len, heads, kv_heads, head_dim);
    let mut layer = Layer::new(heads, kv_heads, head_dim, prompt, len);
    let got = layer.step(&seq[0], &seq[1], &seq[2], prompt, 0);
    assert_close("prefill of 597", &got, &expected(&seq, &layer, prompt, 0), TOLERANCE);
    let got = layer.step(&seq[0], &seq[1], &seq[2], 2, prompt);
    assert_close("2 rows at 597", &got, &expected(&seq, &layer, 2, prompt), TOLERANCE);
    let got = layer.step(&seq[0], &seq[1], &seq[2], 1, len - 1);
    assert_close("decode at 599", &got, &expected(&seq, &layer, 1, len - 1), TOLERANCE);
}

#[test]
fn context_past_the_cache_is_an_error() {
    let gpu = gpu();
    let mut layer = Layer::new(2, 1, 8, 4, 10);
    let err = layer.op.set_step(gpu, 1, 10).expect_err("position 10 of a 10-position cache");
    assert!(err.to_string().contains("KV cache of 10 positions"), "{err}");
    assert!(layer.op.set_step(gpu, 4, 7).is_err(), "rows past the end");
    assert!(layer.op.set_step(gpu, 5, 0).is_err(), "more rows than allocated");
    assert!(layer.op.set_step(gpu, u32::MAX, u32::MAX).is_err(), "overflowing positions");
    layer.op.set_step(gpu, 4, 6).unwrap();
}

#[test]
fn bad_shapes_are_errors() {
    let gpu = gpu();
    let buffer = |n: usize| gpu.storage("buffer", n as u64 * 4).unwrap();
    let (q, k, v, out) = (buffer(2 * 4 * 8), buffer(2 * 2 * 8), buffer(2 * 2 * 8), buffer(2 * 4 * 8));
    let cache = KvCache::new(gpu, "cache", 2, 8, 16).unwrap();
    assert!(Attention::new(gpu, &cache, &q, &k, &v, &out, 2, 4).is_ok());
    assert!(Attention::new(gpu, &cache, &q, &k, &v, &out, 2, 3).is_err(), "heads not a multiple of kv_heads");
    assert!(Attention::new(gpu, &cache, &q, &k, &v, &out, 3, 4).is_err(), "buffers too small for 3 rows");
    assert!(Attention::new(gpu, &cache, &q, &k, &v, &q, 2, 4).is_err(), "out aliases q");
    assert!(Attention::new(gpu, &cache, &q, &k, &v, &out, 0, 4).is_err(), "no rows");
    let short = KvCache::new(gpu, "short", 2, 8, 1).unwrap();
    assert!(Attention::new(gpu, &short, &q, &k, &v, &out, 2, 4).is_err(), "more rows than the cache");
    let wide = KvCache::new(gpu, "wide", 1, 257, 1).unwrap();
    let big = buffer(2 * 257);
    assert!(Attention::new(gpu, &wide, &big, &big, &big, &out, 1, 1).is_err(), "head_dim over 256");
    assert!(KvCache::new(gpu, "empty", 0, 8, 16).is_err());
    assert!(KvCache::new(gpu, "huge", 64, 256, 1 << 20).is_err(), "over the binding limit");
}
