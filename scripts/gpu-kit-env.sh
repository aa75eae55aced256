# shellcheck shell=bash
# Sourced by bash, not run: points a build at the packages scripts/gpu-kit.sh
# unpacked into a kit, so that the runtime-only build configures and links on a
# machine that has a compiler, CMake and CUDA but none of the Debian -dev
# packages (and maybe no pkg-config):
#
#   source scripts/gpu-kit-env.sh [KIT]      # KIT defaults to .gpukit
#   cmake -S . -B build-gpu ... && kvplan_kit_run cmake --build build-gpu
#   kvplan_kit_run build-gpu/bin/kvplan ...  # runs with the kit's shared libraries
#
# What it sets:
# - pkg-config: PKG_CONFIG (and PATH) name the kit's pkgconf (through a wrapper
#   that finds its libpkgconf); PKG_CONFIG_LIBDIR holds only the kit's .pc
#   folders; PKG_CONFIG_SYSROOT_DIR is the kit, since Debian's .pc files say
#   prefix=/usr (pkgconf then prints -I<kit>/usr/include, -L<kit>/usr/lib/...,
#   with PKG_CONFIG_ALLOW_SYSTEM_CFLAGS/LIBS, without which it drops both).
# - CMake: CMAKE_PREFIX_PATH starts with <kit>/usr, and <Pkg>_DIR names each
#   package's config folder (found even where CMake detects no multiarch folder).
# - The compiler: C_INCLUDE_PATH, CPLUS_INCLUDE_PATH and LIBRARY_PATH name the
#   kit (a safety net only: the targets carry these paths themselves).
# - KVPLAN_KIT_LIBDIR: the kit's shared libraries. LD_LIBRARY_PATH is NOT
#   exported, so python3 and torch never see the kit's libraries; the helper
#   kvplan_kit_run runs one command with it.
# Returns nonzero (without exiting the shell) when the kit is missing.

kvplan_kit_env() {
  local kit=${1:-.gpukit}
  if [ ! -d "$kit/deps/usr" ]; then
    echo "gpu-kit-env: no kit at $kit (run scripts/gpu-kit.sh on a machine with Debian's archive)" >&2
    return 1
  fi
  kit=$(cd "$kit" && pwd)
  local root=$kit/deps
  local triplet
  triplet=$(cat "$kit/TRIPLET" 2>/dev/null || echo x86_64-linux-gnu)
  local lib=$root/usr/lib/$triplet

  # Symbolic links travel as links, but recreate any a copy dropped.
  if [ -f "$kit/links.txt" ]; then
    local path target
    while IFS=' ' read -r path target; do
      [ -n "$path" ] || continue
      if [ ! -e "$kit/$path" ] && [ ! -L "$kit/$path" ]; then
        mkdir -p "$(dirname "$kit/$path")"
        ln -s "$target" "$kit/$path"
      fi
    done < "$kit/links.txt"
  fi

  export KVPLAN_KIT=$kit
  export KVPLAN_KIT_LIBDIR=$lib
  export PATH=$kit/bin:$PATH
  # Ninja from the kit only where the machine has none.
  if ! command -v ninja >/dev/null 2>&1 && [ -x "$kit/fallback-bin/ninja" ]; then
    export PATH=$PATH:$kit/fallback-bin
  fi
  export PKG_CONFIG=$kit/bin/pkg-config
  export PKG_CONFIG_SYSROOT_DIR=$root
  export PKG_CONFIG_LIBDIR=$lib/pkgconfig:$root/usr/share/pkgconfig
  unset PKG_CONFIG_PATH
  # pkgconf drops -I/usr/include and -L/usr/lib/... as system folders before it
  # adds the sysroot; keep them, so that they come out as the kit's folders.
  export PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 PKG_CONFIG_ALLOW_SYSTEM_LIBS=1
  export CMAKE_PREFIX_PATH=$root/usr${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
  local pkg dir
  for pkg in nlohmann_json CLI11 GTest benchmark tomlplusplus; do
    for dir in "$lib/cmake/$pkg" "$root/usr/share/cmake/$pkg" "$root/usr/lib/cmake/$pkg"; do
      if [ -d "$dir" ]; then
        export "${pkg}_DIR=$dir"
        break
      fi
    done
  done
  # KVPLAN_KIT_STRICT=1 leaves the safety net out (scripts/gpu-kit-verify.sh
  # builds so, to catch a target that uses a package it does not link).
  if [ "${KVPLAN_KIT_STRICT:-0}" != 1 ]; then
    export C_INCLUDE_PATH=$root/usr/include${C_INCLUDE_PATH:+:$C_INCLUDE_PATH}
    export CPLUS_INCLUDE_PATH=$root/usr/include${CPLUS_INCLUDE_PATH:+:$CPLUS_INCLUDE_PATH}
    export LIBRARY_PATH=$lib${LIBRARY_PATH:+:$LIBRARY_PATH}
  fi
}

# Runs one command with the kit's shared libraries on the loader's path.
kvplan_kit_run() {
  if [ -n "${KVPLAN_KIT_LIBDIR:-}" ]; then
    LD_LIBRARY_PATH=$KVPLAN_KIT_LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$@"
  else
    "$@"
  fi
}

kvplan_kit_env "$@"
