#!/usr/bin/env python3
"""Combines what scripts/gpu-check.sh measured into OUT/gpu-check.json and
OUT/gpu-check.md, and prints the markdown table (last, on stdout).

    python3 scripts/gpu_check_report.py --work WORK --out OUT [--canned]

Reads, each optional (a missing or broken one is reported, never fatal):
  WORK/steps.tsv        step <TAB> status <TAB> seconds <TAB> note, one a line
  WORK/env.txt          the machine (nvidia-smi, nvcc, versions)
  WORK/gpu-tests.xml    ctest --output-junit (else OUT/gpu-tests.log is parsed)
  WORK/model.json       the model object the peer was given
  OUT/kvplan-bench.json `kvplan bench --json`
  OUT/kvplan-bench-batch8.json  the same shape, 8 sequences at once (--batch 8)
  OUT/kvplan-bench-int8.json, OUT/kvplan-bench-int4.json  int8 and int4 weights
  OUT/kvplan-bench-moe.json  a mixture of experts (Qwen3-30B-A3B's layers, the
                        optional moe step)
  OUT/kvplan-bench-rows{1,16,32}.json  1, 16 and 32 sequences in a plan for
                        64: the copy of decode serving them against decode itself (the
                        optional rows step)
  OUT/kvplan-before.json  the before step: each bench artifact of .gpukit/before against the
                        kit's of the same name, alternately ({name: {before: [...],
                        after: [...]}}, each run's decode step, greedy and sampled)
  OUT/hf-peer.json      scripts/hf_peer.py
  OUT/kernel-profile.tsv  KVPLAN_CUDA_PROFILE's op times from the batch-1 and batch-8 benches
                        (entry, rows, op, step, kind, kernel, ms a line)
  .gpukit/MANIFEST.json the kit
--canned marks every figure as canned input (KVPLAN_GPU_CHECK_DRY=1), not a
measurement. Exit status: 0.
"""

import argparse
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

# Issue 11: decode at 80% of the device-to-device copy bandwidth or more.
ROOFLINE_GOAL = 0.80
GRAPH_GOAL = 1.2
# Decode at batch 8: 6 times the tokens a second of batch 1 or more.
BATCH_GOAL = 6.0


def source_digest(files, root="."):
    """SHA-256 over the named files' names and contents (a missing one counts
    as missing); scripts/gpu-kit.sh records it, gpu-check.sh compares."""
    import hashlib
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0")
        try:
            with open(os.path.join(root, name), "rb") as fh:
                h.update(hashlib.sha256(fh.read()).digest())
        except OSError:
            h.update(b"missing")
    return h.hexdigest()


def check_kit_sources(kit):
    """Prints whether this tree's sources are those the kit's artifacts came from."""
    manifest = os.path.join(kit, "MANIFEST.json")
    listing = os.path.join(kit, "source-files.txt")
    if not (os.path.exists(manifest) and os.path.exists(listing)):
        print("kit sources: no record in the kit")
        return 0
    want = json.load(open(manifest)).get("source_digest")
    files = [l.strip() for l in open(listing) if l.strip()]
    have = source_digest(files)
    if want == have:
        print(f"kit sources: the artifacts were compiled from these sources ({len(files)} files)")
        return 0
    print("kit sources: WARNING: the artifacts in the kit were compiled from OTHER sources than "
          "this tree's (plan/, runtime/, codegen/, tools/ ...): rerun scripts/gpu-kit.sh --artifacts-only "
          "if the artifact format changed")
    return 1


def read_json(path, problems):
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            text = f.read()
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            # The last line that is a JSON object (a tool may print more).
            for line in reversed(text.splitlines()):
                line = line.strip()
                if line.startswith("{"):
                    try:
                        return json.loads(line)
                    except json.JSONDecodeError:
                        continue
            raise
    except (OSError, ValueError) as e:
        problems.append(f"{os.path.basename(path)}: unreadable ({e})")
        return None


def read_steps(path):
    steps = {}
    if os.path.exists(path):
        for line in open(path):
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 3:
                steps[parts[0]] = {"status": parts[1], "seconds": _num(parts[2]),
                                   "note": parts[3] if len(parts) > 3 else ""}
    return steps


