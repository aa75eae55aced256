#!/usr/bin/env python3
"""The side-by-side peer of `kvplan bench` on a GPU: the same model shape in
Hugging Face transformers, with random bf16 weights, at batch 1.

    python3 scripts/hf_peer.py --model-json MODEL.json [--prompt-len 512] [--gen 128] [--out FILE]

MODEL.json is the "model" object of `kvplan inspect --json ARTIFACT` (or the
whole inspect output). It measures, each mode warmed up first:

  prefill      one forward pass over a prompt of --prompt-len random tokens
               (logits for the last token only, as generate() asks for),
               torch.cuda.synchronize() around it; tokens/s of the best of
               --prefill-reps runs.
  eager        greedy generate() with the default (dynamic) cache, no compile.
  static_compiled
               greedy generate() with cache_implementation="static", which in
               transformers 5 compiles the decoding forward pass itself
               (torch.compile, mode "reduce-overhead": CUDA graphs) -- the
               documented way; transformers warns against compiling the model
               outside generate(). --compile-style manual instead wraps
               model.forward in torch.compile(mode="reduce-overhead") by hand.
               A failure here is reported as {"error": ...}, not raised.

Decode tokens/s, both modes: generate() is timed with 1 new token (the prefill
and the first token) and with GEN+1 new tokens (the same, then GEN decoding
steps), min_new_tokens = max_new_tokens so that EOS cannot stop it; each is the
best of --gen-reps runs, and

    decode_tok_s = GEN / (t(GEN+1 new tokens) - t(1 new token)).

So it counts only decoding steps, at positions prompt_len .. prompt_len+GEN-1,
with generate()'s own per-step overhead (logits processing, stopping checks)
included, as a user of generate() pays it.

Prints ONE JSON object on stdout (logs go to stderr) and writes it to --out
after every mode, so a run stopped by a time limit still leaves what it
measured. --dry-run prints the transformers config it would build and needs no
torch; --self-test checks that mapping, also without torch.
"""

import argparse
import json
import os
import signal
import sys
import time


# --------------------------------------------------------------------------
# The mapping from kvplan's model description to a transformers config (no
# torch needed).

def _model_object(doc):
    """Accepts the "model" object or the whole `kvplan inspect --json` output."""
    if isinstance(doc, dict) and isinstance(doc.get("model"), dict):
        return doc["model"]
    return doc


