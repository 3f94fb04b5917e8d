// Rotary position embedding (rotate_half pairing), in place on q and k.
//
// For each head vector v (size head_dim, half = head_dim / 2) of the token at
// position p = pos0 + m, and each i < half, with (c, s) = table[p][i]:
//   v[i]        = v[i] * c - v[i + half] * s
//   v[i + half] = v[i + half] * c + v[i] * s
//
// Layout: q f32 [rows][heads][head_dim], k f32 [rows][kv_heads][head_dim]
// (row-major projection outputs); table vec2<f32> [max_positions][half] of
// (cos, sin) of p * inv_freq[i], computed on the CPU in f64 (GPU trig is
// imprecise on the large angles of late positions).
// Bindings: 0 params, 1 table, 2 q (read-write), 3 k (read-write).
// Grid: one invocation per rotated pair, over rows * (heads + kv_heads) * half
// pairs (query heads first, then key heads), 256 per workgroup, folded into y
// past 65535 workgroups.

struct Params {
    rows: u32,
    pos0: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> q: array<f32>;
@group(0) @binding(3) var<storage, read_write> k: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let pair = (wid.x + wid.y * nwg.x) * WG + lid;
    let half = params.head_dim / 2u;
    let heads_per_row = params.heads + params.kv_heads;
    if (pair >= params.rows * heads_per_row * half) {
        return;
    }
    let i = pair % half;
    let head = (pair / half) % heads_per_row;
    let row = pair / (half * heads_per_row);
    let angle = table[(params.pos0 + row) * half + i];
    if (head < params.heads) {
        let base = (row * params.heads + head) * params.head_dim + i;
        let a = q[base];
        let b = q[base + half];
        q[base] = a * angle.x - b * angle.y;
        q[base + half] = b * angle.x + a * angle.y;
    } else {
        let base = (row * params.kv_heads + head - params.heads) * params.head_dim + i;
        let a = k[base];
        let b = k[base + half];
        k[base] = a * angle.x - b * angle.y;
        k[base + half] = b * angle.x + a * angle.y;
    }
}
