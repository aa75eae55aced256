#!/usr/bin/env bash
# Prepares .gpukit/ on this (Debian) machine for scripts/gpu-check.sh, which
# runs on a GPU machine that has a compiler, CMake, ninja and CUDA but none of
# the -dev packages the runtime-only build needs, and no network:
#
#   .gpukit/deps/          Debian packages, downloaded (apt-get download) and
#                          unpacked (dpkg -x); nothing is installed here
#   .gpukit/bin/pkg-config a wrapper around the kit's pkgconf
#   .gpukit/fallback-bin/  ninja, used only where the machine has none
#   .gpukit/links.txt      the kit's symbolic links (gpu-kit-env.sh recreates lost ones)
#   .gpukit/prebuilt/      kvplan and kvplan-gpu-tests from the runtime-only
#                          CUDA build (build-kit-gpu/), which gpu-check.sh runs
#                          when they start there (it builds from source if not)
#   .gpukit/artifacts/     artifacts compiled here with --target cuda, each
#                          one's `kvplan inspect --json`, and each one's twin
#                          for the CPU (NAME.cpu.kvp), the tests' reference
#   .gpukit/MANIFEST.json  packages and versions, the git hash, the newest
#                          glibc/libstdc++ symbol versions the libraries need
#
# scripts/gpu-kit-env.sh points a shell at the kit; scripts/gpu-kit-verify.sh
# checks here that the runtime-only build configures, builds and passes its
# tests with the kit alone (the host's copies of the packages hidden).
#
# Usage: scripts/gpu-kit.sh [--keep-before] [--deps-only | --artifacts-only | --prebuilt-only]
#   --keep-before  the bench artifacts the kit holds (bf16 at 1 and 8 sequences)
#                  go to .gpukit/before/ before the artifacts are compiled again:
#                  gpu-check.sh's before step then benches the kernels from before
#                  a change against the new ones side by side. Without it,
#                  compiling the artifacts drops .gpukit/before/. Either way each
#                  variant of a bench artifact (below: scripts/variants/*.patch)
#                  goes into artifacts/, and before/ holds NAME.base (the
#                  artifact it is measured against) and NAME.what (what differs).
# Needs: apt-get and dpkg (Debian's archive reachable) for the packages, and
# build/bin/kvplan (the full build: scripts/setup.sh) for the artifacts. Ship
# the kit to the GPU machine by carrying .gpukit.tar.xz, which it writes last
# (scripts/gpu-kit-pack.sh; .gpukit unpacked would not fit what the device
# tool carries; both are ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."

kit=.gpukit
cache=build-kit-cache/debs   # downloaded .debs, kept between runs (ignored: /build-*/)
do_deps=1
do_artifacts=1
do_prebuilt=1
keep_before=0
if [ "${1:-}" = --keep-before ]; then
  keep_before=1
  shift
fi
case "${1:-}" in
  --deps-only) do_artifacts=0; do_prebuilt=0 ;;
  --artifacts-only) do_deps=0; do_prebuilt=0 ;;
  --prebuilt-only) do_deps=0; do_artifacts=0 ;;
  "") ;;
  *) echo "usage: $0 [--keep-before] [--deps-only | --artifacts-only | --prebuilt-only]" >&2
     exit 2 ;;
esac

# What the runtime-only build (-DKVPLAN_COMPILER=OFF) finds with find_package
# or pkg-config, and the shared libraries behind them. Debian's sentencepiece
# carries protobuf-lite inside it: there is no libprotobuf to bring.
packages=(
  nlohmann-json3-dev            # find_package(nlohmann_json), header-only
  libcli11-dev                  # find_package(CLI11), header-only
  libxxhash-dev libxxhash0      # pkg-config libxxhash
  libsentencepiece-dev libsentencepiece0   # pkg-config sentencepiece
  libpcre2-dev libpcre2-8-0     # pkg-config libpcre2-8
  libutf8proc-dev libutf8proc2  # pkg-config libutf8proc (tokenizer.json normalizers)
  libtomlplusplus-dev libtomlplusplus3     # find_package(tomlplusplus) (frontend/, kvplan_config)
  libgtest-dev libgmock-dev     # find_package(GTest); gmock in case a test wants it
  libbenchmark-dev libbenchmark1debian     # find_package(benchmark) (tests/)
  pkgconf-bin libpkgconf3       # pkg-config itself
  ninja-build                   # a fallback only
)
# Libraries every machine that can run a compiler has.
base_libs='^(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|ld-linux-x86-64|libatomic)\.so'

