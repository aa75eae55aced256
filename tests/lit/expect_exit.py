#!/usr/bin/env python3
"""Runs a command and fails unless it exits with the given code.

Usage: expect_exit.py CODE COMMAND [ARGS...]; the command's stdout and
stderr pass through, so a test can FileCheck the message too.
"""
import subprocess
import sys

if len(sys.argv) < 3:
    sys.exit("usage: expect_exit.py CODE COMMAND [ARGS...]")
want = int(sys.argv[1])
got = subprocess.run(sys.argv[2:]).returncode
if got != want:
    sys.stderr.write("expect_exit: %s exited with %d, expected %d\n" % (sys.argv[2], got, want))
    sys.exit(1)
