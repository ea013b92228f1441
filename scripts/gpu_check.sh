#!/usr/bin/env bash
# Issue 8's checks on a machine with an NVIDIA GPU, for a build made on another machine:
#   here:  scripts/gpu_check.sh pack          (binaries and their libraries into .devcarry/)
#   there: scripts/gpu_check.sh run OUTDIR    (CUDA tests, then darknight bench --suite gpu)
# The GPU machine needs its own CUDA 13 driver, cuBLAS and cuDNN 9 (found anywhere under /);
# everything else darknight links is carried. Outputs: OUTDIR/{gpu.log,tests.log,results.json,
# results.csv,runs.tar.gz}.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.devcarry

case "${1:-}" in
pack)
  rm -rf "$CARRY" && mkdir -p "$CARRY/lib"
  cp build/darknight build/tests/dk_tests "$CARRY/"
  # Every library but glibc's, libstdc++/libgcc (newer there) and CUDA's (there already).
  ldd build/darknight build/tests/dk_tests | awk '/=> \//{print $3}' | sort -u |
    grep -Ev '/(libc|libm|libmvec|libstdc\+\+|libgcc_s|libpthread|libdl|librt|libresolv)\.so|cuda' |
    xargs -I{} cp -L {} "$CARRY/lib/"
  tar -C "$CARRY" -cJf "$CARRY/lib.tar.xz" lib && rm -rf "$CARRY/lib"
  grep -qx "/$CARRY/" .git/info/exclude 2>/dev/null || echo "/$CARRY/" >> .git/info/exclude
  du -sh "$CARRY"
  ;;
run)
  out=${2:?usage: scripts/gpu_check.sh run OUTDIR}
  mkdir -p "$out" /tmp/dk && tar -C /tmp/dk -xJf "$CARRY/lib.tar.xz"
  exec > >(tee "$out/gpu.log") 2>&1
  nvidia-smi --query-gpu=name,driver_version,memory.total,pcie.link.gen.max,pcie.link.width.max \
    --format=csv
  nproc
  cudnn=$(find / -name 'libcudnn.so.9*' -not -path '/proc/*' 2>/dev/null | head -1)
  cublas=$(find / -name 'libcublas.so.13*' -not -path '/proc/*' 2>/dev/null | head -1)
  echo "cuDNN: $cudnn"; echo "cuBLAS: $cublas"
  export DK_LD="/tmp/dk/lib:$(dirname "$cudnn"):$(dirname "$cublas")"
  dk() { LD_LIBRARY_PATH="$DK_LD" "$@"; }
  dk $CARRY/darknight infer --model vgg16 --limit 8 --batch 8 --accelerator cuda --compare-plain \
    --seed 1 | grep -E "accelerator|vs plain|images/s"
  echo "== CUDA tests"
  dk $CARRY/dk_tests --gtest_filter='*cuda*:DenseFlatten.*:Runtime.Overlapped*' \
    --gtest_brief=1 > "$out/tests.log" 2>&1
  echo "dk_tests exit $?"; tail -5 "$out/tests.log"
  echo "== a worker serving the cuda backend over tcp"
  dk $CARRY/darknight worker --backend cuda --listen tcp://127.0.0.1:5599 > /tmp/dk/worker.log 2>&1 &
  sleep 3
  dk $CARRY/darknight infer --model vgg16 --limit 8 --batch 8 --seed 1 --compare-plain \
    --accelerator tcp://127.0.0.1:5599 | grep -E "vs plain"
  kill %1; head -2 /tmp/dk/worker.log
  echo "== PCIe bandwidth (pinned, PyTorch)"
  python3 - <<'PY'
import torch, time
n = 1 << 28  # 1 GiB
h = torch.empty(n, dtype=torch.uint8, pin_memory=True); d = torch.empty(n, dtype=torch.uint8, device="cuda")
for name, f in (("host->device", lambda: d.copy_(h, non_blocking=True)), ("device->host", lambda: h.copy_(d, non_blocking=True))):
    f(); torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(5): f()
    torch.cuda.synchronize(); print(f"{name}: {5 * n / (time.perf_counter() - t) / 1e9:.1f} GB/s")
PY
  echo "== bench"
  dk $CARRY/darknight bench --suite bench/problems/gpu.txt --out /tmp/dk/bench --no-plots \
    ${GPU_ONLY:+--only $GPU_ONLY} ${GPU_REPEAT:+--repeat $GPU_REPEAT}
  cp /tmp/dk/bench/results.json /tmp/dk/bench/results.csv "$out/" 2>/dev/null
  tar -C /tmp/dk/bench -czf "$out/runs.tar.gz" runs 2>/dev/null
  ;;
*)
  echo "usage: scripts/gpu_check.sh pack | run OUTDIR" >&2
  exit 2
  ;;
esac
