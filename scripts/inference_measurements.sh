#!/usr/bin/env bash
# The measurements behind docs/performance.md and docs/accuracy.md for private inference
# (issue 3). Writes one JSON report per run under results/inference/ (ignored by git).
# Run: scripts/inference_measurements.sh [agreement|memory|speed|all]   (after make build)
set -euo pipefail
cd "$(dirname "$0")/.."
dk=build/darknight
out=results/inference
mkdir -p "$out"
what=${1:-all}

if [[ $what == agreement || $what == all ]]; then
  # darknight vs plain, f32 and f64 mixtures, 64 synthetic images, random weights.
  for cfg in "vgg16 32" "vgg16 224" "mobilenet 32" "mobilenet 224" "resnet18 32"; do
    set -- $cfg
    for p in f32 f64; do
      $dk infer --model "$1" --input-size "$2" --limit 64 --batch 64 --precision $p \
        --compare-plain --seed 1 --report "$out/agree-$1-$2-$p.json" 2>/dev/null | head -3
    done
  done
fi

if [[ $what == memory || $what == all ]]; then
  # Peak trusted memory at 224x224, K = 4: VGG16 vs VGG19 (different weight sizes).
  for m in vgg16 vgg19; do
    $dk infer --model $m --input-size 224 --limit 16 --batch 16 -k 4 --seed 1 \
      --report "$out/memory-$m-224.json" 2>/dev/null | head -1
  done
fi

if [[ $what == speed || $what == all ]]; then
  # images/s on this machine: darknight K = 1, 2, 4, 8; plain at the same batch, and at
  # the images per pass darknight(K = 4) chose under the enclave budget (plain has no
  # budget, and smaller passes run faster on a CPU); tee on fewer images.
  for cfg in "vgg16 32 128" "mobilenet 224 64"; do
    set -- $cfg
    for k in 1 2 4 8; do
      $dk infer --model "$1" --input-size "$2" --limit "$3" --batch 64 -k $k --warmup 1 \
        --report "$out/speed-$1-$2-k$k.json" | head -1
    done
    pass=$(python3 -c "import json; print(json.load(open('$out/speed-$1-$2-k4.json'))['images_per_pass'])")
    $dk infer --model "$1" --input-size "$2" --limit "$3" --batch 64 --mode plain --warmup 1 \
      --report "$out/speed-$1-$2-plain.json" | head -1
    $dk infer --model "$1" --input-size "$2" --limit "$3" --batch "$pass" --mode plain --warmup 1 \
      --report "$out/speed-$1-$2-plain-b$pass.json" | head -1
    $dk infer --model "$1" --input-size "$2" --limit 16 --batch 16 --mode tee --warmup 1 \
      --report "$out/speed-$1-$2-tee.json" | head -1
  done
fi
