// Ternary (BitNet b1.58) matrix products: int8 activations times ternary
// weights, accumulated in i32, then scaled (DESIGN.md §3):
//
//   acc[t][n] = sum_k x_q[t][k] * w[n][k]
//   out[t][n] = acc / (x_scale[t] * weight_scale)     convention 0 (divide)
//   out[t][n] = acc / x_scale[t] * weight_scale       convention 1 (multiply)
//
// Weights (cpu::ternary::pack_gpu): K padded to K_pad = 16 * k_groups with
// code 1 (weight 0); u32 [k_groups][n], group-major: word (g, n) holds the 16
// codes (w + 1, two bits each) of row n, columns 16g .. 16g+15, so
// neighbouring invocations (rows) read neighbouring words. Column 16g + 4j + b
// sits at bits 8b + 2j: (word >> 2j) & 0x03030303 puts the codes of columns
// 16g+4j .. 16g+4j+3 in bytes 0..3, the byte order of activation word 4g + j,
// so one dot4I8Packed multiplies four weights.
// Activations (quantize_int8.wgsl): x_q u32 [rows][4 * k_groups], four int8
// per word (column 4i + b in byte b, zero padded); x_scale f32 [rows];
// x_sum i32 [rows] = sum_k x_q. Because code = w + 1,
// sum_k x_q * w = sum_k x_q * code - x_sum: no per-weight subtraction.
// Output: out f32 [rows][n].
// Bindings: 0 params (uniform), 1 x_q, 2 x_scale, 3 x_sum, 4 weight, 5 out.
//
// Entry points (one invocation per output row n, 64 per workgroup):
//   gemv: token 0 only (decode). Grid: ceil(n / 64) workgroups, folded into y.
//   gemm: TILE_M tokens per invocation; each weight word is loaded and its
//         codes decoded once for the TILE_M tokens. Grid: ceil(n / 64) *
//         ceil(rows / TILE_M) workgroups (row blocks fastest), folded into y.
// Define RAW_I32: write the accumulator itself, bitcast to f32, so tests can
// check the integer product bit-exactly.

struct Params {
    rows: u32,
    n: u32,
    k_groups: u32,
    convention: u32,
    weight_scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x_q: array<u32>;
@group(0) @binding(2) var<storage, read> x_scale: array<f32>;
@group(0) @binding(3) var<storage, read> x_sum: array<i32>;
@group(0) @binding(4) var<storage, read> weight: array<u32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
const TILE_M: u32 = 8u;
const CODE_BYTES: u32 = 0x03030303u;

// acc_codes = sum_k x_q * (w + 1) for one (token, row).
fn write_output(acc_codes: i32, token: u32, row: u32) {
    let acc = acc_codes - x_sum[token];
    let s = x_scale[token];
#ifdef RAW_I32
    // s is read only so that the RAW_I32 variant binds the same buffers.
    _ = s;
    out[token * params.n + row] = bitcast<f32>(acc);
#else
    if (params.convention == 0u) {
        out[token * params.n + row] = f32(acc) / (s * params.weight_scale);
    } else {
        out[token * params.n + row] = f32(acc) / s * params.weight_scale;
    }
#endif
}

@compute @workgroup_size(WG)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = (wid.x + wid.y * nwg.x) * WG + lid;
    if (row >= params.n) {
        return;
    }
    var acc = 0i;
    for (var g = 0u; g < params.k_groups; g++) {
        let codes = weight[g * params.n + row];
        let x = 4u * g;
        acc += dot4I8Packed(x_q[x], codes & CODE_BYTES);
        acc += dot4I8Packed(x_q[x + 1u], (codes >> 2u) & CODE_BYTES);
        acc += dot4I8Packed(x_q[x + 2u], (codes >> 4u) & CODE_BYTES);
        acc += dot4I8Packed(x_q[x + 3u], (codes >> 6u) & CODE_BYTES);
    }
    write_output(acc, 0u, row);
}

@compute @workgroup_size(WG)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row_blocks = (params.n + WG - 1u) / WG;
    let block = wid.x + wid.y * nwg.x;
    let row = (block % row_blocks) * WG + lid;
    let first_token = (block / row_blocks) * TILE_M;
    if (row >= params.n || first_token >= params.rows) {
        return;
    }
    let words_per_token = 4u * params.k_groups;
    var acc: array<i32, TILE_M>;
    for (var g = 0u; g < params.k_groups; g++) {
        let codes = weight[g * params.n + row];
        let c0 = codes & CODE_BYTES;
        let c1 = (codes >> 2u) & CODE_BYTES;
        let c2 = (codes >> 4u) & CODE_BYTES;
        let c3 = (codes >> 6u) & CODE_BYTES;
        for (var t = 0u; t < TILE_M; t++) {
            // Tokens past the end re-read the last token; their sums are never written.
            let x = min(first_token + t, params.rows - 1u) * words_per_token + 4u * g;
            acc[t] += dot4I8Packed(x_q[x], c0) + dot4I8Packed(x_q[x + 1u], c1)
                + dot4I8Packed(x_q[x + 2u], c2) + dot4I8Packed(x_q[x + 3u], c3);
        }
    }
    for (var t = 0u; t < TILE_M; t++) {
        if (first_token + t < params.rows) {
            write_output(acc[t], first_token + t, row);
        }
    }
}
