// The order in which argmax.wgsl and topk.wgsl rank logits, and the chunks
// they split the logits into.
//
// Values compare through `order_key`, an exact integer image of the float
// order, so the answer does not depend on a backend's float modes (fast
// math, flushed denormals): -0.0 ranks just below +0.0 and NaN below every
// number, so it is never picked.
//
// The including shader sets CHUNK (logits per workgroup of the first pass)
// and declares `params` (n, the number of logits).

// No id: the empty pick.
const NONE: u32 = 0xffffffffu;

// Monotone map of f32 bits to u32: for non-NaN a, b, a < b as floats iff
// order_key(a) < order_key(b) (with -0.0 < +0.0). NaN maps to 0, a key no
// number has (the smallest, -inf, maps to 0x007fffff).
fn order_key(v: f32) -> u32 {
    let bits = bitcast<u32>(v);
    if ((bits & 0x7fffffffu) > 0x7f800000u) {
        return 0u;
    }
    if ((bits & 0x80000000u) != 0u) {
        return ~bits;
    }
    return bits | 0x80000000u;
}

// Chunks of CHUNK logits covering all n, the last one partial.
fn chunk_count() -> u32 {
    return params.n / CHUNK + select(0u, 1u, params.n % CHUNK != 0u);
}
