#!/usr/bin/env bash
# The one check run on a GPU machine (from the repo root, the working tree and
# .gpukit copied there; scripts/gpu-kit.sh made .gpukit here):
#   1. prints the machine: nvidia-smi -L, driver, nvcc, g++, CMake, OS,
#      python/torch/transformers, and whether the kit's artifacts were compiled
#      from this tree's sources
#   2. points the loader (and a build) at .gpukit/deps when it exists
#      (scripts/gpu-kit-env.sh)
#   3. the binaries: the kit's prebuilt runtime-only CUDA build
#      (.gpukit/prebuilt: kvplan, kvplan-gpu-tests) when they start here, else
#      a build from source into build-gpu/ (-DKVPLAN_COMPILER=OFF
#      -DKVPLAN_CUDA=ON); a failed build stops here, after the report
#   4. the gpu tests (KVPLAN_GPU_ARTIFACTS=.gpukit/artifacts); those that fail
#      run again with KVPLAN_CUDA_SYNC=1, which names the launch that failed
#   5. kvplan bench on .gpukit/artifacts/bench-llama-3.2-1b.kvp (random
#      weights, prompt 512, 128 tokens), then 8 sequences at once on the same
#      shape compiled for 8 (bench-llama-3.2-1b-b8.kvp, 64 tokens each); each
#      bench's warm-up times every op once (KVPLAN_CUDA_PROFILE)
#   5b. the same shape with int8 and int4 weights, one sequence (prefill on
#      the tensor-core tiled product, decode against the roofline)
#   5c. where .gpukit/before/ holds the bench artifacts of the kernels before
#      a change (scripts/gpu-kit.sh --keep-before): each against the kit's,
#      alternately, twice (at 1 sequence; a -b8 variant at 8, a -b64 one at
#      32)
#   6. with two GPUs or more and mpirun: a TP=2 model over NCCL against one GPU
#   7. compute-sanitizer memcheck and racecheck over a tiny artifact's run,
#      where compute-sanitizer is installed
#   8. scripts/hf_peer.py on the bench's model shape (transformers, bf16)
#   8b. with 100 s or more of the budget left: kvplan bench on a mixture of
#      experts (bench-qwen3moe.kvp: Qwen3-30B-A3B's layers, 12 of 48, bf16,
#      one sequence), its decode against the roofline of the bytes a step
#      reads (the router and the 8 chosen experts a layer)
#   9. with what the budget has left (100 s or more): 1, 16 and 32 sequences
#      in a plan for 64, each on the copy of decode that serves it (decode.1;
#      decode.16 and decode.32: bf16 products in 2 and 4 tiles of 8 rows a
#      block with their folds) and on decode itself (cuBLAS at 64 rows, the
#      ops unfused), side by side
# and the report (scripts/gpu_check_report.py: $OUT/gpu-check.json and the
# table, last) after every step and from an exit trap, so a check killed at
# its limit still leaves the table of what it finished.
#
# Writes into ${OUT:-gpu-results} (18 files at most: build.log, gpu-tests.log,
# gpu-tests-sync.log, kvplan-bench.json, kvplan-bench-batch8.json,
# kvplan-bench-int8.json, kvplan-bench-int4.json, kvplan-bench-moe.json,
# kvplan-before.json,
# kvplan-bench-rows1.json, kvplan-bench-rows16.json, kvplan-bench-rows32.json,
# kernel-profile.tsv (each op's time, KVPLAN_CUDA_PROFILE), hf-peer.json,
# sanitizer.log, run.log, gpu-check.json, gpu-check.md; 4 with
# KVPLAN_GPU_CHECK_PACK=1, below); scratch goes to build-gpu-check/. On the
# device tool: run(command="KVPLAN_GPU_CHECK_PACK=1 scripts/gpu-check.sh",
# carry=[".gpukit.tar.xz"], timeout_s=KVPLAN_GPU_CHECK_BUDGET_S + 60 or so):
# where .gpukit/ is missing and .gpukit.tar.xz is there (scripts/gpu-kit-pack.sh),
# the kit is unpacked first.
# Exits nonzero when the build, a gpu test, a bench, the tensor-parallel run
# or the sanitizer failed, or a gpu test skipped (there, a skip means no
# device or no artifacts); the peer or the rows step failing, or a goal not
# met, is reported only.
#
# Environment:
#   OUT                       where results go (default gpu-results)
#   KVPLAN_GPU_CHECK_DRY=1    no build, tests, bench or peer: canned inputs from
#                             tests/data/gpu/canned (or KVPLAN_GPU_CHECK_CANNED)
#                             go through the report, which says they are canned
#   KVPLAN_GPU_CHECK_BUDGET_S the whole check's time (default 480); each step's
#                             limit comes from what is left, keeping time for
#                             the steps after it; the peer gets the rest, at
#                             most 300 s, or is skipped
#   KVPLAN_GPU_CHECK_STEPS    steps to run (default
#                             build,tests,bench,quant,before,tp,sanitizer,peer,moe,
#                             rows)
#   KVPLAN_GPU_CHECK_SOURCE=1 build from source even when the kit's binaries start
#   KVPLAN_GPU_CHECK_CMAKE_ARGS  more arguments for the configure
#   KVPLAN_GPU_CHECK_PACK=1   for the device tool, which brings back 8 files at
#                             most: OUT gets gpu-check.md, gpu-check.json, run.log
#                             and results.tgz (all the files above, steps.tsv and
#                             env.txt), the archive renewed after every step
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
t0=$SECONDS
if [ ! -d .gpukit ] && [ -f .gpukit.tar.xz ]; then
  echo "gpu-check: unpacking .gpukit.tar.xz"
  tar -xJf .gpukit.tar.xz || echo "gpu-check: WARNING: .gpukit.tar.xz did not unpack whole" >&2
