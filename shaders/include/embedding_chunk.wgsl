// The part of an embedding gather that embedding.wgsl and embedding_q.wgsl
// share: which token a chunk dispatch writes, and the row of invalid ids.
//
// A table too big for one binding is split into row chunks (table rows
// first_row .. first_row + chunk_rows), one dispatch each, and each
// dispatch writes only the tokens whose id falls in its chunk. An id >= vocab
// is never read: the dispatch with `owns_invalid` set (the first chunk)
// fills that token's row with `invalid_value` (NaN).
//
// The including shader sets WG and declares `params` (first_row,
// chunk_rows, vocab, owns_invalid, invalid_value) and the bindings ids and out.

// No row of this chunk.
const NOT_IN_CHUNK: u32 = 0xffffffffu;

// The chunk row holding `token`'s id, or NOT_IN_CHUNK; out[token] has `dim`
// values, of which invocation lid writes lid, lid + WG, ... when the id is
// invalid.
fn chunk_row(token: u32, dim: u32, lid: u32) -> u32 {
    let id = ids[token];
    if (id >= params.vocab) {
        if (params.owns_invalid != 0u) {
            for (var i = lid; i < dim; i += WG) {
                out[token * dim + i] = params.invalid_value;
            }
        }
        return NOT_IN_CHUNK;
    }
    if (id < params.first_row || id - params.first_row >= params.chunk_rows) {
        return NOT_IN_CHUNK;
    }
    return id - params.first_row;
}
