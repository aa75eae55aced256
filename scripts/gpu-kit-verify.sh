#!/usr/bin/env bash
# Checks here that the kit (scripts/gpu-kit.sh) is enough for the runtime-only
# build on a machine that lacks the packages it holds: in a private mount
# namespace, an overlay on /usr hides every file this machine's copies of those
# packages installed (pkg-config and ninja included; libpcre2-8's runtime stays,
# since grep needs it and every machine has it), then, in an empty environment
# that names only the kit (scripts/gpu-kit-env.sh, strict: no compiler include
# or library path to lean on), it
#   1. checks that pkg-config resolves every module to the kit,
#   2. configures build-kit-verify/ (-DKVPLAN_COMPILER=OFF, -DKVPLAN_CUDA=OFF
#      unless arguments say otherwise; they go to CMake) and checks that every
#      package CMake found lies in the kit,
#   3. builds it, runs ctest (without the gpu label) and `kvplan inspect` on
#      each kit artifact, and checks with ldd that the kit's libraries are the
#      ones loaded.
# Needs root (unshare, mount) and overlayfs. Takes a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

[ -d .gpukit/deps ] || { echo "gpu-kit-verify: no .gpukit/deps: run scripts/gpu-kit.sh first" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "gpu-kit-verify: needs root (unshare -m, mount)" >&2; exit 1; }

