// Dense matmul with f32 or 16-bit weights: y = x · Wᵀ, like a PyTorch Linear.
//
//   y[t][out_offset + r] = sum_k W[r][k] * x[t][k]
//
// Layout: W [rows][row_words] u32 words, one row chunk of a larger weight
// (DenseWeight in src/ops/matmul.rs). Word formats by define:
//   none         f32 bits, one per word (row_words = k);
//   PACKED       IEEE f16, two per word (unpack2x16float: needs no shader-f16);
//   PACKED BF16  bfloat16, two per word (exact: the f32 bits are the bf16 bits << 16).
// Packed words hold element 2j in the low half and 2j + 1 in the high half
// (include/halves.wgsl); row_words = ceil(k / 2) and the pad half of an
// odd-k row is zero. x f32 [tokens][k]; y f32 [tokens][out_stride], of which
// this dispatch writes columns out_offset .. out_offset + rows.
// Bindings: 0 params (uniform), 1 x, 2 W, 3 y.
// Weights are widened to f32 and accumulated in f32.
//
// Entry points:
// - `gemv` (decode, few tokens): a workgroup of 256 = 8 slots x 32 lanes per
//   (token, 64-row group); each slot computes 8 rows together, its 32 lanes
//   reading consecutive words (coalesced), so every x value loaded serves 8
//   rows; then a tree reduction in workgroup memory. (On CPU adapters such
//   as lavapipe, storage loads are the cost: one row per slot loaded x once
//   per multiply-add, and ran 2.2-2.6x slower.)
//   Linear workgroup index = token * row_groups + row_group.
// - `gemm` (prefill): 64 tokens x 64 rows per workgroup of 16 x 16 threads,
//   each thread a 4 x 4 block of outputs; x and widened W tiles of depth 16
//   are staged in workgroup memory, so every weight loaded serves 64 tokens.
//   Linear workgroup index = token_tile * row_tiles + row_tile.
// Both fold the linear index into y past 65535 workgroups.

struct Params {
    tokens: u32,
    rows: u32,
    k: u32,
    // Words per stored weight row.
    row_words: u32,
    out_offset: u32,
    out_stride: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

#ifdef PACKED
#include "halves.wgsl"

const PER_WORD: u32 = 2u;

// The x values that meet word j of a weight row starting at x_base.
fn x_word(x_base: u32, j: u32) -> vec2<f32> {
    return vec2<f32>(x[x_base + 2u * j], x[x_base + 2u * j + 1u]);
}

// The weights of `word` times the x values they meet, summed.
fn word_dot(word: u32, xv: vec2<f32>) -> f32 {
    return dot(unpack_halves(word), xv);
}
#else
const PER_WORD: u32 = 1u;

fn x_word(x_base: u32, j: u32) -> f32 {
    return x[x_base + j];
}

fn word_dot(word: u32, xv: f32) -> f32 {
    return xv * bitcast<f32>(word);
}
#endif

const GEMV_LANES: u32 = 32u;
const GEMV_SLOTS: u32 = 8u;      // groups of 32 lanes per workgroup
const GEMV_SLOT_ROWS: u32 = 8u;  // rows each group computes together
const GEMV_ROWS: u32 = 64u;      // GEMV_SLOTS * GEMV_SLOT_ROWS: rows per workgroup
var<workgroup> gemv_lo: array<vec4<f32>, 256>;  // rows 0..3 of each lane's slot
var<workgroup> gemv_hi: array<vec4<f32>, 256>;  // rows 4..7

@compute @workgroup_size(256)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row_groups = (params.rows + GEMV_ROWS - 1u) / GEMV_ROWS;
    let index = wid.x + wid.y * nwg.x;
    if (index >= row_groups * params.tokens) {
        return;
    }
    let token = index / row_groups;
    let slot = lid / GEMV_LANES;
    let lane = lid % GEMV_LANES;
    let first = (index % row_groups) * GEMV_ROWS + slot * GEMV_SLOT_ROWS;
    // Rows past the end load the last row again and are never written.
    var base: array<u32, 8>;
    for (var r = 0u; r < GEMV_SLOT_ROWS; r++) {
        base[r] = min(first + r, params.rows - 1u) * params.row_words;
    }
    let x_base = token * params.k;
    // Words whose every weight is real.
    let full_words = params.k / PER_WORD;
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    for (var j = lane; j < full_words; j += GEMV_LANES) {
        let xv = x_word(x_base, j);
        lo += vec4<f32>(word_dot(w[base[0] + j], xv), word_dot(w[base[1] + j], xv),
                        word_dot(w[base[2] + j], xv), word_dot(w[base[3] + j], xv));
        hi += vec4<f32>(word_dot(w[base[4] + j], xv), word_dot(w[base[5] + j], xv),
                        word_dot(w[base[6] + j], xv), word_dot(w[base[7] + j], xv));
    }
#ifdef PACKED
    // An odd k leaves one real weight in the last word; x has no partner for its pad.
    if (lane == 0u && (params.k & 1u) == 1u) {
        let xl = x[x_base + params.k - 1u];
        lo += xl * vec4<f32>(unpack_halves(w[base[0] + full_words]).x, unpack_halves(w[base[1] + full_words]).x,
                             unpack_halves(w[base[2] + full_words]).x, unpack_halves(w[base[3] + full_words]).x);
        hi += xl * vec4<f32>(unpack_halves(w[base[4] + full_words]).x, unpack_halves(w[base[5] + full_words]).x,
                             unpack_halves(w[base[6] + full_words]).x, unpack_halves(w[base[7] + full_words]).x);
    }
#endif
    gemv_lo[lid] = lo;
    gemv_hi[lid] = hi;
    workgroupBarrier();
    for (var stride = GEMV_LANES / 2u; stride > 0u; stride >>= 1u) {
        if (lane < stride) {
            gemv_lo[lid] += gemv_lo[lid + stride];
            gemv_hi[lid] += gemv_hi[lid + stride];
        }
        workgroupBarrier();
    }
    if (lane == 0u) {
        let out = token * params.out_stride + params.out_offset + first;
        for (var r = 0u; r < 4u; r++) {
            if (first + r < params.rows) {
                y[out + r] = gemv_lo[lid][r];
            }
            if (first + 4u + r < params.rows) {
                y[out + 4u + r] = gemv_hi[lid][r];
            }
        }
    }
}

