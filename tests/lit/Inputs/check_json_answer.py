"""Checks `kvplan run --json-schema` output: the prompt (argv[2]) then one
JSON object whose only member is "mood", "happy" or "sad"; with argv[3]
"any", any JSON object. Exits 1 naming what is wrong."""
import json
import sys

text = open(sys.argv[1], encoding="utf-8").read()
prompt = sys.argv[2]
if not text.startswith(prompt):
    sys.exit(f"the output does not start with the prompt: {text!r}")
answer = text[len(prompt):].rstrip("\n")
try:
    value = json.loads(answer)
except ValueError as e:
    sys.exit(f"not JSON ({e}): {answer!r}")
if not isinstance(value, dict):
    sys.exit(f"not an object: {answer!r}")
if len(sys.argv) < 4 and (list(value) != ["mood"] or value["mood"] not in ("happy", "sad")):
    sys.exit(f"not what the schema accepts: {answer!r}")
print("ok", json.dumps(value))
