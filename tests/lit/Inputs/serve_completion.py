#!/usr/bin/env python3
"""Starts `kvplan serve ARGS... --port 0`, asks it for one greedy completion
of PROMPT (max_tokens N), streamed and not, and prints each answer's text
as a Python literal (so that leading spaces show), then stops the server.

Usage: serve_completion.py KVPLAN PROMPT N SERVE_ARGS...
"""
import json
import re
import signal
import subprocess
import sys
import urllib.request

kvplan, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
server = subprocess.Popen([kvplan, "serve"] + sys.argv[4:] + ["--port", "0", "--quiet"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    url = re.search(r"http://[0-9.:]+", server.stdout.readline()).group(0)
    for stream in (False, True):
        body = json.dumps({"prompt": prompt, "max_tokens": n, "temperature": 0,
                           "stream": stream}).encode()
        req = urllib.request.Request(url + "/v1/completions", body,
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as res:
            raw = res.read().decode()
        if stream:
            text = "".join(json.loads(line[6:])["choices"][0]["text"]
                           for line in raw.splitlines()
                           if line.startswith("data: {"))
        else:
            text = json.loads(raw)["choices"][0]["text"]
        print("stream" if stream else "whole", repr(text))
finally:
    server.send_signal(signal.SIGINT)
    server.communicate(timeout=120)
