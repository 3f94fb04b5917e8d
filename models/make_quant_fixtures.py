#!/usr/bin/env python3
"""Write tests/data/quants.gguf and tests/data/quants_expected.bin.

The cross-check for src/loader/quants.rs: an implementation nobody here wrote
(the PyPI `gguf` package, llama.cpp's own Python library) quantizes and
dequantizes; the Rust test reads quants.gguf with our reader, dequantizes
with our code and compares with the values gguf-py produced.

quants.gguf holds one tensor per ggml type gguf-py can write:
  * `<type>`      : seeded random floats quantized by gguf.quants.quantize;
  * `<type>_raw`  : random block bytes (every code pattern, incl. TQ2_0's
                    code 3) with a sane f16 scale, for types gguf-py can only
                    dequantize (Q4_K, Q6_K) and as a second check for the rest.
Metadata covers every GGUF value type (incl. string arrays shaped like
tokenizer.ggml.tokens), with general.alignment = 64.

quants_expected.bin: for each tensor, in file order, its n_elements
gguf.quants.dequantize values as little-endian f32.

Usage: pip install gguf numpy && python models/make_quant_fixtures.py
"""

from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize, dequantize

OUT = Path(__file__).resolve().parent.parent / "tests" / "data"
rng = np.random.default_rng(20250719)

# name -> (ggml type, raw bytes or f32 array, element count)
tensors = []


def add_quantized(name, qtype, shape):
    values = rng.standard_normal(shape).astype(np.float32)
    if qtype in (T.TQ1_0, T.TQ2_0):
        # Mostly ternary with noise, as real BitNet weights are.
        values = (rng.integers(-1, 2, size=shape) * 0.75 + 0.05 * values).astype(np.float32)
    tensors.append((name, qtype, quantize(values, qtype)))


def set_f16(blocks, at, low, high):
    d = rng.uniform(low, high, size=blocks.shape[0]).astype(np.float16)
    blocks[:, at:at + 2] = d.view(np.uint8).reshape(-1, 2)


def add_raw(name, qtype, n_blocks, scale_offsets):
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    for at in scale_offsets:
        set_f16(blocks, at, 0.001, 0.1)
    # gguf-py infers the element shape from the byte shape of the last axis.
    tensors.append((name, qtype, blocks.reshape(1, -1)))


add_quantized("f32", T.F32, (2, 40))
add_quantized("f16", T.F16, (3, 24))
add_quantized("bf16", T.BF16, (2, 48))
add_quantized("q8_0", T.Q8_0, (2, 64))
add_quantized("q4_0", T.Q4_0, (2, 64))
add_quantized("q4_1", T.Q4_1, (3, 32))
add_quantized("tq1_0", T.TQ1_0, (2, 256))
add_quantized("tq2_0", T.TQ2_0, (2, 256))
add_raw("q8_0_raw", T.Q8_0, 3, [0])
add_raw("q4_0_raw", T.Q4_0, 3, [0])
add_raw("q4_1_raw", T.Q4_1, 3, [0, 2])
add_raw("q4_k_raw", T.Q4_K, 2, [0, 2])
add_raw("q6_k_raw", T.Q6_K, 2, [208])
add_raw("tq1_0_raw", T.TQ1_0, 2, [52])
add_raw("tq2_0_raw", T.TQ2_0, 2, [64])

path = OUT / "quants.gguf"
writer = gguf.GGUFWriter(str(path), arch="quanttest")
writer.add_custom_alignment(64)
writer.add_uint8("test.u8", 200)
writer.add_int8("test.i8", -100)
writer.add_uint16("test.u16", 60000)
writer.add_int16("test.i16", -30000)
writer.add_uint32("test.u32", 4000000000)
writer.add_int32("test.i32", -2000000000)
writer.add_float32("test.f32", 0.15625)
writer.add_bool("test.bool", True)
writer.add_string("test.string", "héllo ✓")
writer.add_uint64("test.u64", 2**63 + 5)
writer.add_int64("test.i64", -(2**62))
writer.add_float64("test.f64", 1e-300)
writer.add_array("test.strings", ["<s>", "Ġthe", "", "✓"])
writer.add_array("test.ints", [1, -2, 3])
writer.add_array("test.floats", [0.5, -1.25])
writer.add_array("test.nested", [[1, 2], [3]])
for name, qtype, data in tensors:
    writer.add_tensor(name, data, raw_dtype=qtype)
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()

# Expected values come from the file as written, read back by gguf-py.
reader = gguf.GGUFReader(str(path))
with open(OUT / "quants_expected.bin", "wb") as out:
    for t in reader.tensors:
        values = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).reshape(-1)
        assert values.size == int(t.n_elements), t.name
        out.write(values.astype("<f4").tobytes())
        print(f"{t.name:10s} {t.tensor_type.name:6s} {list(t.shape)} {values.size} values")
print(f"wrote {path} ({path.stat().st_size} bytes)")
