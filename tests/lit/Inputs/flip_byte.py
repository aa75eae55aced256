#!/usr/bin/env python3
"""Damages a .kvp for tests: `flip_byte.py IN OUT SECTION` flips one byte in
the middle of SECTION; `flip_byte.py IN OUT truncate` drops the last 100 bytes."""
import struct
import sys

src, dst, what = sys.argv[1:4]
data = bytearray(open(src, "rb").read())
if what == "truncate":
    data = data[:-100]
else:
    count = struct.unpack_from("<I", data, 12)[0]
    for i in range(count):
        entry = 64 + 64 * i
        name = data[entry:entry + 32].rstrip(b"\0").decode()
        offset, size = struct.unpack_from("<QQ", data, entry + 32)
        if name == what:
            data[offset + size // 2] ^= 0x01
            break
    else:
        sys.exit("no section " + what)
open(dst, "wb").write(bytes(data))
