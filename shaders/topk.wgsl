// Top-k of a logits vector: the k largest (id, value) pairs, sorted by value
// descending, equal values by lower id first; 1 <= k <= 64.
//
//   out[r] = (id_r, logits[offset + id_r]),  r = 0..k-1,  id_0 the argmax,
//   id_r the best id after id_{r-1} in the order (value desc, id asc).
//
// Order: as in argmax.wgsl, values compare through `order_key`
// (include/logits_order.wgsl), an exact integer image of the float order
// (-0.0 just below +0.0), so every backend picks the same ids; NaN is never
// picked. When fewer than k logits are
// numbers (n < k, or NaN), the remaining slots hold (NONE = 0xffffffff, -inf).
//
// Layout: logits f32 [offset + n]; candidates vec2<u32> [ceil(n / CHUNK) * k]
// (scratch: each chunk's top-k as (id, order key), best first, padded with
// (NONE, 0)); out: k entries of { id: u32, value: f32 } interleaved (8 bytes
// each, one readback).
// Bindings: 0 params (uniform), 1 logits, 2 candidates, 3 out.
// `select_chunk` uses bindings 0..2 and `merge` uses 0..3, so each entry
// point's layout is a prefix of the same numbering.
//
// Method: a tournament tree over the 256 invocations ("lanes") of a
// workgroup. Each lane owns a few elements and offers its best one as a leaf;
// the tree is built in parallel (8 levels, one barrier each). Then one
// invocation takes k winners from the root: after each, only the winning
// lane offers its next best (the others' offers are unchanged) and only the
// 8 nodes on that lane's path are replayed. No barrier per round, which
// matters on CPU rasterisers (lavapipe) where a barrier is a context switch.
// Grid: `select_chunk`: one workgroup per CHUNK = 2048 logits (folded into y
// past 65535 workgroups); lane L owns chunk positions L, L + 256, ... whose
// keys are staged in workgroup memory (8 KiB). `merge`: one workgroup; lane L
// owns the sorted candidate lists of chunks L, L + 256, ...; with at most 256
// chunks (n <= 524288) a lane's next best is simply the next list entry,
// beyond that it is found by walking its lists.

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
@group(0) @binding(2) var<storage, read_write> candidates: array<vec2<u32>>;
@group(0) @binding(3) var<storage, read_write> out: array<Entry>;

const WG: u32 = 256u;
// Logits per lane in `select_chunk`; CHUNK must match TOPK_CHUNK in src/ops/sampling.rs.
const PER_LANE: u32 = 8u;
const CHUNK: u32 = WG * PER_LANE;
const MAX_K: u32 = 64u;
const NEG_INFINITY_BITS: u32 = 0xff800000u;

#include "logits_order.wgsl"

// A (key, id) pair; the empty pick is (0, NONE).
struct Pick {
    key: u32,
    id: u32,
}

// Each lane's current offer: the leaves of the tournament tree.
var<workgroup> leaf_keys: array<u32, WG>;
var<workgroup> leaf_ids: array<u32, WG>;
// tree[node], 1 <= node < WG: the lane winning that node's subtree. The
// children of node i are 2i and 2i + 1; node WG + L is lane L's leaf.
var<workgroup> tree: array<u32, WG>;
// select_chunk: order keys of the chunk, position p = j * WG + lane.
var<workgroup> chunk_keys: array<u32, CHUNK>;
// merge: each lane's position in its candidate list, and the winners so far.
var<workgroup> list_cursor: array<u32, WG>;
var<workgroup> winners: array<u32, MAX_K>;

fn none() -> Pick {
    return Pick(0u, NONE);
}

fn better(a: Pick, b: Pick) -> bool {
    return a.key > b.key || (a.key == b.key && a.id < b.id);
}

// Whether `a` comes after the previous winner `last` in the output order.
fn after(a: Pick, last: Pick) -> bool {
    return a.key < last.key || (a.key == last.key && a.id > last.id);
}

// Before every number: the threshold for the first offer.
fn before_all() -> Pick {
    return Pick(0xffffffffu, 0u);
}

fn leaf(lane: u32) -> Pick {
    return Pick(leaf_keys[lane], leaf_ids[lane]);
}

