#!/usr/bin/env python3
"""Writes an F32 GGUF (v3, architecture "llama") of a model description's
shape with random weights: the one set of weights that kvplan and llama.cpp
both read in scripts/bench-quant.sh (llama-quantize makes its BF16, Q8_0 and
Q4_0 copies). Pure Python (no numpy here).

    python3 scripts/make-bench-gguf.py [--model models/stories110m.toml]
        [--vocab-from GGUF] [--seed S] -o OUT.gguf

Shape: the [model] table of the TOML (hidden_size, intermediate_size,
num_layers, num_heads, num_kv_heads, vocab_size, max_position_embeddings,
rms_norm_eps, rope_theta, tie_word_embeddings, bos/eos ids).

Vocabulary: every tokenizer.* key of --vocab-from, copied as it is (default:
the Llama 2 tokenizer embedded in ../shared/models/tiny-random-gguf, 32000
pieces, which both readers accept); its size must equal vocab_size.

Weights: matrices and the embedding are N(0, 0.02^2), the scale of a trained
Llama's initialisation; norms are 1. Drawing 110M Gaussians one by one in
Python takes minutes, so a pool of 2^22 draws is made once and every tensor is
a sequence of 4096-element windows of it at random offsets: each window is
Gaussian, and nothing the benchmark or quantizers see depends on the reuse.
"""
import argparse
import array
import random
import struct
import sys
import tomllib
from pathlib import Path

GGUF_MAGIC = b"GGUF"
ALIGNMENT = 32
# GGUF metadata value types (ggml's gguf.h).
T_U32, T_I32, T_F32, T_BOOL, T_STRING, T_ARRAY, T_U64, T_I64, T_F64 = 4, 5, 6, 7, 8, 9, 10, 11, 12
SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
GGML_F32 = 0
POOL, WINDOW = 1 << 22, 4096


def fail(msg):
    sys.exit("make-bench-gguf: " + msg)


class Reader:
    def __init__(self, path):
        self.path, self.data, self.pos = path, Path(path).read_bytes(), 0

    def take(self, n):
        if self.pos + n > len(self.data):
            fail(f"{self.path}: truncated GGUF file (at byte {self.pos})")
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def u64(self):
        return struct.unpack("<Q", self.take(8))[0]

    def string(self):
        return self.take(self.u64()).decode("utf-8")

    def skip_value(self, t):
        if t in SCALAR_SIZES:
            self.take(SCALAR_SIZES[t])
        elif t == T_STRING:
            self.take(self.u64())
        elif t == T_ARRAY:
            et, n = self.u32(), self.u64()
            for _ in range(n):
                self.skip_value(et)
        else:
            fail(f"{self.path}: unknown GGUF value type {t}")


def vocabulary_kvs(path):
    """The tokenizer.* key/value pairs of a GGUF file, as raw encoded bytes,
    and the number of tokens."""
    r = Reader(path)
    if r.take(4) != GGUF_MAGIC:
        fail(f"{path}: not a GGUF file (--vocab-from)")
    if r.u32() != 3:
        fail(f"{path}: only GGUF version 3 is read (--vocab-from)")
    r.u64()  # tensor count
    kvs, tokens = [], None
    for _ in range(r.u64()):
        start = r.pos
        key = r.string()
        t = r.u32()
        value_at = r.pos
        r.skip_value(t)
        if key.startswith("tokenizer."):
            kvs.append(r.data[start:r.pos])
        if key == "tokenizer.ggml.tokens":
            tokens = struct.unpack_from("<Q", r.data, value_at + 4)[0]
    if tokens is None:
        fail(f"{path}: no tokenizer.ggml.tokens; give --vocab-from a GGUF with a vocabulary")
    return kvs, tokens


