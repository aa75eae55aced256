#!/usr/bin/env python3
"""Checks `kvplan run -i` against `kvplan serve`'s chat completions: the
conversation MESSAGES (user turns) through `run ARTIFACT -i`, greedy, N
tokens an answer, then each turn through the server's /v1/chat/completions
with the conversation before it (the server's own answers, stripped, as the
assistant's turns). Prints "same" and the number of turns when run's output
is the server's answers, each followed by a newline; else both.

Usage: chat_conversation.py KVPLAN ARTIFACT TEMPLATE N MESSAGE...
"""
import json
import re
import signal
import subprocess
import sys
import urllib.request

kvplan, artifact, template, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
turns = sys.argv[5:]
run = subprocess.run([kvplan, "run", artifact, "-i", "--chat-template", template,
                      "--temperature", "0", "-n", n],
                     input="".join(t + "\n" for t in turns), capture_output=True, text=True,
                     timeout=300)
if run.returncode != 0:
    sys.exit("kvplan run -i failed: " + run.stderr)

server = subprocess.Popen([kvplan, "serve", artifact, "--chat-template", template,
                           "--port", "0", "--quiet"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    url = re.search(r"http://[0-9.:]+", server.stdout.readline()).group(0)
    messages, expected = [], ""
    for turn in turns:
        messages.append({"role": "user", "content": turn})
        body = json.dumps({"messages": messages, "max_tokens": int(n),
                           "temperature": 0}).encode()
        req = urllib.request.Request(url + "/v1/chat/completions", body,
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as res:
            answer = json.loads(res.read())["choices"][0]["message"]["content"]
        expected += answer + "\n"
        messages.append({"role": "assistant", "content": answer.strip()})
finally:
    server.send_signal(signal.SIGINT)
    server.communicate(timeout=120)
if run.stdout == expected:
    print("same", len(turns))
else:
    print("run:   ", repr(run.stdout))
    print("serve: ", repr(expected))
