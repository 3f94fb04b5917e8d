// RMSNorm over the last dimension, one workgroup per row.
//
//   out[r][i] = x[r][i] / sqrt(mean_j(x[r][j]^2) + eps) * weight[i]
//
// Layout: x, out: f32 [rows][dim] row-major; weight: f32 [dim].
// Bindings: 0 params (uniform), 1 x, 2 weight, 3 out (may alias nothing).
// Grid: one workgroup of 256 invocations per row (folded into y past 65535
// rows); each invocation strides over the row, then a tree reduction in
// workgroup memory (include/workgroup_reduce.wgsl). Sum of squares
// accumulates in f32.

struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

#include "workgroup_reduce.wgsl"

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= params.rows) {
        return;
    }
    let base = row * params.dim;
    var sum = 0.0;
    for (var i = lid; i < params.dim; i += WG) {
        let v = x[base + i];
        sum += v * v;
    }
    let inv_rms = inverseSqrt(workgroup_sum(lid, sum) / f32(params.dim) + params.eps);
    for (var i = lid; i < params.dim; i += WG) {
        out[base + i] = x[base + i] * inv_rms * weight[i];
    }
}
