#!/usr/bin/env bash
# Measurements with the accelerator in another process (issue 5), under results/worker/:
#  overhead: docs/performance.md "Accelerator in another process": the same VGG16 (32x32)
#    inference and training step in-process and through `darknight worker` over tcp on
#    loopback, one after the other. Both sides' OpenMP threads wait passively (they share
#    the cores).
# (The privacy figures of captures: scripts/privacy-figures.sh.)
# Run: scripts/worker_measurements.sh   (after make build)
set -euo pipefail
cd "$(dirname "$0")/.."
dk=build/darknight
out=results/worker
mkdir -p "$out"
export OMP_WAIT_POLICY=passive
$dk worker --listen tcp://127.0.0.1:0 >"$out/worker.log" 2>&1 &
wpid=$!
trap 'kill -INT $wpid 2>/dev/null' EXIT
for _ in $(seq 50); do ep=$(grep -o 'tcp://[0-9.:]*' "$out/worker.log") && break; sleep 0.1; done

infer=(infer --model vgg16 --input-size 32 --data synthetic --limit 256 --batch 64 --warmup 1
       --seed 1)
train=(train --model vgg16 --input-size 32 --data synthetic --limit 256 --test-limit 32
       --batch 32 --steps 8 --seed 1 --grad-decode folded)
for where in local tcp; do
  acc=(); [[ $where == tcp ]] && acc=(--accelerator "$ep")
  for mode in plain darknight; do
    $dk "${infer[@]}" --mode $mode "${acc[@]}" --report "$out/infer-$mode-$where.json" | head -1
    $dk "${train[@]}" --mode $mode "${acc[@]}" --report "$out/train-$mode-$where.json" | tail -2
  done
done
/usr/bin/python3 - "$out" <<'PY'
import json, sys
d = sys.argv[1]
def get(name): return json.load(open(f"{d}/{name}.json"))
print("| mode | inference images/s, in-process | over tcp | ratio | MB sent + received per image |")
print("|---|---|---|---|---|")
for mode in ("plain", "darknight"):
    a, b = get(f"infer-{mode}-local"), get(f"infer-{mode}-tcp")
    mb = (b["bytes_to_accelerator"] + b["bytes_from_accelerator"]) / b["images"] / 1e6
    print(f"| {mode} | {a['images_per_second']:.1f} | {b['images_per_second']:.1f} | "
          f"{a['images_per_second'] / b['images_per_second']:.2f}x | {mb:.2f} |")
print()
print("| mode | training step s, in-process | over tcp | ratio |")
print("|---|---|---|---|")
for mode in ("plain", "darknight"):
    a, b = get(f"train-{mode}-local"), get(f"train-{mode}-tcp")
    sa, sb = a["train_seconds"] / a["steps"], b["train_seconds"] / b["steps"]
    print(f"| {mode} | {sa:.2f} | {sb:.2f} | {sb / sa:.2f}x |")
PY
