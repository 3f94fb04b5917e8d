// Per-token absmax int8 quantization of activations for the ternary
// matrix product (BitNet b1.58 BitLinear, docs/DESIGN.md §3):
//
//   x_scale[r] = 127 / max(max_k |x[r][k]|, 1e-5)
//   x_q[r][k]  = clamp(round_half_even(x[r][k] * x_scale[r]), -128, 127)
//   x_sum[r]   = sum_k x_q[r][k]
//
// WGSL's round() rounds half to even, as the CPU twin does.
// x_sum lets matmul_ternary.wgsl multiply by the unsigned code w + 1 and
// subtract the row sum once, instead of mapping every code to -1, 0, 1.
//
// Layout: x f32 [rows][k] row-major. x_q u32 [rows][k_words], k_words =
// K_pad / 4 with K_pad = k rounded up to 16 (one ternary weight word): four
// int8 per word, column 4i + b in byte b of word i, padding columns are 0.
// x_scale f32 [rows], x_sum i32 [rows].
// Bindings: 0 params (uniform), 1 x, 2 x_q, 3 x_scale, 4 x_sum.
// Grid: one workgroup of 64 invocations per row (folded into y past 65535
// rows); invocations stride over the row, with tree reductions in workgroup
// memory for max |x| and for the sum (include/workgroup_reduce.wgsl).

struct Params {
    rows: u32,
    k: u32,
    k_words: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> x_q: array<u32>;
@group(0) @binding(3) var<storage, read_write> x_scale: array<f32>;
@group(0) @binding(4) var<storage, read_write> x_sum: array<i32>;

const WG: u32 = 64u;

#include "workgroup_reduce.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.k;

    var max_abs = 0.0;
    for (var i = lid; i < params.k; i += WG) {
        max_abs = max(max_abs, abs(x[base + i]));
    }
    let scale = 127.0 / max(workgroup_max(lid, max_abs), 1e-5);

    var sum = 0i;
    for (var word = lid; word < params.k_words; word += WG) {
        var packed = 0u;
        for (var b = 0u; b < 4u; b++) {
            let col = 4u * word + b;
            var q = 0i;
            if (col < params.k) {
                q = i32(clamp(round(x[base + col] * scale), -128.0, 127.0));
            }
            sum += q;
            packed |= (bitcast<u32>(q) & 0xffu) << (8u * b);
        }
        x_q[row * params.k_words + word] = packed;
    }
    let row_sum = workgroup_sum_i32(lid, sum);
    if (lid == 0u) {
        x_scale[row] = scale;
        x_sum[row] = row_sum;
    }
}
