#!/usr/bin/env python3
"""Summarises results/integrity/*.json (scripts/integrity_measurements.sh) as the
markdown table in docs/SECURITY.md."""
import json
import sys
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "results/integrity")
if len(sys.argv) > 2 and sys.argv[2] == "spread":
    clean = sorted(json.loads(f.read_text())["final_test_accuracy"]
                   for f in out.glob("spread-clean-*.json"))
    print(f"clean runs ({len(clean)}): " + ", ".join(f"{a:.4f}" for a in clean))
    print("| fault | injected | above tolerance | detected | undetected | final test accuracy "
          "| within the clean runs' range |")
    print("|---|---:|---:|---:|---:|---|---|")
    for kind in ["bitflip", "scale", "wrong-weights", "drop", "adversarial"]:
        r = json.loads((out / f"spread-{kind}.json").read_text())
        i, a = r["integrity"], r["final_test_accuracy"]
        print(f"| {kind} | {i['injected']} | {i['injected_above_tolerance']} | {i['detected']} "
              f"| {i['injected'] - i['detected']} | {a:.4f} "
              f"| {'yes' if clean[0] <= a <= clean[-1] else 'no'} |")
    sys.exit(0)
if len(sys.argv) > 2 and sys.argv[2] == "train":
    base = json.loads((out / "train-clean-none.json").read_text())
    print("| training run | injected | above tolerance | detected | recomputed | false alarms "
          "| final test accuracy |")
    print("|---|---:|---:|---:|---:|---:|---|")
    print(f"| unchecked, no faults | - | - | - | - | - | {base['final_test_accuracy']:.4f} |")
    for name in ["clean", "bitflip", "scale", "wrong-weights", "drop", "adversarial"]:
        r = json.loads((out / f"train-{name}-freivalds.json").read_text())
        i = r["integrity"]
        label = "freivalds, no faults" if name == "clean" else f"freivalds, {name}"
        print(f"| {label} | {i['injected']} | {i['injected_above_tolerance']} | {i['detected']} "
              f"| {i['recomputed']} | {i['false_alarms']} | {r['final_test_accuracy']:.4f} |")
    sys.exit(0)
print("| check | fault | injected | above tolerance | corrupting | detected | recomputed "
      "| trusted fallback | false alarms | accuracy (clean) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
for mode in ["none", "redundant", "freivalds"]:
    clean = json.loads((out / f"clean-{mode}.json").read_text())
    ci = clean.get("integrity", {})
    print(f"| {mode} | (none) | 0 | 0 | 0 | {ci.get('detected', 0)} | {ci.get('recomputed', 0)} "
          f"| {ci.get('fallbacks', 0)} | {ci.get('false_alarms', 0)} | {clean['accuracy']:.4f} |")
    for kind in ["bitflip", "scale", "wrong-weights", "drop", "adversarial"]:
        r = json.loads((out / f"{kind}-{mode}.json").read_text())
        i = r["integrity"]
        above = i["injected_above_tolerance"] if mode != "none" else "-"
        corrupting = i["corrupting"] if mode != "none" else "-"
        print(f"| {mode} | {kind} | {i['injected']} | {above} | {corrupting} | {i['detected']} "
              f"| {i['recomputed']} | {i['fallbacks']} | {i['false_alarms']} "
              f"| {r['accuracy']:.4f} ({clean['accuracy']:.4f}) |")
