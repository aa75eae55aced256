#!/usr/bin/env python3
"""Drives `kvplan serve` as a user would, with curl (or urllib where there is
no curl), on loopback, and prints what came back for FileCheck.

Usage: serve_check.py KVPLAN ARTIFACT IDS_OUT [SERVE FLAGS...]; starts the server on a free
port, queries /health, /v1/models, a completion, a stream, a chat request
(no template: 400) and an unknown path (404), writes the greedy prompt and
generated ids to IDS_OUT in `kvplan run --print-ids` form, then stops the
server with SIGTERM and prints its exit status and request log.
"""
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

kvplan, artifact, ids_out = sys.argv[1:4]
log = tempfile.TemporaryFile(mode="w+")
server = subprocess.Popen([kvplan, "serve", artifact, "--port", "0", "--model-name", "tiny"] +
                          sys.argv[4:],
                          stdout=subprocess.PIPE, stderr=log, text=True)
try:
    first = server.stdout.readline().strip()
    print(first)
    base = re.search(r"(http://\S+)", first).group(1)

    def request(path, body=None):
        """(status, body text) of a GET, or of a POST of the JSON `body`."""
        if shutil.which("curl"):
            cmd = ["curl", "-sS", "-N", "-w", "\n%{http_code}", base + path]
            if body is not None:
                cmd += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
            text, _, code = out.rpartition("\n")
            return int(code), text
        data = None if body is None else json.dumps(body).encode()
        try:
            with urllib.request.urlopen(urllib.request.Request(base + path, data), timeout=60) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    print("health", *request("/health"))
    status, models = request("/v1/models")
    print("models", status, json.loads(models)["data"][0]["id"])
    greedy = {"prompt": [1, 5, 9], "max_tokens": 8, "temperature": 0, "ignore_eos": True,
              "return_token_ids": True}
    status, body = request("/v1/completions", greedy)
    answer = json.loads(body)
    print("completion", status, answer["object"], answer["choices"][0]["finish_reason"],
          json.dumps(answer["usage"], sort_keys=True))
    with open(ids_out, "w") as f:
        f.write(" ".join(str(t) for t in [1, 5, 9] + answer["choices"][0]["token_ids"]) + "\n")
    status, stream = request("/v1/completions", dict(greedy, stream=True))
    events = [e for e in stream.split("\n\n") if e]
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    ids = [t for c in chunks for t in c["choices"][0]["token_ids"]]
    print("stream", status, len(events), "events, last", events[-1],
          "same ids" if ids == answer["choices"][0]["token_ids"] else "DIFFERENT ids")
    status, body = request("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    print("chat", status, json.loads(body)["error"]["param"])
    status, body = request("/v2/nothing")
    print("unknown", status, json.loads(body)["error"]["code"])
finally:
    server.send_signal(signal.SIGTERM)
    try:
        print("exit", server.wait(timeout=30))
    except subprocess.TimeoutExpired:
        server.kill()
        print("exit: still running 30 s after SIGTERM")
    log.seek(0)
    sys.stdout.write(log.read())
