#!/usr/bin/env python3
"""Build the tiny random models that deltallm's correctness tests load.

Run:   /work/venv/bin/python models/make_fixtures.py      (see models/README.md)
Needs: numpy, gguf, tokenizers, safetensors (no torch).  Deterministic: every
random draw comes from numpy.random.default_rng(SEED + k) with fixed k, the
tokenizer trainer is single-threaded over a fixed corpus, so a re-run writes
byte-identical files (checked by `git status` after a re-run).

Output, all under tests/data/fixtures/ (committed, a few hundred KB each):

  tokenizer/                      the tiny byte-level BPE (Llama-3 style)
      tokenizer.json tokenizer_config.json
  tiny-llama/                     HF folder, LlamaForCausalLM, rope_theta 1e4
      config.json generation_config.json model.safetensors (bf16)
      tokenizer.json tokenizer_config.json (with chat_template)
  tiny-llama.f32.gguf             GGUF twin, every tensor F32 (values = the
                                  bf16 weights exactly, widened)
  tiny-llama.q8_0.gguf            GGUF twin, 2-D weights Q8_0, norms F32
  tiny-llama3rope/ + tiny-llama3rope.{f32,q8_0}.gguf
                                  same weights, config with llama3
                                  rope_scaling; the GGUF carries the
                                  `rope_freqs.weight` tensor exactly as
                                  llama.cpp's convert_hf_to_gguf.py writes it
  tiny-bitnet/                    HF folder, BitNetForCausalLM, packed ternary
      config.json generation_config.json model.safetensors
      tokenizer.json tokenizer_config.json
  tiny-bitnet-autobitlinear/      the same packed ternary weights with
                                  quantization_config.linear_class
                                  "autobitlinear" (offline), so weight_scale
                                  MULTIPLIES; stored as bf16(1 / the
                                  tiny-bitnet scale)
  prompts.json                    the prompts (text and token ids) that
                                  models/make_references.py runs

Tiny dims (both archs): vocab 384 (379 BPE + 5 specials), hidden 64,
intermediate 160, 2 layers, 4 heads, 2 KV heads, head_dim 16, rms eps 1e-5,
tied embeddings, max_position 256.

----------------------------------------------------------------------------
Facts this script relies on (checked against upstream sources, see
models/README.md for where):

* llama.cpp q/k permutation.  convert_hf_to_gguf.py, class LlamaModel:
      def permute(weights, n_head, n_head_kv):
          if n_head_kv is not None and n_head != n_head_kv: n_head = n_head_kv
          return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2,
                                  *weights.shape[1:])
                  .swapaxes(1, 2).reshape(weights.shape))
  applied as permute(q_proj, n_head, n_head) and permute(k_proj, n_head,
  n_kv_head).  Per head, HF row j (rotate_half pairs j with j + d/2) moves to
  row 2j (j < d/2) or 2(j - d/2) + 1: llama.cpp's "normal" rope rotates
  adjacent pairs (2i, 2i+1), so after the permutation both compute the same
  attention.  An engine that reads GGUF for arch "llama" must either rotate
  adjacent pairs or undo this permutation at load time.
  llama3 rope scaling is not a GGUF key: convert writes a tensor
  `rope_freqs.weight` (F32, [head_dim/2]) of per-frequency DIVISORS
  (llama.cpp: theta_i = pos * base^(-2i/d) / rope_freqs[i]), computed as in
  LlamaModel.generate_extra_tensors (factor 1 for wavelen < old/high_ff,
  `factor` for wavelen > old/low_ff, else 1/((1-smooth)/factor + smooth)).

* transformers' BitNet (integrations/bitnet.py, quantizers/
  quantizer_bitnet.py, models/bitnet/modeling_bitnet.py; see the version
  recorded in the reference JSON):
    - config.quantization_config is read into BitNetQuantConfig: keys
      quant_method ("bitnet"), linear_class ("bitlinear" | "autobitlinear"),
      quantization_mode ("offline" | "online"), modules_to_not_convert,
      use_rms_norm, rms_norm_eps.
    - linear_class "bitlinear" (the default; what the 2B4T release uses):
      class BitLinear holds `weight` uint8 [out/4, in] and `weight_scale`
      shape [1]; forward:
          s_x = 127 / max|x| (clamp 1e-5, per token), x_q = round(x*s_x)
                clamp(-128, 127)
          y   = (x_q @ unpack(W)^T) / (s_x * weight_scale)
      i.e. weight_scale DIVIDES (post_quant_process: out / (input_scale *
      weight_scale)).  So a release weight_scale is 1 / mean|W_master|.
    - linear_class "autobitlinear" + quantization_mode "offline": class
      AutoBitLinear; the packed weight is unpacked to ternary at load
      (BitNetDeserialize in transformers 5.x, a state-dict load hook in 4.x),
      forward uses fake-quantised activations x_q / s_x, F.linear, then
      output * weight_scale: MULTIPLIES.  ("autobitlinear" + "online" =
      bf16 master weights ternarised on the fly with scale 1/mean|W|, the
      -bf16 training checkpoint's mode.)  quantization_mode only matters for
      autobitlinear.  use_rms_norm (default false) would add an RMSNorm on
      every BitLinear input.
    - unpack_weights: for i in 0..3, rows [i*R, (i+1)*R) of the unpacked
      weight = ((P >> 2i) & 3) - 1, R = out/4: packing along the OUTPUT dim.
  The tiny BitNet here uses the default "bitlinear" class, so its
  weight_scale divides, like docs/DESIGN.md §3.
----------------------------------------------------------------------------
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np

SEED = 20250721
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "fixtures"

# ----------------------------------------------------------------- dims
VOCAB_BPE = 379
SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
VOCAB = VOCAB_BPE + len(SPECIALS)  # 384
BOS_ID = VOCAB_BPE + 0  # <|begin_of_text|>
EOS_ID = VOCAB_BPE + 1  # <|end_of_text|>
EOT_ID = VOCAB_BPE + 4  # <|eot_id|>
HIDDEN = 64
INTER = 160
LAYERS = 2
HEADS = 4
KV_HEADS = 2
HEAD_DIM = HIDDEN // HEADS  # 16
EPS = 1e-5
MAX_POS = 256

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 128,
}

# Llama-3 pre-tokenizer regex (tokenizer.json of Llama 3.x; llama.cpp's
# LLAMA_VOCAB_PRE_TYPE_LLAMA3, GGUF tokenizer.ggml.pre = "llama-bpe").
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

CORPUS = """\
The river runs past the old mill, and in the morning the water is cold and clear.
Children walk along the bank to the school on the hill; they count the boats, the
birds and the bridges, and they tell each other stories about the people who lived
there long ago. One of them says the miller had three sons and a very clever cat.

