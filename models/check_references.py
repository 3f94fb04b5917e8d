#!/usr/bin/env python3
"""Sanity-check the committed references (models/README.md).

An independent float64 numpy forward of the tiny fixture models (written from
docs/DESIGN.md §3/§4, not from either oracle) is compared with the stored HF
transformers logits and llama.cpp logits; llama.cpp F32 is also compared with
HF.  Prints relative L2 errors and argmax agreement; exits 1 if a Llama F32
comparison exceeds 1e-4 or a BitNet one exceeds 5e-2.
Needs numpy only (reads the safetensors files by hand).
"""

import json
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402

FIX = mf.OUT


def load(folder: Path) -> dict:
    out = {}
    raw = (folder / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b = raw[base + v["data_offsets"][0] : base + v["data_offsets"][1]]
        if v["dtype"] == "BF16":
            a = (np.frombuffer(b, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif v["dtype"] == "U8":
            a = np.frombuffer(b, np.uint8)
        else:
            a = np.frombuffer(b, "<f4")
        out[k] = a.reshape(v["shape"])
    return out


def rms(x, w, eps=mf.EPS):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * w


def inv_freq(cfg):
    d = mf.HEAD_DIM
    f = 1.0 / (cfg["rope_theta"] ** (np.arange(0, d, 2) / d))
    if cfg.get("rope_scaling"):
        f = f / mf.llama3_rope_factors(cfg["rope_theta"], d, cfg["rope_scaling"]).astype(np.float64)
    return f


def rope(x, pos, invf):  # x [T, H, D]; HF rotate_half pairing (i, i + D/2)
    ang = pos[:, None] * invf[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]
    h = x.shape[-1] // 2
    return x * cos + np.concatenate([-x[..., h:], x[..., :h]], -1) * sin


def bitlinear(x, packed, ws, multiply=False):
    w = mf.unpack_ternary(packed).astype(np.float64)
    s = 127.0 / np.maximum(np.abs(x).max(-1, keepdims=True), 1e-5)
    xq = np.clip(np.round(x * s), -128, 127)  # np.round: half to even
    if multiply:  # linear_class "autobitlinear", offline
        return (xq @ w.T) / s * ws
    return (xq @ w.T) / (s * ws)  # linear_class "bitlinear": weight_scale divides


def q8_0_act(x):
    """ggml's quantize_row_q8_0 round trip: blocks of 32, q = rint(x * (127 / amax))
    in f32 (half to even), scale amax/127 stored as f16."""
    b = x.reshape(-1, 32).astype(np.float32)
    amax = np.abs(b).max(-1, keepdims=True)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    q = np.round(b * inv)
    d = (amax / np.float32(127)).astype(np.float16).astype(np.float64)
    return (q * d).reshape(x.shape)


def forward(w, cfg, ids, bitnet, act=lambda a: a):
    """act: applied to every matmul input (q8_0_act mimics llama.cpp's Q8_0 matmul)."""
    T = len(ids)
    H, KV, D = mf.HEADS, mf.KV_HEADS, mf.HEAD_DIM
    x = w["model.embed_tokens.weight"][ids].astype(np.float64)
    invf, pos = inv_freq(cfg), np.arange(T, dtype=np.float64)
    multiply = (cfg.get("quantization_config") or {}).get("linear_class") == "autobitlinear"

    def lin(h, name):
        if bitnet:
            return bitlinear(h, w[name + ".weight"], float(w[name + ".weight_scale"][0]), multiply)
        return act(h) @ w[name + ".weight"].T.astype(np.float64)

    for layer in range(mf.LAYERS):
        p = f"model.layers.{layer}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rope(lin(h, p + "self_attn.q_proj").reshape(T, H, D), pos, invf)
        k = rope(lin(h, p + "self_attn.k_proj").reshape(T, KV, D), pos, invf)
        v = lin(h, p + "self_attn.v_proj").reshape(T, KV, D)
        o = np.zeros((T, H, D))
        for hh in range(H):
            g = hh // (H // KV)
            s = q[:, hh] @ k[:, g].T / math.sqrt(D) + np.triu(np.full((T, T), -np.inf), 1)
            s = np.exp(s - s.max(-1, keepdims=True))
            o[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, g]
        o = o.reshape(T, H * D)
        if bitnet:
            o = rms(o, w[p + "self_attn.attn_sub_norm.weight"])
        x = x + lin(o, p + "self_attn.o_proj")
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g, u = lin(h, p + "mlp.gate_proj"), lin(h, p + "mlp.up_proj")
        if bitnet:
            m = rms(np.maximum(g, 0) ** 2 * u, w[p + "mlp.ffn_sub_norm.weight"])
        else:
            m = g / (1 + np.exp(-g)) * u
        x = x + lin(m, p + "mlp.down_proj")
    return act(rms(x, w["model.norm.weight"])) @ w["model.embed_tokens.weight"].T.astype(np.float64)


def load_gguf_as_hf(path: Path) -> dict:
    """Dequantise a tiny-llama GGUF back to HF names and HF q/k row order."""
    import gguf

    inv = {v: k for k, v in mf.LLAMA_GGUF_NAMES.items()}
    w = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        shape = [int(x) for x in reversed(t.shape)]
        a = np.array(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
        if t.name == "token_embd.weight":
            w["model.embed_tokens.weight"] = a
        elif t.name == "output_norm.weight":
            w["model.norm.weight"] = a
        elif t.name.startswith("blk."):
            _, layer, rest = t.name.split(".", 2)
            hf = inv[rest]
            n = {"self_attn.q_proj.weight": mf.HEADS, "self_attn.k_proj.weight": mf.KV_HEADS}.get(hf)
            if n:  # inverse of make_fixtures.llama_permute
                a = a.reshape(n, a.shape[0] // n // 2, 2, a.shape[1]).swapaxes(1, 2).reshape(a.shape)
            w[f"model.layers.{layer}.{hf}"] = a
    return w


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def main():
    bad = 0
    prompts = json.loads((FIX / "prompts.json").read_text())["prompts"]
    models = (
        ("tiny-llama", False),
        ("tiny-llama3rope", False),
        ("tiny-bitnet", True),
        ("tiny-bitnet-autobitlinear", True),
    )
    for name, bitnet in models:
        w = load(FIX / name)
        cfg = json.loads((FIX / name / "config.json").read_text())
        refs = {}
        f = FIX / f"ref-{name}.hf.json"
        if f.exists():
            refs["hf"] = {p["name"]: p for p in json.loads(f.read_text())["prompts"]}
        f = FIX / f"ref-{name}.llamacpp.json"
        if f.exists():
            for run in json.loads(f.read_text())["runs"]:
                refs["llamacpp-" + run["weights"]] = {p["name"]: p for p in run["prompts"]}
        limit = 5e-2 if bitnet else 1e-4
        q8 = None
        if not bitnet and (FIX / f"{name}.q8_0.gguf").exists():
            try:
                q8 = load_gguf_as_hf(FIX / f"{name}.q8_0.gguf")
            except ImportError:
                print("(gguf not installed: skipping the Q8_0 emulation check)")
        for p in prompts:
            me = forward(w, cfg, p["ids"], bitnet)
            for src, r in refs.items():
                lg = np.array(r[p["name"]]["logits"])
                e = rel(me, lg)
                agree = float(np.mean(me.argmax(-1) == lg.argmax(-1)))
                flag = ""
                if (e > limit and not src.endswith("q8_0")) or (src.endswith("q8_0") and e > 6e-2):
                    flag, bad = "  <-- FAIL", bad + 1
                print(f"{name:25s} {p['name']:8s} numpy vs {src:15s} relL2 {e:.2e}  argmax agree {agree:.2f}{flag}")
            if "llamacpp-q8_0" in refs and q8 is not None:
                me8 = forward(q8, cfg, p["ids"], False, act=q8_0_act)
                lg = refs["llamacpp-q8_0"][p["name"]]["logits"]
                # informational: ~6e-8 on prompts without rounding ties; a tie
                # within one f32 ulp (the embedding is Q8_0, so layer 0 has them)
                # flips a rounding and the difference cascades (~2e-2)
                e = rel(me8, lg)
                print(f"{name:16s} {p['name']:8s} numpy(Q8_0 w + Q8_0 act) vs llamacpp-q8_0 relL2 {e:.2e} (info)")
            if "hf" in refs and "llamacpp-f32" in refs:
                e = rel(refs["llamacpp-f32"][p["name"]]["logits"], refs["hf"][p["name"]]["logits"])
                same = refs["llamacpp-f32"][p["name"]]["greedy"] == refs["hf"][p["name"]]["greedy"]
                print(f"{name:16s} {p['name']:8s} llama.cpp-f32 vs hf      relL2 {e:.2e}  greedy equal {same}")
                if e > limit:
                    bad += 1
    print("OK" if not bad else f"{bad} comparisons over the limit")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