def _num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def test_name(case):
    """Suite.Test: ctest names its cases so, GoogleTest gives the suite apart."""
    name = case.get("name") or ""
    suite = case.get("classname") or ""
    return name if "." in name or not suite else f"{suite}.{name}"


def failed_tests(xml_path):
    """The failed cases of a JUnit or GoogleTest XML file, as a --gtest_filter."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError):
        return ""
    names = [test_name(c) for c in root.iter("testcase")
             if c.find("failure") is not None or c.find("error") is not None
             or c.get("status") == "fail"]
    return ":".join(n for n in names if n)


def merge_gtest(folder, out_path, log_path):
    """One JUnit file from GoogleTest's per-process XML files in `folder`;
    a test the log says exited without writing one (a crash, a timeout) is
    added as failed with its exit status."""
    suite = ET.Element("testsuite", name="gpu")
    seen = set()
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        try:
            root = ET.parse(os.path.join(folder, name)).getroot()
        except (ET.ParseError, OSError):
            continue
        for case in root.iter("testcase"):
            seen.add(test_name(case))
            suite.append(case)
    if os.path.exists(log_path):
        for line in open(log_path, errors="replace"):
            m = re.match(r"(EXIT (\d+)|NOT RUN \(out of time\)): (\S+)", line)
            if m and m.group(3) not in seen:
                seen.add(m.group(3))
                case = ET.SubElement(suite, "testcase", name=m.group(3), status="run")
                why = f"exited {m.group(2)} without a report" if m.group(2) else "not run: out of time"
                ET.SubElement(case, "failure", message=why)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(out_path)
    return len(seen)


def read_tests(xml_path, log_path):
    """Counts from ctest's JUnit file, else from its log."""
    if os.path.exists(xml_path):
        try:
            root = ET.parse(xml_path).getroot()
            cases = root.iter("testcase")
            passed, failed, skipped, failed_names, skip_reasons = 0, 0, 0, [], []
            for c in cases:
                # ctest's JUnit (status) or GoogleTest's own XML (result).
                status = c.get("status", "run")
                if c.find("failure") is not None or c.find("error") is not None or status == "fail":
                    failed += 1
                    failed_names.append(test_name(c))
                elif (c.find("skipped") is not None or status in ("notrun", "disabled")
                      or c.get("result") == "skipped"):
                    skipped += 1
                    out = c.findtext("system-out") or ""
                    m = re.search(r"Skipped\s*\n\s*(.+)", out)
                    sk = c.find("skipped")
                    why = m.group(1) if m else (sk.get("message") if sk is not None else "") or ""
                    # GoogleTest's message starts with the file and line.
                    why = (why.strip().splitlines() or [""])[-1]
                    if why and why not in skip_reasons:
                        skip_reasons.append(why.strip()[:200])
                else:
                    passed += 1
            return {"source": "junit", "passed": passed, "failed": failed, "skipped": skipped,
                    "total": passed + failed + skipped, "failed_names": failed_names,
                    "skip_reasons": skip_reasons}
        except (ET.ParseError, OSError):
            pass
    if os.path.exists(log_path):
        text = open(log_path, errors="replace").read()
        m = re.search(r"(\d+)% tests passed, (\d+) tests? failed out of (\d+)", text)
        if m:
            failed, total = int(m.group(2)), int(m.group(3))
            names = re.findall(r"^\s*\d+ - (\S+) \(", text.split("The following tests FAILED:")[-1],
                               re.M) if failed else []
            skipped = len(re.findall(r"\*\*\*Skipped|Not Run|Disabled", text))
            return {"source": "log", "passed": total - failed - skipped, "failed": failed,
                    "skipped": skipped, "total": total, "failed_names": names}
        if "No tests were found" in text:
            return {"source": "log", "passed": 0, "failed": 0, "skipped": 0, "total": 0,
                    "failed_names": [], "note": "no test has the label gpu"}
    return None


KERNEL_FAMILY = re.compile(r"^([a-z_]+?)(_(bf16|f16|f32|int8|int4|[0-9]).*)?$")


