// A plain copy, dst[i] = src[i], for measuring the memory bandwidth a kernel
// can practically reach on this adapter (`deltallm bench` divides every
// kernel's effective GB/s by this one's).
//
// Layout: src, dst: vec4<u32> [count] (16-byte elements, so each invocation
// moves one full vector, the widest load WGSL offers).
// Bindings: 0 params (uniform), 1 src, 2 dst.
// Grid: one invocation per element, 256 per workgroup, folded into y past
// 65535 workgroups; the linear workgroup index is wid.x + wid.y * nwg.x.

struct Params {
    count: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= params.count) {
        return;
    }
    dst[i] = src[i];
}
