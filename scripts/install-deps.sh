#!/usr/bin/env bash
# Installs the Debian packages DarKnight's build, tests and tools need.
# Only missing packages are installed; apt-get update runs first when any is missing.
# Works as root on a fresh Debian 12 machine (or through sudo when not root).
# Usage: install-deps.sh [--list]
set -euo pipefail

packages=(
  # toolchain
  g++ make cmake ninja-build pkg-config
  # libraries (see README "Dependencies")
  # ocl-icd-opencl-dev: Debian's oneDNN CMake config (dnnl-config.cmake) calls
  # find_package(OpenCL); libdnnl-dev only recommends it, and recommends are off below.
  libdnnl-dev ocl-icd-opencl-dev libopenblas-openmp-dev libsodium-dev libcli11-dev nlohmann-json3-dev
  libspdlog-dev libfmt-dev zlib1g-dev libturbojpeg0-dev libgtest-dev libgmock-dev libbenchmark-dev
  libonnx-dev libprotobuf-dev libeigen3-dev libzmq3-dev cppzmq-dev
  # the audit: lattice reduction, PNG grids
  libfplll-dev libpng-dev
  # fuzzing the parsers (make fuzz): clang with libFuzzer
  # (libclang-rt-16-dev: the sanitizer runtimes; libomp-16-dev: clang links OpenMP code)
  clang-16 libfuzzer-16-dev libclang-rt-16-dev libomp-16-dev
  # test data and tools
  libonnx-testdata dataset-fashion-mnist python3 python3-numpy python3-matplotlib python3-onnx
)

# --list: print the packages, one per line (scripts/check-deps.sh reads them), and exit.
if [ "${1:-}" = "--list" ]; then
  printf '%s\n' "${packages[@]}"
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "deps: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd=(sudo); else
    echo "deps: missing packages and not root (no sudo): ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
