// Embedding gather from GGUF blocks: the table row of each token id,
// dequantized to f32 as ggml dequantizes (src/loader/quants.rs):
//
//   out[t][e] = d * q + m      Q4_1
//   out[t][e] = d * (q - 8)    Q4_0
//   out[t][e] = d * q          Q8_0 (no define)
//
// d * q is exact in f32 (an 11-bit by at most 8-bit product), so the values
// equal the CPU dequantizer's bit for bit.
// Layout: one row chunk (table rows first_row .. first_row + chunk_rows) of a
// QuantWeight (src/ops/quant.rs, the layout of matmul_q.wgsl): qs u32
// [blocks * WPB][chunk_rows], word j of block b of row r at
// (b * WPB + j) * chunk_rows + r; scales f32 [blocks][chunk_rows] of d, or
// vec2<f32> (d, m) for Q4_1. Element i of a block: Q8_0 byte i % 4 of word
// i / 4; Q4 the low nibble of byte i % 4 of word i / 4 for i < 16, the high
// nibble of element i - 16's byte for i >= 16.
// ids u32 [tokens]; out f32 [tokens][dim], dim = 32 * blocks.
// Bindings: 0 params (uniform), 1 ids, 2 qs, 3 scales, 4 out.
//
// Grid: one workgroup of 64 per token (folded into y past 65535); one
// dispatch per chunk, each writing only the tokens whose id falls in its
// chunk; an id >= vocab gives a row of `invalid_value` (NaN), see
// include/embedding_chunk.wgsl.

struct Params {
    tokens: u32,
    blocks: u32,
    first_row: u32,
    chunk_rows: u32,
    vocab: u32,
    owns_invalid: u32,
    invalid_value: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> qs: array<u32>;
#ifdef Q4_1
@group(0) @binding(3) var<storage, read> scales: array<vec2<f32>>;
#else
@group(0) @binding(3) var<storage, read> scales: array<f32>;
#endif
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;

#include "embedding_chunk.wgsl"

// Element i (0..31) of block b of chunk row r.
fn element(b: u32, i: u32, r: u32) -> f32 {
#ifdef Q4
    let byte_index = i % 16u;
    let word = qs[(b * 4u + byte_index / 4u) * params.chunk_rows + r];
    let byte = (word >> (8u * (byte_index % 4u))) & 0xffu;
    let q = select(byte & 15u, byte >> 4u, i >= 16u);
#ifdef Q4_1
    let dm = scales[b * params.chunk_rows + r];
    return dm.x * f32(q) + dm.y;
#else
    return scales[b * params.chunk_rows + r] * f32(i32(q) - 8i);
#endif
#else
    let word = qs[(b * 8u + i / 4u) * params.chunk_rows + r];
    // Sign-extend byte i % 4.
    let q = (bitcast<i32>(word) << (24u - 8u * (i % 4u))) >> 24u;
    return scales[b * params.chunk_rows + r] * f32(q);
#endif
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let token = wid.x + wid.y * nwg.x;
    if (token >= params.tokens) {
        return;
    }
    let dim = params.blocks * 32u;
    let r = chunk_row(token, dim, lid);
    if (r == NOT_IN_CHUNK) {
        return;
    }
    let out_base = token * dim;
    for (var e = lid; e < dim; e += WG) {
        out[out_base + e] = element(e / 32u, e % 32u, r);
    }
}
