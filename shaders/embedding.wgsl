// Embedding gather: the table row of each token id, widened to f32.
//
//   out[t][:] = table[ids[t]][:]
//
// Layout: table [rows][row_words] u32 words, one row chunk (table rows
// first_row .. first_row + chunk_rows) of a table split to fit the binding
// limit (DenseWeight in src/ops/matmul.rs). Word formats by define:
//   none         f32 bits, one per word (row_words = dim);
//   PACKED       IEEE f16, two per word, element 2j in the low half
//                (unpack2x16float: needs no shader-f16);
//   PACKED BF16  bfloat16, two per word, element 2j in the low half
//                (exact: the f32 bits are the bf16 bits << 16).
// Packed rows have row_words = ceil(dim / 2). ids u32 [tokens]; out f32 [tokens][dim].
// Bindings: 0 params (uniform), 1 ids, 2 table chunk, 3 out.
//
// Grid: one workgroup of 256 per token (folded into y past 65535); one
// dispatch per chunk, each writing only the tokens whose id falls in its
// chunk; an id >= vocab gives a row of `invalid_value` (NaN), see
// include/embedding_chunk.wgsl.

struct Params {
    tokens: u32,
    dim: u32,
    row_words: u32,
    first_row: u32,
    chunk_rows: u32,
    vocab: u32,
    owns_invalid: u32,
    invalid_value: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

#include "embedding_chunk.wgsl"
#ifdef PACKED
#include "halves.wgsl"
#endif

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let token = wid.x + wid.y * nwg.x;
    if (token >= params.tokens) {
        return;
    }
    let row = chunk_row(token, params.dim, lid);
    if (row == NOT_IN_CHUNK) {
        return;
    }
    let out_base = token * params.dim;
    let row_base = row * params.row_words;
#ifdef PACKED
    for (var j = lid; j < params.row_words; j += WG) {
        let pair = unpack_halves(table[row_base + j]);
        out[out_base + 2u * j] = pair.x;
        // The pad half of an odd-dim row has no place in out.
        if (2u * j + 1u < params.dim) {
            out[out_base + 2u * j + 1u] = pair.y;
        }
    }
#else
    for (var i = lid; i < params.dim; i += WG) {
        out[out_base + i] = bitcast<f32>(table[row_base + i]);
    }
#endif
}
