#!/usr/bin/env bash
# Packs .gpukit/ into .gpukit.tar.xz, which is what the device tool carries:
# it takes 64 MiB at most with the working tree, and the kit unpacked is about
# 62 MiB (its packages, the prebuilt binaries and some 50 artifacts, which
# share most of their bytes: 39 MB of artifacts pack into about 1.3 MB).
# scripts/gpu-check.sh unpacks it where .gpukit/ is missing. scripts/gpu-kit.sh
# and scripts/gpu-variants.sh call this last.
#
#   run(command="KVPLAN_GPU_CHECK_PACK=1 scripts/gpu-check.sh", carry=[".gpukit.tar.xz"])
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .gpukit ] || { echo "gpu-kit-pack: error: no .gpukit/: run scripts/gpu-kit.sh" >&2; exit 1; }
tar -cf - .gpukit | xz -T0 -6 > .gpukit.tar.xz.tmp
mv .gpukit.tar.xz.tmp .gpukit.tar.xz
bytes=$(stat -c %s .gpukit.tar.xz)
echo "gpu-kit-pack: .gpukit.tar.xz, $((bytes / 1024 / 1024)) MiB" \
     "($(du -sh .gpukit | cut -f1) unpacked): carry it, not .gpukit"
((bytes < 48 * 1024 * 1024)) || echo "gpu-kit-pack: WARNING: the device tool carries 64 MiB" \
  "with the working tree; this leaves little room" >&2
