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
// chunk. An id >= vocab is never read: the dispatch with `owns_invalid` set
// (the first chunk) fills that token's row with `invalid_value` (NaN).

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

// The two elements of one packed word, as f32 (low half first).
fn decode(word: u32) -> vec2<f32> {
#ifdef BF16
    return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
#else
    return unpack2x16float(word);
#endif
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let token = wid.x + wid.y * nwg.x;
    if (token >= params.tokens) {
        return;
    }
    let id = ids[token];
    let out_base = token * params.dim;
    if (id >= params.vocab) {
        if (params.owns_invalid != 0u) {
            for (var i = lid; i < params.dim; i += WG) {
                out[out_base + i] = params.invalid_value;
            }
        }
        return;
    }
    if (id < params.first_row || id - params.first_row >= params.chunk_rows) {
        return;
    }
    let row_base = (id - params.first_row) * params.row_words;
#ifdef PACKED
    for (var j = lid; j < params.row_words; j += WG) {
        let pair = decode(table[row_base + j]);
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
