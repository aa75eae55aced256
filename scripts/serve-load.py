#!/usr/bin/env python3
"""A closed-loop load of streaming completions against a kvplan serve (or any
OpenAI-compatible server that takes token-id prompts), reported as
`kvplan bench --requests --json` reports the same load in process.

The requests are drawn exactly as kvplan bench draws them (tools/kvplan/
LoadBench.cpp: std::mt19937_64 seeded with --seed, lengths uniform in
[n/2, 3n/2], token ids below the vocabulary, a shared prefix first), sent
as token ids with greedy sampling and ignore_eos, so that both run the same
work and their greedy outputs hash the same (FNV-1a over the generated ids,
as outputs_hash). --concurrency clients each send the next request as soon
as their last one ends; a few short requests go first to warm the server.

Usage: serve-load.py URL [--requests N] [--concurrency C] [--prompt-len L]
       [--gen G] [--shared-prefix P] [--seed S] [--logprobs N] [--json]
Python's standard library only.
"""
import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse


class Mt19937_64:
    """std::mt19937_64, bit for bit."""

    def __init__(self, seed):
        self.mt = [0] * 312
        self.mt[0] = seed & 0xFFFFFFFFFFFFFFFF
        for i in range(1, 312):
            prev = self.mt[i - 1]
            self.mt[i] = (6364136223846793005 * (prev ^ (prev >> 62)) + i) & 0xFFFFFFFFFFFFFFFF
        self.index = 312

    def __call__(self):
        if self.index >= 312:
            for i in range(312):
                x = (self.mt[i] & 0xFFFFFFFF80000000) | (self.mt[(i + 1) % 312] & 0x7FFFFFFF)
                xa = x >> 1
                if x & 1:
                    xa ^= 0xB5026F5AA96619E9
                self.mt[i] = self.mt[(i + 156) % 312] ^ xa
            self.index = 0
        y = self.mt[self.index]
        self.index += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & 0xFFFFFFFFFFFFFFFF


def around(rng, n):
    lo = max(1, n // 2)
    hi = max(lo, n + n // 2)
    return lo + rng() % (hi - lo + 1)


def draw_workload(args, vocab, max_seq):
    """(prompt ids, tokens to generate) per request, as LoadBench draws them."""
    rng = Mt19937_64(args.seed)
    shared = [rng() % vocab for _ in range(args.shared_prefix)]
    load = []
    for _ in range(args.requests):
        own = around(rng, max(1, args.prompt_len - args.shared_prefix))
        drawn_gen = around(rng, args.gen)
        prompt_len = min(args.shared_prefix + own, max_seq - 1)
        gen = min(drawn_gen, max_seq - prompt_len)
        prompt = shared[:prompt_len]
        prompt += [rng() % vocab for _ in range(len(prompt), prompt_len)]
        load.append((prompt, gen))
    return load


class Record:
    def __init__(self):
        self.submitted = self.first = self.last = None
        self.ids = []
        self.error = None


# Fields every request adds (--logprobs).
EXTRA_FIELDS = {}


def stream_one(url, model, prompt, gen, rec):
    """One streaming request; fills rec with its times and token ids."""
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
    body = dict({"model": model, "prompt": prompt, "max_tokens": gen, "temperature": 0,
                 "ignore_eos": True, "stream": True, "return_token_ids": True}, **EXTRA_FIELDS)
    body = json.dumps(body)
    rec.submitted = time.perf_counter()
    try:
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            rec.error = "HTTP %d: %s" % (resp.status, resp.read()[:200])
            return
        for line in resp:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            event = json.loads(line[6:])
            if "error" in event:
                rec.error = event["error"]["message"]
                continue
            ids = event["choices"][0].get("token_ids", [])
            if ids and "logprobs" in EXTRA_FIELDS and not event["choices"][0].get("logprobs"):
                rec.error = "a token came without its logprobs"
            if ids:
                now = time.perf_counter()
                if rec.first is None:
                    rec.first = now
                rec.last = now
                rec.ids.extend(ids)
        if len(rec.ids) != gen and rec.error is None:
            rec.error = "%d tokens of %d" % (len(rec.ids), gen)
    except Exception as e:  # a dropped connection counts as an error, not a crash
        rec.error = repr(e)
    finally:
        conn.close()


def run_closed_loop(url, model, load, concurrency):
    records = [Record() for _ in load]
    next_index = [0]
    lock = threading.Lock()

    def client():
        while True:
            with lock:
                i = next_index[0]
                next_index[0] += 1
            if i >= len(load):
                return
            stream_one(url, model, load[i][0], load[i][1], records[i])

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = max([r.last for r in records if r.last] or [start])
    return records, end - start


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    rank = p / 100 * (len(v) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (rank - lo)


def outputs_hash(records):
    h = 14695981039346656037
    for r in records:
        for t in r.ids:
            for b in range(4):
                h ^= (t >> (8 * b)) & 0xFF
                h = (h * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--shared-prefix", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--logprobs", type=int, default=None,
                    help="ask for each token's log-probability and N most likely tokens")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.logprobs is not None:
        EXTRA_FIELDS["logprobs"] = args.logprobs
    url = urllib.parse.urlparse(args.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.request("GET", "/v1/models")
    card = json.loads(conn.getresponse().read())["data"][0]
    conn.close()
    vocab, max_seq = card["vocab_size"], card["max_model_len"]
    # Warm-up: short requests, one per client, whose prompts share nothing
    # with the load's.
    warm = [([(i * 7919 + k * 104729) % vocab for k in range(8)], 2)
            for i in range(args.concurrency)]
    run_closed_loop(url, card["id"], warm, args.concurrency)
    records, wall = run_closed_loop(url, card["id"], draw_workload(args, vocab, max_seq),
                                    args.concurrency)
    generated = sum(len(r.ids) for r in records)
    ttft = [1e3 * (r.first - r.submitted) for r in records if r.first]
    tpot = [1e3 * (r.last - r.first) / (len(r.ids) - 1) for r in records if len(r.ids) > 1]
    errors = [r.error for r in records if r.error]
    report = {"url": args.url, "model": card["id"], "requests": args.requests,
              "concurrency": args.concurrency, "prompt_len": args.prompt_len, "gen": args.gen,
              "shared_prefix": args.shared_prefix, "output_tok_s": generated / wall if wall else 0,
              "ttft_ms_p50": percentile(ttft, 50), "ttft_ms_p99": percentile(ttft, 99),
              "tpot_ms_p50": percentile(tpot, 50), "tpot_ms_p99": percentile(tpot, 99),
              "errors": len(errors), "outputs_hash": outputs_hash(records)}
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print("output    %d tokens in %.3f s: %.1f tok/s" % (generated, wall,
                                                             report["output_tok_s"]))
        fmt = lambda v: "n/a" if v is None else "%.2f ms" % v
        print("ttft      p50 %s, p99 %s" % (fmt(report["ttft_ms_p50"]), fmt(report["ttft_ms_p99"])))
        print("tpot      p50 %s, p99 %s" % (fmt(report["tpot_ms_p50"]), fmt(report["tpot_ms_p99"])))
        print("errors    %d%s" % (len(errors), (": " + errors[0]) if errors else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
