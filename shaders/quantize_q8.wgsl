// Activation quantization to int8 blocks of 32 along K, as llama.cpp rounds
// the inputs of Q4_0/Q4_1/Q8_0 matrix products (ggml's Q8_0 and Q8_1;
// src/cpu/quant.rs is the CPU twin):
//
//   amax = max |x|   d = amax / 127   id = amax != 0 ? 127 / amax : 0
//   q    = round_half_even(x * id)
//   x_scales = (f16_round(d), f16_round(d * sum q))     the second is Q8_1's s
//   x_sum    = sum q                                    for Q4_0's -8 offset
//
// Both scales are kept (Q8_0 readers use only d) so one buffer serves every
// weight format reading the same input. WGSL's round() rounds half to even.
//
// Layout: x f32 [rows][k], k = 32 * blocks. x_q u32 [rows][k/4], four int8
// per word, element 4i + b in byte b of word i. x_scales vec2<f32>
// [rows][blocks], x_sum i32 [rows][blocks].
// Bindings: 0 params (uniform), 1 x, 2 x_q, 3 x_scales, 4 x_sum.
// Grid: one invocation per block, 64 per workgroup, ceil(rows * blocks / 64)
// workgroups folded into y.

struct Params {
    rows: u32,
    blocks: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> x_q: array<u32>;
@group(0) @binding(3) var<storage, read_write> x_scales: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> x_sum: array<i32>;

const WG: u32 = 64u;

// The nearest binary16 value (ties to even), widened back to f32, as ggml's
// GGML_FP32_TO_FP16 rounds. pack2x16float would leave the direction to the
// implementation, and shader-f16 is optional, so it is done on the bits.
fn f16_round(v: f32) -> f32 {
    let a = abs(v);
    if (a < 6.103515625e-05) {
        // Below the smallest normal f16 (2^-14) the step is a fixed 2^-24;
        // scaling by powers of two is exact.
        return round(v * 16777216.0) * 5.9604644775390625e-08;
    }
    let bits = bitcast<u32>(v);
    if (a >= 65520.0) {
        return bitcast<f32>((bits & 0x80000000u) | 0x7f800000u);
    }
    // Keep 10 of the 23 mantissa bits, rounding the 13 dropped ones to even.
    let lsb = (bits >> 13u) & 1u;
    return bitcast<f32>((bits + 0xfffu + lsb) & 0xffffe000u);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let block = (wid.x + wid.y * nwg.x) * WG + lid;
    if (block >= params.rows * params.blocks) {
        return;
    }
    let base = block * 32u;
    var amax = 0.0;
    for (var i = 0u; i < 32u; i++) {
        amax = max(amax, abs(x[base + i]));
    }
    let d = amax / 127.0;
    let id = select(0.0, 127.0 / amax, amax != 0.0);
    var sum = 0i;
    for (var word = 0u; word < 8u; word++) {
        var packed = 0u;
        for (var b = 0u; b < 4u; b++) {
            let q = i32(clamp(round(x[base + 4u * word + b] * id), -128.0, 127.0));
            sum += q;
            packed |= (bitcast<u32>(q) & 0xffu) << (8u * b);
        }
        x_q[block * 8u + word] = packed;
    }
    x_scales[block] = vec2<f32>(f16_round(d), f16_round(d * f32(sum)));
    x_sum[block] = sum;
}