def hf_config(model, style="v5"):
    """Returns (model class name, config class name, config kwargs, notes).

    style "v5": RoPE as transformers 5's rope_parameters {"rope_type",
    "rope_theta", ...}; style "v4": rope_theta and rope_scaling, as in 4.x.
    """
    model = _model_object(model)
    arch = model.get("architecture", "llama")
    hidden = int(model["hidden_size"])
    heads = int(model["num_heads"])
    kv_heads = int(model.get("num_kv_heads") or heads)
    head_dim = int(model.get("head_dim") or hidden // heads)
    notes = []
    eos = model.get("eos_token_id", 2)
    if isinstance(eos, list) and len(eos) == 1:
        eos = eos[0]
    kw = {
        "vocab_size": int(model["vocab_size"]),
        "hidden_size": hidden,
        "intermediate_size": int(model["intermediate_size"]),
        "num_hidden_layers": int(model["num_layers"]),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": int(model.get("max_position_embeddings", 131072)),
        "rms_norm_eps": float(model.get("rms_norm_eps", 1e-5)),
        "tie_word_embeddings": bool(model.get("tie_word_embeddings", False)),
        "hidden_act": "silu",
        "bos_token_id": int(model.get("bos_token_id", 1)),
        "eos_token_id": eos,
        "use_cache": True,
    }

    rope = model.get("rope") or {}
    rope_type = rope.get("type", "default")
    theta = float(rope.get("theta", 10000.0))
    scaling = {}
    if rope_type == "llama3":
        scaling = {
            "factor": float(rope["factor"]),
            "low_freq_factor": float(rope["low_freq_factor"]),
            "high_freq_factor": float(rope["high_freq_factor"]),
            "original_max_position_embeddings": int(rope["original_max_position_embeddings"]),
        }
    elif rope_type != "default":
        raise ValueError(f"rope type {rope_type!r} has no transformers equivalent here")
    if style == "v5":
        kw["rope_parameters"] = {"rope_type": rope_type, "rope_theta": theta, **scaling}
    elif style == "v4":
        kw["rope_theta"] = theta
        if scaling:
            kw["rope_scaling"] = {"rope_type": "llama3", **scaling}
    else:
        raise ValueError(f"unknown style {style!r}")

    if arch in ("llama", "mistral"):
        model_cls, config_cls = "LlamaForCausalLM", "LlamaConfig"
        kw["head_dim"] = head_dim
        kw["attention_bias"] = bool(model.get("attention_bias", False))
        kw["mlp_bias"] = False
        if kw["attention_bias"]:
            notes.append("LlamaConfig.attention_bias also biases o_proj")
        if arch == "mistral":
            notes.append("mistral without a sliding window is a Llama")
        if hidden % heads:
            notes.append("transformers' LlamaConfig requires hidden_size % num_heads == 0")
    elif arch == "qwen2":
        model_cls, config_cls = "Qwen2ForCausalLM", "Qwen2Config"
        kw["use_sliding_window"] = False
        if head_dim != hidden // heads:
            kw["head_dim"] = head_dim  # Qwen2Attention reads config.head_dim when present
    else:
        raise ValueError(f"architecture {arch!r} is not mapped")
    return model_cls, config_cls, kw, notes


def self_test():
    """Checks the mapping on Llama-3.2-1B's and a Qwen2's descriptions."""
    llama = {"architecture": "llama", "hidden_size": 2048, "intermediate_size": 8192,
             "num_layers": 16, "num_heads": 32, "num_kv_heads": 8, "head_dim": 64,
             "vocab_size": 128256, "rms_norm_eps": 1e-05, "tie_word_embeddings": True,
             "max_position_embeddings": 131072, "bos_token_id": 128000,
             "eos_token_id": [128001, 128008, 128009], "attention_bias": False,
             "rope": {"type": "llama3", "theta": 500000.0, "factor": 32.0,
                      "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192}}
    m, c, kw, _ = hf_config({"model": llama})
    assert (m, c) == ("LlamaForCausalLM", "LlamaConfig")
    assert kw["num_hidden_layers"] == 16 and kw["num_key_value_heads"] == 8
    assert kw["head_dim"] == 64 and kw["tie_word_embeddings"] is True
    assert kw["eos_token_id"] == [128001, 128008, 128009]
    assert kw["rope_parameters"] == {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 8192}
    _, _, kw4, _ = hf_config(llama, style="v4")
    assert kw4["rope_theta"] == 500000.0 and kw4["rope_scaling"]["rope_type"] == "llama3"
    assert "rope_parameters" not in kw4

    # kvplan records factor fields for every RoPE; a default one must not scale.
    qwen = {"architecture": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
            "num_layers": 24, "num_heads": 14, "num_kv_heads": 2, "head_dim": 64,
            "vocab_size": 151936, "rms_norm_eps": 1e-06, "tie_word_embeddings": True,
            "attention_bias": True, "eos_token_id": [151643], "bos_token_id": 151643,
            "rope": {"type": "default", "theta": 1000000.0, "factor": 8.0,
                     "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192}}
    m, c, kw, _ = hf_config(qwen)
    assert (m, c) == ("Qwen2ForCausalLM", "Qwen2Config")
    assert kw["rope_parameters"] == {"rope_type": "default", "rope_theta": 1000000.0}
    assert "head_dim" not in kw and kw["eos_token_id"] == 151643
    assert kw["use_sliding_window"] is False
    _, _, kw4, _ = hf_config(qwen, style="v4")
    assert "rope_scaling" not in kw4
    try:
        hf_config(dict(llama, architecture="gpt2"))
        raise AssertionError("gpt2 accepted")
    except ValueError:
        pass
    print("hf_peer self-test: ok", file=sys.stderr)


# --------------------------------------------------------------------------
# Measurement (needs torch, transformers and a CUDA device).

def log(*a):
    print("hf_peer:", *a, file=sys.stderr, flush=True)


class Budget(Exception):
    pass


def measure(args, model_desc, result, save):
    t_start = time.perf_counter()
    import torch
    import transformers

    result["torch"] = torch.__version__
    result["transformers"] = transformers.__version__
    result["cuda"] = torch.version.cuda
    if not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device")
    result["device"] = torch.cuda.get_device_name(0)
    major = int(transformers.__version__.split(".")[0])
    style = "v5" if major >= 5 else "v4"
    model_cls_name, config_cls_name, kw, notes = hf_config(model_desc, style)
    result.update(model_class=model_cls_name, config_kwargs=kw, notes=notes)
    save()

    torch.manual_seed(0)
    config = getattr(transformers, config_cls_name)(**kw)
    model_cls = getattr(transformers, model_cls_name)
    dtype = torch.bfloat16
    # Initialise on the GPU, in bf16 (random weights, as kvplan bench --weights random:0).
    old_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("cuda"):
            model = model_cls(config)
    finally:
        torch.set_default_dtype(old_dtype)
    model.eval()
    if any(p.dtype != dtype for p in model.parameters()):
        model = model.to(dtype)
    result["params"] = sum(p.numel() for p in model.parameters())
    result["weights_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    result["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
    log(f"{model_cls_name} {result['params'] / 1e6:.1f}M parameters on {result['device']}, "
        f"torch {torch.__version__}, transformers {transformers.__version__}")
    save()

    vocab = kw["vocab_size"]
    gen = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(3, vocab, (1, args.prompt_len), generator=gen).to("cuda")
    mask = torch.ones_like(ids)
    eos = kw["eos_token_id"]
    pad = eos[0] if isinstance(eos, list) else eos

    def timed(fn, reps):
        times = []
        for _ in range(reps):
            torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return times

    # (a) prefill
    fwd_kwargs = {"input_ids": ids, "attention_mask": mask, "use_cache": True, "logits_to_keep": 1}

    def prefill():
        with torch.inference_mode():
            return model(**fwd_kwargs)

    try:
        prefill()
    except TypeError:  # an older transformers without logits_to_keep
        fwd_kwargs.pop("logits_to_keep")
        prefill()
    timed(prefill, 2)
    times = timed(prefill, args.prefill_reps)
    best = min(times)
    result["prefill"] = {
        "tok_s": args.prompt_len / best, "best_ms": best * 1e3,
        "median_ms": sorted(times)[len(times) // 2] * 1e3, "reps": args.prefill_reps,
        "logits_to_keep": fwd_kwargs.get("logits_to_keep"),
    }
    result["prefill_tok_s"] = result["prefill"]["tok_s"]
    log(f"prefill {args.prompt_len} tokens: {best * 1e3:.2f} ms, {result['prefill_tok_s']:.0f} tok/s")
    save()

    def generate_fn(new_tokens, extra):
        def run():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                 max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 pad_token_id=pad, **extra)
            assert out.shape[1] == args.prompt_len + new_tokens, out.shape
            return out
        return run

    def decode_rate(extra, warmups):
        one = generate_fn(1, extra)
        many = generate_fn(args.gen + 1, extra)
        for _ in range(warmups):
            many()
        one()
        t_one = timed(one, args.gen_reps)
        many()  # warm again after the short runs, in case they replaced the cache
        t_many = timed(many, args.gen_reps)
        dt = min(t_many) - min(t_one)
        if dt <= 0:
            raise RuntimeError(f"generate with {args.gen + 1} tokens was not slower than with 1")
        return {
            "decode_tok_s": args.gen / dt,
            "step_ms": dt / args.gen * 1e3,
            "generate_1_ms": min(t_one) * 1e3,
            f"generate_{args.gen + 1}_ms": min(t_many) * 1e3,
            "reps": args.gen_reps,
        }

    # (b) eager: the default dynamic cache, no compilation.
    try:
        result["eager"] = decode_rate({"disable_compile": True}, warmups=1)
    except (TypeError, ValueError) as e:  # a generate() without disable_compile
        if "disable_compile" not in str(e):
            raise
        result["eager"] = decode_rate({}, warmups=1)
    result["eager_decode_tok_s"] = result["eager"]["decode_tok_s"]
    log(f"eager decode: {result['eager']['step_ms']:.2f} ms/step, "
        f"{result['eager_decode_tok_s']:.1f} tok/s")
    save()

    # (c) static cache + torch.compile(mode="reduce-overhead")
    left = args.deadline_s - (time.perf_counter() - t_start)
    entry = {"compile_style": args.compile_style, "mode": "reduce-overhead"}
    if left < 45:
        entry["error"] = f"skipped: {left:.0f} s left of --deadline-s {args.deadline_s}"
        result["static_compiled"] = entry
        return

    def on_alarm(signum, frame):
        raise Budget(f"stopped at --deadline-s {args.deadline_s} (compiling or warming up)")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(max(1, int(left) - 10))
    t_compile = time.perf_counter()
    try:
        extra = {"cache_implementation": "static"}
        if args.compile_style == "auto":
            try:
                from transformers import CompileConfig
                extra["compile_config"] = CompileConfig(mode="reduce-overhead")
            except ImportError:
                from transformers.generation import CompileConfig
                extra["compile_config"] = CompileConfig(mode="reduce-overhead")
        else:
            model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
            if major >= 5:
                extra["disable_compile"] = True  # the model is compiled already
        entry.update(decode_rate(extra, warmups=2))
        entry["compiled_forward_seen"] = (args.compile_style == "manual"
                                          or getattr(model, "_compiled_call", None) is not None)
        if not entry["compiled_forward_seen"]:
            entry["warning"] = "generate() ran with the static cache but no compiled forward was seen"
        log(f"static+compiled decode: {entry['step_ms']:.2f} ms/step, "
            f"{entry['decode_tok_s']:.1f} tok/s")
    except BaseException as e:  # noqa: BLE001 -- any failure is a result here
        if isinstance(e, KeyboardInterrupt):
            raise
        entry["error"] = f"{type(e).__name__}: {e}"[:2000]
        log("static+compiled failed:", entry["error"])
    finally:
        signal.alarm(0)
        entry["wall_s"] = time.perf_counter() - t_compile
    result["static_compiled"] = entry
    if "decode_tok_s" in entry:
        result["compiled_decode_tok_s"] = entry["decode_tok_s"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-json", help="the model object of `kvplan inspect --json`, or all of it")
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--gen", type=int, default=128, help="decoding steps timed")
    p.add_argument("--out", help="also write the JSON object here (after every mode)")
    p.add_argument("--prefill-reps", type=int, default=5)
    p.add_argument("--gen-reps", type=int, default=3)
    p.add_argument("--compile-style", choices=["auto", "manual"], default="auto",
                   help="auto: generate() compiles with a static cache (transformers 5's way); "
                        "manual: torch.compile(model.forward) by hand")
    p.add_argument("--deadline-s", type=float, default=270,
                   help="the compiled mode is skipped or stopped to end within this many seconds")
    p.add_argument("--dry-run", action="store_true",
                   help="print the transformers config this would build; needs no torch")
    p.add_argument("--self-test", action="store_true", help="check the config mapping; needs no torch")
    args = p.parse_args(argv)

    if args.self_test:
        self_test()
        return 0
    if not args.model_json:
        p.error("--model-json is required")
    with open(args.model_json) as f:
        model_desc = _model_object(json.load(f))

    if args.dry_run:
        model_cls, config_cls, kw, notes = hf_config(model_desc, "v5")
        _, _, kw4, _ = hf_config(model_desc, "v4")
        print(json.dumps({"model_class": model_cls, "config_class": config_cls,
                          "config_kwargs": kw, "config_kwargs_transformers4": kw4,
                          "notes": notes}, indent=2))
        return 0

    result = {
        "peer": "hf-transformers", "model": model_desc.get("name"), "dtype": "bf16", "batch": 1,
        "prompt_len": args.prompt_len, "gen": args.gen,
        "method": ("prefill: best of N forward passes over prompt_len tokens (logits of the last "
                   "token only); decode: gen / (t(generate gen+1 new tokens) - t(generate 1 new "
                   "token)), best of N each, greedy, min_new_tokens=max_new_tokens"),
    }
    t0 = time.perf_counter()

    def save():
        result["elapsed_s"] = round(time.perf_counter() - t0, 2)
        if args.out:
            tmp = args.out + ".tmp"
            with open(tmp, "w") as f:
                json.dump(result, f, indent=2)
            os.replace(tmp, args.out)

    rc = 0
    # Whatever torch, triton or transformers print goes to stderr: stdout
    # carries the one JSON object.
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        measure(args, model_desc, result, save)
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, KeyboardInterrupt):
            raise
        result["error"] = f"{type(e).__name__}: {e}"[:2000]
        log("failed:", result["error"])
        rc = 1
    finally:
        sys.stdout.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)
    save()
    print(json.dumps(result))
    return rc


if __name__ == "__main__":
    sys.exit(main())
