#!/usr/bin/env python3
"""Checks `kvplan bench --requests ... --json` output: every field present
with a sane value (never a timing's size), and optionally a prefix-cache hit
or the same outputs hash as another run's.

Usage: check_load_bench.py FILE [--requests N] [--hit] [--same-hash OTHER]
"""
import argparse
import json
import sys

FIELDS = {
    # The fields, then the extras.
    "requests": int, "concurrency": int, "output_tok_s": float, "ttft_ms_p50": float,
    "ttft_ms_p99": float, "tpot_ms_p50": float, "tpot_ms_p99": float,
    "prefix_hit_rate": float, "preemptions": int,
    "model": str, "prompt_len": int, "gen": int, "shared_prefix": int, "prefix_cache": bool,
    "scheduler_ms_per_step": float, "scheduler_overhead_pct": float, "outputs_hash": str,
    "kv_pages": int, "max_batch": int, "executor": str, "entry_point_calls": dict,
}


def load(path):
    with open(path) as f:
        return json.loads(f.read())


def fail(msg):
    sys.exit("check_load_bench: " + msg)


p = argparse.ArgumentParser()
p.add_argument("file")
p.add_argument("--requests", type=int)
p.add_argument("--hit", action="store_true")
p.add_argument("--same-hash")
p.add_argument("--preempted", action="store_true")
a = p.parse_args()
j = load(a.file)
if set(j) != set(FIELDS):
    fail("fields differ: missing %s, extra %s" % (sorted(set(FIELDS) - set(j)),
                                                  sorted(set(j) - set(FIELDS))))
for k, t in FIELDS.items():
    ok = isinstance(j[k], (int, float)) and not isinstance(j[k], bool) if t is float \
        else isinstance(j[k], t) and (t is bool or not isinstance(j[k], bool))
    if not ok:
        fail("%s is %r, not a %s" % (k, j[k], t.__name__))
if a.requests is not None and j["requests"] != a.requests:
    fail("requests is %d, expected %d" % (j["requests"], a.requests))
if j["preemptions"] < 0 or not 0 <= j["prefix_hit_rate"] <= 1:
    fail("preemptions %r, prefix_hit_rate %r" % (j["preemptions"], j["prefix_hit_rate"]))
if len(j["outputs_hash"]) != 16 or j["output_tok_s"] <= 0:
    fail("outputs_hash %r, output_tok_s %r" % (j["outputs_hash"], j["output_tok_s"]))
calls = j["entry_point_calls"]
if not set(calls) <= {"prefill", "decode"} or \
        not all(isinstance(n, int) and n > 0 for n in calls.values()):
    fail("entry_point_calls %r: a cpu plan runs prefill and decode, each counted when run" % calls)
if calls.get("prefill", 0) < j["requests"]:
    fail("%r prefill calls for %d requests, each at least one" % (calls.get("prefill"),
                                                                  j["requests"]))
if a.hit and not j["prefix_hit_rate"] > 0:
    fail("expected prefix-cache hits, prefix_hit_rate is %r" % j["prefix_hit_rate"])
if a.preempted and not j["preemptions"] > 0:
    fail("expected preemptions under a small pool, there were none")
if a.same_hash and load(a.same_hash)["outputs_hash"] != j["outputs_hash"]:
    fail("outputs_hash %s differs from %s's %s" % (j["outputs_hash"], a.same_hash,
                                                   load(a.same_hash)["outputs_hash"]))
print("ok")
