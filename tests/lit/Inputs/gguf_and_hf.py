"""Writes one tiny random model twice: as a GGUF the way llama.cpp's
convert_hf_to_gguf.py writes it (metadata, the vocabulary of a tokenizer.json
with token types and merges, tensors under llama.cpp's names, a llama model's
q/k rows reordered for adjacent-pair RoPE, a qwen2 model's left as they are)
and as a Hugging Face folder (config.json, model.safetensors, the
tokenizer.json). Both must run token for token alike.

usage: gguf_and_hf.py ARCH TOKENIZER_JSON PRE GGUF_OUT HF_DIR [TOKENIZER_CONFIG]
  ARCH: llama, qwen2 (q/k/v biases), qwen3 (heads twice hidden_size /
  num_heads wide, q/k norms), phi3 (Phi-3's fused qkv_proj and gate_up_proj,
  the gate's rows first; llama.cpp's attn_qkv and a 2 x ffn ffn_up, rows
  left in rotate-half order; the same weights also written unfused as a
  llama folder, HF_DIR-llama) or phi3-longrope (phi3 with LongRoPE: short
  and long factors, a pretraining context of 64, the attention factor as
  convert_hf_to_gguf.py computes it) or phi4-mini (phi3-longrope with
  Phi-4-mini's partial RoPE: partial_rotary_factor 0.75, 6 of each head's 8
  dimensions turning, rope.dimension_count 6, 3 factors a list) or smollm3
  (SmolLM3: 4 layers, the fourth without RoPE, as no_rope_layers says and
  llama.cpp's smollm3 runs it; q/k rows reordered as a llama file's) or
  gemma3 (Gemma 3: 6 layers, the sixth global and the others under a
  window of 4, heads of 16 with q/k norms, post-norms, GeGLU; each norm
  weight stored as Hugging Face stores Gemma's, the offset from 1, and as
  llama.cpp's converter stores it, 1 + offset; q/k rows left in rotate-half
  order) or gemma2 (Gemma 2: the same layers without q/k norms, 4 of them,
  every other one global, scores and logits soft-capped at 2 and 3) or
  qwen3moe (Qwen3-MoE: qwen3's attention, each FFN 4 experts of 48, 2 a
  token, their weights renormalized; HF's mlp.gate and mlp.experts.E.*,
  llama.cpp's qwen3moe file with ffn_gate_inp and the stacked
  ffn_{gate,up,down}_exps) or mixtral (Mixtral: llama's attention with the
  same experts, 64 wide; HF's block_sparse_moe.gate and
  block_sparse_moe.experts.E.w1/w3/w2, llama.cpp's llama file with
  expert_count) or qwen2moe (Qwen2-MoE: qwen2's attention with 4 experts of
  48, 2 a token, their weights as routed, beside a shared expert of 80
  gated by sigmoid(x . gate); HF's mlp.shared_expert.* and
  mlp.shared_expert_gate ([1, hidden]), llama.cpp's qwen2moe file with
  ffn_{gate,up,down}_shexp and ffn_gate_inp_shexp, a vector; its head
  untied, as llama.cpp's qwen2moe requires) or mixtral-apart (the same as
  mixtral, the GGUF keeping each expert in a tensor of its own,
  blk.N.ffn_gate.E.weight, as llama.cpp wrote Mixtral before it stacked
  them) or qwen3-yarn (qwen3 with base 10000 and YaRN as Qwen's model cards
  extend its context: factor 4 over a pretraining context of 64; the
  GGUF's rope.scaling keys as the converter writes them) or gpt-oss
  (gpt-oss: 4 layers, the even ones under a window of 4, heads of 16 over a
  hidden size of 32, q/k/v and output biases, attention sinks, 4 experts of
  48 with router and expert biases, 2 a token, large enough that the
  clamped SwiGLU's limit of 7 bites; YaRN factor 4 over 64, truncate false
  in config.json; HF's mlp.router, mlp.experts.gate_up_proj ([experts,
  hidden, 2 x 48], the gate's and up's columns interleaved) and down_proj
  ([experts, 48, hidden]) with their biases, llama.cpp's gpt-oss file with
  attn_sinks, post_attention_norm before the experts and the stacked
  ffn_{gate,up,down}_exps with their biases, q/k rows left in rotate-half
  order) or gpt-oss-mxfp4 (the same with each expert's matrices in MXFP4, as
  OpenAI publishes them: the GGUF's ggml type 39, blocks of 32 with an E8M0
  scale byte, element j in byte j's low nibble and 16 + j in its high one;
  HF's mlp.experts.gate_up_proj_blocks and _scales ([experts, 2 x 48,
  hidden / 32, 16] and [experts, 2 x 48, hidden / 32], rows the gate's and
  up's in turn, element 2k in byte k's low nibble) and down_proj_blocks and
  _scales, quantization_config mxfp4; experts of 64, whole blocks) or
  gpt-oss-mxfp4-values (the same values, the GGUF's experts F32: what the
  MXFP4 blocks stand for, run without llama.cpp's MXFP4 arithmetic);
  PRE: tokenizer.ggml.pre ("llama-bpe", "qwen2",
  "deepseek-r1-qwen"). tokenizer.ggml.add_bos_token is true for llama (as
  Llama 3's GGUFs have it), false for the others. "deepseek-r1-qwen" (with
  Qwen's tokenizer.json) writes the GGUF's vocabulary as DeepSeek-R1's Qwen
  distills have it: DeepSeek's chat tokens in place of Qwen's first added
  ones, <think> and </think> among them, BOS <｜begin▁of▁sentence｜> added;
  the folder keeps Qwen's tokenizer.json. With TOKENIZER_CONFIG (a
  tokenizer_config.json), its chat_template is written as the converter
  writes it (tokenizer.chat_template) and the file is copied to the folder.

For benchmarks, KVPLAN_GGUF_SHAPE="HIDDEN,LAYERS,HEADS,KV_HEADS,HEAD_DIM,
EXPERTS,USED,EXPERT_FFN" (qwen3moe, gpt-oss; qwen2moe with a ninth, SHARED_FFN, and
HEAD_DIM HIDDEN / HEADS) writes the GGUF alone at that shape,
its matrices F16 random values of magnitude 1/64 to 1/32 (made from random
bytes, fast at any size; gpt-oss-mxfp4's experts random MXFP4 blocks of the
same magnitude, scale bytes 120 and 121: 2^-7 and 2^-6), and no Hugging Face folder.
"""
import json
import math
import os
import random
import shutil
import struct
import sys
from array import array

