#!/usr/bin/env python3
"""Starts `kvplan serve ARGS... --port 0`, posts lm-evaluation-harness's
log-likelihood request (the prompt as ids, echo, logprobs 1, max_tokens 0)
and prints what came back, for FileCheck: the status, and on 200 how many
tokens carry log-probabilities, whether the first is null and whether the
others are finite and negative; on an error its param and message.

Usage: serve_score.py KVPLAN SERVE_ARGS...
"""
import json
import math
import re
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

log = tempfile.TemporaryFile(mode="w+")
server = subprocess.Popen([sys.argv[1], "serve"] + sys.argv[2:] + ["--port", "0"],
                          stdout=subprocess.PIPE, stderr=log, text=True)
url = re.search(r"http://\S+", server.stdout.readline()).group(0)
body = {"prompt": [1, 5, 9, 12, 7, 3], "echo": True, "logprobs": 1, "max_tokens": 0}
request = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=120) as r:
        answer = json.load(r)
    lp = answer["choices"][0]["logprobs"]
    values = lp["token_logprobs"]
    print("score 200", len(values), "tokens; first",
          "null" if values[0] is None else values[0], "; the rest",
          "finite and negative" if all(math.isfinite(v) and v < 0 for v in values[1:])
          else values[1:], "; completion_tokens", answer["usage"]["completion_tokens"])
except urllib.error.HTTPError as e:
    error = json.load(e)["error"]
    print("score", e.code, error["param"], error["message"])
server.send_signal(signal.SIGINT)
server.communicate(timeout=120)
print("exit", server.returncode)
