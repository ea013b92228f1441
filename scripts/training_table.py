#!/usr/bin/env python3
"""Summarises results/training/noise-*.json (scripts/training_measurements.sh noise) as
the markdown table in docs/results.md: test accuracy after each epoch."""
import json
import sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "results/training")
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
