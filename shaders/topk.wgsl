// Top-k of a logits vector: the k largest (id, value) pairs, sorted by value
// descending, equal values by lower id first; 1 <= k <= 64.
//
//   out[r] = (id_r, logits[offset + id_r]),  r = 0..k-1,  id_0 the argmax,
//   id_r the best id after id_{r-1} in the order (value desc, id asc).
//
// Order: as in argmax.wgsl, values compare through `order_key`, an exact
// integer image of the float order (-0.0 just below +0.0), so every backend
// picks the same ids; NaN is never picked. When fewer than k logits are
// numbers (n < k, or NaN), the remaining slots hold (NONE = 0xffffffff, -inf).
//
// Layout: logits f32 [offset + n]; candidates u32 [ceil(n / CHUNK) * k]
// (scratch: each chunk's top-k ids, best first); out: k entries of
// { id: u32, value: f32 } interleaved (8 bytes each, one readback).
// Bindings: 0 params (uniform), 1 logits, 2 candidates, 3 out.
// `select_chunk` uses bindings 0..2 and `merge` uses 0..3, so each entry
// point's layout is a prefix of the same numbering.
//
// Method: k rounds of a workgroup argmax with exclusion by threshold. Each
// invocation keeps the best of its own elements that come after the last
// pick in the order; a tree reduction finds the round's winner, and only
// the invocation that owned the winner rescans its elements for its next
// best (its other elements are unchanged by the pick). No per-element
// "taken" marks are needed, so workgroup memory stays at 2 KiB.
// Grid: `select_chunk`: one workgroup of 256 invocations per CHUNK = 2048
// logits (folded into y past 65535 workgroups), 8 logits per invocation
// strided by 256. `merge`: one workgroup over all chunks' candidates,
// re-reading each candidate's value from the logits.

struct Params {
    n: u32,
    offset: u32,
    k: u32,
    _pad: u32,
}

struct Entry {
    id: u32,
    value: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> candidates: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<Entry>;

const WG: u32 = 256u;
// Logits per invocation in `select_chunk`; CHUNK must match TOPK_CHUNK in src/ops/sampling.rs.
const PER_INVOCATION: u32 = 8u;
const CHUNK: u32 = WG * PER_INVOCATION;
const NONE: u32 = 0xffffffffu;
const NEG_INFINITY_BITS: u32 = 0xff800000u;

// A (key, id) pair; the empty pick is (0, NONE).
struct Pick {
    key: u32,
    id: u32,
}

var<workgroup> best_keys: array<u32, WG>;
var<workgroup> best_ids: array<u32, WG>;

// Monotone map of f32 bits to u32 (see argmax.wgsl); NaN maps to 0.
fn order_key(v: f32) -> u32 {
    let bits = bitcast<u32>(v);
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        return 0u;
    }
    if ((bits & 0x80000000u) != 0u) {
        return ~bits;
    }
    return bits | 0x80000000u;
}

fn better(a: Pick, b: Pick) -> bool {
    return a.key > b.key || (a.key == b.key && a.id < b.id);
}

// Whether `a` comes after the previous pick `last` in the output order.
fn after(a: Pick, last: Pick) -> bool {
    return a.key < last.key || (a.key == last.key && a.id > last.id);
}

// Before every number: the threshold for the first round.
fn before_all() -> Pick {
    return Pick(0xffffffffu, 0u);
}

// Leaves the workgroup's best pick in best_keys[0], best_ids[0] and returns
// it to every invocation.
fn reduce_workgroup(lid: u32, mine: Pick) -> Pick {
    best_keys[lid] = mine.key;
    best_ids[lid] = mine.id;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            let other = Pick(best_keys[lid + stride], best_ids[lid + stride]);
            if (better(other, Pick(best_keys[lid], best_ids[lid]))) {
                best_keys[lid] = other.key;
                best_ids[lid] = other.id;
            }
        }
        workgroupBarrier();
    }
    let winner = Pick(best_keys[0], best_ids[0]);
    // The next round overwrites slot 0; everyone must have read it first.
    workgroupBarrier();
    return winner;
}

fn chunk_count() -> u32 {
    return params.n / CHUNK + select(0u, 1u, params.n % CHUNK != 0u);
}

// This invocation's best logit of `chunk` after `last`.
fn scan_chunk(chunk: u32, lid: u32, last: Pick) -> Pick {
    var best = Pick(0u, NONE);
    for (var j = 0u; j < PER_INVOCATION; j++) {
        let i = chunk * CHUNK + j * WG + lid;
        if (i < params.n) {
            let here = Pick(order_key(logits[params.offset + i]), i);
            if (here.key != 0u && after(here, last) && better(here, best)) {
                best = here;
            }
        }
    }
    return best;
}

// This invocation's best candidate after `last`.
fn scan_candidates(lid: u32, last: Pick) -> Pick {
    var best = Pick(0u, NONE);
    let total = chunk_count() * params.k;
    for (var c = lid; c < total; c += WG) {
        let id = candidates[c];
        if (id != NONE) {
            let here = Pick(order_key(logits[params.offset + id]), id);
            if (after(here, last) && better(here, best)) {
                best = here;
            }
        }
    }
    return best;
}

@compute @workgroup_size(WG)
fn select_chunk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let chunk = wid.x + wid.y * nwg.x;
    if (chunk >= chunk_count()) {
        return;
    }
    var mine = scan_chunk(chunk, lid, before_all());
    for (var r = 0u; r < params.k; r++) {
        let winner = reduce_workgroup(lid, mine);
        if (lid == 0u) {
            candidates[chunk * params.k + r] = winner.id;
        }
        if (winner.id != NONE && mine.id == winner.id) {
            mine = scan_chunk(chunk, lid, winner);
        }
    }
}

@compute @workgroup_size(WG)
fn merge(@builtin(local_invocation_index) lid: u32) {
    var mine = scan_candidates(lid, before_all());
    for (var r = 0u; r < params.k; r++) {
        let winner = reduce_workgroup(lid, mine);
        if (lid == 0u) {
            var value = bitcast<f32>(NEG_INFINITY_BITS);
            if (winner.id != NONE) {
                value = logits[params.offset + winner.id];
            }
            out[r] = Entry(winner.id, value);
        }
        if (winner.id != NONE && mine.id == winner.id) {
            mine = scan_candidates(lid, winner);
        }
    }
}
