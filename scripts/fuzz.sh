#!/usr/bin/env bash
# Runs every libFuzzer target (fuzz/) for SECONDS each (default 60), up to
# nproc at a time, on its corpus, and prints one line per target: inputs run,
# seconds, findings. Exits non-zero on any finding (a crash, leak, undefined
# behaviour, timeout, out-of-memory or an exception other than kvplan's
# input errors), and keeps each finding's input in build-asan/fuzz/findings/TARGET/
# (until the next run of that target).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# Reproduce a finding: build-asan/bin/fuzz_TARGET FILE. The report of a
# finding also prints libFuzzer's seed and each input in base64 (4 KiB of
# it at most), so that a run on a machine gone since (CI's) can be
# reproduced from its log: base64 -d > FILE, then the same.
# The corpus grows in build-asan/fuzz/corpus/TARGET/ from run to run; the
# seeds are written anew each run (fuzz/make-corpus.py).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
all=(toml_spec hf_config gguf llama2c_bin safetensors artifact plan_json
     tokenizer_llama2c tokenizer_sentencepiece tokenizer_hf server_request chat_template)
targets=("${@:-${all[@]}}")
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "fuzz: SECONDS must be a positive whole number, not '$seconds'" >&2
  exit 2
fi
for t in "${targets[@]}"; do
  if [[ ! " ${all[*]} " =~ " $t " ]]; then
    echo "fuzz: no target '$t'; the targets are: ${all[*]}" >&2
    exit 2
  fi
done

build_log=$(mktemp)
if ! scripts/sanitize-build.sh "${targets[@]/#/fuzz_}" >"$build_log" 2>&1; then
  cat "$build_log" >&2
  rm -f "$build_log"
  exit 1
fi
rm -f "$build_log"
work=build-asan/fuzz
rm -rf "$work/seeds" "$work/logs" "$work/tmp"
mkdir -p "$work/logs" "$work/findings" "$work/tmp"
# The targets that read a path write each input there (fuzz/FuzzCommon.h).
export TMPDIR="$PWD/$work/tmp"
kvplan_args=()
# The artifact and plan seeds are compiled by the full build's kvplan.
if [ -x build/bin/kvplan ] && build/bin/kvplan compile --help >/dev/null 2>&1; then
  kvplan_args=(--kvplan build/bin/kvplan)
fi
python3 fuzz/make-corpus.py "$work/seeds" "${kvplan_args[@]}" >/dev/null 2>"$work/logs/corpus.txt" || {
  cat "$work/logs/corpus.txt" >&2
  exit 1
}

run_one() {
  local t=$1 dict=() rc
  rm -rf "$work/findings/$t"
  mkdir -p "$work/corpus/$t" "$work/seeds/$t" "$work/findings/$t"
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
  # -rss_limit_mb: an input that makes a parser allocate over 2 GiB is a
  # finding (a file's sizes must be checked against the file first).
  ASAN_OPTIONS="detect_leaks=1:${ASAN_OPTIONS:-}" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}" \
  "build-asan/bin/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$work/findings/$t/" "${dict[@]}" \
    "$work/corpus/$t" "$work/seeds/$t" >"$work/logs/$t.txt" 2>&1 && rc=0 || rc=$?
  echo "$rc" >"$work/logs/$t.rc"
}

jobs=${KVPLAN_FUZZ_JOBS:-$(nproc)}
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  run_one "$t" &
done
wait

status=0 failed=0
printf '%-26s %12s %8s %9s\n' target runs seconds findings
for t in "${targets[@]}"; do
  log="$work/logs/$t.txt"
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
  found=$(find "$work/findings/$t" -type f | wc -l)
  rc=$(cat "$work/logs/$t.rc")
  # A run that stopped without saving an input (e.g. it could not start) is
  # a finding too.
  if [ "$rc" -ne 0 ] && [ "$found" -eq 0 ]; then found=1; fi
  printf '%-26s %12s %8s %9s\n' "$t" "${runs:-?}" "${secs:-?}" "$found"
  if [ "$found" -ne 0 ]; then
    status=1
    failed=$((failed + 1))
    echo "  log: $log; inputs: $work/findings/$t/" >&2
    grep -m3 -E 'ERROR: |runtime error:|terminate called|SUMMARY:' "$log" | sed 's/^/  /' >&2 || true
    seed=$(sed -n 's/^INFO: Seed: \([0-9]*\).*/\1/p' "$log" | head -1)
    echo "  libFuzzer's seed: ${seed:-?} (-seed=N runs the same mutations on the same corpus)" >&2
    for input in "$work/findings/$t"/*; do
      [ -f "$input" ] || continue
      echo "  $(basename "$input"), $(stat -c %s "$input") bytes, base64:" >&2
      base64 -w 96 "$input" | head -c 4096 | sed 's/^/    /' >&2
      echo >&2
    done
  fi
done
echo "fuzz: $((${#targets[@]} - failed)) passed, $failed failed"
exit "$status"