A language model reads a sequence of tokens and predicts the next one. It turns
each token into a vector, mixes the vectors with attention, and passes them through
small feed-forward networks. The keys of one attention head change slowly from one
position to the next, so most of the difference between two neighbouring keys is
close to zero. That is the idea behind delta keys: store only what changed.

In 1969 people walked on the Moon for the first time. The trip took about 3 days,
and the distance is roughly 384,400 km. Pi is about 3.14159, and e is 2.71828.
Numbers such as 12345, 2025 and 0.5 appear in many texts; so do dates like
21 July 2025, prices like $4.99, and times like 10:30.

"Where are you going?" asked the teacher. "To the market," she said, "to buy
bread, apples, cheese and some tea." It's a short walk, but it's raining, so
she takes an umbrella. They'll meet again at noon; we've got plenty of time.

Graphics processors run thousands of small programs at once. A compute shader
reads buffers, does arithmetic, and writes the results back. Phones, laptops and
browsers all have such processors today, and a careful program can run the same
shader on every one of them.
"""


def rng(k: int) -> np.random.Generator:
    return np.random.default_rng(SEED + k)


def bf16_round(a: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bf16 (ties to even); return f32."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    u = a.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


# ----------------------------------------------------------------- tokenizer
def build_tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_BPE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    tok.train_from_iterator(CORPUS.split("\n\n"), trainer=trainer)
    n = tok.get_vocab_size()
    if n != VOCAB_BPE:
        sys.exit(f"tokenizer trained to {n} tokens, want {VOCAB_BPE}: lengthen CORPUS")
    tok.add_special_tokens(SPECIALS)
    assert tok.token_to_id(SPECIALS[0]) == BOS_ID and tok.get_vocab_size() == VOCAB
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", BOS_ID)],
    )
    return tok


def tokenizer_config() -> dict:
    added = {
        str(BOS_ID + i): {
            "content": s,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, s in enumerate(SPECIALS)
    }
    return {
        "added_tokens_decoder": added,
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": True,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": MAX_POS,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def gguf_vocab(tok_json: dict):
    """tokens (by id), token types, merges, as llama.cpp's gpt2 vocab wants."""
    vocab = tok_json["model"]["vocab"]
    tokens = [None] * VOCAB
    for t, i in vocab.items():
        tokens[i] = t
    for a in tok_json["added_tokens"]:
        tokens[a["id"]] = a["content"]
    assert all(t is not None for t in tokens)
    types = [1] * VOCAB  # NORMAL
    for a in tok_json["added_tokens"]:
        types[a["id"]] = 3 if a["special"] else 4  # CONTROL / USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok_json["model"]["merges"]]
    return tokens, types, merges


