#!/usr/bin/env python3
"""Summarises results/training/noise-*.json (scripts/training_measurements.sh noise) as
the markdown table in docs/results.md (test accuracy after each epoch), or with `vgg`
the VGG16 training-step breakdown in docs/performance.md."""
import json
import sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "results/training")
if len(sys.argv) > 2 and sys.argv[2] == "vgg":
    runs = [("plain", "plain"), ("darknight, paper's decode", "darknight"),
            ("darknight, folded", "darknight-folded"), ("tee", "tee")]
    plain = json.loads((out / "vgg16-step-plain.json").read_text())
    base = plain["train_seconds"] / plain["steps"]
    print("| mode | seconds per step | vs plain | forward: encode / accelerator / decode / "
          "non-linear | backward: encode / accelerator / decode / non-linear | peak trusted |")
    print("|---|---:|---:|---|---|---:|")
    for label, name in runs:
        r = json.loads((out / f"vgg16-step-{name}.json").read_text())
        per = r["train_seconds"] / r["steps"]
        f, b = r["seconds_by_kind"]["forward"], r["seconds_by_kind"]["backward"]
        fmt = lambda t: " / ".join(f"{t[k]:.2f}" for k in ["encode", "accelerator", "decode", "nonlinear"])
        print(f"| {label} | {per:.2f} | {per / base:.2f} | {fmt(f)} | {fmt(b)} "
              f"| {r['peak_trusted_bytes'] / 2**20:.1f} MiB |")
    sys.exit(0)
print("| training | mixtures | noise N(mean, variance) | epoch 1 | epoch 2 | epoch 3 |")
print("|---|---|---|---:|---:|---:|")
clean = json.loads((out / "noise-clean.json").read_text())
acc = " | ".join(f"{e['test_accuracy']:.4f}" for e in clean["epochs"])
print(f"| plain (clean) | - | - | {acc} |")
for mean, var in [(4000, 4000), (20000, 4000), (10000, 10000), (10000, 5000)]:
    for p in ["f32", "f64"]:
        f = out / f"noise-{mean}-{var}-{p}.json"
        if not f.exists():
            print(f"| darknight | {p} | N({mean:g}, {var:g}) | not run | | |")
            continue
        r = json.loads(f.read_text())
        acc = " | ".join(f"{e['test_accuracy']:.4f}" for e in r["epochs"])
        print(f"| darknight | {p} | N({mean:g}, {var:g}) | {acc} |")