arch, tokenizer_path, pre, gguf_out, hf_dir = sys.argv[1:6]
tokenizer_config = sys.argv[6] if len(sys.argv) > 6 else None
apart = arch == "mixtral-apart"
if apart:
    arch = "mixtral"
mxfp4 = arch in ("gpt-oss-mxfp4", "gpt-oss-mxfp4-values")
mxfp4_blocks = arch == "gpt-oss-mxfp4"  # in the GGUF; else their values, F32
if mxfp4:
    arch = "gpt-oss"
gptoss = arch == "gpt-oss"
moe = arch in ("qwen3moe", "mixtral", "qwen2moe", "gpt-oss")
gguf_arch = {"mixtral": "llama", "qwen3moe": "qwen3moe", "qwen2moe": "qwen2moe",
             "gpt-oss": "gpt-oss"}.get(arch)
hf_type = {"qwen3moe": "qwen3_moe", "mixtral": "mixtral", "qwen2moe": "qwen2_moe",
           "gpt-oss": "gpt_oss"}.get(arch)
arch = {"qwen3moe": "qwen3", "mixtral": "llama", "qwen2moe": "qwen2"}.get(arch, arch)
experts, experts_used = 4, 2
expert_ffn = 64 if hf_type == "mixtral" or mxfp4 else 48  # MXFP4: whole blocks of 32
shared_ffn = 80 if hf_type == "qwen2_moe" else 0
partial = arch == "phi4-mini"
yarn = arch == "qwen3-yarn"
if yarn:
    arch = "qwen3"
longrope = arch in ("phi3-longrope", "phi4-mini")
if longrope:
    arch = "phi3"
qwen = arch in ("qwen2", "qwen3")
gemma = arch in ("gemma3", "gemma2")
neox = qwen or arch == "phi3" or gemma or gptoss  # q/k rows left in rotate-half order in the GGUF
add_bos = not qwen

tok = json.load(open(tokenizer_path, encoding="utf-8"))
vocab = {}
for text, i in tok["model"]["vocab"].items():
    vocab[i] = (text, 1)  # normal
for a in tok["added_tokens"]:
    vocab[a["id"]] = (a["content"], 3 if a["special"] else 4)  # control, user-defined
distill = pre == "deepseek-r1-qwen"
if distill:
    for i, text, kind in [(151643, "<｜end▁of▁sentence｜>", 3), (151644, "<｜User｜>", 4),
                          (151645, "<｜Assistant｜>", 4), (151646, "<｜begin▁of▁sentence｜>", 3),
                          (151647, "<|EOT|>", 4), (151648, "<think>", 4), (151649, "</think>", 4)]:
        vocab[i] = (text, kind)
    for i in list(vocab):
        if i > 151649 and vocab[i][0] in ("<think>", "</think>"):
            del vocab[i]  # Qwen3's own, elsewhere
n_vocab = max(vocab) + 1
if qwen:
    n_vocab = (n_vocab + 127) // 128 * 128  # padded like Qwen's embedding
tokens, types = [], []
for i in range(n_vocab):
    text, kind = vocab.get(i, ("[PAD%d]" % i, 5))  # unused
    tokens.append(text)
    types.append(kind)
