#!/usr/bin/env python3
"""Writes tests/data/jinja-cases.json: templates and their variables, each
with the text jinja2 renders for it in the environment Hugging Face's
transformers renders chat templates in (trim_blocks, lstrip_blocks, loop
controls, {% generation %}, raise_exception, strftime_now and its tojson),
or the message the template raised. tests/unit/JinjaTest.cpp renders the
same with kvplan's interpreter and compares.

With --shared DIR (../shared), the Llama 3 and Qwen3 tokenizer_config.json
chat templates are rendered too, for the conversations below; the test reads
the templates from the same files.

    python3 scripts/jinja-cases.py --shared ../shared > tests/data/jinja-cases.json
"""
import argparse
import json
import os

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class Generation(Extension):
    """transformers' {% generation %}: renders its body."""
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_run"), [], [], body).set_lineno(lineno)

    def _run(self, caller):
        return caller()


class Raised(Exception):
    pass


def raise_exception(message):
    raise Raised(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' own, in place of jinja2's (which escapes HTML).
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env


CASES = [
    # Whitespace: trim_blocks, lstrip_blocks, the - and + markers.
    ("trim-lstrip", "{% for x in xs %}\n    {% if x %}\n  [{{ x }}]\n    {% endif %}\n{% "
        "endfor %}\ntail\n",
     {"xs": [1, 0, 2]}),
    ("minus-markers", "a  \n  {{- ' b ' -}}  \n c {%- if true -%}  d  {%- endif %}\n|", {}),
    ("plus-marker", "  {%+ if true %}x{% endif +%}\nafter", {}),
    ("inline-tags", "a {% if true %}b{% endif %} c\n  {% set y = 1 %}{{ y }}\n", {}),
    ("comments", "x {# note #}\n  {# own line #}\ny{#- strip -#}  z", {}),
    # Expressions.
    ("arithmetic", "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} "
     "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 1.5 + 1 }} {{ 10 / 4 * 2 }} {{ -x }}", {"x": 3}),
    ("strings", "{{ 'a' + 'b' }} {{ 'a' ~ 1 ~ none }} {{ 'ab' * 3 }} {{ \"q'\" }} "
     "{{ 'x' in 'xyz' }} {{ 'w' not in 'xyz' }} {{ 'a' 'b' }}", {}),
    ("compare", "{{ 1 < 2 }} {{ 2 <= 1 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ x == none }} "
     "{{ y is none }} {{ 3 in [1, 2, 3] }} {{ 'k' in {'k': 1} }} {{ not 1 }}", {"y": None}),
    ("ternary", "{{ 'yes' if x else 'no' }} {{ 'yes' if y else 'no' }} [{{ 'only' if y }}] "
     "{{ x and 'both' }} {{ y or 'fallback' }}", {"x": True, "y": False}),
    ("slices", "{{ s[1:3] }} {{ s[::-1] }} {{ s[-2:] }} {{ xs[1:] }} {{ xs[::-1] }} {{ xs[:-1] }} "
     "{{ u[1:] }} {{ u[0] }} {{ xs[-1] }} {{ xs[10] is defined }}",
     {"s": "hello", "xs": [1, 2, 3, 4], "u": "äöü€"}),
    ("python-repr",
     "{{ [1, 'a', none, true, 1.5, 1e20, 0.0001, 1e-05, 2.0] }} {{ {'k': 'v', 'n': [1]} }} "
     "{{ \"it's\" }} {{ ['it\\'s'] }} {{ d }} {{ f }} {{ b }} {{ n }}",
     {"d": {"a": {"b": None}}, "f": 3.0, "b": False, "n": None}),
    ("members", "{{ m.role }} {{ m['content'] }} {{ m.missing is defined }} {{ m.get('role') }} "
     "{{ m.get('missing', 'dflt') }} {{ xs.0 }} {{ m.keys() | list }} {{ m.values() | list }}",
     {"m": {"role": "user", "content": "hi"}, "xs": ["first"]}),
    # Statements.
    ("loop-vars", "{% for x in xs %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/"
     "{{ loop.first }}/{{ loop.last }}/{{ loop.length }}"
     "{% if loop.previtem is defined %}<{{ loop.previtem }}{% endif %}"
     "{% if loop.nextitem is defined %}>{{ loop.nextitem }}{% endif %};{% endfor %}",
     {"xs": ["a", "b", "c"]}),
    ("loop-else-filter",
     "{% for x in xs if x > 1 %}{{ x }}:{{ loop.length }} {% else %}none{% endfor %}"
     "|{% for x in [] %}x{% else %}empty{% endfor %}", {"xs": [1, 2, 3]}),
    ("loop-unpack", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}"
     "{% for k, v in d | items %}{{ k }}{% endfor %}{% for k in d %}[{{ k }}]{% endfor %}",
     {"d": {"z": 1, "a": 2}}),
    ("loop-controls", "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}"
     "{% if x > 4 %}{% break %}{% endif %}{{ x }}{% endfor %} {{ range(2, 8, 3) | list }}", {}),
    ("scoping", "{% set x = 1 %}{% for i in [1, 2] %}{% set x = x + i %}{{ x }}{% endfor %} {{ x }}"
     "{% set ns = namespace(total=0, seen=false) %}{% for i in [1, 2, 3] %}"
     "{% set ns.total = ns.total + i %}{% set ns.seen = true %}{% endfor %} {{ ns.total }} {{ "
     "ns.seen }}"
     "{% if true %}{% set y = 'leaks' %}{% endif %} {{ y }}", {}),
    ("set-block-unpack", "{% set a, b = [1, 2] %}{{ b }}{{ a }} {% set t %}in {{ a }}{% endset "
        "%}[{{ t }}]"
     "{% set tup = 1, 2 %} {{ tup | length }}", {}),
    ("macro", "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
     "{{ greet('a') }} {{ greet('b', '?') }} {{ greet(name='c', punct='.') }}", {}),
    ("generation", "{% for m in ms %}{% generation %}[{{ m }}]{% endgeneration %}{% endfor %}",
     {"ms": ["a", "b"]}),
    # Filters.
    ("tojson", "{{ v | tojson }}\n{{ v | tojson(indent=4) }}\n{{ [] | tojson(indent=2) }} "
     "{{ {} | tojson }} {{ 'x\"\\n\\t\\u0001é' | tojson }} {{ 1.0 | tojson }} {{ v | "
     "tojson(sort_keys=true) }}",
     {"v": {"name": "get_weather", "n": 3, "f": 0.5, "ok": True, "none": None,
            "props": {"city": {"type": "string", "enum": ["Zürich", "東京"]}}, "empty": []}}),
    ("text-filters", "[{{ '  x y \\n' | trim }}] {{ 'Hello' | upper }} {{ 'Hello' | lower }} "
     "{{ 'hello world' | title }} {{ 'hELLO' | capitalize }} {{ 'a-b-c' | replace('-', '+') }} "
     "{{ 3 | string }} {{ 'a\\nb\\n\\nc' | indent(2) }} {{ 'a\\nb' | indent(2, true) }} {{ "
     "'<&>' | e }}",
     {}),
    ("default", "{{ x | default('d') }} {{ none | default('d') }} {{ '' | default('d', true) }} "
     "{{ y | d('e') }} {{ z | default }}.", {"y": "set"}),
    ("list-filters", "{{ xs | length }} {{ 'äöü' | length }} {{ xs | first }} {{ xs | last }} "
     "{{ xs | join(', ') }} {{ xs | reverse | list }} {{ 'abc' | reverse }} {{ [3, 1, 2] | sort }} "
     "{{ [3, 1, 2] | sort(reverse=true) }} {{ [1, 2, 1] | unique | list }} {{ xs | list | count }} "
     "{{ [1, 2, 3] | sum }} {{ [4, 2, 8] | min }} {{ [4, 2, 8] | max }} {{ {'b': 1, 'a': 2} | "
     "dictsort | map('first') | list }}",
     {"xs": ["x", "y", "z"]}),
    ("select-map", "{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='content') | "
        "list }} "
     "{{ ms | rejectattr('role', 'eq', 'user') | list | length }} {{ ms | selectattr('tool') | "
     "list }} "
     "{{ [0, 1, 2, none] | select | list }} {{ [1, 2, 3, 4] | select('odd') | list }} "
     "{{ [1, 2, 3] | reject('even') | list }} {{ ['a', 'b'] | map('upper') | join }} "
     "{{ ms[:1] | map(attribute='f.name') | list }} {{ ms | map(attribute='x', default='-') | "
     "list }}",
     {"ms": [{"role": "user", "content": "u1", "f": {"name": "n1"}},
             {"role": "assistant", "content": "a1", "tool": True},
             {"role": "user", "content": "u2"}]}),
    ("sort-stable", "{{ ms | sort(attribute='k') | map(attribute='n') | join }} "
     "{{ ms | sort(attribute='k', reverse=true) | map(attribute='n') | join }} "
     "{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}",
     {"ms": [{"k": 1, "n": "a"}, {"k": 2, "n": "b"}, {"k": 1, "n": "c"}, {"k": 2, "n": "d"}]}),
    ("number-filters", "{{ '42' | int }} {{ 3.9 | int }} {{ '2.5' | float }} {{ -3 | abs }} "
     "{{ 2.567 | round(2) }} {{ 2.5 | round }}", {}),
    # Tests.
    ("tests", "{{ x is defined }} {{ u is undefined }} {{ n is none }} {{ 'a' is string }} "
     "{{ 1 is number }} {{ 1 is integer }} {{ 1.5 is float }} {{ true is boolean }} "
     "{{ d is mapping }} {{ xs is iterable }} {{ xs is sequence }} {{ 'a' is iterable }} "
     "{{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 1 is eq 1 }} {{ 2 is gt 1 }} "
     "{{ x is not none }} {{ d is not string }} {{ true is true }} {{ 0 is false }} "
     "{{ 'abc' is lower }} {{ 1 is in [1, 2] }}",
     {"x": 1, "n": None, "d": {}, "xs": [1]}),
    # Python methods.
    ("string-methods", "{{ ' a b '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '  a'.lstrip() }}|"
     "{{ 'a  '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ "
     "'a,b,c'.split(',', 1) }}|"
     "{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith(('x', 'c')) }}|{{ 'aXa'.replace('a', 'b') }}|"
     "{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}|{{ 'héllo'.find('l') }}|{{ 'banana'.count('an') }}|"
     "{{ '-'.join(['a', 'b']) }}|{{ 'a\\nb\\r\\nc'.splitlines() }}|{{ '12'.isdigit() }}|"
     "{{ 'hello world'.title() }}|{{ 'x'.capitalize() }}", {}),
    ("think-split", "{% set c = m.split('</think>')[-1].lstrip('\\n') %}"
     "{% set r = m.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}[{{ "
     "r }}][{{ c }}]",
     {"m": "<think>\nreasoning here\n</think>\n\nThe answer."}),
    # A dict or list closing inside an expression: its "}}" is not the tag's end.
    ("nested-braces", "{{ {'a': {'b': [1, 2]}} | tojson }} {% macro f(m) %}{{ m.x.y }}"
     "{% endmacro %}{{ f({'x': {'y': 1}}) }} {% set d = {'k': {'v': [3]}} %}{{ d.k.v[0] }} "
     "{{ [[1], [2]][1][0] }}", {}),
    # What gpt-oss's template renders tools with: a recursive macro with a
    # default argument, namespace() set inside loops, type tests, items(),
    # `not in (x or [])`, a slice from loop.index, `is none`.
    ("harmony-constructs",
     "{%- macro ts(spec, required, nullable=false) -%}"
     "{%- if spec.type == 'array' -%}{{- ts(spec['items'], required) + '[]' }}"
     "{%- elif spec.type is defined and spec.type is iterable and spec.type is not string and "
     "spec.type is not mapping -%}{{ spec.type | join(' | ') }}"
     "{%- elif spec.properties -%}{%- for name, p in spec.properties.items() -%}{{ name }}"
     "{%- if name not in (spec.required or []) -%}?{%- endif -%}: {{ ts(p, spec.required or []) "
     "}}{%- if not loop.last -%}, {% endif -%}{%- endfor -%}"
     "{%- else -%}{{ spec.type }}{%- endif -%}{%- endmacro -%}"
     "{%- set ns = namespace(found=false, name=none) -%}"
     "{%- for m in ms -%}{%- for later in ms[loop.index:] -%}{%- if later.role == 'assistant' "
     "-%}{%- set ns.found = true -%}{%- endif -%}{%- endfor -%}"
     "{%- if ns.name is none -%}{%- set ns.name = m.role -%}{%- endif -%}"
     "[{{ m.role }} {{ ns.found }}]{%- endfor -%} {{ ns.name }} {{ ts(a, []) }} | {{ ts(o, []) }}",
     {"ms": [{"role": "user"}, {"role": "assistant"}, {"role": "user"}],
      "a": {"type": "array", "items": {"type": ["string", "null"]}},
      "o": {"type": "object", "properties": {"city": {"type": "string"},
                                              "days": {"type": "integer"}},
            "required": ["city"]}}),
    ("raise", "{% if messages[0].role != 'user' %}{{ raise_exception('Conversations must start "
        "with a user message') }}{% endif %}ok",
     {"messages": [{"role": "system"}]}),
]

