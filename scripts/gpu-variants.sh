#!/usr/bin/env bash
# Kernel variants for one device call: for each NAME=PATCH (or NAME=--FLAGS:
# compile flags added, the tree as it is), the benchmark's
# bf16 artifact (Llama-3.2-1B's shape at batch 1, with the model and flags
# of scripts/gpu-kit.sh's spec for it) compiled with PATCH applied to this
# tree, into .gpukit/artifacts/bench-llama-3.2-1b-NAME.kvp, and the kit's own
# bench-llama-3.2-1b.kvp named its before (.gpukit/before/bench-llama-3.2-1b-NAME.base)
# and what differs written beside it (NAME.what) for the report. SUFFIX:NAME=...
# takes the kit's bench-llama-3.2-1b-SUFFIX instead (b8: batch 8, which the
# before step benches at 8 sequences; b64: the plan for 64, benched at 32;
# int8, int4), into bench-llama-3.2-1b-SUFFIX-NAME.kvp.
# scripts/gpu-check.sh's before step then benches every variant against the
# kit's kernels, alternately, in one run (KVPLAN_GPU_CHECK_STEPS=build,before
# for that alone: about 20 s a variant on an H200).
#
#   scripts/gpu-variants.sh split-down=/tmp/split-down.patch unroll=/tmp/u.patch
#   scripts/gpu-variants.sh l2p24='--l2-prefetch 24'
#   scripts/gpu-variants.sh b8:old_mma=/tmp/old-mma.patch
#
# A patch is what `git diff` writes (codegen/cuda/Kernels.cuh, say), maybe
# after lines "# base: SUFFIX" and "# what: TEXT" (the report's words); the tree
# and build/bin/kvplan are put back after each, and a patch that does not
# apply stops the script before anything is built. Needs a kit
# (scripts/gpu-kit.sh) and the full build.
set -euo pipefail
cd "$(dirname "$0")/.."

kit=.gpukit
die() { echo "gpu-variants: error: $*" >&2; exit 1; }
(($#)) || die "usage: $0 [SUFFIX:]NAME=PATCH [[SUFFIX:]NAME=--FLAGS ...]"
# The kit's artifact a variant v ([SUFFIX:]NAME=...) is measured against: its
# SUFFIX, else a patch's own "# base: SUFFIX" line before its diff.
base_of() {
  local head=${1%%=*} patch=${1#*=} suffix=
  if [[ $head == *:* ]]; then
    suffix=${head%%:*}
  elif [[ $patch != --* && -f $patch ]]; then
    suffix=$(sed -n '/^diff /q; s/^# base: *\([A-Za-z0-9_]*\)$/\1/p' "$patch")
  fi
  echo "bench-llama-3.2-1b${suffix:+-$suffix}"
}
# The base must be this tree's kernels, or a variant measures more than its patch.
if python3 scripts/gpu_check_report.py --check-kit-sources --kit "$kit" | grep -q WARNING; then
  die "the kit's artifacts come from other sources than this tree's: rerun scripts/gpu-kit.sh"
fi
for v in "$@"; do
  name=${v%%=*}
  name=${name#*:}
  patch=${v#*=}
  [[ $v == *=* && $name =~ ^[A-Za-z0-9_]+$ ]] ||
    die "'$v' is not [SUFFIX:]NAME=PATCH or [SUFFIX:]NAME=--FLAGS (NAME in letters, digits and _)"
  base=$(base_of "$v")
  [ -f "$kit/artifacts/$base.kvp" ] ||
    die "$kit/artifacts/$base.kvp (for $name) is missing: run scripts/gpu-kit.sh first"
  grep -q "\"$base|" scripts/gpu-kit.sh || die "scripts/gpu-kit.sh has no spec for $base"
  [[ $patch != --* ]] || continue
  [ -f "$patch" ] || die "$patch (for $name) does not exist"
  git apply --check "$patch" || die "$patch (for $name) does not apply to this tree"
done

restore() { cmake --build build --target kvplan > /dev/null; }
mkdir -p "$kit/before"
for v in "$@"; do
  name=${v%%=*}
  name=${name#*:}
  patch=${v#*=}
  base=$(base_of "$v")
  # The model and flags gpu-kit.sh compiles the base with (its spec line), so
  # a variant differs from the base by its patch alone.
  spec=$(grep -o "\"$base|[^\"]*\"" scripts/gpu-kit.sh | tr -d '"')
  IFS='|' read -r _ model flags <<<"$spec"
  out=$kit/artifacts/$base-$name.kvp
  if [[ $patch == --* ]]; then
    echo "gpu-variants: $name: compiling with $patch"
    # shellcheck disable=SC2086
    build/bin/kvplan compile "$model" --target cuda --arch sm_90a --weights none $flags $patch \
      -o "$out" || die "$name: the artifact failed to build"
    echo "$base" > "$kit/before/$base-$name.base"
    echo "$patch vs none" > "$kit/before/$base-$name.what"
    continue
  fi
  git apply "$patch"
  echo "gpu-variants: $name: building the compiler with $patch"
  if cmake --build build --target kvplan > /dev/null &&
     # shellcheck disable=SC2086
     build/bin/kvplan compile "$model" --target cuda --arch sm_90a --weights none $flags \
       -o "$out"; then
    echo "$base" > "$kit/before/$base-$name.base"
    # The patch's own "# what: ..." line before its diff, if it has one.
    what=$(sed -n '/^diff /q; s/^# what: *//p' "$patch")
    echo "${what:-$(basename "$patch") applied vs this tree}" > "$kit/before/$base-$name.what"
    git apply -R "$patch"
  else
    git apply -R "$patch"
    restore
    die "$name: the compiler or the artifact failed to build"
  fi
done
restore
echo "gpu-variants: $(ls "$kit/before" | tr '\n' ' ')in $kit/before; run the device's" \
  "KVPLAN_GPU_CHECK_PACK=1 KVPLAN_GPU_CHECK_STEPS=build,before scripts/gpu-check.sh"
scripts/gpu-kit-pack.sh