const TILE: u32 = 64u;     // tokens and rows per workgroup
const DEPTH: u32 = 16u;    // k per staged tile (even, so packed tiles start on a word)
const THREADS: u32 = 16u;  // threads per side; each owns TILE / THREADS = 4 per side
// Stored [depth][token or row] so the inner loop reads consecutive addresses.
var<workgroup> x_tile: array<f32, 1024>;  // DEPTH * TILE
var<workgroup> w_tile: array<f32, 1024>;  // DEPTH * TILE

@compute @workgroup_size(16, 16)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) local: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row_tiles = (params.rows + TILE - 1u) / TILE;
    let token_tiles = (params.tokens + TILE - 1u) / TILE;
    let index = wid.x + wid.y * nwg.x;
    if (index >= row_tiles * token_tiles) {
        return;
    }
    let row0 = (index % row_tiles) * TILE;
    let token0 = (index / row_tiles) * TILE;

    var acc: array<array<f32, 4>, 4>;
    for (var k0 = 0u; k0 < params.k; k0 += DEPTH) {
        // x: 64 tokens x 16 values, 4 per thread, along k first so
        // neighbouring threads read neighbouring addresses.
        for (var r = 0u; r < 4u; r++) {
            let e = lid + r * 256u;
            let token = e / DEPTH;
            let kk = e % DEPTH;
            var xv = 0.0;
            if (token0 + token < params.tokens && k0 + kk < params.k) {
                xv = x[(token0 + token) * params.k + k0 + kk];
            }
            x_tile[kk * TILE + token] = xv;
        }
#ifdef PACKED
        // W: 64 rows x 8 words, 2 words per thread. Past k the x tile is
        // zero, so the pad half needs no test.
        for (var r = 0u; r < 2u; r++) {
            let e = lid + r * 256u;
            let row = e / (DEPTH / 2u);
            let word = e % (DEPTH / 2u);
            let j = k0 / 2u + word;
            var pair = vec2<f32>(0.0);
            if (row0 + row < params.rows && j < params.row_words) {
                pair = unpack_halves(w[(row0 + row) * params.row_words + j]);
            }
            w_tile[(2u * word) * TILE + row] = pair.x;
            w_tile[(2u * word + 1u) * TILE + row] = pair.y;
        }
#else
        // W: 64 rows x 16 values, 4 per thread, along k first.
        for (var r = 0u; r < 4u; r++) {
            let e = lid + r * 256u;
            let row = e / DEPTH;
            let kk = e % DEPTH;
            var wv = 0.0;
            if (row0 + row < params.rows && k0 + kk < params.k) {
                wv = bitcast<f32>(w[(row0 + row) * params.row_words + k0 + kk]);
            }
            w_tile[kk * TILE + row] = wv;
        }
#endif
        workgroupBarrier();
        for (var kk = 0u; kk < DEPTH; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = x_tile[kk * TILE + local.y + i * THREADS];
                b[i] = w_tile[kk * TILE + local.x + i * THREADS];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] += a[i] * b[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let token = token0 + local.y + i * THREADS;
        for (var j = 0u; j < 4u; j++) {
            let row = row0 + local.x + j * THREADS;
            if (token < params.tokens && row < params.rows) {
                y[token * params.out_stride + params.out_offset + row] = acc[i][j];
            }
        }
    }
}
