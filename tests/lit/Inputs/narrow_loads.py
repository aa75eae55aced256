#!/usr/bin/env python3
"""Lists the global loads narrower than 4 bytes in the PTX of the kernels
that stream weights, activations or the KV cache (matvec_*, linear_gemv_*,
attn_*): those are built on 16-byte loads, and a 16-bit element read
through its own address becomes a 2-byte load of its own (eight where one
was meant). Prints each such load, then a count of the kernels checked.

Usage: narrow_loads.py FILE.ptx
"""
import re
import sys

STREAMING = re.compile(r"^(matvec_|linear_gemv_|attn_)")
NARROW = re.compile(r"\bld\.global(\.nc)?(\.v[24])?\.[usb](8|16)\b")

text = open(sys.argv[1]).read()
checked, narrow = 0, 0
for m in re.finditer(r"\.entry (\w+)\((.*?)\n\}\n", text, re.S):
    if not STREAMING.match(m.group(1)):
        continue
    checked += 1
    for line in m.group(0).split("\n"):
        if NARROW.search(line):
            narrow += 1
            print(f"{m.group(1)}: {line.strip()}")
print(f"checked {checked} kernels: {narrow} loads narrower than 4 bytes")
