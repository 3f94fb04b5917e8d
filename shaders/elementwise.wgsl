// Elementwise steps of a transformer block, one entry point each:
//
//   relu2_mul:   out[i] = max(gate[i], 0)^2 * up[i]          (BitNet FFN)
//   silu_mul:    out[i] = gate[i] / (1 + exp(-gate[i])) * up[i] (Llama FFN)
//   add_inplace: h[i] += x[i]                                 (residual)
//
// Layout: flat f32 arrays of params.len elements (rows * dim of the caller).
// Everything stays f32: relu² of BitNet activations overflows f16.
// Bindings (entry points alias binding numbers; each uses only its own):
//   relu2_mul, silu_mul: 0 params, 1 gate, 2 up, 3 out
//   add_inplace:         0 params, 1 h (read-write), 2 x
// Grid: one invocation per element, 256 per workgroup, workgroups folded
// into y past 65535.

struct Params {
    len: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;

@group(0) @binding(1) var<storage, read> gate: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@group(0) @binding(1) var<storage, read_write> h: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;

const WG: u32 = 256u;

fn element_index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(WG)
fn relu2_mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = element_index(wid, nwg, lid);
    if (i >= params.len) {
        return;
    }
    let r = max(gate[i], 0.0);
    out[i] = r * r * up[i];
}

@compute @workgroup_size(WG)
fn silu_mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = element_index(wid, nwg, lid);
    if (i >= params.len) {
        return;
    }
    let g = gate[i];
    // exp(-g) overflows to +inf for g < -88; g / inf = -0 is the right limit.
    out[i] = g / (1.0 + exp(-g)) * up[i];
}

@compute @workgroup_size(WG)
fn add_inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = element_index(wid, nwg, lid);
    if (i >= params.len) {
        return;
    }
    h[i] += x[i];
}
