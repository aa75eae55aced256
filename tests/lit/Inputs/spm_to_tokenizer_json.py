"""Writes the tokenizer.json that transformers' LlamaConverter (legacy form)
makes of a sentencepiece BPE .model, without the sentencepiece package: the
pieces as the vocabulary; as merges, each split of a piece into two pieces,
ordered by the piece's score (highest first), then by the parts' lengths
(longest first), then by their ids; unknown and control pieces as special
added tokens; Prepend and Replace normalizers; the decoder Replace,
ByteFallback, Fuse, Strip; BOS from the post-processor.

usage: spm_to_tokenizer_json.py MODEL > tokenizer.json
"""
import json
import struct
import sys


def fields(buf):
    """(field number, wire type, value) of each field of a protobuf message."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("unsupported protobuf wire type %d" % wire)
        yield number, wire, value


def varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result, i


NORMAL, UNKNOWN, CONTROL, BYTE = 1, 2, 3, 6
pieces = []  # (text, score, type), in id order: ModelProto field 1
for number, _, value in fields(open(sys.argv[1], "rb").read()):
    if number == 1:
        text, score, kind = "", 0.0, NORMAL
        for n, _, v in fields(value):
            if n == 1:
                text = v.decode("utf-8")
            elif n == 2:
                score = struct.unpack("<f", v)[0]
            elif n == 3:
                kind = v
        pieces.append((text, score, kind))

vocab = {text: i for i, (text, _, _) in enumerate(pieces)}
merges = []
for text, score, _ in pieces:
    local = [(text[:k], text[k:], score) for k in range(1, len(text))
             if text[:k] in vocab and text[k:] in vocab]
    merges += sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]]))
merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)

meta = "\u2581"
bos = next(t for t, _, k in pieces if t == "<s>")
json.dump({
    "version": "1.0",
    "added_tokens": [{"id": i, "content": t, "special": True, "normalized": False,
                      "lstrip": False, "rstrip": False, "single_word": False}
                     for i, (t, _, k) in enumerate(pieces) if k in (UNKNOWN, CONTROL)],
    "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": meta},
        {"type": "Replace", "pattern": {"String": " "}, "content": meta}]},
    "pre_tokenizer": None,
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                                  {"Sequence": {"id": "A", "type_id": 0}}],
                       "special_tokens": {bos: {"id": bos, "ids": [vocab[bos]], "tokens": [bos]}}},
    "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": meta}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "fuse_unk": True,
              "byte_fallback": any(k == BYTE for _, _, k in pieces),
              "vocab": vocab, "merges": [[a, b] for a, b, _ in merges]},
}, sys.stdout, ensure_ascii=False)
