// DeltaLLM delta keys (DESIGN.md §2.1): turn a step's post-RoPE keys into
// delta rows against a persistent per-KV-head reference k̂.
//
//   d = k_t[i] − k̂[i];  fire = |d| > Θ  (or t is position 0: the first row is dense)
//   Δk_t[i] = fire ? d : 0;   k̂[i] = fire ? k_t[i] : k̂[i]
//
// Layouts:
//   k_new     f32 [rows][kv_heads][head_dim]   the step's keys (after RoPE)
//   reference f32 [kv_heads][head_dim]         k̂ after the last position built;
//                                              read at the start, written at the end
//   masks      u32 [kv_heads][max_seq][mask_words] bit i%32 of word i/32 set where
//                                              element i fired, mask_words = ceil(head_dim/32)
//   values     f32 [kv_heads][max_seq * head_dim]  the fired Δk values only, packed
//                                              row after row in position order, within a
//                                              row in element order
//   row_starts u32 [kv_heads][max_seq]         index in the head's values of each row's
//                                              first value: row_starts[t+1] =
//                                              row_starts[t] + popcount(mask of row t)
// (Compressed rows: a reader walks the mask bits and the packed values
// together, reading nnz values instead of head_dim. The values area is
// sized for the dense worst case, so this saves bandwidth, not memory yet.)
// The step covers positions pos0..pos0+rows-1; position 0 ignores the stored
// reference and starts the values at 0, so a new sequence needs no reset;
// a later step starts where row pos0 - 1 ended.
//
// Grid: one workgroup of 64 per KV head (folded into y); lane lid owns
// elements lid, lid+64, ... (head_dim <= 256) and keeps their k̂ in
// registers while it walks the rows in order: the rule is sequential in t
// and independent across elements. The row's mask is gathered with
// workgroup atomics; a fired lane's slot in the packed row is the number of
// mask bits below its element (three barriers per row). Compare-and-select
// in f32, so the values are bit-identical to the CPU reference.
// Bindings: 0 params, 1 k_new, 2 reference (rw), 3 values (rw), 4 masks (rw),
//           5 row_starts (rw)

struct Params {
    rows: u32,
    pos0: u32,
    kv_heads: u32,
    head_dim: u32,
    max_seq: u32,
    mask_words: u32,
    theta: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> k_new: array<f32>;
@group(0) @binding(2) var<storage, read_write> reference: array<f32>;
@group(0) @binding(3) var<storage, read_write> values: array<f32>;
@group(0) @binding(4) var<storage, read_write> masks: array<u32>;
@group(0) @binding(5) var<storage, read_write> row_starts: array<u32>;

const WG: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
const ELEMENTS_PER_LANE: u32 = MAX_HEAD_DIM / WG;
const MAX_MASK_WORDS: u32 = MAX_HEAD_DIM / 32u;

var<workgroup> row_mask: array<atomic<u32>, MAX_MASK_WORDS>;

@compute @workgroup_size(WG)
fn build(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let kv_head = wid.x + wid.y * nwg.x;
    if (kv_head >= params.kv_heads) {
        return;
    }
    let head_dim = params.head_dim;
    let reference_base = kv_head * head_dim;
    var k_hat: array<f32, ELEMENTS_PER_LANE>;
    for (var c = 0u; c < ELEMENTS_PER_LANE; c++) {
        let e = lid + c * WG;
        if (e < head_dim) {
            k_hat[c] = reference[reference_base + e];
        }
    }

    let words = params.mask_words;
    let values_base = kv_head * params.max_seq * head_dim;
    // Where the next row's values go (the same in every lane).
    var next_value = 0u;
    if (params.pos0 > 0u) {
        let previous = kv_head * params.max_seq + params.pos0 - 1u;
        next_value = row_starts[previous];
        for (var w = 0u; w < words; w++) {
            next_value += countOneBits(masks[previous * words + w]);
        }
    }

    for (var t = 0u; t < params.rows; t++) {
        let position = params.pos0 + t;
        let row = kv_head * params.max_seq + position;
        if (lid < words) {
            atomicStore(&row_mask[lid], 0u);
        }
        workgroupBarrier();
        let first_row = position == 0u;
        var fired: array<f32, ELEMENTS_PER_LANE>;
        for (var c = 0u; c < ELEMENTS_PER_LANE; c++) {
            let e = lid + c * WG;
            if (e < head_dim) {
                let key = k_new[(t * params.kv_heads + kv_head) * head_dim + e];
                // Position 0 is measured from zero: Δk_0 = k_0 exactly.
                let d = key - select(k_hat[c], 0.0, first_row);
                if (first_row || abs(d) > params.theta) {
                    fired[c] = d;
                    k_hat[c] = key;
                    atomicOr(&row_mask[e / 32u], 1u << (e % 32u));
                }
            }
        }
        workgroupBarrier();
        if (lid < words) {
            masks[row * words + lid] = atomicLoad(&row_mask[lid]);
        }
        if (lid == 0u) {
            row_starts[row] = next_value;
        }
        for (var c = 0u; c < ELEMENTS_PER_LANE; c++) {
            let e = lid + c * WG;
            if (e < head_dim) {
                let word = atomicLoad(&row_mask[e / 32u]);
                let bit = 1u << (e % 32u);
                if ((word & bit) != 0u) {
                    var slot = countOneBits(word & (bit - 1u));
                    for (var w = 0u; w < e / 32u; w++) {
                        slot += countOneBits(atomicLoad(&row_mask[w]));
                    }
                    values[values_base + next_value + slot] = fired[c];
                }
            }
        }
        for (var w = 0u; w < words; w++) {
            next_value += countOneBits(atomicLoad(&row_mask[w]));
        }
        // The next row clears row_mask.
        workgroupBarrier();
    }

    for (var c = 0u; c < ELEMENTS_PER_LANE; c++) {
        let e = lid + c * WG;
        if (e < head_dim) {
            reference[reference_base + e] = k_hat[c];
        }
    }
}
