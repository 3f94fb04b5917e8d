// GGUF block-quantized matrix products, Q8 activations times Q4_0, Q4_1 or
// Q8_0 weights, with llama.cpp's arithmetic (src/cpu/quant.rs is the CPU
// twin): per token t, output row n,
//
//   out[t][n] = sum_b (d_w[n][b] * d_x[t][b]) * sum_i q_w[n][b][i] * q_x[t][b][i]
//               (+ m_w[n][b] * s_x[t][b] for Q4_1)
//
// with exact i32 block sums (dot4I8Packed) and f32 accumulation.
// Variants: no define = Q8_0 weights; Q4 + Q4_0; Q4 + Q4_1 (Q4: 4-bit
// nibbles, shared by both).
//
// Weights (cpu::quant::pack_gpu), for the rows of one chunk, B = K / 32:
//   qs u32 [B * WPB][n]: word j of block b of row n (bytes 4j..4j+3 of the
//      block's qs) at (b * WPB + j) * n + row, WPB = 8 (Q8_0) or 4 (Q4), so
//      neighbouring invocations (rows) read neighbouring words. A Q4 word
//      holds elements 4j..4j+3 in its low nibbles and 16+4j..16+4j+3 in its
//      high nibbles: (w & 0x0F0F0F0F) and ((w >> 4) & 0x0F0F0F0F) are
//      packed unsigned int8 in the byte order of activation words j and 4+j.
//   scales f32 [B][n] of d, or vec2<f32> [B][n] of (d, m) for Q4_1.
// Activations (quantize_q8.wgsl): x_q u32 [rows][8 * B], x_scales vec2<f32>
// [rows][B] of (d, s), x_sum i32 [rows][B]. Q4_0 multiplies the nibble q
// (0..15) and subtracts 8 * x_sum: the same integer as (q - 8) * x.
// Output: out f32, element (t, n) at t * out_stride + out_offset + n (a chunk
// of rows writes its own columns).
// Bindings: 0 params (uniform), 1 x_q, 2 x_scales, [Q4_0: 3 x_sum], then
// qs, scales, out.
//
// Grid (include/matmul_row_blocks.wgsl): workgroups of 64 invocations, each
// owning ROWS = 4 output rows lid + {0, 64, 128, 192}, so every weight load
// is contiguous across invocations. gemv: token 0 only (decode), ceil(n /
// 256) workgroups. gemm: also TOKENS = 4 tokens per invocation, so each
// expanded weight block serves 4 tokens; ceil(n / 256) * ceil(rows / 4)
// workgroups (row blocks fastest). Both folded into y.