merges = [m if isinstance(m, str) else m[0] + " " + m[1] for m in tok["model"]["merges"]]
special = {a["content"]: a["id"] for a in tok["added_tokens"]}
if distill:
    bos, eos, add_bos = 151646, 151643, True
elif qwen:
    bos, eos = special["<|endoftext|>"], special["<|im_end|>"]
else:
    bos, eos = special["<|begin_of_text|>"], special["<|eot_id|>"]

hidden, ffn, heads, kv_heads = 32, 64, 4, 2
layers = {"smollm3": 4, "gemma3": 6, "gemma2": 4, "gpt-oss": 4}.get(arch, 2)
head_dim = hidden // heads * (2 if arch in ("qwen3", "gemma3", "gemma2", "gpt-oss") else 1)
bench = os.environ.get("KVPLAN_GGUF_SHAPE")
if bench:
    assert hf_type in ("qwen3_moe", "qwen2_moe", "gpt_oss"), \
        "KVPLAN_GGUF_SHAPE is for qwen3moe, qwen2moe, gpt-oss"
    hidden, layers, heads, kv_heads, head_dim, experts, experts_used, expert_ffn = \
        map(int, bench.split(",")[:8])
    if hf_type == "qwen2_moe":
        shared_ffn = int(bench.split(",")[8])
        assert head_dim * heads == hidden, "a qwen2moe file's heads are HIDDEN / HEADS wide"
q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
theta, eps = (1000000.0, 1e-6) if qwen else (500000.0, 1e-5)
if yarn or gptoss:  # a base low enough that every pair turns within the prompt
    theta = 10000.0