# ----------------------------------------------------------------- weights
def llama_weights() -> dict[str, np.ndarray]:
    """HF-named f32 arrays (values exactly representable in bf16)."""
    w: dict[str, np.ndarray] = {}
    g = rng(1)

    def normal(shape, std):
        return bf16_round(g.normal(0.0, std, size=shape).astype(np.float32))

    def norm_w(n):
        return bf16_round((1.0 + g.normal(0.0, 0.1, size=n)).astype(np.float32))

    w["model.embed_tokens.weight"] = normal((VOCAB, HIDDEN), 0.2)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "input_layernorm.weight"] = norm_w(HIDDEN)
        w[p + "self_attn.q_proj.weight"] = normal((HEADS * HEAD_DIM, HIDDEN), 0.15)
        w[p + "self_attn.k_proj.weight"] = normal((KV_HEADS * HEAD_DIM, HIDDEN), 0.15)
        w[p + "self_attn.v_proj.weight"] = normal((KV_HEADS * HEAD_DIM, HIDDEN), 0.15)
        w[p + "self_attn.o_proj.weight"] = normal((HIDDEN, HEADS * HEAD_DIM), 0.1)
        w[p + "post_attention_layernorm.weight"] = norm_w(HIDDEN)
        w[p + "mlp.gate_proj.weight"] = normal((INTER, HIDDEN), 0.15)
        w[p + "mlp.up_proj.weight"] = normal((INTER, HIDDEN), 0.15)
        w[p + "mlp.down_proj.weight"] = normal((HIDDEN, INTER), 0.1)
    w["model.norm.weight"] = norm_w(HIDDEN)
    return w


def llama_config(rope_scaling: dict | None) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "max_position_embeddings": MAX_POS,
        "rms_norm_eps": EPS,
        "rope_theta": 10000.0,
        "rope_scaling": rope_scaling,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "bos_token_id": BOS_ID,
        "eos_token_id": [EOS_ID, EOT_ID],
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": "bfloat16",
    }


def generation_config() -> dict:
    return {"bos_token_id": BOS_ID, "eos_token_id": [EOS_ID, EOT_ID], "do_sample": False}


def llama_permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.permute (HF rotate_half -> ggml pairs)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def llama3_rope_factors(theta: float, dim: int, rs: dict) -> np.ndarray:
    """convert_hf_to_gguf.py LlamaModel.generate_extra_tensors (rope_freqs)."""
    freqs = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = rs["factor"]
    lff, hff = rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_wl, high_wl = old / lff, old / hff
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old / wl - lff) / (hff - lff)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


