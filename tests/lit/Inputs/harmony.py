#!/usr/bin/env python3
"""gpt-oss's harmony format end to end, on a vocabulary that has its tokens.

  harmony.py vocab SRC DST
      Llama 3's tokenizer.json (SRC) with seven reserved special tokens
      renamed to harmony's (<|start|> 128002, <|end|> 128003, <|message|>
      128004, <|channel|> 128005, <|constrain|> 128008, <|return|> 128010,
      <|call|> 128011), written to DST.
  harmony.py run KVPLAN MODEL
      `kvplan run MODEL --chat` for a few seeds, its answers drawn from
      harmony's markers, "analysis", "final" and "a" (--allowed-token-ids):
      once for the ids (--print-ids), once for the text; the stdout must be
      the content and the stderr the reasoning the ids spell by the format's
      rule (split() below), and an answer must go on past <|end|>.
  harmony.py serve KVPLAN MODEL
      `kvplan serve MODEL`: /tokenize's chat prompt is harmony's, and chat
      answers drawn as above come back as the ids spell them
      (reasoning_content and content).

Prints one line a check, for FileCheck.
"""
import json
import re
import subprocess
import sys
import urllib.request

START, END, MESSAGE, CHANNEL = 128002, 128003, 128004, 128005
RENAMED = {128002: "<|start|>", 128003: "<|end|>", 128004: "<|message|>",
           128005: "<|channel|>", 128008: "<|constrain|>", 128010: "<|return|>",
           128011: "<|call|>"}
TEXT = {35584: "analysis", 12085: "final", 64: "a"}
ALLOWED = [START, END, MESSAGE, CHANNEL] + list(TEXT)
MARKERS = {START, END, MESSAGE, CHANNEL}
N = 48


def split(ids):
    """(reasoning, content) the answer's ids spell: a header runs to
    <|message|>, its channel the text right after its first <|channel|>
    (<|end|> there is nothing, <|start|> begins it again); an analysis
    message's text is reasoning (a newline between two messages'), any
    other's content, to <|end|>; markers inside a message are nothing; no
    message at all: all of it content."""
    reasoning, content, everything = "", "", ""
    body = opened = analysis = thought = thinking = False
    header = []
    for t in ids:
        if t not in MARKERS:
            everything += TEXT[t]
        if not body:
            if t == START:
                header = []
            elif t == MESSAGE:
                channel = ""
                if CHANNEL in header:
                    for h in header[header.index(CHANNEL) + 1:]:
                        if h == CHANNEL:
                            break
                        channel += TEXT[h]
                analysis = channel == "analysis"
                body = opened = True
                header = []
            elif t != END:
                header.append(t)
            continue
        if t == END:
            body = False
            thought = thought or thinking
            thinking = False
        elif t not in MARKERS and analysis:
            reasoning += ("\n" if thought and not thinking else "") + TEXT[t]
            thinking = True
        elif t not in MARKERS:
            content += TEXT[t]
    return (reasoning, content) if opened else ("", everything)


def vocab(src, dst):
    j = json.load(open(src, encoding="utf-8"))
    for a in j["added_tokens"]:
        if a["id"] in RENAMED:
            a["content"] = RENAMED[a["id"]]
    json.dump(j, open(dst, "w", encoding="utf-8"), ensure_ascii=False)


def run(kvplan, model):
    flags = ["--chat", "-p", "hi", "-n", str(N), "--temperature", "1",
             "--allowed-token-ids", ",".join(map(str, ALLOWED)), "--presence-penalty", "2",
             "--logit-bias", "35584:1"]
    thought = answered = went_on = wrong = 0
    for seed in range(1, 9):
        common = [kvplan, "run", model, "--seed", str(seed)] + flags
        ids = subprocess.run(common + ["--print-ids"], capture_output=True, text=True,
                             check=True).stdout.split()
        prompt_and_answer = [int(t) for t in ids]
        answer = prompt_and_answer[-N:]
        out = subprocess.run(common, capture_output=True, text=True, check=True)
        reasoning, content = split(answer)
        # stdout: the content and a newline; stderr: the reasoning, a blank
        # line each time the content takes over (and a newline at the end).
        ok = (out.stdout == content + "\n" and
              out.stderr.replace("\n", "") == reasoning.replace("\n", ""))
        if not ok:
            wrong += 1
            print(f"seed {seed}: ids {answer}\n  stdout {out.stdout!r} want {content!r}\n"
                  f"  stderr {out.stderr!r} want {reasoning!r}")
        thought += bool(reasoning)
        answered += bool(content)
        went_on += END in answer[:-1]
    print(f"run: answers read {'as their ids spell them' if not wrong else 'WRONG'}; "
          f"{'some' if thought >= 2 else 'too few'} thought, "
          f"{'some' if answered >= 2 else 'too few'} answered, "
          f"{'went on past <|end|>' if went_on else 'never past <|end|>'}")


def serve(kvplan, model):
    server = subprocess.Popen([kvplan, "serve", model, "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        base = re.search(r"(http://\S+)", server.stdout.readline()).group(1)

        def post(path, body):
            req = urllib.request.Request(base + path, json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read())

        messages = [{"role": "user", "content": "hi"}]
        tokens = post("/tokenize", {"messages": messages})["tokens"]
        print("tokenize: starts", "<|start|>" if tokens[0] == START else tokens[0],
              "ends <|start|> assistant" if tokens[-2] == START else tokens[-3:])
        wrong = thought = 0
        for seed in range(1, 81):
            body = {"messages": messages, "max_tokens": N, "temperature": 1, "seed": seed,
                    "allowed_token_ids": ALLOWED, "presence_penalty": 2,
                    "logit_bias": {"35584": 1},
                    "return_token_ids": True}
            c = post("/v1/chat/completions", body)["choices"][0]
            reasoning, content = split(c["token_ids"])
            got = (c["message"].get("reasoning_content", ""), c["message"]["content"])
            if got != (reasoning, content):
                wrong += 1
                print(f"seed {seed}: {c['token_ids']} gave {got} want {(reasoning, content)}")
            thought += bool(reasoning)
        print(f"serve: {'answers read as their ids spell them' if not wrong else 'WRONG'}; "
              f"{'some' if thought >= 4 else 'too few'} thought")
    finally:
        server.terminate()
        server.wait(timeout=30)
        print("serve log:", server.stderr.readline().strip())


if __name__ == "__main__":
    {"vocab": vocab, "run": run, "serve": serve}[sys.argv[1]](*sys.argv[2:])
