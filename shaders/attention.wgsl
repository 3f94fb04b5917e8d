// Dense causal attention with grouped-query heads over a KV cache, and the
// kernel that appends a step's keys and values to that cache.
//
// KV cache: v_cache f32 [kv_heads][max_seq][head_dim]; the row of position j
// of KV head g starts at (g * max_seq + j) * head_dim. k_cache f32
// [kv_heads][sink_rows + ring_rows][head_dim]: position j < sink_rows at row
// j, a later one at row sink_rows + (j - sink_rows) % ring_rows. The full
// cache (sink_rows 0, ring_rows max_seq) is v's layout; DeltaLLM's
// compressed K cache keeps only sinks and a ring of recent keys here (see
// attention_hybrid.wgsl); attend needs the full cache.
//
// append:  the step's rows k_new, v_new f32 [rows][kv_heads][head_dim] (the
//          k/v projection outputs, after RoPE) go to positions pos0..pos0+rows-1.
//          Grid: one invocation per element, 256 per workgroup (folded into y).
//          A step must not hold more rows than the ring (the host checks).
// attend:  q f32 [rows][heads][head_dim] at positions pos0 + m; query head h
//          reads KV head h / (heads / kv_heads) and keys 0..=pos0 + m:
//            out[m][h] = sum_j softmax_j(q·k_j * scale) v_j,  scale = 1/sqrt(head_dim)
//          out f32 [rows][heads][head_dim].
//          Grid: one workgroup of 64 per (row, KV head, group of up to 4
//          of its query heads), task = (row * kv_heads + g) * chunks + c with
//          chunks = ceil((heads / kv_heads) / 4) (folded into y). The
//          workgroup holds its query heads side by side in a vec4 per
//          dimension, so every key and value it reads serves all of them
//          (under GQA 4:1 K and V are read once instead of 4 times). Keys
//          are visited in blocks of 64 with an online softmax per query head
//          (include/attention_online.wgsl), so workgroup memory stays 6 KiB
//          at any context length, and decoding position i gives the same f32
//          result as row i of a prefill.
// Bindings (the cache at the same numbers in both entry points):
//   append: 0 params, 1 k_cache_rw, 2 v_cache_rw, 3 k_new, 4 v_new
//   attend: 0 params, 1 k_cache, 2 v_cache, 3 q, 4 out (rw)

struct Params {
    rows: u32,
    pos0: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    max_seq: u32,
    scale: f32,
    sink_rows: u32,
    ring_rows: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> k_cache_rw: array<f32>;
@group(0) @binding(2) var<storage, read_write> v_cache_rw: array<f32>;

@group(0) @binding(3) var<storage, read> k_new: array<f32>;
@group(0) @binding(4) var<storage, read> v_new: array<f32>;

// attend only reads the cache, and says so: with the read_write declarations
// above, Mesa llvmpipe ran it ~1.3x slower than the hybrid kernel at 2048 keys
// (noisy, 4 runs), read-only ~1.0x.
@group(0) @binding(1) var<storage, read> k_cache: array<f32>;
@group(0) @binding(2) var<storage, read> v_cache: array<f32>;
@group(0) @binding(3) var<storage, read> q: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

#include "attention_online.wgsl"

const APPEND_WG: u32 = 256u;

@compute @workgroup_size(APPEND_WG)
fn append(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * APPEND_WG + lid;
    let row_width = params.kv_heads * params.head_dim;
    if (i >= params.rows * row_width) {
        return;
    }
    let row = i / row_width;
    let kv_head = (i % row_width) / params.head_dim;
    let d = i % params.head_dim;
    let position = params.pos0 + row;
    k_cache_rw[key_row(kv_head, position) * params.head_dim + d] = k_new[i];
    v_cache_rw[(kv_head * params.max_seq + position) * params.head_dim + d] = v_new[i];
}

@compute @workgroup_size(WG)
fn attend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let index = wid.x + wid.y * nwg.x;
    if (index >= task_count()) {
        return;
    }
    let task = task_of(index);
    load_query(task, lid);
    let keys = params.pos0 + task.row + 1u;
    // The full cache: the key and the value of position j are both at row cache_row0 + j.
    let cache_row0 = task.kv_head * params.max_seq;
    var softmax: Softmax;
    for (var start = 0u; start < keys; start += WG) {
        var score = vec4<f32>(-3.0e38);
        if (start + lid < keys) {
            score = key_score((cache_row0 + start + lid) * params.head_dim);
        }
        add_block(&softmax, lid, start, keys, score, cache_row0);
    }
    write_output(softmax, task, lid);
}