fi

OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
work=$root/build-gpu-check
rm -rf "$work"
mkdir -p "$work"
# KVPLAN_GPU_CHECK_PACK=1: the device tool brings back 8 files at most, so the
# results go to $work/results and OUT gets the table, the JSON, run.log and
# results.tgz (every result), brought up to date at each checkpoint.
pack_to=
if [ "${KVPLAN_GPU_CHECK_PACK:-0}" = 1 ]; then
  pack_to=$OUT
  OUT=$work/results
  mkdir -p "$OUT"
fi
: > "$work/steps.tsv"
# This check's own files only (OUT may hold other things).
rm -f "$OUT"/{build.log,gpu-tests.log,gpu-tests-sync.log,hf-peer.json,hf-peer.json.tmp} \
  "$OUT"/{kvplan-bench.json,kvplan-bench-batch8.json,kvplan-bench-int8.json} \
  "$OUT"/{kvplan-bench-int4.json,kernel-profile.tsv,sanitizer.log,gpu-check.json,gpu-check.md} \
  "$OUT"/{kvplan-bench-rows1.json,kvplan-bench-rows16.json,kvplan-bench-rows32.json} \
  "$OUT"/kvplan-before.json "$OUT"/kvplan-bench-moe.json
log=$OUT/run.log
: > "$log"

dry=${KVPLAN_GPU_CHECK_DRY:-0}
budget=${KVPLAN_GPU_CHECK_BUDGET_S:-480}
steps=${KVPLAN_GPU_CHECK_STEPS:-build,tests,bench,quant,before,tp,sanitizer,peer,moe,rows}
artifacts=$root/.gpukit/artifacts
bench_art=$artifacts/bench-llama-3.2-1b.kvp
# The bench step's runs at 1 and 8 sequences (the before step repeats them).
bench1_args=(--prompt-len 512 --gen 128)
bench8_args=(--prompt-len 512 --gen 64 --batch 8)
# A -b64 variant's (the plan for 64 sequences; decode.32 serves 32).
bench32_args=(--prompt-len 512 --gen 64 --batch 32)
fail=0

say() { echo "gpu-check: $*" | tee -a "$log"; }
# record STEP STATUS SECONDS [NOTE]
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >> "$work/steps.tsv"; }
want() { [[ ",$steps," == *",$1,"* ]]; }
elapsed() { echo $((SECONDS - t0)); }

report() {
  local flags=()
  [ "$dry" != 1 ] || flags=(--canned)
  python3 scripts/gpu_check_report.py --work "$work" --out "$OUT" --kit "$root/.gpukit" \
    ${flags[@]+"${flags[@]}"} "$@" || echo "gpu-check: the report failed" >&2
  if [ -n "$pack_to" ]; then
    cp "$OUT"/gpu-check.md "$OUT"/gpu-check.json "$OUT"/run.log "$pack_to"/ 2>/dev/null || true
    # Written aside and renamed, so a check killed while packing leaves the last whole one.
    if tar -czf "$pack_to/results.tgz.part" -C "$OUT" . "../steps.tsv" "../env.txt" 2>/dev/null ||
       tar -czf "$pack_to/results.tgz.part" -C "$OUT" .; then
      mv -f "$pack_to/results.tgz.part" "$pack_to/results.tgz"
    fi
  fi
}
# After every step, quietly: a check killed later still leaves this table.
checkpoint() { report > /dev/null; }
# begin STEP: the step is marked running in the report until it records how
# it ended, so a check killed in it says where.
begin() {
  record "$1" running 0 "started at $(elapsed) s of the check; it did not finish"
  checkpoint
}
# On any exit (a failure, the limit's SIGTERM), the report of what finished.
reported=0
on_exit() {
  local rc=$?
  if ((reported == 0)); then
    reported=1
    say "stopped (exit $rc) after $(elapsed) s: the report of the steps that finished"
    report
  fi
}
trap on_exit EXIT
trap 'exit 143' TERM INT
# left_for STEP SECONDS: whether SECONDS of the budget are left; where not,
# STEP is recorded skipped, saying what was left.
left_for() {
  local left=$((budget - $(elapsed)))
  ((left >= $2)) && return 0
  record "$1" skipped 0 "only ${left} s of the ${budget} s budget left"
  return 1
}
# stage_limit MAX KEEP: a step's time limit: at most MAX seconds, leaving
# KEEP seconds of the budget for the steps after it (30 s at least).
stage_limit() {
  local left=$((budget - $(elapsed) - $2))
  ((left < $1)) || left=$1
  ((left >= 30)) || left=30
  echo "$left"
}

