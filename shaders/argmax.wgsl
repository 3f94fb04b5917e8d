// Argmax over a logits vector: the index of its largest value, so a greedy
// decode reads back 4 bytes instead of the logits (or feeds the id straight
// into the next step's embedding gather).
//
//   result[0] = argmax_{0 <= i < n} logits[offset + i]
//
// Order: values compare through `order_key` (include/logits_order.wgsl), an
// exact integer image of the float order, so the answer does not depend on a
// backend's float modes (fast math, flushed denormals). Equal values go to
// the lower index; -0.0 ranks just below +0.0; NaN never wins. If every value
// is NaN the result is NONE (0xffffffff).
//
// Layout: logits f32 [offset + n]; partials u32 [ceil(n / CHUNK)] (scratch,
// the winning index of each chunk); result u32 [1].
// Bindings: 0 params (uniform), 1 logits, 2 partials, 3 result.
// `partials_main` uses bindings 0..2 and `finish` uses 0..3, so each entry
// point's layout is a prefix of the same numbering.
// Grid: `partials_main`: one workgroup of 256 invocations per CHUNK = 2048
// logits (folded into y past 65535 workgroups), each invocation reading 8
// logits with a stride of 256 (coalesced), then a tree reduction in
// workgroup memory. `finish`: one workgroup that reduces the partials the
// same way, re-reading each chunk winner's value from the logits.

struct Params {
    n: u32,
    offset: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<u32>;
@group(0) @binding(3) var<storage, read_write> result: array<u32>;

const WG: u32 = 256u;
// Logits per invocation in `partials_main`; CHUNK must match ARGMAX_CHUNK in src/ops/sampling.rs.
const PER_INVOCATION: u32 = 8u;
const CHUNK: u32 = WG * PER_INVOCATION;

#include "logits_order.wgsl"

var<workgroup> best_keys: array<u32, WG>;
var<workgroup> best_ids: array<u32, WG>;

// Larger value first, then lower index. The empty pick (key 0, id NONE)
// loses to every number.
fn better(key: u32, id: u32, than_key: u32, than_id: u32) -> bool {
    return key > than_key || (key == than_key && id < than_id);
}

// Leaves the workgroup's best (key, id) in best_keys[0], best_ids[0].
fn reduce_workgroup(lid: u32, key: u32, id: u32) {
    best_keys[lid] = key;
    best_ids[lid] = id;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            let other_key = best_keys[lid + stride];
            let other_id = best_ids[lid + stride];
            if (better(other_key, other_id, best_keys[lid], best_ids[lid])) {
                best_keys[lid] = other_key;
                best_ids[lid] = other_id;
            }
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG)
fn partials_main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let chunk = wid.x + wid.y * nwg.x;
    if (chunk >= chunk_count()) {
        return;
    }
    var best_key = 0u;
    var best_id = NONE;
    for (var j = 0u; j < PER_INVOCATION; j++) {
        let i = chunk * CHUNK + j * WG + lid;
        if (i < params.n) {
            let key = order_key(logits[params.offset + i]);
            if (key != 0u && better(key, i, best_key, best_id)) {
                best_key = key;
                best_id = i;
            }
        }
    }
    reduce_workgroup(lid, best_key, best_id);
    if (lid == 0u) {
        partials[chunk] = best_ids[0];
    }
}

@compute @workgroup_size(WG)
fn finish(@builtin(local_invocation_index) lid: u32) {
    var best_key = 0u;
    var best_id = NONE;
    for (var chunk = lid; chunk < chunk_count(); chunk += WG) {
        let id = partials[chunk];
        if (id != NONE) {
            let key = order_key(logits[params.offset + id]);
            if (better(key, id, best_key, best_id)) {
                best_key = key;
                best_id = id;
            }
        }
    }
    reduce_workgroup(lid, best_key, best_id);
    if (lid == 0u) {
        result[0] = best_ids[0];
    }
}
