#!/usr/bin/env bash
# The measurements behind the training sections of docs/performance.md and
# docs/results.md (issue 4). Writes reports under results/training/ (ignored by git).
# Run: scripts/training_measurements.sh [fmnist|noise|vgg|grads|all]   (after make build)
set -euo pipefail
cd "$(dirname "$0")/.."
dk=build/darknight
out=results/training
mkdir -p "$out"
what=${1:-all}
common=(--model fmnist-cnn --data fashion-mnist --batch 64 --lr 0.05 --momentum 0.9 --weight-decay 5e-4
        --lr-schedule cosine --seed 1)

if [[ $what == fmnist || $what == all ]]; then
  # 5 epochs: darknight (the paper's gradient decode, and folded) and plain.
  for run in "darknight trusted" "darknight folded" "plain trusted"; do
    set -- $run
    $dk train "${common[@]}" --mode "$1" --grad-decode "$2" --epochs 5 \
      --metrics "$out/fmnist-$1-$2.csv" --report "$out/fmnist-$1-$2.json" | tail -2
  done
fi

if [[ $what == noise || $what == all ]]; then
  # The paper's Table 2 settings, N(mean, variance), 3 epochs, f32 and f64 mixtures
  # (folded gradient decode: the same arithmetic, faster); clean training is plain.
  [[ -f $out/noise-clean.json ]] ||
    $dk train "${common[@]}" --mode plain --epochs 3 --report "$out/noise-clean.json" | tail -1
  for setting in "4000 4000" "20000 4000" "10000 10000" "10000 5000"; do
    set -- $setting
    std=$(python3 -c "import math; print(math.sqrt($2))")
    for p in f32 f64; do
      [[ -f $out/noise-$1-$2-$p.json ]] && continue  # rerun: keep finished reports
      $dk train "${common[@]}" --mode darknight --grad-decode folded --epochs 3 --precision $p \
        --noise-mean "$1" --noise-std "$std" --report "$out/noise-$1-$2-$p.json" | tail -1
    done
  done
  python3 scripts/training_table.py "$out"
fi

if [[ $what == vgg || $what == all ]]; then
  # One VGG16 training step at 32x32 (batch 32, K = 4) in every mode, 3 steps each, on
  # synthetic CIFAR-shaped data; the per-operation breakdown is in the reports.
  for mode in plain darknight tee; do
    $dk train --model vgg16 --input-size 32 --data synthetic --limit 96 --test-limit 32 \
      --batch 32 -k 4 --mode "$mode" --steps 3 --lr 0.01 --seed 1 \
      --report "$out/vgg16-step-$mode.json" | tail -1
  done
  $dk train --model vgg16 --input-size 32 --data synthetic --limit 96 --test-limit 32 \
    --batch 32 -k 4 --mode darknight --grad-decode folded --steps 3 --lr 0.01 --seed 1 \
    --report "$out/vgg16-step-darknight-folded.json" | tail -1
fi