fn set_leaf(lane: u32, offer: Pick) {
    leaf_keys[lane] = offer.key;
    leaf_ids[lane] = offer.id;
}

fn winning_lane(node: u32) -> u32 {
    if (node >= WG) {
        return node - WG;
    }
    return tree[node];
}

fn play(node: u32) {
    let left = winning_lane(2u * node);
    let right = winning_lane(2u * node + 1u);
    tree[node] = select(left, right, better(leaf(right), leaf(left)));
}

// Every lane has set its leaf; builds the whole tree, one level per barrier.
fn build_tree(lid: u32) {
    workgroupBarrier();
    for (var first = WG / 2u; first > 0u; first >>= 1u) {
        if (lid < first) {
            play(first + lid);
        }
        workgroupBarrier();
    }
}

// After `lane` changed its offer: replay the nodes from its leaf to the root.
fn replay_path(lane: u32) {
    for (var node = (WG + lane) >> 1u; node > 0u; node >>= 1u) {
        play(node);
    }
}

// `lane`'s best element of `chunk` after `last` (keys from workgroup memory).
fn lane_offer(chunk: u32, lane: u32, last: Pick) -> Pick {
    var best = none();
    for (var j = 0u; j < PER_LANE; j++) {
        let position = j * WG + lane;
        let here = Pick(chunk_keys[position], chunk * CHUNK + position);
        if (here.key != 0u && after(here, last) && better(here, best)) {
            best = here;
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
    for (var j = 0u; j < PER_LANE; j++) {
        let i = chunk * CHUNK + j * WG + lid;
        var key = 0u;
        if (i < params.n) {
            key = order_key(logits[params.offset + i]);
        }
        chunk_keys[j * WG + lid] = key;
    }
    // Each lane reads back only the keys it wrote itself: no barrier needed yet.
    set_leaf(lid, lane_offer(chunk, lid, before_all()));
    build_tree(lid);
    if (lid == 0u) {
        let k = params.k;
        for (var r = 0u; r < k; r++) {
            let lane = tree[1];
            let winner = leaf(lane);
            candidates[chunk * k + r] = vec2<u32>(winner.id, winner.key);
            if (winner.id != NONE) {
                set_leaf(lane, lane_offer(chunk, lane, winner));
                replay_path(lane);
            }
        }
    }
}

// Entry `r` of chunk `list`'s candidates; the empty pick past the end.
fn list_entry(list: u32, r: u32) -> Pick {
    if (r >= params.k) {
        return none();
    }
    let c = candidates[list * params.k + r];
    return Pick(c.y, c.x);
}

// `lane`'s best candidate after `last`: the first entry after `last` of
// each of its lists (they are sorted), the best of those.
fn walk_lists(lane: u32, last: Pick) -> Pick {
    var best = none();
    for (var list = lane; list < chunk_count(); list += WG) {
        for (var r = 0u; r < params.k; r++) {
            let here = list_entry(list, r);
            if (here.id == NONE) {
                break;
            }
            if (after(here, last)) {
                if (better(here, best)) {
                    best = here;
                }
                break;
            }
        }
    }
    return best;
}

@compute @workgroup_size(WG)
fn merge(@builtin(local_invocation_index) lid: u32) {
    set_leaf(lid, walk_lists(lid, before_all()));
    list_cursor[lid] = 0u;
    build_tree(lid);
    if (lid == 0u) {
        let one_list_per_lane = chunk_count() <= WG;
        for (var r = 0u; r < params.k; r++) {
            let lane = tree[1];
            let winner = leaf(lane);
            winners[r] = winner.id;
            if (winner.id != NONE) {
                if (one_list_per_lane) {
                    // The winner headed this lane's only list: the next entry follows it.
                    let cursor = list_cursor[lane] + 1u;
                    list_cursor[lane] = cursor;
                    set_leaf(lane, list_entry(lane, cursor));
                } else {
                    set_leaf(lane, walk_lists(lane, winner));
                }
                replay_path(lane);
            }
        }
    }
    workgroupBarrier();
    if (lid < params.k) {
        let id = winners[lid];
        var value = bitcast<f32>(NEG_INFINITY_BITS);
        if (id != NONE) {
            value = logits[params.offset + id];
        }
        out[lid] = Entry(id, value);
    }
}