# Conversations rendered with the shared models' own templates.
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
CONVERSATIONS = [
    ("plain", {"messages": [{"role": "user", "content": "Hello!"}]}),
    ("system", {"messages": [{"role": "system", "content": "  Be brief. "},
                             {"role": "user", "content": "Hi"},
                             {"role": "assistant", "content": "Hello."},
                             {"role": "user", "content": "Bye é 東京"}]}),
    ("thoughts", {"messages": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"},
        {"role": "user", "content": "3+3?"},
        {"role": "assistant", "content": "6", "reasoning_content": "add again"},
        {"role": "user", "content": "and 4+4?"}]}),
    ("no-thinking", {"messages": [{"role": "user", "content": "Hi"}], "enable_thinking": False}),
    ("tools", {"tools": [TOOL], "messages": [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"temp\": 21}"},
        {"role": "tool", "tool_call_id": "c2", "content": "sunny"}]}),
]


def render(env, template, context):
    try:
        return {"expected": env.from_string(template).render(**context)}
    except Raised as e:
        return {"raised": str(e)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", help="the shared data folder (../shared)")
    args = ap.parse_args()
    env = environment()
    out = {"jinja2": jinja2.__version__, "cases": [], "models": []}
    for name, template, context in CASES:
        out["cases"].append({"name": name, "template": template, "context": context,
                             **render(env, template, context)})
    if args.shared:
        for model in ("llama3-tokenizer", "qwen3-tokenizer"):
            path = os.path.join(args.shared, "models", model, "tokenizer_config.json")
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
            for name, conv in CONVERSATIONS:
                context = {"bos_token": config.get("bos_token") or "",
                           "eos_token": config.get("eos_token") or "",
                           "add_generation_prompt": True, "tools": None, **conv}
                out["models"].append({"model": model, "name": name, "context": context,
                                      **render(env, config["chat_template"], context)})
    json.dump(out, fp=__import__("sys").stdout, ensure_ascii=False, indent=1)
    print()


if __name__ == "__main__":
    main()