def read_profile(path, problems):
    """KVPLAN_CUDA_PROFILE's lines, summed by (entry, rows): the total time and
    each kernel family's (the name without its types and dimensions), largest
    first, of the first profile of each (an op already seen is another
    executor's profile of the same call); None where there is no file."""
    if not os.path.exists(path):
        return None
    groups = {}
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            f = line.rstrip("\n").split("\t")
            ms = _num(f[6]) if len(f) == 7 else None
            if ms is None:
                problems.append(f"{os.path.basename(path)} line {n}: not 7 fields ending in a time")
                continue
            key = f"{f[0]} ({f[1]} row{'' if f[1] == '1' else 's'})"
            g = groups.setdefault(key, {"ms": 0.0, "ops": 0, "families": {}, "seen": set()})
            if f[2] in g["seen"]:
                continue  # another executor's profile of the same call: the first one counts
            g["seen"].add(f[2])
            fam = KERNEL_FAMILY.match(f[5])
            fam = fam.group(1) if fam else f[5]
            g["ms"] += ms
            g["ops"] += 1
            g["families"][fam] = g["families"].get(fam, 0.0) + ms
    for g in groups.values():
        del g["seen"]
        g["families"] = dict(sorted(g["families"].items(), key=lambda kv: -kv[1]))
    return groups


def goal(text, value, threshold, ok, unknown_why=None, fmt="{:.3g}"):
    if value is None or ok is None:
        return {"goal": text, "status": "unknown", "why": unknown_why or "not measured"}
    return {"goal": text, "status": "met" if ok else "not met",
            "value": value, "threshold": threshold,
            "why": f"{fmt.format(value)} vs {fmt.format(threshold) if isinstance(threshold, (int, float)) else threshold}"}


