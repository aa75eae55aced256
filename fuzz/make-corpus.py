#!/usr/bin/env python3
"""Writes each fuzz target's seed corpus under OUT/<target>/ (scripts/fuzz.sh
calls it): the small inputs of tests/ and fuzz/corpus/, small files of the
shared models (KVPLAN_SHARED_DIR, default ../shared; skipped when absent),
tiny valid checkpoints written here from the formats' specifications, and,
when a kvplan binary with the compiler is given, compiled artifacts and their
plans. Inputs over MAX_SEED bytes are left out: a seed sets the fuzzer's
largest input, and large ones make every run slow.

usage: make-corpus.py OUT [--kvplan PATH]"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_SEED = 64 * 1024

# The tiny Llama every generated checkpoint holds (fuzz_safetensors.cpp reads
# its safetensors with this shape).
DIM, FFN, LAYERS, HEADS, KV_HEADS, VOCAB, SEQ = 8, 16, 1, 2, 1, 16, 8
HEAD_DIM = DIM // HEADS
KV_DIM = KV_HEADS * HEAD_DIM


def floats(n, seed):
    return [((i * 7 + seed * 13) % 17 - 8) / 16.0 for i in range(n)]


def f32(values):
    return struct.pack("<%df" % len(values), *values)


def llama2c_bin():
    """llama2.c's legacy layout: 7 int32 (negative vocab: unshared head)."""
    out = struct.pack("<7i", DIM, FFN, LAYERS, HEADS, KV_HEADS, -VOCAB, SEQ)
    sizes = [VOCAB * DIM, LAYERS * DIM, LAYERS * DIM * DIM, LAYERS * DIM * KV_DIM,
             LAYERS * DIM * KV_DIM, LAYERS * DIM * DIM, LAYERS * DIM,
             LAYERS * FFN * DIM, LAYERS * DIM * FFN, LAYERS * FFN * DIM, DIM,
             SEQ * HEAD_DIM // 2, SEQ * HEAD_DIM // 2, VOCAB * DIM]
    for i, n in enumerate(sizes):
        out += f32(floats(n, i))
    return out


def hf_tensors():
    t = {"model.embed_tokens.weight": [VOCAB, DIM], "model.norm.weight": [DIM],
         "lm_head.weight": [VOCAB, DIM]}
    for l in range(LAYERS):
        p = "model.layers.%d." % l
        t.update({p + "input_layernorm.weight": [DIM],
                  p + "self_attn.q_proj.weight": [DIM, DIM],
                  p + "self_attn.k_proj.weight": [KV_DIM, DIM],
                  p + "self_attn.v_proj.weight": [KV_DIM, DIM],
                  p + "self_attn.o_proj.weight": [DIM, DIM],
                  p + "post_attention_layernorm.weight": [DIM],
                  p + "mlp.gate_proj.weight": [FFN, DIM],
                  p + "mlp.up_proj.weight": [FFN, DIM],
                  p + "mlp.down_proj.weight": [DIM, FFN]})
    return t


def safetensors(dtype):
    """An 8-byte header length, the JSON header, the tensors' bytes."""
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for i, (name, shape) in enumerate(sorted(hf_tensors().items())):
        n = 1
        for d in shape:
            n *= d
        vals = floats(n, i)
        if dtype == "F32":
            raw = f32(vals)
        elif dtype == "F16":
            raw = struct.pack("<%de" % n, *vals)
        else:  # BF16: the top half of each f32
            raw = b"".join(struct.pack("<f", v)[2:] for v in vals)
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf_value(v):
    """(type, bytes) of a metadata value: str, int (u32), float (f32), list."""
    if isinstance(v, str):
        return 8, gguf_string(v)
    if isinstance(v, float):
        return 6, struct.pack("<f", v)
    if isinstance(v, int):
        return 4, struct.pack("<I", v)
    item = v[0]
    t = 8 if isinstance(item, str) else 6 if isinstance(item, float) else 5
    body = b"".join(gguf_string(x) if t == 8 else
                    struct.pack("<f" if t == 6 else "<i", x) for x in v)
    return 9, struct.pack("<IQ", t, len(v)) + body


def q8_0(vals):
    """ggml's Q8_0: per 32 values an f16 scale and 32 int8 codes."""
    out = b""
    for b in range(0, len(vals), 32):
        block = vals[b:b + 32]
        d = max(abs(x) for x in block) / 127 or 1.0
        out += struct.pack("<e", d) + struct.pack("<32b", *[round(x / d) for x in block])
    return out


def mxfp4(vals):
    """ggml's MXFP4: per 32 values an E8M0 scale byte and 16 bytes of E2M1
    codes (element j low, 16 + j high), each the nearest of the table."""
    table = [0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6]
    out = b""
    for b in range(0, len(vals), 32):
        c = [min(range(16), key=lambda i: abs(table[i] - x)) for x in vals[b:b + 32]]
        out += bytes([127]) + bytes(c[j] | (c[j + 16] << 4) for j in range(16))
    return out


def gguf(quantized, arch="llama", yarn=False):
    """GGUF v3 with `arch` metadata and the tiny model's tensors (Q8_0
    matrices where `quantized`: their rows must be whole 32-value blocks, so
    the model is 32 wide there). A llama file embeds a sentencepiece-style
    vocabulary; a qwen2 one a byte-level BPE vocabulary and q/k/v biases; a
    phi3 one the llama vocabulary with Phi-3's <|end|>, q/k/v and gate/up
    fused (attn_qkv, an ffn_up twice the FFN wide) and LongRoPE's lists; a
    qwen3moe one the byte-level vocabulary, q/k norms and a mixture of 4
    experts (2 a token) a layer: the router and the stacked experts; a
    qwen2moe one qwen2's biases and the same mixture beside a shared expert
    and its gate (a vector, as llama.cpp reads ffn_gate_inp_shexp); a
    gpt-oss one the byte-level vocabulary, biases on q/k/v, the output, the
    router and the experts, attention sinks, post_attention_norm before the
    experts, a sliding window, and where `quantized` MXFP4 experts. With
    `yarn`, the rope.scaling keys of YaRN (factor 4 over half the context)."""
    dim, ffn = (32, 32) if quantized else (DIM, FFN)
    kv_dim = KV_HEADS * dim // HEADS
    meta = {"general.architecture": arch, "general.name": "fuzz-seed",
            arch + ".context_length": SEQ, arch + ".embedding_length": dim,
            arch + ".feed_forward_length": ffn, arch + ".block_count": LAYERS,
            arch + ".attention.head_count": HEADS, arch + ".attention.head_count_kv": KV_HEADS,
            arch + ".rope.dimension_count": dim // HEADS,
            arch + ".attention.layer_norm_rms_epsilon": 1e-5, arch + ".rope.freq_base": 10000.0}
    if arch in ("llama", "phi3"):
        tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + \
                 ["\u2581", "\u2581a", "b", "c", "<|end|>"]
        meta.update({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
                     "tokenizer.ggml.scores": [-float(i) for i in range(len(tokens))],
                     "tokenizer.ggml.token_type": [2, 3, 3] + [6] * 256 + [1] * 4 + [4],
                     "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2})
    else:
        merges = ["h e", "l l", "he ll", "\u0120 w", "o r"]
        tokens = byte_level_chars() + [m.replace(" ", "") for m in merges] + \
            ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "[PAD266]"]
        meta.update({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2",
                     "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.merges": merges,
                     "tokenizer.ggml.token_type": [1] * 261 + [3, 3, 3, 4, 5],
                     "tokenizer.ggml.bos_token_id": 261, "tokenizer.ggml.eos_token_id": 263})
    vocab = len(tokens)
    shapes = {"token_embd.weight": [vocab, dim], "output_norm.weight": [dim],
              "output.weight": [vocab, dim]}
    for l in range(LAYERS):
        p = "blk.%d." % l
        shapes.update({p + "attn_norm.weight": [dim], p + "attn_q.weight": [dim, dim],
                       p + "attn_k.weight": [kv_dim, dim], p + "attn_v.weight": [kv_dim, dim],
                       p + "attn_output.weight": [dim, dim], p + "ffn_norm.weight": [dim],
                       p + "ffn_gate.weight": [ffn, dim], p + "ffn_up.weight": [ffn, dim],
                       p + "ffn_down.weight": [dim, ffn]})
        if arch in ("qwen2", "qwen2moe", "gpt-oss"):
            shapes.update({p + "attn_q.bias": [dim], p + "attn_k.bias": [kv_dim],
                           p + "attn_v.bias": [kv_dim]})
        if arch == "gpt-oss":
            del shapes[p + "ffn_norm.weight"]
            shapes.update({p + "post_attention_norm.weight": [dim], p + "attn_output.bias": [dim],
                           p + "attn_sinks.weight": [HEADS], p + "ffn_gate_inp.bias": [4],
                           p + "ffn_gate_exps.bias": [4, ffn], p + "ffn_up_exps.bias": [4, ffn],
                           p + "ffn_down_exps.bias": [4, dim]})
        if arch in ("qwen3moe", "qwen2moe", "gpt-oss"):
            for t in ("ffn_gate", "ffn_up", "ffn_down"):
                del shapes[p + t + ".weight"]
            if arch == "qwen3moe":
                shapes.update({p + "attn_q_norm.weight": [dim // HEADS],
                               p + "attn_k_norm.weight": [dim // HEADS]})
            else:
                shapes.update({p + "ffn_gate_shexp.weight": [ffn, dim],
                               p + "ffn_up_shexp.weight": [ffn, dim],
                               p + "ffn_down_shexp.weight": [dim, ffn],
                               p + "ffn_gate_inp_shexp.weight": [dim]})
            shapes.update({p + "ffn_gate_inp.weight": [4, dim],
                           p + "ffn_gate_exps.weight": [4, ffn, dim],
                           p + "ffn_up_exps.weight": [4, ffn, dim],
                           p + "ffn_down_exps.weight": [4, dim, ffn]})
        if arch == "phi3":
            for t in ("attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up"):
                del shapes[p + t + ".weight"]
            shapes.update({p + "attn_qkv.weight": [dim + 2 * kv_dim, dim],
                           p + "ffn_up.weight": [2 * ffn, dim]})
    if arch in ("qwen3moe", "qwen2moe", "gpt-oss"):
        meta.update({arch + ".expert_count": 4, arch + ".expert_used_count": 2,
                     arch + ".expert_feed_forward_length": ffn})
    if arch == "gpt-oss":
        meta.update({arch + ".attention.sliding_window": SEQ // 4,
                     arch + ".attention.key_length": dim // HEADS,
                     arch + ".attention.value_length": dim // HEADS})
    if arch == "qwen2moe":
        meta[arch + ".expert_shared_feed_forward_length"] = ffn
    if arch == "phi3":
        half = dim // HEADS // 2
        meta.update({"phi3.rope.scaling.original_context_length": SEQ // 2,
                     "phi3.rope.scaling.attn_factor": 1.2,
                     "phi3.attention.sliding_window": 2 * SEQ})
        shapes.update({"rope_factors_long.weight": [half], "rope_factors_short.weight": [half]})
    if yarn:
        meta.update({arch + ".rope.scaling.type": "yarn", arch + ".rope.scaling.factor": 4.0,
                     arch + ".rope.scaling.original_context_length": SEQ // 2})
    out = b"GGUF" + struct.pack("<IQQ", 3, len(shapes), len(meta))
    for k, v in meta.items():
        t, body = gguf_value(v)
        out += gguf_string(k) + struct.pack("<I", t) + body
    data = b""
    for i, (name, shape) in enumerate(shapes.items()):
        n = 1
        for d in shape:
            n *= d
        vals = floats(n, i)
        if name.startswith("rope_factors_"):  # divisors: positive
            vals = [1.0 + 0.5 * k for k in range(n)]
        q = quantized and len(shape) >= 2 and not name.endswith(".bias")
        mx = q and arch == "gpt-oss" and name.endswith("_exps.weight")
        raw = mxfp4(vals) if mx else q8_0(vals) if q else f32(vals)
        data += b"\0" * (-len(data) % 32)
        out += gguf_string(name) + struct.pack("<I", len(shape))
        out += struct.pack("<%dQ" % len(shape), *reversed(shape))  # ggml order
        out += struct.pack("<IQ", 39 if mx else 8 if q else 0, len(data))
        data += raw
    out += b"\0" * (-len(out) % 32)
    return out + data


def byte_level_chars():
    """GPT-2's map from the 256 byte values to printable characters."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def hf_tokenizer_json():
    """A byte-level BPE tokenizer.json with a few merges and special tokens."""
    vocab = {c: i for i, c in enumerate(byte_level_chars())}
    merges = ["h e", "l l", "he ll", "\u0120 w", "o r"]
    for m in merges:
        vocab[m.replace(" ", "")] = len(vocab)
    added = [{"id": len(vocab) + i, "content": c, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for i, c in enumerate(["<|begin_of_text|>", "<|eot_id|>"])]
    return json.dumps({
        "version": "1.0", "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                          "trim_offsets": True, "use_regex": True},
        "post_processor": None, "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": vocab, "merges": merges}}).encode()


def hf_sentencepiece_json(legacy):
    """A sentencepiece-style tokenizer.json (<0xAB> byte tokens, byte
    fallback, "\u2581" for a space): Llama 2's form (Prepend and Replace
    normalizers) or the Metaspace one, with its decoder."""
    meta = "\u2581"
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = 3 + b
    merges = [[meta, "h"], ["h", "i"], [meta + "h", "i"], [meta, meta]]
    for a, b in merges:
        vocab.setdefault(a, len(vocab))
        vocab.setdefault(b, len(vocab))
        vocab.setdefault(a + b, len(vocab))
    added = [{"id": i, "content": c, "special": True, "normalized": False}
             for i, c in enumerate(["<unk>", "<s>", "</s>"])]
    pre = None if legacy else {"type": "Metaspace", "replacement": meta,
                               "prepend_scheme": "first", "split": False}
    normalizer = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": meta},
        {"type": "Replace", "pattern": {"String": " "}, "content": meta}]} if legacy else None
    decoder = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": meta}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]} if legacy else {
        "type": "Metaspace", "replacement": meta, "prepend_scheme": "first", "split": False}
    return json.dumps({
        "version": "1.0", "added_tokens": added, "normalizer": normalizer,
        "pre_tokenizer": pre, "decoder": decoder,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": True, "byte_fallback": True,
                  "vocab": vocab, "merges": merges}}).encode()


def put(out, target, name, data):
    if len(data) > MAX_SEED:
        return
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def copy_small(out, target, files):
    for f in files:
        if f.is_file() and f.stat().st_size <= MAX_SEED:
            put(out, target, f.parent.name + "-" + f.name, f.read_bytes())


def artifacts(out, kvplan, shared):
    """Compiles tests/lit/Inputs/mini.toml (a variant with sliding-window
    attention, one with a mixture of experts, also for two ranks and for the
    cuda target, and one of 512 tokens with the stories260K tokenizer) to
    artifacts, and keeps their plans."""
    mini = ROOT / "tests/lit/Inputs/mini.toml"
    with tempfile.TemporaryDirectory() as tmp:
        window = Path(tmp) / "mini-window.toml"
        window.write_text(mini.read_text().replace(
            'architecture = "llama"', 'architecture = "mistral"\nsliding_window = 6'))
        moe = Path(tmp) / "mini-moe.toml"
        moe.write_text(mini.read_text().replace(
            'architecture = "llama"',
            'architecture = "qwen3"\nnum_experts = 4\nnum_experts_per_tok = 2'))
        shared = Path(tmp) / "mini-moe-shared.toml"
        shared.write_text(moe.read_text().replace(
            "num_experts_per_tok = 2",
            "num_experts_per_tok = 2\nshared_expert_intermediate_size = 32\n"
            "shared_expert_gate = true"))
        # The mixture's plans for two ranks (its stacks cut along dimensions
        # 1 and 2) and for the cuda target (their artifacts are over the
        # seeds' size; their plans are not); a mixture with a shared expert.
        runs = [("mini", mini, []), ("mini-window", window, []), ("mini-moe", moe, []),
                ("mini-moe-tp2", moe, ["--tensor-parallel", "2"]),
                ("mini-moe-cuda", moe, ["--target", "cuda", "--arch", "none"]),
                ("mini-moe-shared", shared, []),
                # int8 matrices beside mxfp4 experts (one E8M0 byte a group)
                ("mini-moe-mxfp4", moe, ["--dtype", "int8", "--expert-dtype", "mxfp4"])]
        tok = shared / "models/stories260K/tok512.bin"
        if tok.is_file():
            spec = Path(tmp) / "mini512.toml"
            spec.write_text(mini.read_text().replace("vocab_size = 32", "vocab_size = 512"))
            runs.append(("mini-tok512", spec, ["--tokenizer", str(tok)]))
        for name, spec, extra in runs:
            kvp = Path(tmp) / (name + ".kvp")
            subprocess.run([kvplan, "compile", str(spec), "--weights", "none", "-o", str(kvp)]
                           + extra, check=True, stdout=subprocess.DEVNULL)
            put(out, "artifact", name + ".kvp", kvp.read_bytes())
            plan = subprocess.run([kvplan, "inspect", str(kvp), "--section", "plan"],
                                  check=True, capture_output=True).stdout
            put(out, "plan_json", name + ".json", plan)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--kvplan", help="a kvplan binary built with the compiler")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    shared = Path(os.environ.get("KVPLAN_SHARED_DIR", ROOT.parent / "shared"))
    models = shared / "models"

    for d in (ROOT / "fuzz/corpus").glob("*"):
        copy_small(out, d.name, sorted(d.glob("*")))
    copy_small(out, "toml_spec",
               sorted(ROOT.glob("tests/**/*.toml")) + sorted(ROOT.glob("models/*.toml")))
    copy_small(out, "hf_config", sorted(ROOT.glob("tests/**/*config*.json")))
    put(out, "llama2c_bin", "tiny.bin", llama2c_bin())
    for dt in ("F32", "F16", "BF16"):
        put(out, "safetensors", "tiny-%s.safetensors" % dt.lower(), safetensors(dt))
    put(out, "gguf", "tiny-f32.gguf", gguf(False))
    put(out, "gguf", "tiny-q8_0.gguf", gguf(True))
    put(out, "gguf", "tiny-qwen2-q8_0.gguf", gguf(True, "qwen2"))
    put(out, "gguf", "tiny-phi3-q8_0.gguf", gguf(True, "phi3"))
    put(out, "gguf", "tiny-qwen3moe-q8_0.gguf", gguf(True, "qwen3moe"))
    put(out, "gguf", "tiny-qwen2moe-q8_0.gguf", gguf(True, "qwen2moe"))
    put(out, "gguf", "tiny-yarn-q8_0.gguf", gguf(True, yarn=True))
    put(out, "gguf", "tiny-gpt-oss-mxfp4.gguf", gguf(True, "gpt-oss", yarn=True))
    put(out, "tokenizer_hf", "tiny-tokenizer.json", hf_tokenizer_json())
    put(out, "tokenizer_hf", "tiny-spm-legacy.json", hf_sentencepiece_json(True))
    put(out, "tokenizer_hf", "tiny-spm-metaspace.json", hf_sentencepiece_json(False))
    # Chat templates: the interpreter's cases, this project's own template
    # files and the shared tokenizers' templates.
    cases = json.loads((ROOT / "tests/data/jinja-cases.json").read_text(encoding="utf-8"))
    for c in cases["cases"]:
        put(out, "chat_template", c["name"] + ".jinja", c["template"].encode())
    copy_small(out, "chat_template", sorted(ROOT.glob("tests/**/*.jinja")))
    for f in sorted(models.glob("*/tokenizer_config.json")):
        template = json.loads(f.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str):
            put(out, "chat_template", f.parent.name + ".jinja", template.encode())
    copy_small(out, "tokenizer_llama2c", [models / "stories260K/tok512.bin"])
    copy_small(out, "tokenizer_sentencepiece", [models / "stories260K/tok512.model"])
    # The shared checkpoints are too large to be seeds whole; their first
    # bytes (header, metadata, tensor table) are the part the parsers read.
    for f in sorted(models.glob("**/*.gguf")):
        put(out, "gguf", f.stem + "-head.gguf", f.read_bytes()[:MAX_SEED])
    for f in sorted(models.glob("**/stories*.bin")):
        put(out, "llama2c_bin", f.stem + "-head.bin", f.read_bytes()[:MAX_SEED])
    if args.kvplan:
        artifacts(out, args.kvplan, shared)
    for d in sorted(out.iterdir()):
        print("corpus: %-24s %3d seeds" % (d.name, len(list(d.iterdir()))))


if __name__ == "__main__":
    sys.exit(main())
