//! llama.cpp's block-wise int8 activation round trip (see
//! `shaders/quantize_q8_blocks.wgsl`).

use half::f16;

/// Each 32-value block of `x` → `f16(d) · roundf(x / d)` with `d = max|x| / 127`.
pub fn quantize_q8_blocks(x: &[f32]) -> Vec<f32> {
    assert!(x.len().is_multiple_of(32), "length must be a multiple of 32");
    x.chunks_exact(32)
        .flat_map(|block| {
            let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inv_d = if d != 0.0 { 1.0 / d } else { 0.0 };
            let d16 = f16::from_f32(d).to_f32();
            block.iter().map(move |v| d16 * (v * inv_d).round()).collect::<Vec<_>>()
        })
        .collect()
}
