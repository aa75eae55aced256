#!/usr/bin/env python3
"""Copies a llama2.c .bin checkpoint with its final RMSNorm weights set to
NaN (so every logit is NaN): a model whose numbers went wrong.

Usage: poison_bin.py IN OUT
"""
import struct
import sys

src, dst = sys.argv[1], sys.argv[2]
data = bytearray(open(src, "rb").read())
dim, hidden, layers, heads, kv_heads, vocab, seq = struct.unpack_from("<7i", data, 0)
head = dim // heads
floats = (abs(vocab) * dim                       # token embedding
          + layers * dim                         # rms_att
          + layers * dim * dim                   # wq
          + 2 * layers * dim * kv_heads * head   # wk, wv
          + layers * dim * dim                   # wo
          + layers * dim                         # rms_ffn
          + 3 * layers * dim * hidden)           # w1, w2, w3
at = 28 + 4 * floats
struct.pack_into("<%df" % dim, data, at, *([float("nan")] * dim))
open(dst, "wb").write(bytes(data))
