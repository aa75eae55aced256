#!/usr/bin/env python3
"""Reads the JSON lines `kvplan run --logprobs K` writes on stderr (other
lines skipped), checks each (its K most likely tokens, likeliest first, each
a log-probability of at most 0 whose probabilities sum to at most 1; with
--greedy, the chosen token is the likeliest), and prints a line a token:
"lp TEXT LOGPROB" (TEXT as a literal, LOGPROB to 4 places), as
serve_completion.py --logprobs prints the server's; then "lp-text TEXT", the
tokens' bytes one after another (as UTF-8, a literal), and "tokens N".

Usage: logprob_lines.py FILE K [--greedy]
"""
import json
import math
import sys

path, k, greedy = sys.argv[1], int(sys.argv[2]), "--greedy" in sys.argv[3:]
count = 0
joined = b""
for line in open(path, encoding="utf-8"):
    if not line.startswith("{"):
        continue
    entry = json.loads(line)
    top = entry["top_logprobs"]
    assert len(top) == k, f"{len(top)} most likely tokens, not {k}: {line}"
    values = [t["logprob"] for t in top]
    assert values == sorted(values, reverse=True), f"not likeliest first: {line}"
    assert all(v <= 0 for v in values + [entry["logprob"]]), f"a log-probability above 0: {line}"
    assert sum(math.exp(v) for v in values) <= 1 + 1e-6, f"probabilities above 1: {line}"
    assert bytes(entry["bytes"]).decode("utf-8", "replace") == entry["text"], line
    if greedy and k > 0:
        assert top[0]["token"] == entry["token"], f"greedy, not the likeliest: {line}"
        assert top[0]["logprob"] == entry["logprob"], line
    print("lp", repr(entry["text"]), f"{entry['logprob']:.4f}")
    joined += bytes(entry["bytes"])
    count += 1
print("lp-text", repr(joined.decode("utf-8", "replace")))
print("tokens", count)
