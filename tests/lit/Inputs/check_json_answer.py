"""Checks `kvplan run --json-schema` output: the prompt (argv[2]) then one
JSON object whose only member is "mood", "happy" or "sad"; with argv[3]
"any", any JSON object; with "coded", coded-schema.json's: "mood", then
"code" (three capitals) and "stars" (an integer from 1 to 5). Exits 1 naming
what is wrong."""
import json
import re
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
mode = sys.argv[3] if len(sys.argv) > 3 else "mood"
if mode == "mood" and (list(value) != ["mood"] or value["mood"] not in ("happy", "sad")):
    sys.exit(f"not what the schema accepts: {answer!r}")
if mode == "coded" and (list(value) != ["mood", "code", "stars"] or
                        value["mood"] not in ("happy", "sad") or
                        not re.fullmatch("[A-Z]{3}", value["code"]) or
                        type(value["stars"]) is not int or not 1 <= value["stars"] <= 5):
    sys.exit(f"not what coded-schema.json accepts: {answer!r}")
print("ok", json.dumps(value))
