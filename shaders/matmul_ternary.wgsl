// Ternary (BitNet b1.58) matrix products: int8 activations times ternary
// weights, accumulated in i32, then scaled (docs/DESIGN.md §3):
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
// Grid (include/matmul_row_blocks.wgsl): workgroups of 64 invocations, each
// owning ROWS = 4 output rows lid + {0, 64, 128, 192}, so every weight load
// is contiguous across invocations, and the rows share each activation word
// (on CPU drivers such as lavapipe, unpacking the int8 activations costs as
// much as the weights). gemv: token 0 only (decode), ceil(n / 256)
// workgroups. gemm: also TOKENS = 4 tokens per invocation, so each decoded
// weight word serves 4 tokens and each activation word 4 rows; ceil(n / 256)
// * ceil(rows / 4) workgroups (row blocks fastest). Both folded into y.
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

#include "matmul_row_blocks.wgsl"

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

// sum over the 16 columns of weight word `codes` of code * x_q, with the
// activations from x_q[x .. x + 4].
fn dot16(codes: u32, x: u32) -> i32 {
    return dot4I8Packed(x_q[x], codes & CODE_BYTES)
        + dot4I8Packed(x_q[x + 1u], (codes >> 2u) & CODE_BYTES)
        + dot4I8Packed(x_q[x + 2u], (codes >> 4u) & CODE_BYTES)
        + dot4I8Packed(x_q[x + 3u], (codes >> 6u) & CODE_BYTES);
}

fn dot16_rows(codes: vec4<u32>, x: u32) -> vec4<i32> {
    return vec4<i32>(dot16(codes.x, x), dot16(codes.y, x), dot16(codes.z, x), dot16(codes.w, x));
}

fn write_rows(acc: vec4<i32>, token: u32, first_row: u32) {
    for (var r = 0u; r < ROWS; r++) {
        let row = first_row + r * WG;
        if (row < params.n) {
            write_output(acc[r], token, row);
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
    var acc = vec4<i32>();
    for (var g = 0u; g < params.k_groups; g++) {
        let base = g * params.n;
        let codes = vec4<u32>(weight[base + rows.x], weight[base + rows.y], weight[base + rows.z],
                              weight[base + rows.w]);
        acc += dot16_rows(codes, 4u * g);
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
    // Each token's first activation word.
    let x_start = load_tokens(start.token) * (4u * params.k_groups);
    var acc0 = vec4<i32>();
    var acc1 = vec4<i32>();
    var acc2 = vec4<i32>();
    var acc3 = vec4<i32>();
    for (var g = 0u; g < params.k_groups; g++) {
        let base = g * params.n;
        let codes = vec4<u32>(weight[base + rows.x], weight[base + rows.y], weight[base + rows.z],
                              weight[base + rows.w]);
        acc0 += dot16_rows(codes, x_start.x + 4u * g);
        acc1 += dot16_rows(codes, x_start.y + 4u * g);
        acc2 += dot16_rows(codes, x_start.z + 4u * g);
        acc3 += dot16_rows(codes, x_start.w + 4u * g);
    }
    let acc = array<vec4<i32>, TOKENS>(acc0, acc1, acc2, acc3);
    for (var t = 0u; t < TOKENS; t++) {
        if (start.token + t < params.rows) {
            write_rows(acc[t], start.token + t, start.row);
        }
    }
}
