#!/usr/bin/env python3
"""Structured output's cost when served: ms a token with no response_format,
with json_object and with json_schema, in interleaved rounds (the machine is
shared and noisy: compare within one run). Start a server first, e.g.
  build/bin/kvplan serve models/stories110m.toml --dtype bf16 --max-seq 512 \\
      --tokenizer ../shared/models/llama2-tokenizer/tokenizer.model --port 8000
  python3 scripts/structured-bench.py http://127.0.0.1:8000
Each round sends, one at a time, 4 seeded requests of 64 tokens (temperature
0.8, ignore_eos) per format; a request whose object closes early counts its
tokens as they are."""
import json
import sys
import time
import urllib.request

SCHEMA = {"type": "object", "properties": {
    "title": {"type": "string"},
    "lines": {"type": "array", "items": {"type": "string"}}},
    "required": ["title", "lines"], "additionalProperties": False}
FORMATS = {"none": None, "json_object": {"type": "json_object"},
           "json_schema": {"type": "json_schema",
                           "json_schema": {"name": "story", "schema": SCHEMA}}}


def one(url, fmt, seed):
    body = {"prompt": "Once upon a time", "max_tokens": 64, "temperature": 0.8, "seed": seed,
            "ignore_eos": True}
    if FORMATS[fmt]:
        body["response_format"] = FORMATS[fmt]
    req = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    start = time.time()
    with urllib.request.urlopen(req) as res:
        r = json.load(res)
    tokens = r["usage"]["completion_tokens"]
    choice = r["choices"][0]
    if fmt != "none" and choice["finish_reason"] == "stop":
        json.loads(choice["text"])  # a closed answer is JSON (raises otherwise)
    return (time.time() - start) * 1000 / tokens, tokens


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: structured-bench.py SERVER_URL")
    url = sys.argv[1].rstrip("/")
    one(url, "none", 0)  # warm up
    rounds = {f: [] for f in FORMATS}
    for r in range(3):
        for f in FORMATS:
            runs = [one(url, f, seed + 10 * r) for seed in range(4)]
            rounds[f].append((sum(m for m, _ in runs) / len(runs), sum(n for _, n in runs)))
    for f in FORMATS:
        print(f"{f:12s}", "  ".join(f"{m:.2f} ms/token ({n} tokens)" for m, n in rounds[f]))


if __name__ == "__main__":
    main()