if [ "${KVPLAN_KIT_VERIFY_INSIDE:-}" != 1 ]; then
  # Host packages to hide: those in the kit, and the pkg-config front ends.
  hide=(nlohmann-json3-dev libcli11-dev libxxhash-dev libxxhash0 libsentencepiece-dev
        libsentencepiece0 libpcre2-dev libutf8proc-dev libutf8proc2 libtomlplusplus-dev
        libtomlplusplus3 libgtest-dev libgmock-dev googletest libbenchmark-dev libbenchmark1debian
        pkgconf-bin pkgconf pkg-config libpkgconf3 ninja-build)
  work=$(mktemp -d /tmp/gpu-kit-verify.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/upper" "$work/work"
  n=0
  for p in "${hide[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || continue
    while IFS= read -r f; do
      case "$f" in /usr/*) ;; *) continue ;; esac
      if [ -L "$f" ] || [ -f "$f" ]; then
        rel=${f#/usr/}
        mkdir -p "$work/upper/$(dirname "$rel")"
        mknod "$work/upper/$rel" c 0 0   # an overlayfs whiteout
        n=$((n + 1))
      fi
    done < <(dpkg -L "$p")
  done
  echo "gpu-kit-verify: hiding $n files of ${#hide[@]} packages under /usr"
  exec unshare -m --propagation private env KVPLAN_KIT_VERIFY_INSIDE=1 \
    KVPLAN_KIT_VERIFY_WORK="$work" bash -c '
      set -e
      mount -t overlay overlay -o lowerdir=/usr,upperdir="$KVPLAN_KIT_VERIFY_WORK/upper",workdir="$KVPLAN_KIT_VERIFY_WORK/work" /usr
      exec "$0" "$@"' "$0" "$@"
fi

# --- inside the namespace ---------------------------------------------------
fail() { echo "gpu-kit-verify: FAIL: $*" >&2; exit 1; }
for f in /usr/include/xxhash.h /usr/include/nlohmann/json.hpp /usr/include/CLI/CLI.hpp \
         /usr/lib/x86_64-linux-gnu/libsentencepiece.so.0 /usr/bin/pkg-config /usr/bin/ninja \
         /usr/lib/x86_64-linux-gnu/cmake/GTest/GTestConfig.cmake; do
  [ ! -e "$f" ] || fail "$f is still visible: the overlay hides nothing"
done
echo "gpu-kit-verify: the host's copies are hidden (no xxhash.h, pkg-config, ninja, GTest ...)"

cmake_args=("$@")
((${#cmake_args[@]})) || cmake_args=(-DKVPLAN_CUDA=OFF)
export KVPLAN_KIT_VERIFY_ROOT=$root
# An empty environment, but for the kit.
exec env -i HOME="$HOME" PATH=/usr/local/bin:/usr/bin:/bin TERM=dumb KVPLAN_KIT_STRICT=1 \
  bash -euo pipefail -c '
  cd "$0"
  source scripts/gpu-kit-env.sh .gpukit
  fail() { echo "gpu-kit-verify: FAIL: $*" >&2; exit 1; }
  kit=$KVPLAN_KIT
  command -v ninja
  [ "$(command -v pkg-config)" = "$kit/bin/pkg-config" ] || fail "pkg-config is not the kit'"'"'s"
  for m in libxxhash sentencepiece libpcre2-8 tomlplusplus gtest benchmark nlohmann_json CLI11; do
    flags=$(pkg-config --cflags --libs "$m") || fail "pkg-config does not know $m"
    for w in $flags; do
      case "$w" in
        -I/*|-L/*) case "${w:2}" in "$kit"/*) ;; *) fail "$m: $w is outside the kit" ;; esac ;;
      esac
    done
    case "$flags" in *-I"$kit"/*) ;; *) fail "$m: no -I into the kit ($flags)" ;; esac
    echo "  pkg-config $m: $flags"
  done
  rm -rf build-kit-verify
  cmake -S . -B build-kit-verify -G Ninja -DCMAKE_BUILD_TYPE=Release -DKVPLAN_COMPILER=OFF "$@" \
    > build-kit-verify.configure.log 2>&1 || { cat build-kit-verify.configure.log; fail "configure"; }
  mv build-kit-verify.configure.log build-kit-verify/configure.log
  # Every package and library CMake found must lie in the kit.
  found=$(grep -E "^(pkgcfg_lib_[^:]*|(nlohmann_json|CLI11|GTest|benchmark|tomlplusplus)_DIR|PKG_CONFIG_EXECUTABLE):(FILEPATH|PATH)=" \
          build-kit-verify/CMakeCache.txt)
  [ "$(wc -l <<<"$found")" -ge 10 ] || fail "CMake found fewer packages than expected: $found"
  bad=$(grep -v "=$kit/" <<<"$found" || true)
  [ -z "$bad" ] || fail "found outside the kit: $bad"
  echo "gpu-kit-verify: configured; every package from the kit"
  cmake --build build-kit-verify > build-kit-verify/build.log 2>&1 ||
    { tail -40 build-kit-verify/build.log; fail "build (build-kit-verify/build.log)"; }
  echo "gpu-kit-verify: built"
  for b in build-kit-verify/bin/*; do
    out=$(ldd "$b")
    if grep -q "not found" <<<"$out"; then echo "$out"; fail "$b: a library is not found"; fi
    for l in libsentencepiece libxxhash libtomlplusplus libbenchmark libpcre2-8; do
      line=$(grep "$l" <<<"$out" || true)
      [ -z "$line" ] || grep -q "$kit/" <<<"$line" || fail "$b loads $line, not the kit'"'"'s"
    done
  done
  echo "gpu-kit-verify: every binary loads the kit'"'"'s libraries (RUNPATH; no LD_LIBRARY_PATH)"
  ctest --test-dir build-kit-verify -LE gpu --output-on-failure -j 2 > build-kit-verify/ctest.log 2>&1 ||
    { tail -40 build-kit-verify/ctest.log; fail "ctest (build-kit-verify/ctest.log)"; }
  grep -E "tests passed|tests failed" build-kit-verify/ctest.log
  for a in "$kit"/artifacts/*.kvp; do
    [ -e "$a" ] || continue
    build-kit-verify/bin/kvplan inspect --json "$a" > /dev/null || fail "kvplan inspect $a"
    echo "  inspect $(basename "$a"): ok"
  done
  echo "gpu-kit-verify: OK"
' "$KVPLAN_KIT_VERIFY_ROOT" "${cmake_args[@]}"
