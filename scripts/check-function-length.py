#!/usr/bin/env python3
"""Fails when a function in the project's C++ is longer than a reader can
hold at once (the house keeps them to about 80 lines).

It counts lines from a function's opening brace to its closing one, after
taking out comments and string literals; lambdas count with the function
that holds them. Kernel templates compiled by nvcc (.cuh) count too.

Usage: check-function-length.py [--max N] [ROOT [FOLDER ...]]; by default
the folders of the source tree the limit holds for. Prints every function
over the limit and exits 1 if there is one.
"""
import argparse
import os
import re
import sys

FOLDERS = ["support", "spec", "formats", "plan", "runtime", "server", "report", "ir", "frontend", "passes",
           "codegen", "tools", "fuzz"]
SOURCE = re.compile(r"\.(h|cpp|cuh|cu)$")


def strip(src):
    """The source with comments and string/char literals blanked, lines kept."""
    out, i, n = [], 0, len(src)
    while i < n:
        if src.startswith("//", i):
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * src.count("\n", i, j))
            i = j
        elif src.startswith('R"', i) and re.match(r'R"([^(\s]*)\(', src[i:]):
            delim = re.match(r'R"([^(\s]*)\(', src[i:]).group(1)
            j = src.find(")" + delim + '"', i)
            j = n if j < 0 else j + len(delim) + 2
            out.append('""' + "\n" * src.count("\n", i, j))
            i = j
        elif src[i] in "\"'":
            q, j = src[i], i + 1
            while j < n and src[j] != q and src[j] != "\n":
                j += 2 if src[j] == "\\" else 1
            out.append(q + q)
            i = j + 1
        else:
            out.append(src[i])
            i += 1
    return "".join(out)


def functions(text):
    """(lines, first line, signature) of each function body at namespace or
    class scope."""
    s = strip(text)
    stack, start, line, found = [], 0, 1, []
    for i, c in enumerate(s):
        if c == "\n":
            line += 1
        elif c == ";" and (not stack or stack[-1][0] in ("ns", "class")):
            start = i + 1
        elif c == "{":
            head = " ".join(s[start:i].split())
            outer = stack[-1][0] if stack else "ns"
            kind = "block"
            if outer in ("ns", "class"):
                if re.search(r"\bnamespace\b", head) or head.startswith('extern ""'):
                    kind = "ns"
                elif re.match(r"(template\s*<.*>\s*)?(class|struct|union|enum)\b", head) and \
                        "(" not in head.split(":")[0]:
                    kind = "class"
                elif "(" in head and not head.endswith("="):
                    kind = "function"
            stack.append((kind, line, head))
            start = i + 1
        elif c == "}" and stack:
            kind, first, head = stack.pop()
            if kind == "function":
                found.append((line - first + 1, first, head))
            start = i + 1
    return found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max", type=int, default=80)
    ap.add_argument("root", nargs="?", default=os.path.join(os.path.dirname(__file__), ".."))
    ap.add_argument("folders", nargs="*", default=FOLDERS)
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    long = []
    for folder in args.folders:
        for dirpath, _, names in os.walk(os.path.join(root, folder)):
            for name in sorted(names):
                if not SOURCE.search(name):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8", errors="replace") as f:
                    for n, first, head in functions(f.read()):
                        if n > args.max:
                            long.append(f"{os.path.relpath(path, root)}:{first}: {n} lines: "
                                        f"{head[-100:]}")
    for l in long:
        print(l)
    if long:
        print(f"check-function-length: {len(long)} function(s) over {args.max} lines")
        return 1
    print(f"check-function-length: every function in {', '.join(args.folders)} "
          f"is at most {args.max} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