# --- 1. the machine ---------------------------------------------------------
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=$PATH:/usr/local/cuda/bin
fi
{
  echo "## date: $(date -u +%Y-%m-%dT%H:%M:%SZ)   host: $(uname -srm)   cores: $(nproc)"
  echo "## os: $( (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") || echo unknown)"
  echo "## nvidia-smi -L"
  nvidia-smi -L 2>&1 || echo "(nvidia-smi failed)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
    --format=csv,noheader 2>&1 || true
  echo "## nvcc --version"
  nvcc --version 2>&1 | tail -n 2 || echo "(no nvcc)"
  echo "## tools"
  echo "g++: $( (g++ --version 2>&1 || echo none) | sed -n 1p)"
  echo "cmake: $( (cmake --version 2>&1 || echo none) | sed -n 1p)"
  echo "ninja: $(ninja --version 2>&1 || echo none)"
  echo "glibc: $( (ldd --version 2>&1 || echo unknown) | sed -n 1p)"
  echo "python3: $(command -v python3) $(python3 --version 2>&1)"
  timeout 120 python3 -c '
import torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)
print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")' 2>&1 |
    grep -v Warning || echo "(torch or transformers did not import)"
  if [ -f .gpukit/MANIFEST.json ]; then
    echo "## kit"
    python3 scripts/gpu_check_report.py --check-kit-sources --kit .gpukit || true
    python3 -c '
import json; m = json.load(open(".gpukit/MANIFEST.json"))
print("made", m.get("made"), "from git", m.get("git"), "by", m.get("kvplan"))
print("needs", m.get("needs_glibc"), m.get("needs_glibcxx"), "; artifacts:", " ".join(m.get("artifacts", [])))
if m.get("artifact_failures"): print("ARTIFACTS THAT FAILED TO COMPILE:", " ".join(m["artifact_failures"]))'
  else
    echo "## kit: none (.gpukit/MANIFEST.json missing)"
  fi
} 2>&1 | tee "$work/env.txt" | tee -a "$log"

