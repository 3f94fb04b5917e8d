// Grouped-query attention with an online (flash-style) softmax over blocks of
// keys: the part that attention.wgsl (dense) and attention_hybrid.wgsl
// (DeltaLLM) share. Their headers give the layouts and how each scores a key.
//
// A workgroup of 64 serves one task: a query row, a KV head and up to 4 of
// that KV head's query heads, held side by side in a vec4 per dimension, so
// every key and value it reads serves all of them (a ratio that is not a
// multiple of 4 leaves lanes of the vec4 idle). Keys are visited in blocks
// of 64, one key per invocation; each block updates a running max per query
// head and rescales the running sums by exp(old_max - new_max), so workgroup
// memory stays the same at any context length. Invocation lid accumulates
// output dims lid, lid + 64, ... (head_dim <= 256). Each vec4 component is
// its head's own f32 arithmetic, in an order fixed by the blocks, so
// decoding position i gives the same f32 result as row i of a prefill.
//
// The including shader declares `params` (rows, heads, kv_heads, head_dim,
// max_seq, scale, sink_rows, ring_rows) and the bindings q, k_cache, v_cache
// (read) and out (read_write), and calls these from uniform control flow.

const WG: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
const DIMS_PER_LANE: u32 = MAX_HEAD_DIM / WG;
// Query heads one workgroup serves: the components of a vec4.
const GROUP: u32 = 4u;

// query[d][k] = scaled q[d] of the task's k-th query head (0 past the last).
var<workgroup> query: array<vec4<f32>, MAX_HEAD_DIM>;
var<workgroup> scratch: array<vec4<f32>, WG>;
var<workgroup> probs: array<vec4<f32>, WG>;

// A workgroup's task: query row `row` and query heads head0 .. head0 +
// served - 1, the ones of KV head `kv_head`.
struct Task {
    row: u32,
    kv_head: u32,
    head0: u32,
    served: u32,
}

// Workgroups with a task, one per (row, KV head, chunk of GROUP query heads).
fn task_count() -> u32 {
    let chunks = (params.heads / params.kv_heads + GROUP - 1u) / GROUP;
    return params.rows * params.kv_heads * chunks;
}

// The task of workgroup `index` < task_count(): index = (row * kv_heads +
// kv_head) * chunks + chunk.
fn task_of(index: u32) -> Task {
    let group = params.heads / params.kv_heads;
    let chunks = (group + GROUP - 1u) / GROUP;
    let chunk = index % chunks;
    let kv_head = (index / chunks) % params.kv_heads;
    let row = index / (chunks * params.kv_heads);
    return Task(row, kv_head, kv_head * group + chunk * GROUP, min(GROUP, group - chunk * GROUP));
}

// Fills `query` from q. The scale is folded into the query once instead of
// into every score.
fn load_query(task: Task, lid: u32) {
    let q_row = task.row * params.heads;
    for (var d = lid; d < params.head_dim; d += WG) {
        var v = vec4<f32>(0.0);
        for (var k = 0u; k < task.served; k++) {
            v[k] = q[(q_row + task.head0 + k) * params.head_dim + d] * params.scale;
        }
        query[d] = v;
    }
    workgroupBarrier();
}

// Row of position j's key in k_cache: j < sink_rows at row j, a later one
// at sink_rows + (j - sink_rows) % ring_rows.
fn key_row(kv_head: u32, j: u32) -> u32 {
    var row = j;
    if (j >= params.sink_rows) {
        row = params.sink_rows + (j - params.sink_rows) % params.ring_rows;
    }
    return kv_head * (params.sink_rows + params.ring_rows) + row;
}

// The scaled score of every served head against the key at k_cache[key_base ..].
fn key_score(key_base: u32) -> vec4<f32> {
    var dot = vec4<f32>(0.0);
    for (var d = 0u; d < params.head_dim; d++) {
        dot += query[d] * k_cache[key_base + d];
    }
    return dot;
}

// The workgroup's max and sum of one vec4 per invocation, through `scratch`.
fn scratch_max(lid: u32, value: vec4<f32>) -> vec4<f32> {
    scratch[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            scratch[lid] = max(scratch[lid], scratch[lid + stride]);
        }
        workgroupBarrier();
    }
    return scratch[0];
}

fn scratch_sum(lid: u32, value: vec4<f32>) -> vec4<f32> {
    scratch[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            scratch[lid] += scratch[lid + stride];
        }
        workgroupBarrier();
    }
    return scratch[0];
}

// One invocation's share of the online softmax (zero to start).
struct Softmax {
    // Per head, the largest score so far.
    running_max: vec4<f32>,
    // Per head, this invocation's share of the denominator, relative to running_max.
    lane_sum: vec4<f32>,
    // Output dims lid, lid + WG, ..., weighted by exp(score - running_max).
    acc: array<vec4<f32>, DIMS_PER_LANE>,
}

// Adds the block of keys start .. min(start + WG, keys) - 1, whose values are
// v_cache rows value_row0 + j; `score` is this invocation's key start + lid
// (ignored past `keys`). Ends with a barrier: scratch, probs and anything
// else in workgroup memory may be rewritten after it.
fn add_block(state: ptr<function, Softmax>, lid: u32, start: u32, keys: u32, score: vec4<f32>, value_row0: u32) {
    let block_max = scratch_max(lid, score);
    // Every block has at least one real key, so its max is finite; the
    // first block has nothing earlier to rescale.
    let first = start == 0u;
    let new_max = select(max((*state).running_max, block_max), block_max, first);
    let rescale = select(exp((*state).running_max - new_max), vec4<f32>(0.0), first);
    let p = select(vec4<f32>(0.0), exp(score - new_max), start + lid < keys);
    (*state).running_max = new_max;
    (*state).lane_sum = (*state).lane_sum * rescale + p;
    probs[lid] = p;
    workgroupBarrier();

    let block_keys = min(WG, keys - start);
    for (var c = 0u; c < DIMS_PER_LANE; c++) {
        let d = lid + c * WG;
        if (d < params.head_dim) {
            var sum = (*state).acc[c] * rescale;
            for (var t = 0u; t < block_keys; t++) {
                sum += probs[t] * v_cache[(value_row0 + start + t) * params.head_dim + d];
            }
            (*state).acc[c] = sum;
        }
    }
    workgroupBarrier();
}

// out = acc / (the denominator summed over the workgroup), for every head
// the task serves.
fn write_output(state: Softmax, task: Task, lid: u32) {
    let inv_total = 1.0 / scratch_sum(lid, state.lane_sum);
    let q_row = task.row * params.heads;
    for (var c = 0u; c < DIMS_PER_LANE; c++) {
        let d = lid + c * WG;
        if (d < params.head_dim) {
            let o = state.acc[c] * inv_total;
            for (var k = 0u; k < task.served; k++) {
                out[(q_row + task.head0 + k) * params.head_dim + d] = o[k];
            }
        }
    }
}
