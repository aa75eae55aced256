#!/usr/bin/env python3
"""Fails when a source file includes a header of a layer above its own.

The layers (docs/architecture.md), bottom up: support; spec (the model
description); formats (checkpoints, tokenizers); plan (the contract between
the compiler and the runtime); runtime (executors, engine); server (HTTP on the runtime); report (kvplan
report's HTML page, from the plan). The compiler
(ir, frontend, passes, codegen) sits beside the runtime and meets it only at
the plan; tools, tests and fuzz targets sit on top. The runtime's layers include no MLIR,
LLVM or compiler header, and only runtime/cuda (and the kernel templates in
codegen/cuda, which only nvcc compiles) include CUDA's headers.

Usage: check-layering.py [SOURCE_ROOT]; prints every violation and exits 1
if there is one.
"""
import os
import re
import sys

# What each top-level folder may include of the project (besides itself).
ALLOWED = {
    "support": set(),
    "spec": {"support"},
    "formats": {"support", "spec"},
    "plan": {"support", "spec", "formats"},
    "runtime": {"support", "spec", "formats", "plan"},
    "server": {"support", "spec", "formats", "plan", "runtime"},
    "report": {"support", "spec", "formats", "plan"},
    "ir": {"support", "spec"},
    "frontend": {"support", "spec", "formats", "ir"},
    "passes": {"support", "spec", "ir"},
    "codegen": {"support", "spec", "formats", "plan", "ir", "passes", "frontend"},
}
LAYERS = set(ALLOWED) | {"tools", "tests", "fuzz"}
# Folders, and files of the compiler's folders, that must build without MLIR.
NO_MLIR_FOLDERS = {"support", "spec", "formats", "plan", "runtime", "server", "report"}
NO_MLIR_FILES = {"frontend/ConfigParser.h", "frontend/ConfigParser.cpp",
                 "passes/BufferPlanner.h", "passes/BufferPlanner.cpp",
                 "codegen/CudaCodegen.h", "codegen/CudaCodegen.cpp"}
SOURCE = re.compile(r"\.(h|cpp|cuh|cu)$")
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def violations(root):
    for top in sorted(ALLOWED):
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            for name in sorted(names):
                if not SOURCE.search(name):
                    continue
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root)
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
                for m in INCLUDE.finditer(text):
                    line = text.count("\n", 0, m.start()) + 1
                    header = m.group(2)
                    first = header.split("/")[0]
                    where = f"{rel}:{line}: includes {header}"
                    if m.group(1) == '"' and first in LAYERS and first != top:
                        if first not in ALLOWED[top]:
                            yield f"{where}: {top}/ may include only " + \
                                  (", ".join(sorted(ALLOWED[top])) or "nothing of kvplan")
                    mlir = first in ("mlir", "llvm") or header.endswith(".h.inc")
                    if mlir and (top in NO_MLIR_FOLDERS or rel in NO_MLIR_FILES):
                        yield f"{where}: {rel} must build without MLIR (the runtime-only build)"
                    cuda = re.match(r"(cuda|cublas|cudart|nvrtc|nccl)\w*\.h$", header)
                    if cuda and not rel.startswith(("runtime/cuda/", "codegen/cuda/")):
                        yield f"{where}: only runtime/cuda/ (and the kernel templates nvcc " \
                              "compiles, codegen/cuda/) include CUDA's headers"


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    found = list(violations(os.path.abspath(root)))
    for v in found:
        print(v)
    if found:
        print(f"check-layering: {len(found)} include(s) break the layering "
              "(docs/architecture.md)")
        return 1
    print("check-layering: every include follows the layering")
    return 0


if __name__ == "__main__":
    sys.exit(main())