# LongRoPE: head_dim / 2 factors each; max_position_embeddings 256 over a
# pretraining context of 64, so the attention factor is sqrt(1 + ln 4 / ln 64).
# Partial RoPE: one factor per rotated pair.
rotary_dim = head_dim * 3 // 4 if partial else head_dim
short_factor = [1.0, 1.25, 2.0, 3.5][:rotary_dim // 2]
long_factor = [1.0, 2.0, 6.0, 16.0][:rotary_dim // 2]
attn_factor = math.sqrt(1 + math.log(256 / 64) / math.log(64))
rng = random.Random(11)


class F16:
    """Random F16 values (benchmarks): sign, exponent 9 (1/64 to 1/32) and
    mantissa from random bytes, interleaved little-endian."""
    HIGH = bytes((b & 0x80) | (9 << 2) | (b & 3) for b in range(256))

    def __init__(self, n=0):
        self.raw = bytearray(2 * n)
        if n:
            self.raw[0::2] = os.urandom(n)
            self.raw[1::2] = os.urandom(n).translate(F16.HIGH)

    def extend(self, other):
        self.raw += other.raw

    def tobytes(self):
        return bytes(self.raw)


def rand(n, scale):
    if bench and n > hidden:  # matrices (vectors stay f32: the norms near 1)
        return F16(n)
    return array("f", (rng.uniform(-scale, scale) for _ in range(n)))


# Hugging Face tensors (PyTorch shapes), rows in rotate-half order.
hf = [("model.embed_tokens.weight", [n_vocab, hidden], rand(n_vocab * hidden, 1.0))]
for l in range(layers):
    p = "model.layers.%d." % l
    hf += [
        (p + "input_layernorm.weight", [hidden], rand(hidden, 0.2)),
        (p + "self_attn.q_proj.weight", [q_dim, hidden], rand(q_dim * hidden, 0.5)),
        (p + "self_attn.k_proj.weight", [kv_dim, hidden], rand(kv_dim * hidden, 0.5)),
        (p + "self_attn.v_proj.weight", [kv_dim, hidden], rand(kv_dim * hidden, 0.5)),
        (p + "self_attn.o_proj.weight", [hidden, q_dim], rand(q_dim * hidden, 0.5)),
        (p + "post_attention_layernorm.weight", [hidden], rand(hidden, 0.2)),
    ]
    if not moe:
        hf += [
            (p + "mlp.gate_proj.weight", [ffn, hidden], rand(ffn * hidden, 0.5)),
            (p + "mlp.up_proj.weight", [ffn, hidden], rand(ffn * hidden, 0.5)),
            (p + "mlp.down_proj.weight", [hidden, ffn], rand(ffn * hidden, 0.5)),
        ]
    elif gptoss:  # per expert here; gptoss_layout() packs them as HF's checkpoint has them
        m = p + "mlp."
        hf += [(m + "router.weight", [experts, hidden], rand(experts * hidden, 1.0)),
               (m + "router.bias", [experts], rand(experts, 0.5))]
        for e in range(experts):
            # Gates and ups large enough to pass the limit, downs small
            # enough that their biases count.
            for w, sh, scale in (("gate", [expert_ffn, hidden], 2.0),
                                 ("up", [expert_ffn, hidden], 2.0),
                                 ("down", [hidden, expert_ffn], 0.05)):
                hf += [(m + "experts.%d.%s_proj.weight" % (e, w), sh, rand(sh[0] * sh[1], scale)),
                       (m + "experts.%d.%s_proj.bias" % (e, w), sh[:1], rand(sh[0], 1.0))]
        hf += [(p + "self_attn.o_proj.bias", [hidden], rand(hidden, 0.5)),
               (p + "self_attn.sinks", [heads], rand(heads, 2.0))]
    elif hf_type == "mixtral":
        m = p + "block_sparse_moe."
        hf.append((m + "gate.weight", [experts, hidden], rand(experts * hidden, 1.0)))
        for e in range(experts):
            hf += [(m + "experts.%d.%s.weight" % (e, w), sh, rand(expert_ffn * hidden, 0.5))
                   for w, sh in (("w1", [expert_ffn, hidden]), ("w2", [hidden, expert_ffn]),
                                 ("w3", [expert_ffn, hidden]))]
    else:
        m = p + "mlp."
        hf.append((m + "gate.weight", [experts, hidden], rand(experts * hidden, 1.0)))
        for e in range(experts):
            hf += [(m + "experts.%d.%s_proj.weight" % (e, w), sh,
                    rand(expert_ffn * hidden, 0.5))
                   for w, sh in (("gate", [expert_ffn, hidden]), ("up", [expert_ffn, hidden]),
                                 ("down", [hidden, expert_ffn]))]
    if shared_ffn:
        m = p + "mlp.shared_expert"
        hf += [(m + ".%s_proj.weight" % w, sh, rand(shared_ffn * hidden, 0.5))
               for w, sh in (("gate", [shared_ffn, hidden]), ("up", [shared_ffn, hidden]),
                             ("down", [hidden, shared_ffn]))]
        hf.append((m + "_gate.weight", [1, hidden], rand(hidden, 1.0)))
    if arch == "qwen2" or gptoss:
        hf += [
            (p + "self_attn.q_proj.bias", [q_dim], rand(q_dim, 0.5)),
            (p + "self_attn.k_proj.bias", [kv_dim], rand(kv_dim, 0.5)),
            (p + "self_attn.v_proj.bias", [kv_dim], rand(kv_dim, 0.5)),
        ]
    if arch in ("qwen3", "gemma3"):  # q/k norms (not Gemma 2's)
        hf += [
            (p + "self_attn.q_norm.weight", [head_dim], rand(head_dim, 0.2)),
            (p + "self_attn.k_norm.weight", [head_dim], rand(head_dim, 0.2)),
        ]
    if gemma:  # Gemma's norms: after attention, before and after the FFN
        hf += [
            (p + "pre_feedforward_layernorm.weight", [hidden], rand(hidden, 0.2)),
            (p + "post_feedforward_layernorm.weight", [hidden], rand(hidden, 0.2)),
        ]

def fuse(tensors):
    """Phi-3's checkpoint: q, k and v rows in one qkv_proj, the gate's then
    the up projection's in one gate_up_proj."""
    by = dict((n, (sh, d)) for n, sh, d in tensors)
    out = []
    for n, sh, d in tensors:
        if n.endswith("self_attn.q_proj.weight"):
            p = n[:-len("q_proj.weight")]
            parts = [by[p + x + "_proj.weight"] for x in "qkv"]
            out.append((p + "qkv_proj.weight", [sum(x[0][0] for x in parts), sh[1]],
                        array("f", b"".join(x[1].tobytes() for x in parts))))
        elif n.endswith("mlp.gate_proj.weight"):
            p = n[:-len("gate_proj.weight")]
            up = by[p + "up_proj.weight"]
            out.append((p + "gate_up_proj.weight", [2 * sh[0], sh[1]],
                        array("f", d.tobytes() + up[1].tobytes())))
        elif not (n.endswith(("k_proj.weight", "v_proj.weight", "up_proj.weight"))):
            out.append((n, sh, d))
    return out


# Norms near 1, as trained ones are (Gemma's checkpoint stores the offset
# from 1, which its RMSNorm adds).
norm_shift = 0 if gemma else 1
hf = [(n, s, array("f", (norm_shift + x for x in d)) if n.endswith("norm.weight") else d)
      for n, s, d in hf]
hf.append(("model.norm.weight", [hidden], array("f", (norm_shift + x for x in rand(hidden, 0.2)))))
if shared_ffn or gptoss:  # llama.cpp's qwen2moe and gpt-oss read their own output.weight
    hf.append(("lm_head.weight", [n_vocab, hidden], rand(n_vocab * hidden, 1.0)))

unfused = hf
if arch == "phi3":
    hf = fuse(hf)

E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def mxfp4_rows(data, rows, cols):
    """Each row's blocks of 32 in MXFP4: an E8M0 scale e (2^(e - 127)) taking
    the block's largest magnitude to at most 6, and each element's nearest
    E2M1 code. Returns the codes, the scales and the values they stand for."""
    codes, scales, values = [], [], array("f")
    for r in range(rows):
        for g in range(0, cols, 32):
            block = data[r * cols + g:r * cols + g + 32]
            e = 127 + max(-126, math.ceil(math.log2(max(max(map(abs, block)), 1e-30) / 6)))
            scale = 2.0 ** (e - 127)
            c = [min(range(16), key=lambda i: abs(E2M1[i] * scale - x)) for x in block]
            codes.append(c)
            scales.append(e)
            values.extend(E2M1[i] * scale for i in c)
    return codes, scales, values


if mxfp4 and not bench:  # the experts' matrices rounded to MXFP4 (their values, then the blocks)
    quantized = {}
    for i, (n, sh, d) in enumerate(hf):
        if ".experts." in n and n.endswith(".weight"):
            codes, scales, values = mxfp4_rows(d, sh[0], sh[1])
            quantized[n] = (codes, scales)
            hf[i] = (n, sh, values)


def gptoss_layout(tensors):
    """gpt-oss's checkpoint: each layer's experts in three tensors applied as
    x @ W (transposed from nn.Linear): gate_up_proj [experts, hidden, 2 x ff]
    with the gate's column j at 2j and the up's at 2j + 1 (and its bias
    likewise), down_proj [experts, ff, hidden], down_proj_bias."""
    by = dict((n, (sh, d)) for n, sh, d in tensors)
    out = []
    for n, sh, d in tensors:
        if ".experts." not in n:
            out.append((n, sh, d))
        elif n.endswith(".experts.0.gate_proj.weight"):
            p = n[:-len("0.gate_proj.weight")]
            gate_up, gate_up_bias, down, down_bias = (array("f") for _ in range(4))
            for e in range(experts):
                g = by["%s%d.gate_proj.weight" % (p, e)][1]
                u = by["%s%d.up_proj.weight" % (p, e)][1]
                dn = by["%s%d.down_proj.weight" % (p, e)][1]
                for h in range(hidden):
                    for j in range(expert_ffn):
                        gate_up.extend((g[j * hidden + h], u[j * hidden + h]))
                gb, ub = by["%s%d.gate_proj.bias" % (p, e)][1], by["%s%d.up_proj.bias" % (p, e)][1]
                for j in range(expert_ffn):
                    gate_up_bias.extend((gb[j], ub[j]))
                for j in range(expert_ffn):
                    down.extend(dn[h * expert_ffn + j] for h in range(hidden))
                down_bias.extend(by["%s%d.down_proj.bias" % (p, e)][1])
            out += [(p + "gate_up_proj_bias", [experts, 2 * expert_ffn], gate_up_bias),
                    (p + "down_proj_bias", [experts, hidden], down_bias)]
            if not mxfp4:
                out += [(p + "gate_up_proj", [experts, hidden, 2 * expert_ffn], gate_up),
                        (p + "down_proj", [experts, expert_ffn, hidden], down)]
                continue
            # [experts, out, in / 32, 16] blocks and [experts, out, in / 32]
            # scales, the gate's and up's rows in turn; element 2k of a block
            # in byte k's low nibble.
            for name, parts in (("gate_up_proj", ("gate_proj", "up_proj")),
                                ("down_proj", ("down_proj",))):
                blocks, scales = bytearray(), bytearray()
                for e in range(experts):
                    q = [quantized["%s%d.%s.weight" % (p, e, part)] for part in parts]
                    n_rows = hidden if name == "down_proj" else expert_ffn
                    groups = len(q[0][0]) // n_rows
                    for r in range(n_rows):
                        for which in q:
                            for g in range(groups):
                                c = which[0][r * groups + g]
                                blocks += bytes(c[2 * k] | (c[2 * k + 1] << 4) for k in range(16))
                                scales.append(which[1][r * groups + g])
                in_dim = hidden if name == "gate_up_proj" else expert_ffn
                out_dim = len(parts) * (expert_ffn if name == "gate_up_proj" else hidden)
                out += [(p + name + "_blocks", [experts, out_dim, in_dim // 32, 16],
                         ("U8", bytes(blocks))),
                        (p + name + "_scales", [experts, out_dim, in_dim // 32],
                         ("U8", bytes(scales)))]
    return out


def write_safetensors(folder, tensors):
    os.makedirs(folder, exist_ok=True)
    header, offset = {}, 0
    for name, shape, data in tensors:
        dtype, size = (data[0], len(data[1])) if isinstance(data, tuple) else ("F32", 4 * len(data))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(folder, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for _, _, data in tensors:
            f.write(data[1] if isinstance(data, tuple) else data.tobytes())


# The Hugging Face folder.
if not bench:
    write_safetensors(hf_dir, gptoss_layout(hf) if gptoss else hf)
config = {
    "model_type": "gemma3_text" if arch == "gemma3" else hf_type or arch,
    "architectures": [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                       "qwen3": "Qwen3ForCausalLM", "phi3": "Phi3ForCausalLM",
                       "smollm3": "SmolLM3ForCausalLM", "gemma3": "Gemma3ForCausalLM",
                       "gemma2": "Gemma2ForCausalLM", "qwen3_moe": "Qwen3MoeForCausalLM",
                       "mixtral": "MixtralForCausalLM",
                       "qwen2_moe": "Qwen2MoeForCausalLM",
                       "gpt_oss": "GptOssForCausalLM"}[hf_type or arch]],
    "hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers,
    "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": n_vocab,
    "max_position_embeddings": 256, "rms_norm_eps": eps, "rope_theta": theta,
    "tie_word_embeddings": not (shared_ffn or gptoss), "torch_dtype": "float32",
    "bos_token_id": bos,
    "eos_token_id": eos,
}
if qwen:
    config["use_sliding_window"] = False
if yarn:  # as Qwen's model cards say to extend its context
    config["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0,
                              "original_max_position_embeddings": 64}
if hf_type == "qwen3_moe":
    config.update({"num_experts": experts, "num_experts_per_tok": experts_used,
                   "moe_intermediate_size": expert_ffn, "norm_topk_prob": True,
                   "decoder_sparse_step": 1, "mlp_only_layers": [],
                   "output_router_logits": False, "router_aux_loss_coef": 0.001})
if hf_type == "qwen2_moe":
    config.update({"num_experts": experts, "num_experts_per_tok": experts_used,
                   "moe_intermediate_size": expert_ffn, "norm_topk_prob": False,
                   "shared_expert_intermediate_size": shared_ffn,
                   "decoder_sparse_step": 1, "mlp_only_layers": [],
                   "output_router_logits": False, "router_aux_loss_coef": 0.001})
if mxfp4:
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
if gptoss:  # as openai/gpt-oss-20b's config.json
    config.update({"num_local_experts": experts, "num_experts_per_tok": experts_used,
                   "experts_per_token": experts_used, "intermediate_size": expert_ffn,
                   "head_dim": head_dim, "sliding_window": 4, "attention_bias": True,
                   "layer_types": ["sliding_attention" if l % 2 == 0 else "full_attention"
                                   for l in range(layers)],
                   "swiglu_limit": 7.0, "initial_context_length": 64,
                   "router_aux_loss_coef": 0.9, "output_router_logits": False,
                   "hidden_act": "silu", "rope_scaling": {
                       "rope_type": "yarn", "factor": 4.0, "beta_fast": 32.0, "beta_slow": 1.0,
                       "truncate": False, "original_max_position_embeddings": 64}})
if hf_type == "mixtral":
    config.update({"num_local_experts": experts, "num_experts_per_tok": experts_used,
                   "intermediate_size": expert_ffn, "sliding_window": None,
                   "router_jitter_noise": 0.0, "output_router_logits": False})
if arch == "smollm3":
    config.update({"no_rope_layers": [1, 1, 1, 0], "no_rope_layer_interval": 4,
                   "use_sliding_window": False, "sliding_window": None, "bos_token_id": None})
if arch == "qwen3":
    config.update({"head_dim": head_dim, "attention_bias": False, "sliding_window": None})
if gemma:  # the softmax over sqrt(head_dim): a GGUF records no query_pre_attn_scalar
    config.update({"head_dim": head_dim, "hidden_activation": "gelu_pytorch_tanh",
                   "query_pre_attn_scalar": head_dim, "sliding_window": 4,
                   "rope_scaling": None, "attn_logit_softcapping": None,
                   "final_logit_softcapping": None, "eos_token_id": [eos]})
if arch == "gemma3":
    config.update({"sliding_window_pattern": 6, "rope_local_base_freq": 10000.0})
if arch == "gemma2":
    config.update({"attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0})
if arch == "phi3":
    # Phi-3's own keys: the pretraining context beside rope_scaling, no
    # partial rotation, a window no shorter than the context.
    config.update({"original_max_position_embeddings": 64 if longrope else 256,
                   "partial_rotary_factor": 0.75 if partial else 1.0,
                   "sliding_window": 262144,
                   "embd_pdrop": 0.0, "resid_pdrop": 0.0, "rope_scaling": None})
    if longrope:
        config["rope_scaling"] = {"type": "longrope", "short_factor": short_factor,
                                  "long_factor": long_factor}
folders = [(hf_dir, config)]
if arch == "phi3" and not longrope:
    # The same weights unfused, as a llama: a model kvplan already runs.
    write_safetensors(hf_dir + "-llama", unfused)
    llama = dict(config, model_type="llama", architectures=["LlamaForCausalLM"])
    for key in ("original_max_position_embeddings", "partial_rotary_factor", "sliding_window",
                "embd_pdrop", "resid_pdrop"):
        del llama[key]
    folders.append((hf_dir + "-llama", llama))
for folder, c in folders if not bench else []:
    json.dump(c, open(os.path.join(folder, "config.json"), "w"))
    shutil.copy(tokenizer_path, os.path.join(folder, "tokenizer.json"))
    if tokenizer_config:
        shutil.copy(tokenizer_config, os.path.join(folder, "tokenizer_config.json"))


# The GGUF: llama.cpp's names; a llama model's q/k rows reordered as
# convert_hf_to_gguf.py's LlamaModel.permute does, a qwen2 model's not.
def gguf_name(hf_name):
    if hf_name.startswith("rope_factors_"):
        return hf_name
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    layer, rest = hf_name[len("model.layers."):].split(".", 1)
    return "blk.%s.%s" % (layer, {
        "self_attn.qkv_proj.weight": "attn_qkv.weight", "mlp.gate_up_proj.weight": "ffn_up.weight",
        "input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.o_proj.weight": "attn_output.weight", "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.o_proj.bias": "attn_output.bias", "self_attn.sinks": "attn_sinks.weight",
        "mlp.router.weight": "ffn_gate_inp.weight", "mlp.router.bias": "ffn_gate_inp.bias",
        "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.q_norm.weight": "attn_q_norm.weight",
        "self_attn.k_norm.weight": "attn_k_norm.weight",
        "post_attention_layernorm.weight":
            "post_attention_norm.weight" if gemma or gptoss else "ffn_norm.weight",
        "pre_feedforward_layernorm.weight": "ffn_norm.weight",
        "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight", "mlp.gate.weight": "ffn_gate_inp.weight",
        "block_sparse_moe.gate.weight": "ffn_gate_inp.weight",
        "mlp.shared_expert.gate_proj.weight": "ffn_gate_shexp.weight",
        "mlp.shared_expert.up_proj.weight": "ffn_up_shexp.weight",
        "mlp.shared_expert.down_proj.weight": "ffn_down_shexp.weight",
        "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight"}[rest])


def stack_experts(tensors):
    """llama.cpp's converter stacks each layer's experts into one tensor of
    [experts, rows, cols] (ffn_gate_exps, ffn_up_exps, ffn_down_exps), in the
    place of the first expert's."""
    names = {"gate_proj": "gate", "up_proj": "up", "down_proj": "down",
             "w1": "gate", "w3": "up", "w2": "down"}
    out, stacks = [], {}
    for name, shape, data in tensors:
        if ".experts." not in name:
            out.append((name, shape, data))
            continue
        head, rest = name.split(".experts.")
        e, which = rest.split(".")[:2]
        layer = head[len("model.layers."):].split(".")[0]
        key = "blk.%s.ffn_%s_exps.%s" % (layer, names[which], name.rsplit(".", 1)[1])
        if key not in stacks:
            stacks[key] = ([experts] + shape, F16() if isinstance(data, F16) else array("f"))
            out.append((key, None, None))
        stacks[key][1].extend(data)
    return [(n, stacks[n][0], stacks[n][1]) if s is None else (n, s, d) for n, s, d in out]


def llama_permute(data, rows, cols):
    # Row (h, j + e*d/2) of a head moves to (h, 2j + e).
    out = array("f", data)
    half = head_dim // 2
    for h in range(rows // head_dim):
        for j in range(half):
            for e in range(2):
                src, dst = h * head_dim + j + e * half, h * head_dim + 2 * j + e
                out[dst * cols:(dst + 1) * cols] = data[src * cols:(src + 1) * cols]
    return out


def gstr(s):
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


meta = []


def kv(key, vtype, payload):
    meta.append(gstr(key) + struct.pack("<I", vtype) + payload)


def u32(key, v):
    kv(key, 4, struct.pack("<I", v))


def f32(key, v):
    kv(key, 6, struct.pack("<f", v))


arch = gguf_arch or arch  # the metadata's prefix
kv("general.architecture", 8, gstr(arch))
kv("general.name", 8, gstr("tiny " + (hf_type if moe else arch)))
for key, v in [("block_count", layers), ("context_length", 256), ("embedding_length", hidden),
               ("feed_forward_length", expert_ffn if hf_type == "mixtral" else ffn),
               ("attention.head_count", heads), ("attention.head_count_kv", kv_heads)]:
    u32(arch + "." + key, v)
if moe:
    u32(arch + ".expert_count", experts)
    u32(arch + ".expert_used_count", experts_used)
if arch in ("qwen3moe", "qwen2moe", "gpt-oss"):
    u32(arch + ".expert_feed_forward_length", expert_ffn)
if arch == "qwen2moe":
    u32(arch + ".expert_shared_feed_forward_length", shared_ffn)
if arch == "phi3":
    u32(arch + ".rope.dimension_count", rotary_dim)
    u32(arch + ".attention.sliding_window", 262144)
    if longrope:
        u32(arch + ".rope.scaling.original_context_length", 64)
        f32(arch + ".rope.scaling.attn_factor", attn_factor)
if arch in ("qwen3", "qwen3moe", "gemma3", "gemma2", "gpt-oss"):
    u32(arch + ".attention.key_length", head_dim)
    u32(arch + ".attention.value_length", head_dim)
if gemma or gptoss:
    u32(arch + ".attention.sliding_window", 4)
if arch == "gemma2":
    f32(arch + ".attn_logit_softcapping", 2.0)
    f32(arch + ".final_logit_softcapping", 3.0)
f32(arch + ".rope.freq_base", theta)
if yarn or gptoss:  # as convert_hf_to_gguf.py writes Qwen's YaRN (and gpt-oss's)
    kv(arch + ".rope.scaling.type", 8, gstr("yarn"))
    f32(arch + ".rope.scaling.factor", 4.0)
    u32(arch + ".rope.scaling.original_context_length", 64)
f32(arch + ".attention.layer_norm_rms_epsilon", eps)
kv("tokenizer.ggml.model", 8, gstr("gpt2"))
kv("tokenizer.ggml.pre", 8, gstr(pre))
kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, len(tokens)) + b"".join(map(gstr, tokens)))
kv("tokenizer.ggml.token_type", 9,
   struct.pack("<IQ", 5, len(types)) + struct.pack("<%di" % len(types), *types))
kv("tokenizer.ggml.merges", 9, struct.pack("<IQ", 8, len(merges)) + b"".join(map(gstr, merges)))
u32("tokenizer.ggml.bos_token_id", bos)
u32("tokenizer.ggml.eos_token_id", eos)
kv("tokenizer.ggml.add_bos_token", 7, struct.pack("<B", 1 if add_bos else 0))
if tokenizer_config:
    kv("tokenizer.chat_template", 8,
       gstr(json.load(open(tokenizer_config, encoding="utf-8"))["chat_template"]))

directory, blobs, offset = [], [], 0
if longrope:  # F32 tensors of head_dim / 2, as the converter writes them
    hf = hf + [("rope_factors_long.weight", [len(long_factor)], array("f", long_factor)),
               ("rope_factors_short.weight", [len(short_factor)], array("f", short_factor))]
if moe and not apart:
    hf = stack_experts(hf)
if apart:  # blk.N.ffn_gate.E.weight, ...
    names = {"w1": "gate", "w3": "up", "w2": "down"}
    hf = [("blk.%s.ffn_%s.%s.weight" % (n.split(".")[2], names[n.split(".")[6]], n.split(".")[5]),
           sh, d) if ".experts." in n else (n, sh, d) for n, sh, d in hf]
# MXFP4 stacks as ggml stores them: per block the E8M0 byte, then element j
# in byte j's low nibble and 16 + j in its high one.
mx_gguf = {}
if mxfp4_blocks and bench:  # random blocks: codes, and scales 2^-7 or 2^-6 (as the F16 weights)
    scale_of = bytes(120 + (b & 1) for b in range(256))
    for l in range(layers):
        for key in ("gate", "up", "down"):
            n = experts * expert_ffn * hidden // 32
            b, codes = bytearray(17 * n), os.urandom(16 * n)
            b[0::17] = os.urandom(n).translate(scale_of)
            for j in range(16):
                b[1 + j::17] = codes[j::16]
            mx_gguf["blk.%d.ffn_%s_exps.weight" % (l, key)] = bytes(b)
elif mxfp4_blocks:
    for l in range(layers):
        for part, key in (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down")):
            b = bytearray()
            for e in range(experts):
                codes, scales = quantized["model.layers.%d.mlp.experts.%d.%s.weight" % (l, e, part)]
                for c, sc in zip(codes, scales):
                    b.append(sc)
                    b += bytes(c[j] | (c[j + 16] << 4) for j in range(16))
            mx_gguf["blk.%d.ffn_%s_exps.weight" % (l, key)] = bytes(b)
for name, shape, data in hf:
    if not neox and (".q_proj.weight" in name or ".k_proj.weight" in name):
        data = llama_permute(data, shape[0], shape[1])
    if gemma and name.endswith("norm.weight"):  # the converter's 1 + offset
        data = array("f", (1 + x for x in data))
    dims = list(reversed(shape))
    if name.endswith("shared_expert_gate.weight"):
        dims = [hidden]  # llama.cpp's ffn_gate_inp_shexp: a vector
    gtype = 39 if name in mx_gguf else 1 if isinstance(data, F16) else 0
    directory.append(gstr(name if name.startswith("blk.") else gguf_name(name)) +
                     struct.pack("<I", len(dims)) +
                     struct.pack("<%dQ" % len(dims), *dims) +
                     struct.pack("<IQ", gtype, offset))
    blob = mx_gguf[name] if name in mx_gguf else data.tobytes()
    blob += b"\0" * (-len(blob) % 32)
    blobs.append(blob)
    offset += len(blob)
head = b"GGUF" + struct.pack("<IQQ", 3, len(directory), len(meta)) + b"".join(meta) + \
    b"".join(directory)
head += b"\0" * (-len(head) % 32)
with open(gguf_out, "wb") as f:
    f.write(head)
    for blob in blobs:
        f.write(blob)
