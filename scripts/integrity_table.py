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
    print("| precision | check | fault | injected | changed output | missed | above tolerance "
          "| detected | false alarms | final test accuracy | model = clean run's |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|---|")
    for prec in ["f32", "f64"]:
        for mode in ["none", "freivalds", "redundant"]:
            ref = out / f"train-{prec}-{mode}-clean.dkmodel"
            clean = ref.read_bytes() if ref.exists() else None
            for kind in ["clean", "bitflip", "scale", "wrong-weights", "drop", "adversarial"]:
                if mode == "none" and kind != "clean":
                    continue
                f = out / f"train-{prec}-{mode}-{kind}.json"
                label = "(none)" if kind == "clean" else kind
                if not f.exists():
                    print(f"| {prec} | {mode} | {label} | stopped: "
                          f"{(out / f.name.replace('.json', '.log')).read_text().splitlines()[-1]} |")
                    continue
                r = json.loads(f.read_text())
                i = r.get("integrity", {})
                model = out / f.name.replace(".json", ".dkmodel")
                same = clean and model.exists() and model.read_bytes() == clean
                cells = ["-"] * 6 if mode == "none" else [
                    i["injected"], i["changed_output"], i["missed"],
                    i["injected_above_tolerance"], i["detected"], i["false_alarms"]]
                acc = (f"stopped: {r['stopped'].split(';')[0]}" if "stopped" in r
                       else f"{r['final_test_accuracy']:.4f}")
                print(f"| {prec} | {mode} | {label} | " + " | ".join(map(str, cells)) +
                      f" | {acc} | {'yes' if same else 'no'} |")
    sys.exit(0)
def largest(i):
    """The largest missed fault's effect, in units of the fault-free rounding bound."""
    if i["missed"] == 0:
        return "-"
    x = i.get("largest_missed_excess")
    return "exact zero changed" if x is None else f"{x:.3g}"


print("| check | fault | injected | changed output | missed | largest missed (x bound) "
      "| above tolerance | detected | recomputed | trusted fallback | false alarms "
      "| accuracy (clean) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for mode in ["none", "redundant", "freivalds"]:
    clean = json.loads((out / f"clean-{mode}.json").read_text())
    ci = clean.get("integrity", {})
    print(f"| {mode} | (none) | 0 | 0 | 0 | - | 0 | {ci.get('detected', 0)} "
          f"| {ci.get('recomputed', 0)} | {ci.get('fallbacks', 0)} | {ci.get('false_alarms', 0)} "
          f"| {clean['accuracy']:.4f} |")
    for kind in ["bitflip", "scale", "wrong-weights", "drop", "adversarial"]:
        r = json.loads((out / f"{kind}-{mode}.json").read_text())
        i = r["integrity"]
        if mode == "none":
            cells = [i["injected"], "-", "-", "-", "-"]
        else:
            cells = [i["injected"], i["changed_output"], i["missed"], largest(i),
                     i["injected_above_tolerance"]]
        print(f"| {mode} | {kind} | " + " | ".join(map(str, cells)) + f" | {i.get('detected', 0)} "
              f"| {i['recomputed']} | {i['fallbacks']} | {i['false_alarms']} "
              f"| {r['accuracy']:.4f} ({clean['accuracy']:.4f}) |")
