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
//          (under GQA 4:1 K and V are read once instead of 4 times; a ratio
//          that is not a multiple of 4, 3:1 or 1:1, leaves lanes of the vec4
//          idle). Keys are visited in blocks of 64, one key per invocation,
//          with an online (flash-style) softmax per query head: a running max
//          and running sums rescaled by exp(old_max - new_max) at each block,
//          so workgroup memory stays 6 KiB at any context length. Invocation
//          lid accumulates output dims lid, lid + 64, ... (head_dim <= 256).
//          Each vec4 component is its head's own f32 arithmetic, in an order
//          fixed by the blocks, so decoding position i gives the same f32
//          result as row i of a prefill.
// Bindings (the cache at the same numbers in both entry points):
//   append: 0 params, 1 k_cache (rw), 2 v_cache (rw), 3 k_new, 4 v_new
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
@group(0) @binding(1) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(2) var<storage, read_write> v_cache: array<f32>;

@group(0) @binding(3) var<storage, read> k_new: array<f32>;
@group(0) @binding(4) var<storage, read> v_new: array<f32>;

// attend only reads the cache, and says so: with the read_write declarations
// above, Mesa llvmpipe ran it ~1.3x slower than the hybrid kernel at 2048 keys
// (noisy, 4 runs), read-only ~1.0x.
@group(0) @binding(1) var<storage, read> keys_in: array<f32>;
@group(0) @binding(2) var<storage, read> values_in: array<f32>;
@group(0) @binding(3) var<storage, read> q: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

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
    var key_row = position;
    if (position >= params.sink_rows) {
        key_row = params.sink_rows + (position - params.sink_rows) % params.ring_rows;
    }
    let key_rows = params.sink_rows + params.ring_rows;
    k_cache[(kv_head * key_rows + key_row) * params.head_dim + d] = k_new[i];
    v_cache[(kv_head * params.max_seq + position) * params.head_dim + d] = v_new[i];
}

const WG: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
const DIMS_PER_LANE: u32 = MAX_HEAD_DIM / WG;
// Query heads one workgroup serves: the components of a vec4.
const GROUP: u32 = 4u;

// query[d][k] = scaled q[d] of the workgroup's k-th query head (0 past the last).
var<workgroup> query: array<vec4<f32>, MAX_HEAD_DIM>;
var<workgroup> scratch: array<vec4<f32>, WG>;
var<workgroup> probs: array<vec4<f32>, WG>;

@compute @workgroup_size(WG)
fn attend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let group = params.heads / params.kv_heads;
    let chunks = (group + GROUP - 1u) / GROUP;
    let task = wid.x + wid.y * nwg.x;
    if (task >= params.rows * params.kv_heads * chunks) {
        return;
    }
    let head_dim = params.head_dim;
    let chunk = task % chunks;
    let kv_head = (task / chunks) % params.kv_heads;
    let row = task / (chunks * params.kv_heads);
    let head0 = kv_head * group + chunk * GROUP;
    let served = min(GROUP, group - chunk * GROUP);
    let keys = params.pos0 + row + 1u;
    let q_row = row * params.heads;
    let cache_base = kv_head * params.max_seq * head_dim;

    // The scale is folded into the query once instead of into every score.
    for (var d = lid; d < head_dim; d += WG) {
        var v = vec4<f32>(0.0);
        for (var k = 0u; k < served; k++) {
            v[k] = q[(q_row + head0 + k) * head_dim + d] * params.scale;
        }
        query[d] = v;
    }
    workgroupBarrier();

    var running_max = vec4<f32>(0.0);
    // This lane's share of each head's softmax denominator, relative to running_max.
    var lane_sum = vec4<f32>(0.0);
    var acc: array<vec4<f32>, DIMS_PER_LANE>;
    for (var start = 0u; start < keys; start += WG) {
        let j = start + lid;
        var score = vec4<f32>(-3.0e38);
        if (j < keys) {
            let key_base = cache_base + j * head_dim;
            var dot = vec4<f32>(0.0);
            for (var d = 0u; d < head_dim; d++) {
                dot += query[d] * keys_in[key_base + d];
            }
            score = dot;
        }
        scratch[lid] = score;
        workgroupBarrier();
        for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
            if (lid < stride) {
                scratch[lid] = max(scratch[lid], scratch[lid + stride]);
            }
            workgroupBarrier();
        }
        // Every block has at least one real key, so its max is finite; the
        // first block has nothing earlier to rescale.
        let first = start == 0u;
        let new_max = select(max(running_max, scratch[0]), scratch[0], first);
        let rescale = select(exp(running_max - new_max), vec4<f32>(0.0), first);
        let p = select(vec4<f32>(0.0), exp(score - new_max), j < keys);
        running_max = new_max;
        lane_sum = lane_sum * rescale + p;
        probs[lid] = p;
        workgroupBarrier();

        let block_keys = min(WG, keys - start);
        for (var c = 0u; c < DIMS_PER_LANE; c++) {
            let d = lid + c * WG;
            if (d < head_dim) {
                var sum = acc[c] * rescale;
                for (var t = 0u; t < block_keys; t++) {
                    sum += probs[t] * values_in[cache_base + (start + t) * head_dim + d];
                }
                acc[c] = sum;
            }
        }
        // scratch and probs are rewritten by the next block.
        workgroupBarrier();
    }

    scratch[lid] = lane_sum;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            scratch[lid] += scratch[lid + stride];
        }
        workgroupBarrier();
    }
    let inv_total = 1.0 / scratch[0];
    for (var c = 0u; c < DIMS_PER_LANE; c++) {
        let d = lid + c * WG;
        if (d < head_dim) {
            let o = acc[c] * inv_total;
            for (var k = 0u; k < served; k++) {
                out[(q_row + head0 + k) * head_dim + d] = o[k];
            }
        }
    }
}
