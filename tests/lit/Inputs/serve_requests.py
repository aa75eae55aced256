#!/usr/bin/env python3
"""Starts `kvplan serve ARTIFACT FLAGS... --port 0`, sends the requests in
REQUESTS (a JSON list of [path, body]) and prints one line each for
FileCheck or diff: the path, the status, and the token ids (/tokenize), the
answer's message (chat) or the error's param and message; then the line
the server printed about its chat template, and its exit status.

Usage: serve_requests.py KVPLAN ARTIFACT REQUESTS [SERVE FLAGS...]
"""
import json
import re
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

kvplan, artifact, requests = sys.argv[1:4]
log = tempfile.TemporaryFile(mode="w+")
server = subprocess.Popen([kvplan, "serve", artifact, "--port", "0"] + sys.argv[4:],
                          stdout=subprocess.PIPE, stderr=log, text=True)
try:
    base = re.search(r"(http://\S+)", server.stdout.readline()).group(1)
    for path, body in json.load(open(requests, encoding="utf-8")):
        req = urllib.request.Request(base + path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                status, answer = r.status, json.loads(r.read().decode())
        except urllib.error.HTTPError as e:
            status, answer = e.code, json.loads(e.read().decode())
        if "error" in answer:
            what = "error %s: %s" % (answer["error"]["param"], answer["error"]["message"])
        elif "tokens" in answer:
            what = " ".join(str(t) for t in answer["tokens"])
        else:
            what = json.dumps(answer["choices"][0]["message"], sort_keys=True)
        print(path, status, what)
finally:
    server.send_signal(signal.SIGTERM)
    code = server.wait(timeout=60)
    log.seek(0)
    for line in log.read().splitlines():
        if "chat template" in line or "warning" in line:
            print(re.sub(r"^.*?; chat template ", "chat template ", line.split("; context")[0]))
    print("exit", code)