def f(x, spec="{:,.1f}", na="n/a"):
    return na if x is None else spec.format(x)


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work")
    p.add_argument("--out")
    p.add_argument("--kit", default=".gpukit")
    p.add_argument("--canned", action="store_true")
    p.add_argument("--check-kit-sources", action="store_true",
                   help="only say whether this tree's sources are those the kit's artifacts came from")
    p.add_argument("--failed-tests", metavar="XML",
                   help="only print the failed tests of a JUnit or GoogleTest XML file, "
                        "as a --gtest_filter")
    p.add_argument("--merge-gtest", nargs=3, metavar=("FOLDER", "OUT_XML", "LOG"),
                   help="only merge the per-test GoogleTest XML files of FOLDER into OUT_XML")
    args = p.parse_args(argv)
    if args.merge_gtest:
        print(f"gpu tests: {merge_gtest(*args.merge_gtest)} cases in {args.merge_gtest[1]}")
        return 0
    if args.failed_tests:
        print(failed_tests(args.failed_tests))
        return 0
    if args.check_kit_sources:
        check_kit_sources(args.kit)
        return 0
    if not (args.work and args.out):
        p.error("--work and --out are required")

    problems = []
    steps = read_steps(os.path.join(args.work, "steps.tsv"))
    bench = read_json(os.path.join(args.out, "kvplan-bench.json"), problems)
    more = {}  # the other benches: batch8, int8, int4, moe, rows1, rows16, rows32
    for key in ("batch8", "int8", "int4", "moe", "rows1", "rows16", "rows32"):
        more[key] = read_json(os.path.join(args.out, f"kvplan-bench-{key}.json"), problems)
        if more[key] is not None and not isinstance(more[key], dict):
            problems.append(f"kvplan-bench-{key}.json: not a JSON object")
            more[key] = None
    before = read_json(os.path.join(args.out, "kvplan-before.json"), problems)
    if before is not None and not isinstance(before, dict):
        problems.append("kvplan-before.json: not a JSON object")
        before = None
    peer = read_json(os.path.join(args.out, "hf-peer.json"), problems)
    profile = read_profile(os.path.join(args.out, "kernel-profile.tsv"), problems)
    model = read_json(os.path.join(args.work, "model.json"), problems)
    manifest = read_json(os.path.join(args.kit, "MANIFEST.json"), problems)
    tests = read_tests(os.path.join(args.work, "gpu-tests.xml"),
                       os.path.join(args.out, "gpu-tests.log"))
    env = None
    if os.path.exists(os.path.join(args.work, "env.txt")):
        env = open(os.path.join(args.work, "env.txt"), errors="replace").read()[-8000:]
    if bench is not None and not isinstance(bench, dict):
        problems.append("kvplan-bench.json: not a JSON object")
        bench = None
    if peer is not None and not isinstance(peer, dict):
        problems.append("hf-peer.json: not a JSON object")
        peer = None

    b = bench or {}
    pr = peer or {}
    decode = _num(b.get("decode_tok_s"))
    roof = _num(b.get("decode_roofline_fraction"))
    speedup = _num(b.get("graph_speedup"))
    step_graph = _num(b.get("decode_step_ms_graph"))
    step_eager = _num(b.get("decode_step_ms_eager"))
    if speedup is None and step_graph and step_eager:
        speedup = step_eager / step_graph
    prefill = _num(b.get("prefill_tok_s"))
    bw = _num(b.get("bandwidth_gb_s"))
    hf_eager = _num(pr.get("eager_decode_tok_s"))
    hf_comp = _num(pr.get("compiled_decode_tok_s"))
    hf_prefill = _num(pr.get("prefill_tok_s"))
    comp_entry = pr.get("static_compiled") if isinstance(pr.get("static_compiled"), dict) else {}
    comp_err = comp_entry.get("error")
    peer_err = pr.get("error")
    batch8 = _num((more["batch8"] or {}).get("decode_tok_s"))
    batch_speedup = ratio(batch8, decode)
    peer_why = ("peer failed: " + (peer_err or comp_err or "no result")) if peer is not None else \
        "peer failed: no hf-peer.json (" + steps.get("peer", {}).get("status", "not run") + ")"

    goals = [
        goal(f"kvplan decode >= {ROOFLINE_GOAL:.0%} of the bandwidth roofline", roof, ROOFLINE_GOAL,
             None if roof is None else roof >= ROOFLINE_GOAL, "no decode_roofline_fraction from kvplan bench",
             fmt="{:.1%}"),
        goal(f"CUDA graph decode step >= {GRAPH_GOAL}x faster than eager", speedup, GRAPH_GOAL,
             None if speedup is None else speedup >= GRAPH_GOAL, "no graph_speedup from kvplan bench",
             fmt="{:.2f}x"),
        goal(f"kvplan decode at batch 8 >= {BATCH_GOAL:g}x the tok/s of batch 1", batch_speedup,
             BATCH_GOAL, None if batch_speedup is None else batch_speedup >= BATCH_GOAL,
             "no kvplan bench result at batch 1" if decode is None else
             "no kvplan bench result at batch 8", fmt="{:.2f}x"),
        goal("kvplan decode tok/s > HF eager decode tok/s", decode, hf_eager,
             None if decode is None or hf_eager is None else decode > hf_eager,
             "no kvplan bench result" if decode is None else peer_why, fmt="{:,.1f}"),
        goal("kvplan decode tok/s > HF static cache + torch.compile decode tok/s", decode, hf_comp,
             None if decode is None or hf_comp is None else decode > hf_comp,
             "no kvplan bench result" if decode is None else
             ("peer failed: " + (comp_err or peer_err or "no compiled result")), fmt="{:,.1f}"),
    ]

    def step_status(name):
        return steps.get(name, {}).get("status", "not run")

    failed_steps = [s for s in ("build", "tests", "bench", "quant", "moe", "rows", "tp",
                                "sanitizer", "peer")
                    if step_status(s) == "failed"]
    # On the GPU machine no gpu test may skip: a skip there means no device or
    # no artifacts, which the tests would otherwise report as a pass.
    if tests is not None and (tests["failed"] or tests.get("skipped") or not tests["total"]):
        if "tests" not in failed_steps:
            failed_steps.append("tests")

    combined = {
        "canned": args.canned,
        "note": ("CANNED INPUTS (KVPLAN_GPU_CHECK_DRY=1): nothing here was measured"
                 if args.canned else "measured by scripts/gpu-check.sh"),
        "steps": steps,
        "tests": tests,
        "kvplan_bench": bench,
        "kvplan_bench_batch8": more["batch8"],
        "kvplan_bench_int8": more["int8"],
        "kvplan_bench_int4": more["int4"],
        "kvplan_bench_moe": more["moe"],
        "kvplan_bench_rows32": more["rows32"],
        "kvplan_bench_rows16": more["rows16"],
        "kvplan_bench_rows1": more["rows1"],
        "kvplan_before": before,
        "hf_peer": peer,
        "kernel_profile": profile,
        "model": model,
        "goals": goals,
        "ratios": {
            "decode_vs_hf_eager": ratio(decode, hf_eager),
            "decode_vs_hf_compiled": ratio(decode, hf_comp),
            "prefill_vs_hf": ratio(prefill, hf_prefill),
            "batch8_vs_batch1": batch_speedup,
        },
        "failed_steps": failed_steps,
        "problems": problems,
        "kit": manifest,
        "env": env,
    }
    with open(os.path.join(args.out, "gpu-check.json"), "w") as fh:
        json.dump(combined, fh, indent=2)

    # ---- the table
    device = b.get("device") or pr.get("device") or "unknown device"
    name = b.get("model") or pr.get("model") or (model or {}).get("name") or "model"
    lines = []
    title = (f"## kvplan GPU check: {name} {b.get('weight_dtype', 'bf16')}, batch 1, "
             f"prompt {b.get('prompt_len', pr.get('prompt_len', 512))}, "
             f"gen {b.get('gen', pr.get('gen', 128))}, {device}")
    lines.append(title)
    if args.canned:
        lines.append("")
        lines.append("**CANNED INPUTS (KVPLAN_GPU_CHECK_DRY=1): NOT MEASURED, do not report these numbers**")
    lines.append("")
    lines.append("| | |")
    lines.append("|---|---|")
    st = steps.get("build", {})
    lines.append(f"| build (runtime-only, CUDA) | {step_status('build')}"
                 + (f", {st['seconds']:.0f} s" if st.get("seconds") else "")
                 + (f": {st['note']}" if st.get("note") else "") + " |")
    if tests is None:
        tests_cell = f"{step_status('tests')} (no result)"
    else:
        tests_cell = f"{tests['passed']} passed, {tests['failed']} failed"
        if tests.get("skipped"):
            tests_cell += f", {tests['skipped']} SKIPPED"
            if tests.get("skip_reasons"):
                tests_cell += f" ({'; '.join(tests['skip_reasons'][:2])})"
        if not tests["total"]:
            tests_cell = "none found (label gpu)"
        if tests["failed_names"]:
            tests_cell += ": " + ", ".join(tests["failed_names"][:6])
    lines.append(f"| gpu tests | {tests_cell} |")
    if "sync" in steps:
        sy = steps["sync"]
        lines.append(f"| failed tests again, KVPLAN_CUDA_SYNC=1 | {sy['status']}"
                     + (f": {sy['note']}" if sy.get("note") else "") + " |")
    if bench is None:
        lines.append(f"| kvplan bench | {step_status('bench')} (no result) |")
    else:
        roof_cell = f"{roof:.1%} of roofline" if roof is not None else "roofline n/a"
        if bw is not None:
            roof_cell += f" at {bw:,.0f} GB/s"
        lines.append(f"| kvplan decode | {f(decode)} tok/s ({roof_cell}) |")
        lines.append(f"| kvplan decode step, graph vs eager | {f(step_graph, '{:.3f} ms')} vs "
                     f"{f(step_eager, '{:.3f} ms')} ({f(speedup, '{:.2f}x')}) |")
        plain = _num(b.get("decode_step_ms_graph_plain_launches"))
        if plain is not None:
            lines.append(f"| kvplan decode step, programmatic dependent launches vs plain | "
                         f"{f(step_graph, '{:.3f} ms')} vs {f(plain, '{:.3f} ms')} "
                         f"({f(_num(b.get('dependent_launch_speedup')), '{:.2f}x')}) |")
        elif b:
            lines.append("| kvplan decode step, programmatic dependent launches | not used "
                         f"({'off' if b.get('dependent_launches') is False else 'no figure'}: "
                         "compute capability below 9.0 or KVPLAN_CUDA_PDL=0) |")
        sampled = _num(b.get("decode_step_ms_sampled"))
        if sampled is not None:
            lines.append(f"| kvplan decode step, sampled (temperature "
                         f"{b.get('sampled_temperature', '?')}, top-p {b.get('sampled_top_p', '?')}) "
                         f"vs greedy | {f(sampled, '{:.3f} ms')} vs {f(step_graph, '{:.3f} ms')} |")
        lines.append(f"| kvplan prefill ({b.get('prompt_len', 512)} tokens) | {f(prefill, '{:,.0f}')} tok/s |")
    for key, g in sorted((profile or {}).items()):
        total = g["ms"] or 1.0
        top = ", ".join(f"{fam} {ms / total:.0%}" for fam, ms in list(g["families"].items())[:4])
        lines.append(f"| op times, {key}, ops one after another (KVPLAN_CUDA_PROFILE) | "
                     f"{g['ms']:.3f} ms in {g['ops']} ops: {top} |")
    b8 = more["batch8"]
    if b8 is None:
        lines.append(f"| kvplan decode, 8 sequences at once | {step_status('bench')} (no result) |")
    else:
        r8 = _num(b8.get("decode_roofline_fraction"))
        lines.append(f"| kvplan decode, {b8.get('batch', '?')} sequences at once | "
                     f"{f(batch8)} tok/s "
                     f"({f(batch_speedup, '{:.2f}x')} batch 1; weights at "
                     f"{f(r8, '{:.1%}', 'n/a')} of roofline) |")
    for q in ("int8", "int4"):
        bq = more[q]
        if bq is None:
            lines.append(f"| kvplan {q} | {step_status('quant')} (no result) |")
            continue
        dq, pq = _num(bq.get("decode_tok_s")), _num(bq.get("prefill_tok_s"))
        rq = _num(bq.get("decode_roofline_fraction"))
        lines.append(f"| kvplan {q} decode | {f(dq)} tok/s ({f(rq, '{:.1%}', 'n/a')} of roofline; "
                     f"{f(ratio(dq, decode), '{:.2f}x')} bf16) |")
        lines.append(f"| kvplan {q} prefill ({bq.get('prompt_len', 512)} tokens, tensor cores) | "
                     f"{f(pq, '{:,.0f}')} tok/s "
                     f"({f(ratio(pq, prefill), '{:.2f}x')} bf16's cuBLAS) |")
    bm = more["moe"]
    if bm is None and "moe" in steps:
        lines.append(f"| kvplan decode, a mixture of experts | {step_status('moe')} "
                     f"(no result{': ' + steps['moe']['note'] if steps['moe'].get('note') else ''}) |")
    elif bm is not None:
        dm, pm = _num(bm.get("decode_tok_s")), _num(bm.get("prefill_tok_s"))
        rm, wm = _num(bm.get("decode_roofline_fraction")), _num(bm.get("weights_bytes"))
        lines.append(f"| kvplan decode, a mixture of experts ({bm.get('model', '?')}, "
                     f"{bm.get('weight_dtype', '?')}, the routers and chosen experts: "
                     f"{f(wm / 1e9 if wm is not None else None, '{:.2f}')} GB a step) | "
                     f"{f(dm)} tok/s ({f(rm, '{:.1%}', 'n/a')} of roofline) |")
        lines.append(f"| kvplan prefill, a mixture of experts ({bm.get('prompt_len', 512)} "
                     f"tokens) | {f(pm, '{:,.0f}')} tok/s |")
    if "rows" in steps or any(more["rows" + n] is not None for n in ("1", "16", "32")):
        for n, what in (("1", "matrix-vector kernels, folds"), ("16", "2 tiles of 8 rows, folds"),
                        ("32", "4 tiles of 8 rows, folds")):
            r = more["rows" + n] or {}
            copy = _num(r.get("decode_step_ms_graph"))
            whole = _num(r.get("decode_step_ms_whole_decode"))
            seqs = "1 sequence" if n == "1" else f"{n} sequences"
            lines.append(f"| kvplan decode in a plan for 64, {seqs}: "
                         f"{r.get('decode_entry', 'its copy of decode')} ({what}) vs decode "
                         f"(cuBLAS at 64 rows, unfused) | {f(copy, '{:.3f} ms')} vs "
                         f"{f(whole, '{:.3f} ms')} a "
                         f"step ({f(ratio(whole, copy), '{:.2f}x')}; {step_status('rows')}) |")
    if before is None and "before" in steps:
        lines.append(f"| kernels before the change, side by side | {step_status('before')} "
                     f"(no result) |")
    for name, runs in sorted((before or {}).items()):
        lists = [runs.get(w, []) if isinstance(runs, dict) else None for w in ("before", "after")]
        if not all(isinstance(rs, list) and all(isinstance(r, dict) for r in rs) for rs in lists):
            problems.append(f"kvplan-before.json: {name} is not {{before: [...], after: [...]}}")
            continue
        n = min(len(runs.get("before", [])), len(runs.get("after", [])))
        for key, what in (("decode_step_ms_graph", "decode step"),
                          ("decode_step_ms_sampled", "sampled decode step")):
            med = {}
            for which in ("before", "after"):
                ms = sorted(x for x in (_num(r.get(key)) for r in runs.get(which, []))
                            if x is not None)
                med[which] = (ms[(len(ms) - 1) // 2] + ms[len(ms) // 2]) / 2 if ms else None
            if key != "decode_step_ms_graph" and med["before"] is None and med["after"] is None:
                continue
            versus = (str(runs["what"]) if runs.get("what")
                      else "this kit's kernels vs those before the change")
            lines.append(f"| {name}: {what}, {versus} "
                         f"(medians of {n} alternate runs each) | {f(med['after'], '{:.3f} ms')} vs "
                         f"{f(med['before'], '{:.3f} ms')} "
                         f"a step: {f(ratio(med['before'], med['after']), '{:.3f}x')} the speed |")
    for name, label in (("sanitizer", "compute-sanitizer, tiny bf16"),):
        st = steps.get(name, {})
        lines.append(f"| {label} | {step_status(name)}"
                     + (f": {st['note']}" if st.get("note") else "") + " |")
    tp = steps.get("tp", {})
    lines.append(f"| tensor parallel, 2 ranks over NCCL | {step_status('tp')}"
                 + (f": {tp['note']}" if tp.get("note") else "") + " |")
    if peer is None:
        lines.append(f"| HF transformers peer | {step_status('peer')} (no result) |")
    else:
        versions = f"torch {pr.get('torch', '?')}, transformers {pr.get('transformers', '?')}"
        if peer_err:
            lines.append(f"| HF transformers peer ({versions}) | failed: {peer_err[:120]} |")
        r = ratio(decode, hf_eager)
        lines.append(f"| HF eager decode | {f(hf_eager)} tok/s"
                     + (f" (kvplan {r:.2f}x)" if r else "") + " |")
        r = ratio(decode, hf_comp)
        if hf_comp is not None:
            lines.append(f"| HF static cache + torch.compile decode | {f(hf_comp)} tok/s"
                         + (f" (kvplan {r:.2f}x)" if r else "") + " |")
        else:
            lines.append(f"| HF static cache + torch.compile decode | failed: "
                         f"{(comp_err or peer_err or 'no result')[:120]} |")
        r = ratio(prefill, hf_prefill)
        lines.append(f"| HF prefill ({pr.get('prompt_len', 512)} tokens) | {f(hf_prefill, '{:,.0f}')} tok/s"
                     + (f" (kvplan {r:.2f}x)" if r else "") + " |")
        lines.append(f"| HF versions | {versions} |")
    for g in goals:
        cell = g["status"]
        if g.get("why"):
            cell += f" ({g['why']})"
        lines.append(f"| goal: {g['goal']} | {cell} |")
    if problems:
        lines.append(f"| problems | {'; '.join(problems)} |")
    if failed_steps:
        lines.append(f"| FAILED | {', '.join(failed_steps)} |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "gpu-check.md"), "w") as fh:
        fh.write(table)
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