LLAMA_GGUF_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def write_llama_gguf(path: Path, w: dict, cfg: dict, tok_json: dict, qtype: str):
    import gguf

    Q = gguf.GGMLQuantizationType
    wr = gguf.GGUFWriter(str(path), "llama")
    wr.add_name(path.stem)
    wr.add_context_length(MAX_POS)
    wr.add_embedding_length(HIDDEN)
    wr.add_block_count(LAYERS)
    wr.add_feed_forward_length(INTER)
    wr.add_head_count(HEADS)
    wr.add_head_count_kv(KV_HEADS)
    wr.add_rope_freq_base(cfg["rope_theta"])
    wr.add_layer_norm_rms_eps(EPS)
    wr.add_vocab_size(VOCAB)
    wr.add_rope_dimension_count(HEAD_DIM)
    wr.add_file_type(gguf.LlamaFileType.ALL_F32 if qtype == "f32" else gguf.LlamaFileType.MOSTLY_Q8_0)
    tokens, types, merges = gguf_vocab(tok_json)
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre("llama-bpe")
    wr.add_token_list(tokens)
    wr.add_token_types(types)
    wr.add_token_merges(merges)
    wr.add_bos_token_id(BOS_ID)
    wr.add_eos_token_id(EOT_ID)
    wr.add_add_bos_token(True)
    wr.add_chat_template(CHAT_TEMPLATE)

    def put(name: str, a: np.ndarray):
        a = np.ascontiguousarray(a, dtype=np.float32)
        if qtype == "q8_0" and a.ndim == 2:
            q = gguf.quants.quantize(a, Q.Q8_0)
            wr.add_tensor(name, q, raw_shape=q.shape, raw_dtype=Q.Q8_0)
        else:
            wr.add_tensor(name, a)

    put("token_embd.weight", w["model.embed_tokens.weight"])
    if cfg.get("rope_scaling"):
        put("rope_freqs.weight", llama3_rope_factors(cfg["rope_theta"], HEAD_DIM, cfg["rope_scaling"]))
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for hf, gg in LLAMA_GGUF_NAMES.items():
            a = w[p + hf]
            if hf == "self_attn.q_proj.weight":
                a = llama_permute(a, HEADS, HEADS)
            elif hf == "self_attn.k_proj.weight":
                a = llama_permute(a, HEADS, KV_HEADS)
            put(f"blk.{i}.{gg}", a)
    put("output_norm.weight", w["model.norm.weight"])
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def save_bf16_safetensors(path: Path, tensors: dict[str, np.ndarray], raw: dict[str, np.ndarray] | None = None):
    """Write f32 arrays as BF16 (exact: values are bf16-rounded) plus raw arrays as-is."""
    from safetensors.numpy import save_file  # noqa: F401  (numpy has no bf16: write by hand)

    header = {}
    blobs = []
    off = 0
    items = []
    for k in sorted(tensors):
        a = np.ascontiguousarray(tensors[k], dtype=np.float32)
        assert np.array_equal(bf16_round(a), a), k
        b = (a.view(np.uint32) >> 16).astype("<u2").tobytes()
        items.append((k, "BF16", list(a.shape), b))
    for k in sorted(raw or {}):
        a = np.ascontiguousarray(raw[k])
        dt = {np.dtype("uint8"): "U8", np.dtype("float32"): "F32"}[a.dtype]
        items.append((k, dt, list(a.shape), a.tobytes()))
    items.sort(key=lambda t: t[0])
    for k, dt, shape, b in items:
        header[k] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for b in blobs:
            f.write(b)


def write_json(path: Path, obj):
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_hf_folder(folder: Path, config: dict, tok, weights: dict, raw: dict | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "config.json", config)
    write_json(folder / "generation_config.json", generation_config())
    write_json(folder / "tokenizer_config.json", tokenizer_config())
    tok.save(str(folder / "tokenizer.json"))
    save_bf16_safetensors(folder / "model.safetensors", weights, raw)


# ----------------------------------------------------------------- bitnet
def pack_ternary(t: np.ndarray) -> np.ndarray:
    """[out, in] in {-1,0,1} -> uint8 [out/4, in], W[i*R + r][c] = ((P[r][c] >> 2i) & 3) - 1."""
    out, inn = t.shape
    assert out % 4 == 0
    r = out // 4
    u = (t + 1).astype(np.uint8)
    p = np.zeros((r, inn), dtype=np.uint8)
    for i in range(4):
        p |= u[i * r : (i + 1) * r] << (2 * i)
    return p


def unpack_ternary(p: np.ndarray) -> np.ndarray:
    r = p.shape[0]
    return np.concatenate([((p >> (2 * i)) & 3).astype(np.int8) - 1 for i in range(4)], axis=0)


BITNET_LINEARS = [
    ("self_attn.q_proj", HEADS * HEAD_DIM, HIDDEN),
    ("self_attn.k_proj", KV_HEADS * HEAD_DIM, HIDDEN),
    ("self_attn.v_proj", KV_HEADS * HEAD_DIM, HIDDEN),
    ("self_attn.o_proj", HIDDEN, HEADS * HEAD_DIM),
    ("mlp.gate_proj", INTER, HIDDEN),
    ("mlp.up_proj", INTER, HIDDEN),
    ("mlp.down_proj", HIDDEN, INTER),
]