die() { echo "gpu-kit: error: $*" >&2; exit 1; }

if ((do_deps)); then
  command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null ||
    die "needs apt-get and dpkg-deb (a Debian or Ubuntu machine)"
  triplet=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -dumpmachine)
  [ "$triplet" = x86_64-linux-gnu ] ||
    die "this machine is $triplet; the GPU machine is x86_64-linux-gnu"

  mkdir -p "$cache"
  echo "gpu-kit: downloading ${#packages[@]} packages into $cache"
  # apt-get download as root warns that _apt cannot write here; that is harmless.
  (cd "$cache" && apt-get download -q "${packages[@]}" 2>&1 |
    grep -v "couldn't be accessed by user '_apt'" || true)
  debs=()
  for p in "${packages[@]}"; do
    # The newest .deb of each package in the cache (an older one may linger).
    f=$(ls -t "$cache/${p}_"*.deb 2>/dev/null | head -1 || true)
    [ -n "$f" ] || die "apt-get download did not fetch $p (is Debian's archive reachable? apt-get update?)"
    debs+=("$f")
  done

  rm -rf "${kit:?}/deps" "${kit:?}/bin" "${kit:?}/fallback-bin" "${kit:?}/links.txt" "${kit:?}/packages.txt"
  mkdir -p "$kit/deps" "$kit/bin" "$kit/fallback-bin"
  echo "$triplet" > "$kit/TRIPLET"
  for f in "${debs[@]}"; do
    dpkg-deb -x "$f" "$kit/deps"
    echo "$(dpkg-deb -f "$f" Package) $(dpkg-deb -f "$f" Version)"
  done > "$kit/packages.txt"
  # Documentation, manuals and sources are not needed to build.
  rm -rf "$kit/deps/usr/share/doc" "$kit/deps/usr/share/man" "$kit/deps/usr/share/lintian" \
         "$kit/deps/usr/share/doc-base" "$kit/deps/usr/src" "$kit/deps/usr/share/aclocal"

  # Absolute links (/usr/lib/...) would point at the GPU machine's own files:
  # make each one relative inside the kit.
  while IFS= read -r -d '' link; do
    target=$(readlink "$link")
    case "$target" in
      /*) ln -sfn "$(realpath -m --relative-to="$(dirname "$link")" "$kit/deps$target")" "$link" ;;
    esac
  done < <(find "$kit/deps" -type l -print0)
  # Links to packages left out (libpcre2-16, -32, -posix) are dropped.
  find "$kit/deps" -xtype l -print -delete | sed 's/^/gpu-kit: dropped dangling link /'

  lib="$kit/deps/usr/lib/$triplet"
  cat > "$kit/bin/pkg-config" <<'EOF'
#!/bin/sh
# pkg-config for the kit: the kit's pkgconf with its own libpkgconf.
here=$(cd "$(dirname "$0")" && pwd)
kit=$(dirname "$here")
lib=$kit/deps/usr/lib/$(cat "$kit/TRIPLET" 2>/dev/null || echo x86_64-linux-gnu)
LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec "$kit/deps/usr/bin/pkgconf" "$@"
EOF
  chmod +x "$kit/bin/pkg-config"
  mv "$kit/deps/usr/bin/ninja" "$kit/fallback-bin/ninja"

  # A record of the links, so that a copy that loses them can rebuild them.
  (cd "$kit" && find deps -type l -printf '%p %l\n' | sort) > "$kit/links.txt"

  # Each kit library's needs must be in the kit or on every machine.
  missing=()
  while IFS= read -r -d '' so; do
    while read -r need; do
      [[ "$need" =~ $base_libs ]] && continue
      [ -e "$lib/$need" ] || missing+=("$(basename "$so") needs $need")
    done < <(readelf -d "$so" 2>/dev/null | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  done < <(find "$kit/deps" -type f \( -name '*.so*' -o -path '*/bin/*' \) -print0)
  if ((${#missing[@]})); then
    printf 'gpu-kit: %s\n' "${missing[@]}" >&2
    die "the kit's libraries need libraries it does not hold"
  fi
  "$kit/bin/pkg-config" --version >/dev/null || die "the kit's pkgconf does not run"
fi

# --- artifacts --------------------------------------------------------------
artifact_failures=()
if ((do_artifacts)); then
  kvplan=build/bin/kvplan
  [ -x "$kvplan" ] || die "$kvplan is missing: build the compiler first (scripts/setup.sh)"
  newer=$(git ls-files -co --exclude-standard -- runtime codegen frontend passes ir tools 2>/dev/null |
          while read -r f; do [ "$f" -nt "$kvplan" ] && echo "$f"; done | head -5 || true)
  if [ -n "$newer" ]; then
    echo "gpu-kit: WARNING: $kvplan is older than" $newer "...: rebuild it (cmake --build build)," \
         "or the artifacts may not be what these sources compile" >&2
  fi
  art="$kit/artifacts"
  rm -rf "${kit:?}/before"
  if ((keep_before)); then
    mkdir -p "$kit/before"
    for name in bench-llama-3.2-1b bench-llama-3.2-1b-b8; do
      [ ! -f "$art/$name.kvp" ] || cp "$art/$name.kvp" "$kit/before/$name.kvp"
    done
    echo "gpu-kit: the kernels before: $(ls "$kit/before" | tr '\n' ' ')"
  fi
  rm -rf "${art:?}"
  mkdir -p "$art"
  common=(--target cuda --arch sm_90a --weights none)
  # name | model | extra flags
  specs=(
    "bench-llama-3.2-1b|models/llama-3.2-1b.toml|--dtype bf16 --max-seq 1024"
    # The same at 8 sequences a step (gpu-check's batch-8 goal), and with
    # int8 and int4 weights.
    "bench-llama-3.2-1b-b8|models/llama-3.2-1b.toml|--dtype bf16 --max-seq 1024 --max-batch 8"
    "bench-llama-3.2-1b-int8|models/llama-3.2-1b.toml|--dtype int8 --max-seq 1024"
    "bench-llama-3.2-1b-int4|models/llama-3.2-1b.toml|--dtype int4 --max-seq 1024"
    # A plan for 64 sequences (gpu-check's optional rows step): 1, 16 and 32
    # a step on the copies of decode that serve them (decode.1; decode.16
    # and decode.32: the folds, the products in 2 and 4 tiles of 8 rows a
    # block) against decode's own rows (cuBLAS at 64, the ops unfused); and
    # the before step's base for variants at 32 sequences ("# base: b64").
    "bench-llama-3.2-1b-b64|models/llama-3.2-1b.toml|--dtype bf16 --max-seq 1024 --max-batch 64 --decode-copies 1,8,16,32"
    # gpu-check's mixture-of-experts bench: Qwen3-30B-A3B's layers (12 of
    # 48), one sequence.
    "bench-qwen3moe|tests/data/gpu/qwen3-30b-a3b-12-layers.toml|--dtype bf16 --max-seq 1024 --max-batch 1"
    # The benchmark's shape in f32: greedy ids against the CPU (gpu tests).
    "bench-llama-3.2-1b-f32|models/llama-3.2-1b.toml|--dtype f32 --max-seq 256 --prefill-chunk 64 --max-batch 1"
    # With @score (the prompt's log-probabilities; CudaRuntime.ScoreOnTheDevice).
    "tiny-f32|models/tiny.toml|--dtype f32 --score-rows 8"
    "tiny-bf16|models/tiny.toml|--dtype bf16"
    "tiny-f16|models/tiny.toml|--dtype f16"
    "tiny-bf16-batch1|models/tiny.toml|--dtype bf16 --max-batch 1"
    # Every kernel asking L2 for the next products' weights (the whole
    # model fits a MiB: each entry point's first kernels ask for all of it).
    "tiny-bf16-l2|models/tiny.toml|--dtype bf16 --l2-prefetch 1"
    "qwen-like-bf16|tests/data/gpu/qwen-like.toml|--dtype bf16"
    "qwen3-like-bf16|tests/data/gpu/qwen3-like.toml|--dtype bf16"
    "mha-llama3-f16|tests/data/gpu/mha-llama3.toml|--dtype f16"
    # Sliding-window attention (a window of 24): flash-decoding and the
    # tiled prefill kernels on bf16 tensor cores and on tf32 (f16's cache).
    "mistral-window-bf16|tests/data/gpu/mistral-window.toml|--dtype bf16"
    "mistral-window-f16|tests/data/gpu/mistral-window.toml|--dtype f16"
    # Partial RoPE with LongRoPE (Phi-4-mini's): the rotated pairs' table
    # scaled by the attention factor, the rest unturned; batch 1 folds the
    # QKV product, RoPE and the cache write into one kernel.
    "phi4-mini-like-bf16|tests/data/gpu/phi4-mini-like.toml|--dtype bf16"
    "phi4-mini-like-bf16-batch1|tests/data/gpu/phi4-mini-like.toml|--dtype bf16 --max-batch 1"
    # Gemma 3's layers: GeGLU, post-norms, a local (windowed) and a global
    # layer with their own RoPE tables.
    "gemma3-like-bf16|tests/data/gpu/gemma3-like.toml|--dtype bf16"
    "gemma3-like-bf16-batch1|tests/data/gpu/gemma3-like.toml|--dtype bf16 --max-batch 1"
    # Gemma 2's soft-capped scores and logits, on bf16 and f16 caches.
    "gemma2-like-bf16|tests/data/gpu/gemma2-like.toml|--dtype bf16"
    "gemma2-like-f16|tests/data/gpu/gemma2-like.toml|--dtype f16"
    # A mixture of experts (Qwen3-MoE's): the router, the routing, the
    # active experts' products and the weighted sums, at a batch and at one
    # row, and with int4 stacks.
    "qwen3moe-like-bf16|tests/data/gpu/qwen3moe-like.toml|--dtype bf16"
    "qwen3moe-like-bf16-batch1|tests/data/gpu/qwen3moe-like.toml|--dtype bf16 --max-batch 1"
    "qwen3moe-like-int4|tests/data/gpu/qwen3moe-like.toml|--dtype int4"
    # Qwen2-MoE's: the experts beside a gated shared expert (its gate one
    # more block of the router's kernel, its rows added in the sums).
    "qwen2moe-like-bf16|tests/data/gpu/qwen2moe-like.toml|--dtype bf16"
    "qwen2moe-like-int8-batch1|tests/data/gpu/qwen2moe-like.toml|--dtype int8 --max-batch 1"
    "tiny-int8|models/tiny.toml|--dtype int8"
    "tiny-int8-batch1|models/tiny.toml|--dtype int8 --max-batch 1"
    "qwen-like-int8|tests/data/gpu/qwen-like.toml|--dtype int8"
    "quant-odd-int8|tests/data/gpu/quant-odd.toml|--dtype int8"
    "tiny-int4|models/tiny.toml|--dtype int4"
    "tiny-int4-batch1|models/tiny.toml|--dtype int4 --max-batch 1"
    "qwen-like-int4|tests/data/gpu/qwen-like.toml|--dtype int4"
    "quant-odd-int4|tests/data/gpu/quant-odd.toml|--dtype int4"
    # Prefill chunks of 32 rows and decode at up to 16: bf16, int8 and int4
    # products in 4 and 2 tiles of 8 rows a block, with --fuse-matvec's folds.
    "tiny-bf16-tiles|models/tiny.toml|--dtype bf16 --max-batch 16 --prefill-chunk 32"
    "tiny-int8-tiles|models/tiny.toml|--dtype int8 --max-batch 16 --prefill-chunk 32"
    "tiny-int4-tiles|models/tiny.toml|--dtype int4 --max-batch 16 --prefill-chunk 32"
    # Two ranks over NCCL (gpu-check runs it where there are two GPUs).
    "tp2-tiny-f32|models/tiny.toml|--dtype f32 --tensor-parallel 2"
  )
  for spec in "${specs[@]}"; do
    IFS='|' read -r name model extra <<<"$spec"
    # shellcheck disable=SC2206
    cmd=("$kvplan" compile "$model" "${common[@]}" $extra -o "$art/$name.kvp")
    # The same model for the CPU: the gpu tests' reference (its plan differs
    # by the cuda target's own passes; the weights section is the same), less
    # the settings only the cuda target takes.
    cpu_extra=$(sed -E 's/--l2-prefetch [0-9]+//; s/--(decode|prefill)-copies [0-9,a-z]+//g' \
      <<<"$extra")
    # shellcheck disable=SC2206
    twin=("$kvplan" compile "$model" --target cpu --weights none $cpu_extra -o "$art/$name.cpu.kvp")
    echo "gpu-kit: ${cmd[*]}"
    if "${cmd[@]}" && "${twin[@]}" &&
       "$kvplan" inspect --json "$art/$name.kvp" > "$art/$name.inspect.json"; then
      :
    else
      echo "gpu-kit: FAILED: $name ($model)" >&2
      rm -f "$art/$name.kvp" "$art/$name.cpu.kvp" "$art/$name.inspect.json"
      artifact_failures+=("$name")
    fi
  done
fi

# --- prebuilt binaries ------------------------------------------------------
# The runtime-only build with CUDA, as gpu-check.sh would build it there, made
# here so the device's minutes go to running it. They need the kit's
# libraries (gpu-kit-env.sh puts them on the loader's path) and a glibc and
# libstdc++ as new as this machine's (the manifest records which); where the
# GPU machine's are older they do not start, and gpu-check.sh builds there.
if ((do_prebuilt)); then
  command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ] ||
    die "the prebuilt binaries need the CUDA toolkit (nvcc, cudart) here"
  mkdir -p build-kit-cache
  echo "gpu-kit: building the runtime-only CUDA binaries in build-kit-gpu/ (log: build-kit-cache/prebuilt.log)"
  if cmake -S . -B build-kit-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVPLAN_COMPILER=OFF \
       -DKVPLAN_CUDA=ON -DKVPLAN_TESTS=ON > build-kit-cache/prebuilt.log 2>&1 &&
     cmake --build build-kit-gpu --target kvplan kvplan-gpu-tests >> build-kit-cache/prebuilt.log 2>&1; then
    rm -rf "${kit:?}/prebuilt"
    mkdir -p "$kit/prebuilt"
    for b in kvplan kvplan-gpu-tests; do
      cp "build-kit-gpu/bin/$b" "$kit/prebuilt/$b"
      strip "$kit/prebuilt/$b"
    done
    "$kit/prebuilt/kvplan" --version > /dev/null || die "the prebuilt kvplan does not run here"
    # The shared libraries they load that are neither glibc's family nor in the
    # kit's packages (cpp-httplib, OpenSSL, zlib, brotli, Open MPI's, ...), in
    # one archive: gpu-check.sh puts on the loader's path those the GPU
    # machine lacks (its first run found no libcpp-httplib there).
    rm -rf build-kit-cache/libs && mkdir -p build-kit-cache/libs
    ldd build-kit-gpu/bin/kvplan build-kit-gpu/bin/kvplan-gpu-tests |
      awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u |
      while read -r name path; do
        [[ ! $name =~ $base_libs ]] || continue
        [[ $path != /usr/local/cuda* && $name != libcuda.so* ]] || continue
        [ -z "$(find "$kit/deps" -name "$name" -print -quit)" ] || continue
        cp -L "$path" "build-kit-cache/libs/$name"
      done
    tar -cJf "$kit/prebuilt/libs.tar.xz" -C build-kit-cache/libs .
    echo "gpu-kit: the prebuilt binaries' other libraries: $(ls build-kit-cache/libs | tr '\n' ' ')"
  else
    tail -n 20 build-kit-cache/prebuilt.log >&2
    die "the runtime-only CUDA build failed (build-kit-cache/prebuilt.log)"
  fi
fi

# --- manifest ---------------------------------------------------------------
if [ -d "$kit/deps" ]; then
  sos=$(find "$kit/deps" "$kit/prebuilt" -type f \( -name '*.so*' -o -path '*/bin/*' -o -path '*/prebuilt/*' \) 2>/dev/null)
  # shellcheck disable=SC2086
  KIT_GLIBC=$(objdump -T $sos 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1 || true)
  # shellcheck disable=SC2086
  KIT_GLIBCXX=$(objdump -T $sos 2>/dev/null | grep -o 'GLIBCXX_[0-9.]*' | sort -uV | tail -1 || true)
  KIT_GIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  [ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || KIT_GIT="$KIT_GIT-dirty"
  KIT_KVPLAN=$( (build/bin/kvplan --version 2>/dev/null || echo unknown) | head -1)
  KIT_OS=$(. /etc/os-release && echo "$PRETTY_NAME")
  # The sources that decide the artifact format and the runtime, as they will
  # travel (tracked and untracked-not-ignored files): gpu-check.sh recomputes
  # the digest there and warns when the artifacts were compiled from others.
  git ls-files -co --exclude-standard -- support spec formats plan runtime codegen frontend passes ir tools cmake CMakeLists.txt \
    > "$kit/source-files.txt" 2>/dev/null || : > "$kit/source-files.txt"
  KIT_FAILURES="${artifact_failures[*]:-}"
  export KIT_GLIBC KIT_GLIBCXX KIT_GIT KIT_KVPLAN KIT_OS KIT_FAILURES
  PYTHONDONTWRITEBYTECODE=1 python3 - "$kit" <<'EOF_PY'
import glob, json, os, sys, time
kit = sys.argv[1]
e = os.environ
packages = {}
if os.path.exists(f"{kit}/packages.txt"):
    for line in open(f"{kit}/packages.txt"):
        name, version = line.split()
        packages[name] = version
sys.path.insert(0, "scripts")
from gpu_check_report import source_digest
files = [l.strip() for l in open(f"{kit}/source-files.txt") if l.strip()]
json.dump({
    "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "source_digest": source_digest(files) if files else None,
    "made_on": e["KIT_OS"],
    "git": e["KIT_GIT"],
    "kvplan": e["KIT_KVPLAN"],
    "triplet": open(f"{kit}/TRIPLET").read().strip(),
    "packages": packages,
    "needs_glibc": e["KIT_GLIBC"],
    "needs_glibcxx": e["KIT_GLIBCXX"],
    "artifacts": sorted(os.path.relpath(p, kit) for p in glob.glob(f"{kit}/artifacts/*.kvp")),
    "artifact_failures": e["KIT_FAILURES"].split(),
    "prebuilt": sorted(os.listdir(f"{kit}/prebuilt")) if os.path.isdir(f"{kit}/prebuilt") else [],
}, open(f"{kit}/MANIFEST.json", "w"), indent=2)
EOF_PY
fi

echo "gpu-kit: $(du -sh "$kit" | cut -f1) in $kit (deps $(du -sh "$kit/deps" 2>/dev/null | cut -f1 || echo -)," \
     "artifacts $(du -sh "$kit/artifacts" 2>/dev/null | cut -f1 || echo -))"

# --- variants ---------------------------------------------------------------
# Bench artifacts that gpu-check.sh's before step benches against the kit's
# own side by side, made by scripts/gpu-variants.sh: settings, as
# [SUFFIX:]NAME=--FLAGS (none now: --l2-prefetch 16 and 32 lost on the H200 at
# stop 46, 0.94x and 0.86x; 'l2p16=--l2-prefetch 16' would bring one back),
# and each scripts/variants/NAME.patch (what `git diff` writes, reverting a
# change of the kernels not yet timed on a GPU; its "# base:" and "# what:"
# lines, gpu-variants.sh's). A patch that no longer applies is reported and
# left out: the change it reverts was edited since, so rewrite it or delete
# it. gpu-variants.sh packs the kit last.
variant_args=()
if ((do_artifacts)); then
  for p in scripts/variants/*.patch; do
    [ -f "$p" ] || continue
    name=$(basename "$p" .patch)
    if git apply --check "$p" 2>/dev/null; then
      variant_args+=("$name=$p")
    else
      echo "gpu-kit: WARNING: $p does not apply to this tree: no variant $name" >&2
    fi
  done
fi
if ((${#variant_args[@]})); then
  scripts/gpu-variants.sh "${variant_args[@]}" || artifact_failures+=("variants")
else
  scripts/gpu-kit-pack.sh
fi
if ((${#artifact_failures[@]})); then
  echo "gpu-kit: ERROR: could not compile: ${artifact_failures[*]}" >&2
  exit 1
fi
