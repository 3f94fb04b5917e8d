// DeltaLLM context-aware hybrid attention (docs/DESIGN.md §2.2/§2.3): causal GQA
// attention where key j of query position i is scored exactly inside the
// sinks and the local window and against the delta reference k̂ elsewhere:
//
//   exact(i,j) = j < sinks || i − j < window
//   s(i,j)     = exact(i,j) ? q_i·k_j : Σ_{m ≤ j} q_i·Δk_m      (= q_i·k̂_j)
//   out_i      = Σ_j softmax_j(s(i,j) · scale) v_j,  scale = 1/sqrt(head_dim)
//
// Layouts (see attention.wgsl and delta_keys.wgsl):
//   k_cache  f32 [kv_heads][sink_rows + ring_rows][head_dim]  full keys of the
//            sinks and a ring of recent positions: j < sink_rows at row j, a later
//            one at sink_rows + (j − sink_rows) % ring_rows (the full cache:
//            sink_rows 0, ring_rows max_seq). The host keeps every exact key in it:
//            sinks ≤ sink_rows and window + rows − 1 ≤ ring_rows.
//   v_cache  f32 [kv_heads][max_seq][head_dim]     every value
//   rows     u32 [kv_heads][max_seq][mask_words + 1]  each delta row's mask and start
//   values   u32 [kv_heads][capacity]              its non-zeros as f16 pairs
//   q, out   f32 [rows][heads][head_dim], rows at positions pos0 + m
// Query head h reads KV head h / (heads / kv_heads).
//
// Grid: one workgroup of 64 per (row, KV head, group of up to 4 of its
// query heads), task = (row * kv_heads + g) * chunks + c with chunks =
// ceil((heads / kv_heads) / 4) (folded into y). The workgroup holds its
// query heads side by side in a vec4 per dimension, so every key, delta
// row and value it reads serves all of them: under GQA 4:1 a delta row is
// decoded once for 4 queries, and V is read once instead of 4 times.
// Keys in blocks of 64, one key per lane, online softmax per query head
// (running max, sums rescaled by exp(old_max − new_max)), as in
// attention.wgsl (include/attention_online.wgsl).
// Keys j ≤ i − window that are not sinks are the approximated ones; the
// delta rows m < approx_end = i − window + 1 are needed for their prefix.
// In each block below approx_end, lane j computes q·Δk_j walking the set
// bits of its mask and its packed values together (work and reads ∝ nnz),
// a Hillis–Steele inclusive scan over the block gives Σ_{m ≤ j} within it,
// and `carry` adds the earlier blocks. The exact keys (window + sinks) read
// the full key. So a step costs nnz(ΔK prefix) + (window + sinks) · head_dim
// MACs per query instead of i · head_dim. Workgroup memory: 7 KiB at any
// context length. Summation order is fixed by the blocks (each vec4 lane is
// the per-head f32 arithmetic), so decoding position i gives the same f32
// result as row i of a prefill.
// Bindings: 0 params, 1 k_cache, 2 v_cache, 3 values, 4 rows, 5 q, 6 out (rw)

struct Params {
    rows: u32,
    pos0: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    max_seq: u32,
    mask_words: u32,
    window: u32,
    sinks: u32,
    scale: f32,
    sink_rows: u32,
    ring_rows: u32,
    capacity: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> k_cache: array<f32>;
@group(0) @binding(2) var<storage, read> v_cache: array<f32>;
@group(0) @binding(3) var<storage, read> values: array<u32>;
@group(0) @binding(4) var<storage, read> rows: array<u32>;
@group(0) @binding(5) var<storage, read> q: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

#include "attention_online.wgsl"

var<workgroup> prefix: array<vec4<f32>, WG>;

// q·Δk of delta row `position` of `kv_head` (already scaled query): the mask
// says which elements are stored, in order, two per word from the row's start.
fn sparse_delta_dot(kv_head: u32, position: u32) -> vec4<f32> {
    let row_words = params.mask_words + 1u;
    let row = (kv_head * params.max_seq + position) * row_words;
    var word = kv_head * params.capacity + rows[row + params.mask_words];
    var pair = vec2<f32>(0.0);
    var second = false;
    var dot = vec4<f32>(0.0);
    for (var w = 0u; w < params.mask_words; w++) {
        var bits = rows[row + w];
        while (bits != 0u) {
            let d = w * 32u + countTrailingZeros(bits);
            if (!second) {
                pair = unpack2x16float(values[word]);
                word++;
                dot += query[d] * pair.x;
            } else {
                dot += query[d] * pair.y;
            }
            second = !second;
            bits &= bits - 1u;
        }
    }
    return dot;
}

@compute @workgroup_size(WG)
fn attend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let index = wid.x + wid.y * nwg.x;
    if (index >= task_count()) {
        return;
    }
    let task = task_of(index);
    let kv_head = task.kv_head;
    let position = params.pos0 + task.row;
    let keys = position + 1u;

    // Keys sinks..approx_end-1 are scored against k̂; none when the window
    // and the sinks cover every key.
    var approx_end = 0u;
    if (position >= params.window && position - params.window + 1u > params.sinks) {
        approx_end = position - params.window + 1u;
    }

    load_query(task, lid);
    var softmax: Softmax;
    // Σ q·Δk_m over the blocks before this one (the same in every lane).
    var carry = vec4<f32>(0.0);
    for (var start = 0u; start < keys; start += WG) {
        let j = start + lid;
        // Inclusive prefix of q·Δk within the block; only blocks that hold
        // approximated keys need it (a workgroup-uniform condition).
        var approx_score = vec4<f32>(0.0);
        if (start < approx_end) {
            var delta_dot = vec4<f32>(0.0);
            if (j < approx_end) {
                delta_dot = sparse_delta_dot(kv_head, j);
            }
            prefix[lid] = delta_dot;
            workgroupBarrier();
            for (var offset = 1u; offset < WG; offset <<= 1u) {
                var earlier = vec4<f32>(0.0);
                if (lid >= offset) {
                    earlier = prefix[lid - offset];
                }
                workgroupBarrier();
                prefix[lid] += earlier;
                workgroupBarrier();
            }
            approx_score = carry + prefix[lid];
            carry += prefix[WG - 1u];
        }

        var score = vec4<f32>(-3.0e38);
        if (j < keys) {
            if (j < params.sinks || position - j < params.window) {
                score = key_score(key_row(kv_head, j) * params.head_dim);
            } else {
                score = approx_score;
            }
        }
        // add_block ends with a barrier, after which prefix may be rewritten.
        add_block(&softmax, lid, start, keys, score, kv_head * params.max_seq);
    }
    write_output(softmax, task, lid);
}