def bitnet_weights():
    """(bf16 tensors as f32, packed uint8 tensors, unpacked ternary for checks)."""
    g = rng(2)
    f: dict[str, np.ndarray] = {}
    packed: dict[str, np.ndarray] = {}

    def norm_w(n):
        return bf16_round((1.0 + g.normal(0.0, 0.1, size=n)).astype(np.float32))

    f["model.embed_tokens.weight"] = bf16_round(g.normal(0.0, 0.2, size=(VOCAB, HIDDEN)).astype(np.float32))
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        f[p + "input_layernorm.weight"] = norm_w(HIDDEN)
        f[p + "post_attention_layernorm.weight"] = norm_w(HIDDEN)
        f[p + "self_attn.attn_sub_norm.weight"] = norm_w(HEADS * HEAD_DIM)
        f[p + "mlp.ffn_sub_norm.weight"] = norm_w(INTER)
        for name, out, inn in BITNET_LINEARS:
            t = g.choice(np.array([-1, 0, 1], dtype=np.int8), size=(out, inn), p=[0.3, 0.4, 0.3])
            pk = pack_ternary(t)
            assert np.array_equal(unpack_ternary(pk), t)
            packed[p + name + ".weight"] = pk
            # weight_scale DIVIDES (BitLinear): y = sum / (s_x * weight_scale).
            # sqrt(0.6 * in) is the std of a ternary row dot a unit-rms input;
            # divide by about that so outputs stay O(1); jitter per tensor.
            ws = math.sqrt(0.6 * inn) * float(g.uniform(0.7, 1.4))
            f[p + name + ".weight_scale"] = bf16_round(np.array([ws], dtype=np.float32))
    f["model.norm.weight"] = norm_w(HIDDEN)
    return f, packed


def bitnet_config(linear_class: str = "bitlinear") -> dict:
    return {
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        "vocab_size": VOCAB,
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "relu2",
        "max_position_embeddings": MAX_POS,
        "rms_norm_eps": EPS,
        "rope_theta": 500000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": True,
        "bos_token_id": BOS_ID,
        "eos_token_id": [EOS_ID, EOT_ID],
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "bfloat16",
        "quantization_config": {
            "quant_method": "bitnet",
            "linear_class": linear_class,
            "quantization_mode": "offline",
            "modules_to_not_convert": None,
            "use_rms_norm": False,
        },
    }


# ----------------------------------------------------------------- prompts
PROMPT_TEXTS = [
    ("short", "The river runs past the old mill."),
    ("numbers", "Pi is about 3.14159, and the trip took 3 days."),
    (
        "long",
        "A language model reads a sequence of tokens and predicts the next one.",
    ),
]


def build_prompts(tok) -> dict:
    out = []
    for name, text in PROMPT_TEXTS:
        ids = tok.encode(text).ids  # post-processor adds <|begin_of_text|>
        out.append({"name": name, "text": text, "ids": ids})
    # chat-templated prompt, rendered by hand exactly like CHAT_TEMPLATE
    chat_text = (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
        "Where are you going?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    ids = tok.encode(chat_text, add_special_tokens=False).ids
    out.append({"name": "chat", "text": chat_text, "ids": ids})
    return {"bos_id": BOS_ID, "eos_ids": [EOS_ID, EOT_ID], "prompts": out}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    tdir = OUT / "tokenizer"
    tdir.mkdir(exist_ok=True)
    tok.save(str(tdir / "tokenizer.json"))
    write_json(tdir / "tokenizer_config.json", tokenizer_config())
    tok_json = json.loads((tdir / "tokenizer.json").read_text())

    w = llama_weights()
    for name, rs in (("tiny-llama", None), ("tiny-llama3rope", LLAMA3_ROPE)):
        cfg = llama_config(rs)
        write_hf_folder(OUT / name, cfg, tok, w)
        for q in ("f32", "q8_0"):
            write_llama_gguf(OUT / f"{name}.{q}.gguf", w, cfg, tok_json, q)

    bf, packed = bitnet_weights()
    write_hf_folder(OUT / "tiny-bitnet", bitnet_config(), tok, bf, packed)
    # Same ternary weights, declared as linear_class "autobitlinear" (offline):
    # transformers then MULTIPLIES by weight_scale, so store bf16(1 / scale).
    # Tests that the engine reads quantization_config.linear_class.
    inv = {k: (bf16_round(np.float32(1.0) / v) if k.endswith(".weight_scale") else v) for k, v in bf.items()}
    write_hf_folder(OUT / "tiny-bitnet-autobitlinear", bitnet_config("autobitlinear"), tok, inv, packed)

    write_json(OUT / "prompts.json", build_prompts(tok))
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:9d}  {p.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
