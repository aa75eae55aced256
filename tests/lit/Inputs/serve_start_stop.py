#!/usr/bin/env python3
"""Starts `kvplan serve ARGS... --port 0`, waits until it listens, stops it
with SIGINT and prints what it wrote (stdout, then stderr) and its exit
status, for FileCheck: what a server says when it starts, with no timing.

Usage: serve_start_stop.py KVPLAN SERVE_ARGS...
"""
import signal
import subprocess
import sys
import tempfile

log = tempfile.TemporaryFile(mode="w+")
server = subprocess.Popen([sys.argv[1], "serve"] + sys.argv[2:] + ["--port", "0"],
                          stdout=subprocess.PIPE, stderr=log, text=True)
first = server.stdout.readline()
print(first.strip())
# The server has its signal handlers before it listens: SIGINT now stops it
# cleanly, after it has said what it says at the start.
server.send_signal(signal.SIGINT)
rest, _ = server.communicate(timeout=120)
print(rest.strip())
log.seek(0)
print(log.read().strip())
print("exit", server.returncode)
