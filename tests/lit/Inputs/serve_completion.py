#!/usr/bin/env python3
"""Starts `kvplan serve ARGS... --port 0`, asks it for one greedy completion
of PROMPT (max_tokens N), streamed and not, and prints each answer's text
as a Python literal (so that leading spaces show), then stops the server.
With --logprobs K, the answer (not streamed) asks for K top log-probabilities
and its tokens follow, a line each: "lp TEXT LOGPROB" (TEXT as a literal,
LOGPROB to 4 places), as logprob_lines.py prints `kvplan run --logprobs`'s,
then "lp-text TEXT": the tokens' texts one after another.

Usage: serve_completion.py [--logprobs K] KVPLAN PROMPT N SERVE_ARGS...
"""
import json
import re
import signal
import subprocess
import sys
import urllib.request

args = sys.argv[1:]
logprobs = None
if args[0] == "--logprobs":
    logprobs, args = int(args[1]), args[2:]
kvplan, prompt, n = args[0], args[1], int(args[2])
server = subprocess.Popen([kvplan, "serve"] + args[3:] + ["--port", "0", "--quiet"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    url = re.search(r"http://[0-9.:]+", server.stdout.readline()).group(0)
    for stream in (False, True):
        ask = {"prompt": prompt, "max_tokens": n, "temperature": 0, "stream": stream}
        if logprobs is not None and not stream:
            ask["logprobs"] = logprobs
        body = json.dumps(ask).encode()
        req = urllib.request.Request(url + "/v1/completions", body,
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as res:
            raw = res.read().decode()
        if stream:
            text = "".join(json.loads(line[6:])["choices"][0]["text"]
                           for line in raw.splitlines()
                           if line.startswith("data: {"))
        else:
            choice = json.loads(raw)["choices"][0]
            text = choice["text"]
        print("stream" if stream else "whole", repr(text))
        if logprobs is not None and not stream:
            lp = choice["logprobs"]
            for token, value in zip(lp["tokens"], lp["token_logprobs"]):
                print("lp", repr(token), f"{value:.4f}")
            print("lp-text", repr("".join(lp["tokens"])))
finally:
    server.send_signal(signal.SIGINT)
    server.communicate(timeout=120)
