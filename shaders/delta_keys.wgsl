// DeltaLLM delta keys (docs/DESIGN.md §2.1): turn a step's post-RoPE keys into
// compressed delta rows against a persistent per-KV-head reference k̂.
//
//   d = k_t[i] − k̂[i];  fire = |d| > Θ  (or t is position 0: the first row is dense)
//   Δk_t[i] = fire ? f16(d) : 0;   k̂[i] = fire ? k̂[i] + f16(d) : k̂[i]
//
// The stored delta is d rounded to f16 (clamped to ±65504), and k̂ moves by
// exactly what is stored, so Σ_m Δk_m = k̂ holds in the stored numbers and
// the error never accumulates: |k − k̂| ≤ max(Θ, |d − f16(d)|) per element.
//
// Layouts (per KV head g; "words" are u32):
//   k_new     f32 [rows][kv_heads][head_dim]   the step's keys (after RoPE)
//   reference f32 [kv_heads][head_dim]         k̂ after the last position built;
//                                              read at the start, written at the end
//   rows      u32 [kv_heads][max_seq][mask_words + 1]  per delta row: a head_dim-bit
//             mask (bit i%32 of word i/32 set where element i fired), then the row's
//             start: the word of g's values where its packed deltas begin
//   values    u32 [kv_heads][capacity]         g's fired deltas as f16 pairs
//             (pack2x16float: the lower half is the earlier element), row after row
//             in position order, in element order within a row; a row with an odd
//             count pads its last word with +0.0, so every row starts on a word
//             (start[t+1] = start[t] + ceil(nnz_t / 2))
//   used      u32 [kv_heads]                   words of g's values in use after the
//             step, or 0xffffffff if a row did not fit in `capacity`
// The host grows `values` before a step could overflow it (it knows the
// worst case, rows · ceil(head_dim / 2) words per KV head); if it ever did
// not, the kernel writes no value past `capacity` and reports the overflow
// in `used` instead of corrupting memory.
// The step covers positions pos0..pos0+rows-1; position 0 ignores the stored
// reference and starts the values at 0, so a new sequence needs no reset;
// a later step starts where row pos0 - 1 ended.
//
// Grid: one workgroup of 64 per KV head (folded into y); lane lid owns
// elements lid, lid+64, ... (head_dim <= 256) and keeps their k̂ in
// registers while it walks the rows in order: the rule is sequential in t
// and independent across elements. The row's mask is gathered with
// workgroup atomics; a fired lane puts its stored delta at its slot (the
// number of mask bits below its element) in workgroup memory, and lanes
// then write the slot pairs as packed words. Compare-and-select and the
// k̂ update are f32 operations the CPU reference repeats exactly.
// Bindings: 0 params, 1 k_new, 2 reference (rw), 3 values (rw), 4 rows (rw),
//           5 used (rw)

struct Params {
    rows: u32,
    pos0: u32,
    kv_heads: u32,
    head_dim: u32,
    max_seq: u32,
    mask_words: u32,
    capacity: u32,
    theta: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> k_new: array<f32>;
@group(0) @binding(2) var<storage, read_write> reference: array<f32>;
@group(0) @binding(3) var<storage, read_write> values: array<u32>;
@group(0) @binding(4) var<storage, read_write> rows: array<u32>;
@group(0) @binding(5) var<storage, read_write> used: array<u32>;

const WG: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
const ELEMENTS_PER_LANE: u32 = MAX_HEAD_DIM / WG;
const MAX_MASK_WORDS: u32 = MAX_HEAD_DIM / 32u;
const F16_MAX: f32 = 65504.0;
const OVERFLOW: u32 = 0xffffffffu;

var<workgroup> row_mask: array<atomic<u32>, MAX_MASK_WORDS>;
var<workgroup> packed: array<f32, MAX_HEAD_DIM>;

// d as stored: clamped to the finite f16 range and rounded to f16.
fn stored_delta(d: f32) -> f32 {
    return unpack2x16float(pack2x16float(vec2<f32>(clamp(d, -F16_MAX, F16_MAX), 0.0))).x;
}

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
    let row_words = words + 1u;
    let values_base = kv_head * params.capacity;
    // The word where the next row's values go (the same in every lane).
    var next_value = 0u;
    if (params.pos0 > 0u) {
        let previous = (kv_head * params.max_seq + params.pos0 - 1u) * row_words;
        var nnz = 0u;
        for (var w = 0u; w < words; w++) {
            nnz += countOneBits(rows[previous + w]);
        }
        next_value = rows[previous + words] + (nnz + 1u) / 2u;
    }
    var overflow = false;

    for (var t = 0u; t < params.rows; t++) {
        let position = params.pos0 + t;
        let row = (kv_head * params.max_seq + position) * row_words;
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
                // Position 0 is measured from zero: Δk_0 = f16(k_0).
                let previous = select(k_hat[c], 0.0, first_row);
                let d = key - previous;
                if (first_row || abs(d) > params.theta) {
                    fired[c] = stored_delta(d);
                    k_hat[c] = previous + fired[c];
                    atomicOr(&row_mask[e / 32u], 1u << (e % 32u));
                }
            }
        }
        workgroupBarrier();
        var nnz = 0u;
        for (var w = 0u; w < words; w++) {
            nnz += countOneBits(atomicLoad(&row_mask[w]));
        }
        if (lid < words) {
            rows[row + lid] = atomicLoad(&row_mask[lid]);
        }
        if (lid == 0u) {
            rows[row + words] = next_value;
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
                    packed[slot] = fired[c];
                }
            }
        }
        workgroupBarrier();
        let row_values = (nnz + 1u) / 2u;
        overflow = overflow || next_value + row_values > params.capacity;
        if (!overflow) {
            for (var w = lid; w < row_values; w += WG) {
                let high = select(0.0, packed[2u * w + 1u], 2u * w + 1u < nnz);
                values[values_base + next_value + w] = pack2x16float(vec2<f32>(packed[2u * w], high));
            }
        }
        next_value += row_values;
        // The next row clears row_mask and rewrites packed.
        workgroupBarrier();
    }

    for (var c = 0u; c < ELEMENTS_PER_LANE; c++) {
        let e = lid + c * WG;
        if (e < head_dim) {
            reference[reference_base + e] = k_hat[c];
        }
    }
    if (lid == 0u) {
        used[kv_head] = select(next_value, OVERFLOW, overflow);
    }
}