struct Params {
    rows: u32,
    n: u32,
    blocks: u32,
    out_offset: u32,
    out_stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x_q: array<u32>;
@group(0) @binding(2) var<storage, read> x_scales: array<vec2<f32>>;
#ifdef Q4_0
@group(0) @binding(3) var<storage, read> x_sum: array<i32>;
@group(0) @binding(4) var<storage, read> qs: array<u32>;
@group(0) @binding(5) var<storage, read> scales: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;
#else
@group(0) @binding(3) var<storage, read> qs: array<u32>;
#ifdef Q4_1
@group(0) @binding(4) var<storage, read> scales: array<vec2<f32>>;
#else
@group(0) @binding(4) var<storage, read> scales: array<f32>;
#endif
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
#endif

#include "matmul_row_blocks.wgsl"

const NIBBLES: u32 = 0x0f0f0f0fu;

// The 32 weights of one block of one row as packed int8, in the byte order
// of the block's 8 activation words: lo pairs with words 0..3, hi with 4..7.
struct Block {
    lo: vec4<u32>,
    hi: vec4<u32>,
}

fn load_block(b: u32, row: u32) -> Block {
    let n = params.n;
#ifdef Q4
    let first = b * 4u * n + row;
    let w = vec4<u32>(qs[first], qs[first + n], qs[first + 2u * n], qs[first + 3u * n]);
    return Block(w & vec4<u32>(NIBBLES), (w >> vec4<u32>(4u)) & vec4<u32>(NIBBLES));
#else
    let first = b * 8u * n + row;
    return Block(vec4<u32>(qs[first], qs[first + n], qs[first + 2u * n], qs[first + 3u * n]),
                 vec4<u32>(qs[first + 4u * n], qs[first + 5u * n], qs[first + 6u * n], qs[first + 7u * n]));
#endif
}

// sum_i q_w[i] * q_x[i] over one block; x = the block's first activation word.
fn block_dot(w: Block, x: u32) -> i32 {
    return dot4I8Packed(x_q[x], w.lo.x) + dot4I8Packed(x_q[x + 1u], w.lo.y)
        + dot4I8Packed(x_q[x + 2u], w.lo.z) + dot4I8Packed(x_q[x + 3u], w.lo.w)
        + dot4I8Packed(x_q[x + 4u], w.hi.x) + dot4I8Packed(x_q[x + 5u], w.hi.y)
        + dot4I8Packed(x_q[x + 6u], w.hi.z) + dot4I8Packed(x_q[x + 7u], w.hi.w);
}

// One block's contribution for token t, row `row`: the integer sum `dot`
// times both scales (plus Q4_1's offset term).
fn block_value(dot: i32, t: u32, b: u32, row: u32) -> f32 {
    let xb = t * params.blocks + b;
    let x_scale = x_scales[xb];
    let wb = b * params.n + row;
#ifdef Q4_0
    return (scales[wb] * x_scale.x) * f32(dot - 8i * x_sum[xb]);
#else
#ifdef Q4_1
    let dm = scales[wb];
    return (dm.x * x_scale.x) * f32(dot) + dm.y * x_scale.y;
#else
    return (scales[wb] * x_scale.x) * f32(dot);
#endif
#endif
}

// acc[r] += the block's contribution to rows[r] for token t.
fn accumulate(acc: vec4<f32>, w: array<Block, ROWS>, rows: vec4<u32>, t: u32, b: u32) -> vec4<f32> {
    let x = (t * params.blocks + b) * 8u;
    return acc + vec4<f32>(block_value(block_dot(w[0], x), t, b, rows.x),
                           block_value(block_dot(w[1], x), t, b, rows.y),
                           block_value(block_dot(w[2], x), t, b, rows.z),
                           block_value(block_dot(w[3], x), t, b, rows.w));
}

fn write_rows(acc: vec4<f32>, t: u32, first_row: u32) {
    for (var r = 0u; r < ROWS; r++) {
        let row = first_row + r * WG;
        if (row < params.n) {
            out[t * params.out_stride + params.out_offset + row] = acc[r];
        }
    }
}

@compute @workgroup_size(WG)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let first_row = (wid.x + wid.y * nwg.x) * WG * ROWS + lid;
    if (first_row >= params.n) {
        return;
    }
    let rows = load_rows(first_row);
    var acc = vec4<f32>();
    for (var b = 0u; b < params.blocks; b++) {
        let w = array<Block, ROWS>(load_block(b, rows.x), load_block(b, rows.y), load_block(b, rows.z),
                                   load_block(b, rows.w));
        acc = accumulate(acc, w, rows, 0u, b);
    }
    write_rows(acc, 0u, first_row);
}

@compute @workgroup_size(WG)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let start = gemm_start(wid.x + wid.y * nwg.x, lid);
    if (start.row >= params.n || start.token >= params.rows) {
        return;
    }
    let rows = load_rows(start.row);
    let tokens = load_tokens(start.token);
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    for (var b = 0u; b < params.blocks; b++) {
        let w = array<Block, ROWS>(load_block(b, rows.x), load_block(b, rows.y), load_block(b, rows.z),
                                   load_block(b, rows.w));
        acc0 = accumulate(acc0, w, rows, tokens.x, b);
        acc1 = accumulate(acc1, w, rows, tokens.y, b);
        acc2 = accumulate(acc2, w, rows, tokens.z, b);
        acc3 = accumulate(acc3, w, rows, tokens.w, b);
    }
    let acc = array<vec4<f32>, TOKENS>(acc0, acc1, acc2, acc3);
    for (var t = 0u; t < TOKENS; t++) {
        if (start.token + t < params.rows) {
            write_rows(acc[t], start.token + t, start.row);
        }
    }
}