def enc_string(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def kv(key, t, value):
    fmt = {T_U32: "<I", T_I32: "<i", T_F32: "<f", T_BOOL: "<?", T_U64: "<Q", T_F64: "<d"}
    body = enc_string(value) if t == T_STRING else struct.pack(fmt[t], value)
    return enc_string(key) + struct.pack("<I", t) + body


def read_shape(path):
    try:
        m = tomllib.loads(Path(path).read_text())["model"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as e:
        fail(f"{path}: cannot read the [model] table of a model description ({e})")
    for key in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "vocab_size"):
        if key not in m:
            fail(f"{path}: [model] has no {key}")
    if m.get("architecture", "llama") != "llama":
        fail(f"{path}: architecture is '{m['architecture']}'; only llama is written")
    return m


def model_kvs(m, name):
    heads, hidden = m["num_heads"], m["hidden_size"]
    return [
        kv("general.architecture", T_STRING, "llama"),
        kv("general.name", T_STRING, name),
        kv("general.alignment", T_U32, ALIGNMENT),
        kv("general.file_type", T_U32, 0),  # LLAMA_FTYPE_ALL_F32
        kv("llama.context_length", T_U32, m.get("max_position_embeddings", 2048)),
        kv("llama.embedding_length", T_U32, hidden),
        kv("llama.feed_forward_length", T_U32, m["intermediate_size"]),
        kv("llama.block_count", T_U32, m["num_layers"]),
        kv("llama.attention.head_count", T_U32, heads),
        kv("llama.attention.head_count_kv", T_U32, m.get("num_kv_heads", heads)),
        kv("llama.rope.dimension_count", T_U32, hidden // heads),
        kv("llama.rope.freq_base", T_F32, float(m.get("rope_theta", 10000.0))),
        kv("llama.attention.layer_norm_rms_epsilon", T_F32, float(m.get("rms_norm_eps", 1e-5))),
        kv("llama.vocab_size", T_U32, m["vocab_size"]),
    ]


def tensor_shapes(m):
    """(GGUF name, dims innermost first, kind) in llama.cpp's names."""
    d, ff, vocab = m["hidden_size"], m["intermediate_size"], m["vocab_size"]
    kv_dim = d // m["num_heads"] * m.get("num_kv_heads", m["num_heads"])
    out = [("token_embd.weight", [d, vocab], "matrix")]
    for i in range(m["num_layers"]):
        b = f"blk.{i}."
        out += [(b + "attn_norm.weight", [d], "norm"), (b + "attn_q.weight", [d, d], "matrix"),
                (b + "attn_k.weight", [d, kv_dim], "matrix"),
                (b + "attn_v.weight", [d, kv_dim], "matrix"),
                (b + "attn_output.weight", [d, d], "matrix"), (b + "ffn_norm.weight", [d], "norm"),
                (b + "ffn_gate.weight", [d, ff], "matrix"), (b + "ffn_up.weight", [d, ff], "matrix"),
                (b + "ffn_down.weight", [ff, d], "matrix")]
    out.append(("output_norm.weight", [d], "norm"))
    if not m.get("tie_word_embeddings", False):
        out.append(("output.weight", [d, vocab], "matrix"))
    return out


def write_tensor(f, count, kind, pool, rng):
    if kind == "norm":
        f.write(array.array("f", [1.0]) * count)
        return
    left = count
    while left:
        n = min(WINDOW, left)
        at = rng.randrange(POOL - n)
        f.write(pool[at:at + n])
        left -= n


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="models/stories110m.toml")
    p.add_argument("--vocab-from", default="../shared/models/tiny-random-gguf/llama-2-tiny-random.gguf")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args()
    m = read_shape(a.model)
    vocab, tokens = vocabulary_kvs(a.vocab_from)
    if tokens != m["vocab_size"]:
        fail(f"{a.vocab_from} has {tokens} tokens but {a.model} says vocab_size = "
             f"{m['vocab_size']}; give --vocab-from a GGUF whose vocabulary has that size")
    if sys.byteorder != "little":
        fail("GGUF is little-endian; this writer assumes a little-endian machine")
    kvs = model_kvs(m, m.get("name", Path(a.model).stem)) + vocab
    tensors = tensor_shapes(m)
    header = GGUF_MAGIC + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs)
    offset = 0
    for name, dims, _ in tensors:
        header += enc_string(name) + struct.pack("<I", len(dims))
        header += struct.pack(f"<{len(dims)}Q", *dims) + struct.pack("<IQ", GGML_F32, offset)
        count = 1
        for x in dims:
            count *= x
        offset += (count * 4 + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT
    rng = random.Random(a.seed)
    pool = array.array("f", (rng.gauss(0.0, 0.02) for _ in range(POOL)))
    with open(a.output, "wb") as f:
        f.write(header + b"\0" * (-len(header) % ALIGNMENT))
        for _, dims, kind in tensors:
            count = 1
            for x in dims:
                count *= x
            write_tensor(f, count, kind, pool, rng)
            f.write(b"\0" * (-count * 4 % ALIGNMENT))


if __name__ == "__main__":
    main()
