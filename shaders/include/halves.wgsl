// Two 16-bit floats packed in one u32 word, element 2j of a row in the low
// half and 2j + 1 in the high half, widened to f32 (low half first). Shared
// by the packed variants of embedding.wgsl and matmul_dense.wgsl.
//
// Defines: none = IEEE f16 halves, decoded with unpack2x16float (needs no
// shader-f16); BF16 = bfloat16 halves, decoded exactly by a 16-bit shift
// (the f32 bits are the bf16 bits << 16).

fn unpack_halves(word: u32) -> vec2<f32> {
#ifdef BF16
    return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
#else
    return unpack2x16float(word);
#endif
}