# --- 2. the kit -------------------------------------------------------------
runenv=()
if [ -d .gpukit/deps ]; then
  # shellcheck source=scripts/gpu-kit-env.sh
  source scripts/gpu-kit-env.sh .gpukit
  runenv=(env "LD_LIBRARY_PATH=$KVPLAN_KIT_LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
  say "build dependencies from the kit: $KVPLAN_KIT/deps (pkg-config: $(pkg-config --version 2>&1))"
else
  say "no .gpukit/deps: the build uses the machine's own packages"
fi
[ -f "$bench_art" ] ||
  say "WARNING: $bench_art is missing (run scripts/gpu-kit.sh and carry .gpukit.tar.xz)"

# The prebuilt binaries' libraries beyond the kit's packages
# (.gpukit/prebuilt/libs.tar.xz): those this machine lacks go on the loader's
# path; its own copies of the rest are used.
if [ -f .gpukit/prebuilt/libs.tar.xz ]; then
  mkdir -p "$work/kit-libs" "$work/missing-libs"
  tar -xJf .gpukit/prebuilt/libs.tar.xz -C "$work/kit-libs"
  missing=()
  for f in "$work"/kit-libs/*.so*; do
    n=$(basename "$f")
    if ! ldconfig -p 2>/dev/null | grep -q "^[[:space:]]*$n (" &&
       [ ! -e "/lib/x86_64-linux-gnu/$n" ] && [ ! -e "/usr/lib/x86_64-linux-gnu/$n" ]; then
      ln -s "$f" "$work/missing-libs/$n"
      missing+=("$n")
    fi
  done
  say "libraries the machine lacks, from the kit: ${missing[*]:-none}"
  if ((${#missing[@]})); then
    lp=$work/missing-libs${KVPLAN_KIT_LIBDIR:+:$KVPLAN_KIT_LIBDIR}
    runenv=(env "LD_LIBRARY_PATH=$lp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
  fi
fi

# Runs a command with the kit's libraries on the loader's path.
krun() { ${runenv[@]+"${runenv[@]}"} "$@"; }

if [ "$dry" = 1 ]; then
  canned=${KVPLAN_GPU_CHECK_CANNED:-$root/tests/data/gpu/canned}
  say "DRY RUN: no build, tests, bench or peer; canned inputs from $canned (NOT MEASURED)"
  for s in build tests bench quant tp sanitizer peer moe; do
    record "$s" canned 0 "canned input"
  done
  for f in kvplan-bench.json kvplan-bench-batch8.json kvplan-bench-int8.json \
           kvplan-bench-int4.json kvplan-bench-moe.json kernel-profile.tsv hf-peer.json \
           gpu-tests.log kvplan-before.json; do
    [ ! -f "$canned/$f" ] || cp "$canned/$f" "$OUT/$f"
  done
  for f in gpu-tests.xml model.json; do
    [ ! -f "$canned/$f" ] || cp "$canned/$f" "$work/$f"
  done
  reported=1
  report
  exit 0
fi

# --- 3. the binaries: the kit's, else a build -------------------------------
prebuilt=$root/.gpukit/prebuilt
use_prebuilt=0
if want build && [ "${KVPLAN_GPU_CHECK_SOURCE:-0}" != 1 ] && [ -x "$prebuilt/kvplan" ] &&
   [ -x "$prebuilt/kvplan-gpu-tests" ]; then
  if krun "$prebuilt/kvplan" --version > "$work/prebuilt.txt" 2>&1 &&
     krun "$prebuilt/kvplan-gpu-tests" --gtest_list_tests > /dev/null 2>> "$work/prebuilt.txt"; then
    use_prebuilt=1
    record build prebuilt 0 "the kit's binaries: $(head -n 1 "$work/prebuilt.txt")"
    say "using the kit's prebuilt binaries ($(head -n 1 "$work/prebuilt.txt"))"
  else
    say "the kit's prebuilt binaries do not start here ($(tail -n 2 "$work/prebuilt.txt" | tr '\n' ' ')); building from source"
  fi
fi
if want build && ((use_prebuilt == 0)); then
  t=$SECONDS
  begin build
  gen=Ninja
  command -v ninja >/dev/null 2>&1 || gen="Unix Makefiles"
  say "building build-gpu ($gen, -j $(nproc)); log: $OUT/build.log"
  # shellcheck disable=SC2086
  if cmake -S . -B build-gpu -G "$gen" -DCMAKE_BUILD_TYPE=Release -DKVPLAN_COMPILER=OFF \
       -DKVPLAN_CUDA=ON ${KVPLAN_GPU_CHECK_CMAKE_ARGS:-} > "$OUT/build.log" 2>&1 &&
     krun timeout "$(stage_limit 400 200)" cmake --build build-gpu -j "$(nproc)" >> "$OUT/build.log" 2>&1; then
    record build ok $((SECONDS - t))
    say "built in $((SECONDS - t)) s"
  else
    record build failed $((SECONDS - t)) "see build.log"
    echo "---- the end of $OUT/build.log" | tee -a "$log"
    tail -n 40 "$OUT/build.log" | tee -a "$log"
    say "BUILD FAILED after $((SECONDS - t)) s"
    exit 1
  fi
fi
kvplan=build-gpu/bin/kvplan
gpu_tests=build-gpu/bin/kvplan-gpu-tests
if ((use_prebuilt)); then
  kvplan=$prebuilt/kvplan
  gpu_tests=$prebuilt/kvplan-gpu-tests
fi
checkpoint

# --- 4. gpu tests -----------------------------------------------------------
if want tests; then
  t=$SECONDS
  begin tests
  lim=$(stage_limit 240 180)
  rc=0
  if ((use_prebuilt)); then
    # One process a test, as ctest runs them: a crash or a hang loses one.
    say "gpu tests: $gpu_tests, a process each (at most $lim s)"
    mkdir -p "$work/gtest"
    : > "$OUT/gpu-tests.log"
    stop_at=$((SECONDS + lim))
    for name in $(krun "$gpu_tests" --gtest_list_tests |
                  awk '/^[^ ]/ {suite = $1} /^  [^ ]/ {print suite $1}'); do
      left=$((stop_at - SECONDS))
      if ((left < 5)); then
        echo "NOT RUN (out of time): $name" >> "$OUT/gpu-tests.log"
        rc=124
        continue
      fi
      one=0
      krun env KVPLAN_GPU_ARTIFACTS="$artifacts" timeout "$((left < 120 ? left : 120))" \
        "$gpu_tests" --gtest_filter="$name" --gtest_output="xml:$work/gtest/$name.xml" \
        >> "$OUT/gpu-tests.log" 2>&1 || one=$?
      if ((one != 0)); then
        rc=$one
        # A crash or a timeout writes no XML: the merge reports it failed.
        echo "EXIT $one: $name" >> "$OUT/gpu-tests.log"
      fi
    done
    python3 scripts/gpu_check_report.py --merge-gtest "$work/gtest" "$work/gpu-tests.xml" \
      "$OUT/gpu-tests.log" >> "$log" 2>&1 || true
  else
    ctest_args=(--test-dir build-gpu -L gpu --output-on-failure --timeout 120 --no-tests=error)
    if ctest --help 2>/dev/null | grep -q -- --output-junit; then
      ctest_args+=(--output-junit "$work/gpu-tests.xml")
    fi
    say "gpu tests: ctest ${ctest_args[*]} (at most $lim s)"
    krun env KVPLAN_GPU_ARTIFACTS="$artifacts" timeout "$lim" ctest "${ctest_args[@]}" \
      > "$OUT/gpu-tests.log" 2>&1 || rc=$?
  fi
  if ((rc == 0)); then
    record tests ok $((SECONDS - t))
  else
    record tests failed $((SECONDS - t)) "exit $rc$( ((rc == 124)) && echo ' (timed out)')"
    fail=1
  fi
  grep -E "tests passed|tests failed|No tests were found|PASSED|FAILED  \]" "$OUT/gpu-tests.log" |
    tail -n 12 | tee -a "$log" || true
  checkpoint
  # The failing ones again, each launch waited for and checked: the error
  # then names the kernel and the plan step.
  failing=$(python3 scripts/gpu_check_report.py --failed-tests "$work/gpu-tests.xml" 2>/dev/null || true)
  if ((rc != 0)) && [ -n "$failing" ] && [ -x "$gpu_tests" ]; then
    t=$SECONDS
    say "again with KVPLAN_CUDA_SYNC=1: $failing"
    if krun env KVPLAN_GPU_ARTIFACTS="$artifacts" KVPLAN_CUDA_SYNC=1 timeout "$(stage_limit 120 150)" \
         "$gpu_tests" --gtest_filter="$failing" > "$OUT/gpu-tests-sync.log" 2>&1; then
      record sync ok $((SECONDS - t)) "the failing tests pass with each launch checked"
    else
      record sync failed $((SECONDS - t)) "$(grep -m 1 -o 'CUDA error in .*' "$OUT/gpu-tests-sync.log" | head -c 300)"
    fi
    checkpoint
  fi
fi

# --- 5. kvplan bench --------------------------------------------------------
# bench_json LIMIT OUTFILE ARTIFACT ARGS...: kvplan bench's JSON line into
# OUTFILE; its output goes to the log either way.
bench_json() {
  local limit=$1 out=$2 art=$3
  shift 3
  say "kvplan bench $art --weights random:0 $* --json (at most $limit s)"
  if krun timeout "$limit" "$kvplan" bench "$art" --weights random:0 "$@" --json \
       > "$work/bench.out" 2> "$work/bench.err" &&
     python3 - "$work/bench.out" "$out" <<'EOF'
import json, sys
for line in reversed(open(sys.argv[1]).read().splitlines()):
    line = line.strip()
    if line.startswith("{"):
        json.dump(json.loads(line), open(sys.argv[2], "w"), indent=2)
        break
else:
    sys.exit("kvplan bench printed no JSON line")
EOF
  then
    cat "$work/bench.err" "$out" >> "$log"
    return 0
  fi
  say "BENCH FAILED ($art); its output:"
  tail -n 20 "$work/bench.out" "$work/bench.err" 2>&1 | tee -a "$log" || true
  return 1
}

# benches_ended STEP OK START [optional]: how a step of benches ended (OK:
# 1 when every bench of it did), recorded; a failure fails the check unless
# the step is optional (reported only).
benches_ended() {
  if (($2)); then
    record "$1" ok $((SECONDS - $3))
  else
    record "$1" failed $((SECONDS - $3)) "a bench failed: see run.log"
    [ "${4:-}" = optional ] || fail=1
  fi
}

if want bench; then
  t=$SECONDS
  begin bench
  # Batch 8 against batch 1 (the goal: 6x the tokens a second).
  # The first run of each entry point and row count also times every op
  # once (KVPLAN_CUDA_PROFILE, during the benches' warm-up; batch 8's
  # decode at 8 rows on tensor cores, matvec_mma).
  if ! KVPLAN_CUDA_PROFILE="$OUT/kernel-profile.tsv" \
       bench_json "$(stage_limit 240 210)" "$OUT/kvplan-bench.json" "$bench_art" \
       "${bench1_args[@]}"; then
    record bench failed $((SECONDS - t)) "batch 1 failed: see run.log"
    fail=1
  elif ! KVPLAN_CUDA_PROFILE="$OUT/kernel-profile.tsv" \
       bench_json "$(stage_limit 120 180)" "$OUT/kvplan-bench-batch8.json" \
       "$artifacts/bench-llama-3.2-1b-b8.kvp" "${bench8_args[@]}"; then
    record bench failed $((SECONDS - t)) "batch 8 failed: see run.log"
    fail=1
  else
    record bench ok $((SECONDS - t))
  fi
fi

checkpoint

# --- 5b. int8 and int4 weights ---------------------------------------------
if want quant; then
  t=$SECONDS
  begin quant
  if (($(elapsed) > budget - 240)); then
    record quant skipped 0 "only $((budget - $(elapsed))) s of the budget left: kept for the peer"
  else
    ok=1
    for q in int8 int4; do
      bench_json "$(stage_limit 90 200)" "$OUT/kvplan-bench-$q.json" \
        "$artifacts/bench-llama-3.2-1b-$q.kvp" --prompt-len 512 --gen 64 || ok=0
    done
    benches_ended quant "$ok" "$t"
  fi
fi

checkpoint

# --- 5c. the kernels before a change, side by side ---------------------------
# Where the kit keeps the bench artifacts of the kernels before a change
# (.gpukit/before/, scripts/gpu-kit.sh --keep-before) or of a setting's
# variant's base (NAME.what beside it says what differs), each is benched with
# the kit's own of the same name, alternately, twice each, in this one run
# (the machines drift between runs): $OUT/kvplan-before.json holds every
# run's decode step (greedy, and sampled: the bench's temperature and top-p),
# and the report the ratio of the medians.
# A variant's before is the kit's artifact its NAME.base names, where there
# is no NAME.kvp (the kit carries one copy).
before_dir=$root/.gpukit/before
befores=()
for old in "$before_dir"/*.kvp "$before_dir"/*.base; do
  [ ! -e "$old" ] || befores+=("$old")
done
if want before && ((${#befores[@]})); then
  t=$SECONDS
  begin before
  ok=1
  : > "$work/before.tsv"
  for old in "${befores[@]}"; do
    name=$(basename "${old%.*}")
    [[ $old != *.base ]] || old=$artifacts/$(< "$old").kvp
    args=("${bench1_args[@]}")
    [[ $name != *-b8 && $name != *-b8-* ]] || args=("${bench8_args[@]}")
    [[ $name != *-b64 && $name != *-b64-* ]] || args=("${bench32_args[@]}")
    for i in 1 2; do
      for which in before after; do
        art=$old
        [ "$which" = before ] || art=$artifacts/$name.kvp
        j=$work/before-$name-$which-$i.json
        if bench_json "$(stage_limit 60 150)" "$j" "$art" "${args[@]}"; then
          printf '%s\t%s\t%s\n' "$name" "$which" "$j" >> "$work/before.tsv"
        else
          ok=0
        fi
      done
    done
  done
  python3 - "$work/before.tsv" "$OUT/kvplan-before.json" "$before_dir" <<'EOF' || ok=0
import json, os, sys
runs = {}
for line in open(sys.argv[1]):
    name, which, path = line.rstrip("\n").split("\t")
    b = json.load(open(path))
    runs.setdefault(name, {"before": [], "after": []})[which].append(
        {k: b.get(k) for k in ("decode_step_ms_graph", "decode_step_ms_sampled",
                               "decode_tok_s", "batch", "decode_roofline_fraction",
                               "prefill_tok_s")})
# A variant's NAME.what (scripts/gpu-kit.sh) says what differs from before.
for name, r in runs.items():
    what = os.path.join(sys.argv[3], name + ".what")
    if os.path.exists(what):
        r["what"] = open(what).read().strip()
json.dump(runs, open(sys.argv[2], "w"), indent=2)
EOF
  benches_ended before "$ok" "$t" optional
  checkpoint
fi

# --- 6. tensor parallelism over NCCL (two GPUs or more) ---------------------
# tp2-tiny-f32 split between 2 ranks, one GPU each (mpirun, NCCL opened at
# run time), against the same model on one GPU: greedy ids equal for 32
# tokens. Skipped, with the reason, on a machine with one GPU or no mpirun.
if want tp; then
  t=$SECONDS
  begin tp
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
  tp_art=$artifacts/tp2-tiny-f32.kvp
  if ((gpus < 2)); then
    record tp skipped 0 "$gpus GPU(s): NCCL ranks need one GPU each"
  elif ! command -v mpirun >/dev/null 2>&1; then
    record tp skipped 0 "no mpirun (Open MPI) on this machine"
  elif [ ! -f "$tp_art" ] || [ ! -x "$kvplan" ]; then
    record tp failed 0 "missing $tp_art or $kvplan"
    fail=1
  else
    # NCCL: the machine's, else the one torch brings.
    if [ -z "${KVPLAN_NCCL_LIBRARY:-}" ] && ! ldconfig -p 2>/dev/null | grep -q libnccl.so.2; then
      nccl=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib", "libnccl.so.2"))' 2>/dev/null || true)
      [ -z "$nccl" ] || [ ! -f "$nccl" ] || export KVPLAN_NCCL_LIBRARY=$nccl
    fi
    ids=$(seq -s, 3 40)
    run_args=(--weights random:3 --prompt-ids "$ids" --tokens 32 --temperature 0 --print-ids)
    say "tensor parallelism: mpirun -np 2 kvplan run $tp_art against one GPU"
    if krun timeout 120 "$kvplan" run "$artifacts/tiny-f32.kvp" "${run_args[@]}" \
         > "$work/tp1.out" 2>> "$log" &&
       krun timeout 180 mpirun --allow-run-as-root --oversubscribe -np 2 \
         -x KVPLAN_NCCL_LIBRARY -x LD_LIBRARY_PATH "$kvplan" run "$tp_art" "${run_args[@]}" \
         > "$work/tp2.out" 2>> "$log"; then
      if cmp -s "$work/tp1.out" "$work/tp2.out"; then
        record tp ok $((SECONDS - t)) "greedy ids equal over 32 tokens on $gpus GPUs"
      else
        record tp failed $((SECONDS - t)) "greedy ids differ: $(head -c 200 "$work/tp2.out")"
        fail=1
      fi
    else
      record tp failed $((SECONDS - t)) "a run failed: see run.log"
      fail=1
    fi
  fi
fi

checkpoint

# --- 7. compute-sanitizer ---------------------------------------------------
# memcheck and racecheck over a few steps of a tiny bf16 artifact, eager (a
# launch at a time) and with graphs.
if want sanitizer; then
  t=$SECONDS
  begin sanitizer
  san=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  tiny=$artifacts/tiny-bf16.kvp
  if [ ! -x "$san" ]; then
    record sanitizer skipped 0 "no compute-sanitizer on this machine"
  elif (($(elapsed) > budget - 200)); then
    record sanitizer skipped 0 "only $((budget - $(elapsed))) s of the budget left: kept for the peer"
  elif [ ! -f "$tiny" ] || [ ! -x "$kvplan" ]; then
    record sanitizer failed 0 "missing $tiny or $kvplan"
    fail=1
  else
    : > "$OUT/sanitizer.log"
    ok=1
    lim=$(( $(stage_limit 120 200) / 3 ))
    for mode in "memcheck --no-graphs" "memcheck" "racecheck --no-graphs"; do
      read -r tool graphs <<<"$mode"
      echo "## compute-sanitizer --tool $tool kvplan run tiny-bf16 $graphs" >> "$OUT/sanitizer.log"
      # shellcheck disable=SC2086
      krun timeout "$lim" "$san" --tool "$tool" --error-exitcode 99 "$kvplan" run "$tiny" \
        --weights random:0 --prompt-ids 1,2,3,4,5,6,7,8,9 -n 4 --temperature 0 --print-ids $graphs \
        >> "$OUT/sanitizer.log" 2>&1 || { echo "## exit $?" >> "$OUT/sanitizer.log"; ok=0; }
    done
    if ((ok)); then
      record sanitizer ok $((SECONDS - t)) "memcheck (eager, graphs) and racecheck (eager): no errors"
    else
      record sanitizer failed $((SECONDS - t)) "$(grep -m 1 -E '=+ (ERROR|Invalid|Race)|## exit' "$OUT/sanitizer.log" | head -c 200)"
      fail=1
    fi
  fi
  checkpoint
fi

# --- 8. the transformers peer -----------------------------------------------
if want peer; then
  t=$SECONDS
  begin peer
  # The model as this build reads the artifact; else as the kit recorded it.
  if ! { [ -x "$kvplan" ] && krun "$kvplan" inspect --json "$bench_art" > "$work/inspect.json" 2>> "$log" &&
         python3 -c 'import json, sys; json.dump(json.load(open(sys.argv[1]))["model"], open(sys.argv[2], "w"))' \
           "$work/inspect.json" "$work/model.json"; }; then
    say "kvplan inspect failed; the peer takes the model from the kit's inspect JSON"
    python3 -c 'import json, sys; json.dump(json.load(open(sys.argv[1]))["model"], open(sys.argv[2], "w"))' \
      "$artifacts/bench-llama-3.2-1b.inspect.json" "$work/model.json" 2>> "$log" || true
  fi
  left=$((budget - $(elapsed) - 15))
  peer_limit=$((left < 300 ? left : 300))
  if [ ! -s "$work/model.json" ]; then
    record peer failed 0 "no model description"
  elif ((peer_limit < 60)); then
    record peer skipped 0 "only ${left} s of the ${budget} s budget left"
    say "peer skipped: ${left} s left of the budget"
  else
    say "hf peer (at most $peer_limit s)"
    # The peer's process gets no kit libraries (runenv is not used).
    if PYTHONUNBUFFERED=1 timeout "$peer_limit" python3 scripts/hf_peer.py --model-json "$work/model.json" \
         --prompt-len 512 --gen 128 --out "$OUT/hf-peer.json" --deadline-s $((peer_limit - 20)) \
         > "$work/hf-peer.out" 2>> "$log"; then
      record peer ok $((SECONDS - t))
    else
      rc=$?
      record peer failed $((SECONDS - t)) "exit $rc$([ $rc = 124 ] && echo ' (timed out)')"
      # Keep what it printed when it could not write its file.
      [ -s "$OUT/hf-peer.json" ] || [ ! -s "$work/hf-peer.out" ] ||
        tail -n 1 "$work/hf-peer.out" > "$OUT/hf-peer.json"
    fi
  fi
fi

# --- 8b. a mixture of experts -----------------------------------------------
# Qwen3-30B-A3B's layers (12 of 48: 15.09 GiB of random bf16 weights to make
# and upload), one sequence: the moe kernels' decode against the roofline of
# what a step reads. After the goals' steps, before the rows step takes the
# rest; skipped with under 100 s left. Reported only.
if want moe; then
  t=$SECONDS
  begin moe
  if left_for moe 100; then
    ok=1
    bench_json "$(stage_limit 150 30)" "$OUT/kvplan-bench-moe.json" \
      "$artifacts/bench-qwen3moe.kvp" --prompt-len 512 --gen 64 || ok=0
    benches_ended moe "$ok" "$t" optional
  fi
fi

checkpoint

# --- 9. few sequences in a plan for many, with what is left -----------------
# The shape compiled for 64 sequences decodes 1, 16 and 32 at once: each
# bench times the copy of decode that serves the batch (decode.1:
# matrix-vector kernels; decode.16 and decode.32: the products in 2 and 4
# tiles of 8 rows a block; all with --fuse-matvec's folds, 5 kernels a
# layer) and decode itself at those rows (cuBLAS's products at 64, the
# norms, RoPE and SwiGLU kernels of their own), side by side: what the
# copies gain a server, and whether bf16's limit (kMmaBf16Rows, 32) holds
# (the H200 runs of stop 45 and 46, when a block took one group of 8 rows
# and each group read the weights again: 4 groups 0.69x cuBLAS's step at 32
# rows, 2 groups 1.00x at 16; decode.32 was cuBLAS's after that). Last, with
# the budget the peer left (KVPLAN_GPU_CHECK_STEPS=build,rows runs it alone).
if want rows; then
  t=$SECONDS
  begin rows
  if left_for rows 100; then
    ok=1
    for n in 32 16 1; do
      lim=$(( (budget - $(elapsed) - 5) / (n == 32 ? 3 : n == 16 ? 2 : 1) ))
      bench_json "$((lim < 150 ? lim : 150))" "$OUT/kvplan-bench-rows$n.json" \
        "$artifacts/bench-llama-3.2-1b-b64.kvp" --prompt-len 512 --gen 64 --batch "$n" || ok=0
    done
    benches_ended rows "$ok" "$t" optional
  fi
fi

say "done in $(elapsed) s"
# --- the report, last -------------------------------------------------------
reported=1
report
# The report also fails the tests when any was skipped (no device, no artifacts).
if python3 -c 'import json, sys; sys.exit(bool({"build", "tests", "bench", "quant"} & set(json.load(open(sys.argv[1]))["failed_steps"])))' \
     "$OUT/gpu-check.json" 2>/dev/null; then :; else fail=1; fi
exit "$fail"
