// Block-wise int8 round trip of activations, as llama.cpp does before a dot
// product with Q4_0/Q4_1/Q5_x/Q8_0 weights (its Q8_0/Q8_1 "vec_dot" types).
// Running the same rounding lets a GGUF model give llama.cpp's numbers.
//
//   per block of 32 values:  d = max|x| / 127,  q = roundf(x / d) (half away from zero),
//                            out = f16(d) * q                     (d = 0 gives zeros)
//
// Layout: x, out: f32 [rows][dim], dim a multiple of 32.
// Bindings: 0 params (uniform), 1 x, 2 out.
// Grid: one invocation per block, 64 per workgroup, folded into y.

struct Params {
    blocks: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const BLOCK: u32 = 32u;

fn round_half_away(v: f32) -> f32 {
    return sign(v) * floor(abs(v) + 0.5);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let block = gid.x + gid.y * nwg.x * 64u;
    if (block >= params.blocks) {
        return;
    }
    let base = block * BLOCK;
    var amax = 0.0;
    for (var i = 0u; i < BLOCK; i++) {
        amax = max(amax, abs(x[base + i]));
    }
    let d = amax / 127.0;
    let inv_d = select(0.0, 1.0 / d, d != 0.0);
    // The scale is stored as f16; pack/unpack rounds it without shader-f16.
    let d16 = unpack2x16float(pack2x16float(vec2<f32>(d, 0.0))).x;
    for (var i = 0u; i < BLOCK; i++) {
        out[base + i] = d16 * round_half_away(x[base + i] * inv_d);
    }
}
