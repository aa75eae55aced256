#!/usr/bin/env python3
"""Writes tests/data/harmony-cases.json: conversations in the OpenAI API's
form, each with the prompt gpt-oss's own chat template (its
chat_template.jinja, given as the argument) renders for it with jinja2, in
the environment transformers renders chat templates in (scripts/
jinja-cases.py's), or the message the template raised. Its date is fixed
(strftime_now gives DATE), so the file does not change from day to day.
tests/unit/HarmonyTest.cpp renders the same conversations with kvplan's
built-in harmony template and compares.

The messages reach the template as transformers gives them: a call's
arguments parsed from their JSON text, and an answer's reasoning_content as
"thinking" (the key gpt-oss's template reads).

    python3 scripts/harmony-cases.py chat_template.jinja > tests/data/harmony-cases.json
"""
import argparse
import copy
import hashlib
import importlib.util
import json
import os
import sys

import jinja2

DATE = "2026-12-07"

_spec = importlib.util.spec_from_file_location(
    "jinja_cases", os.path.join(os.path.dirname(__file__), "jinja-cases.py"))
jinja_cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(jinja_cases)


def call(cid, name, arguments):
    return {"id": cid, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


def tool(name, description, parameters=None):
    fn = {"name": name, "description": description}
    if parameters is not None:
        fn["parameters"] = parameters
    return {"type": "function", "function": fn}


WEATHER = tool("get_weather", "The weather at a place.", {
    "type": "object",
    "properties": {
        "location": {"type": "string", "description": "The city, e.g. Paris"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
    },
    "required": ["location"]})

# Every branch of the template's TypeScript rendering of a parameter.
KINDS = tool("kinds", "Every kind of parameter.", {
    "type": "object",
    "properties": {
        "s": {"type": "string"},
        "sn": {"type": "string", "nullable": True, "description": "A string or null."},
        "n": {"type": "number", "default": 1.5},
        "i": {"type": "integer", "default": 3},
        "b": {"type": "boolean", "default": False},
        "e": {"type": "string", "enum": ["a", "b c", "d\"e"]},
        "strs": {"type": "array", "items": {"type": "string"}},
        "nums": {"type": "array", "items": {"type": "number"}, "nullable": True},
        "ints": {"type": "array", "items": {"type": "integer"}},
        "bools": {"type": "array", "items": {"type": "boolean"}},
        "objs": {"type": "array", "items": {"type": "object", "properties": {
            "k": {"type": "string"}, "v": {"type": "integer"}}, "required": ["k"]}},
        "plain": {"type": "array", "items": {"type": "object"}},
        "anys": {"type": "array"},
        "deep": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
        "long": {"type": "array", "items": {"type": "string", "enum": [
            "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf"]}},
        "union": {"type": ["string", "number"]},
        "single": {"type": ["boolean"]},
        "choice": {"oneOf": [{"type": "string", "description": "a name"},
                             {"type": "integer", "default": 7}],
                   "default": "x"},
        "objchoice": {"oneOf": [{"type": "object"}, {"type": "string"}]},
        "nested": {"type": "object", "description": "Nested.", "properties": {
            "a": {"type": "string"}, "b": {"type": "number"}}, "required": ["a"]},
        "bare": {"type": "object"},
        "untyped": {"description": "No type."},
        "dflt": {"type": "object", "default": {"k": [1, "two"], "é": None}},
    },
    "required": ["s", "e", "nested"]})

NO_PARAMS = tool("now", "The time now.")
EMPTY_PARAMS = tool("ping", "Checks the line.", {"type": "object", "properties": {}})

SYSTEM = {"role": "system", "content": "Answer in French."}
HI = {"role": "user", "content": "Hi"}

CASES = [
    ("user", [HI], [], {}, True),
    ("system-effort-identity", [SYSTEM, HI], [],
     {"reasoning_effort": "high", "model_identity": "You are a helpful assistant."}, True),
    ("developer", [{"role": "developer", "content": "Be brief."}, HI], [], {}, True),
    ("later-system-left-out", [HI, {"role": "system", "content": "x"},
                               {"role": "user", "content": "Again"}], [], {}, True),
    ("turns-drop-thoughts", [
        SYSTEM, HI,
        {"role": "assistant", "content": "Bonjour !", "reasoning_content": "A greeting."},
        {"role": "user", "content": "Ça va ? \"quotes\" <b>"}], [], {"reasoning_effort": "low"},
     True),
    ("tools", [HI], [WEATHER, KINDS, NO_PARAMS, EMPTY_PARAMS], {}, True),
    ("tools-and-system", [SYSTEM, HI], [WEATHER], {}, True),
    ("call-and-result", [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "reasoning_content": "Need the weather tool.",
         "tool_calls": [call("call_1", "get_weather", {"location": "Paris", "unit": "celsius"})]},
        {"role": "tool", "tool_call_id": "call_1",
         "content": "{\"temp\": 21, \"sky\": \"clair\"}"}],
     [WEATHER], {}, True),
    ("call-content-as-analysis", [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "I will look it up.",
         "tool_calls": [call("call_1", "get_weather", {"location": "Nîmes"})]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}],
     [WEATHER], {}, True),
    ("call-then-final-drops-analysis", [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "reasoning_content": "Need the tool.",
         "tool_calls": [call("call_1", "get_weather", {"location": "Paris"})]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21 degrees"},
        {"role": "assistant", "content": "It is 21 degrees.", "reasoning_content": "Easy."},
        {"role": "user", "content": "Thanks"}],
     [WEATHER], {}, True),
    ("two-calls-first-rendered", [
        {"role": "user", "content": "Both?"},
        {"role": "assistant", "content": "",
         "tool_calls": [call("call_1", "get_weather", {"location": "A"}),
                        call("call_2", "get_weather", {"location": "B"})]},
        {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
        {"role": "tool", "tool_call_id": "call_2", "content": "snow"}],
     [WEATHER], {}, True),
    ("last-answer-without-generation", [
        HI, {"role": "assistant", "content": "Hello!", "reasoning_content": "Greet back."}],
     [], {}, False),
    ("last-answer-without-thought", [
        HI, {"role": "assistant", "content": "Hello!"}], [], {}, False),
    ("channel-tags-in-content", [
        HI, {"role": "assistant", "content": "<|channel|>final<|message|>Hello"},
        {"role": "user", "content": "Again"}], [], {}, True),
    ("channel-tags-in-thinking", [
        HI, {"role": "assistant", "content": "Hello",
             "reasoning_content": "x<|channel|>analysis<|message|>y"},
        {"role": "user", "content": "Again"}], [], {}, True),
    ("content-and-thinking-with-calls", [
        HI, {"role": "assistant", "content": "Looking.", "reasoning_content": "Hmm.",
             "tool_calls": [call("call_1", "now", {})]}], [NO_PARAMS], {}, True),
    ("result-without-call", [
        HI, {"role": "tool", "tool_call_id": "call_1", "content": "x"}], [], {}, True),
]


def template_messages(messages):
    """The messages as transformers gives them to the template."""
    out = []
    for m in copy.deepcopy(messages):
        if "reasoning_content" in m:
            m["thinking"] = m.pop("reasoning_content")
        for c in m.get("tool_calls", []):
            c["function"]["arguments"] = json.loads(c["function"]["arguments"])
        out.append(m)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("template", help="gpt-oss's chat_template.jinja")
    args = ap.parse_args()
    with open(args.template, encoding="utf-8") as f:
        template = f.read()
    env = jinja_cases.environment()
    env.globals["strftime_now"] = lambda fmt: DATE
    out = {"jinja2": jinja2.__version__,
           "template_sha256": hashlib.sha256(template.encode()).hexdigest(),
           "date": DATE, "cases": []}
    for name, messages, tools, kwargs, generation in CASES:
        context = {"messages": template_messages(messages), "tools": tools or None,
                   "add_generation_prompt": generation, **kwargs}
        out["cases"].append({"name": name, "messages": messages, "tools": tools,
                             "kwargs": kwargs, "add_generation_prompt": generation,
                             **jinja_cases.render(env, template, context)})
    json.dump(out, fp=sys.stdout, ensure_ascii=False, indent=1)
    print()


if __name__ == "__main__":
    main()
