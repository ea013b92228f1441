#!/usr/bin/python3
"""Audits what an accelerator worker captured (`darknight worker --capture DIR`).

  audit_capture.py --plain PLAIN_DIR --blinded BLINDED_DIR [--classes 10] [--threshold 0.99]

PLAIN_DIR is the capture of the same images run with --mode plain: its `*.src` tensors are
the plaintext inputs and activations of every linear layer. For BLINDED_DIR it checks that

  1. no row of a blinded `*forward.src` tensor (one row per mixture) equals or is a scaled
     copy of any plaintext input or activation of the same layer: |cos(row, plain)| must
     stay below the threshold (0.9999: a copy in float32 gives 1 - cos below 1e-6, while a
     mixture of correlated non-negative activations can reach 0.99);
  2. no data tensor (`*.src`, `*.diff_dst`) with rows of `classes` values holds a one-hot
     (or scaled one-hot) row: exactly one non-zero.

It prints, per layer, the largest |cos| found (for deltas too, which are mixed without
noise and are not held to the threshold), and exits 1 naming each violation.
"""
import argparse
import collections
import json
import os
import sys

import numpy as np


def load(directory):
    """(entry, array) for each line of index.jsonl."""
    with open(os.path.join(directory, "index.jsonl")) as f:
        for line in f:
            e = json.loads(line)
            yield e, np.load(os.path.join(directory, e["file"]))


def rows(a):
    r = a.reshape(a.shape[0], -1).astype(np.float64)
    n = np.linalg.norm(r, axis=1, keepdims=True)
    return r[n[:, 0] > 0] / n[n[:, 0] > 0]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--plain", required=True)
    p.add_argument("--blinded", required=True)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--threshold", type=float, default=0.9999)
    a = p.parse_args()

    plain = collections.defaultdict(list)  # (layer, kind) -> unit rows
    for e, x in load(a.plain):
        if e["type"].endswith(".src") or e["type"].endswith(".diff_dst"):
            kind = "src" if e["type"].endswith("forward.src") else "delta"
            plain[(e["layer"], kind)].append(rows(x))
    plain = {k: np.concatenate(v) for k, v in plain.items()}

    worst = collections.defaultdict(float)
    counts = collections.defaultdict(lambda: [0, 0])  # (layer, kind) -> [rows, rows >= 0.5]
    violations = []
    tensors = 0
    for e, x in load(a.blinded):
        t = e["type"]
        if not (t.endswith(".src") or t.endswith(".diff_dst")):
            continue
        tensors += 1
        kind = "src" if t.endswith("forward.src") else "delta"
        ref = plain.get((e["layer"], kind))
        if ref is not None and ref.shape[1] == int(np.prod(x.shape[1:])):
            per_row = np.abs(rows(x) @ ref.T).max(axis=1, initial=0.0)
            cos = per_row.max(initial=0.0)
            worst[(e["layer"], kind)] = max(worst[(e["layer"], kind)], cos)
            counts[(e["layer"], kind)][0] += per_row.size
            counts[(e["layer"], kind)][1] += int((per_row >= 0.5).sum())
            if kind == "src" and cos >= a.threshold:
                violations.append(f"{e['file']} ({t}, layer {e['layer']}): a mixture is a "
                                  f"scaled copy of a plaintext input or activation "
                                  f"(|cos| = {cos:.6f})")
        if int(np.prod(x.shape[1:])) == a.classes:
            if ((x.reshape(x.shape[0], -1) != 0).sum(axis=1) == 1).any():
                violations.append(f"{e['file']} ({t}, layer {e['layer']}): holds a one-hot "
                                  f"(or scaled one-hot) vector of {a.classes}")
    if tensors == 0:
        violations.append(f"{a.blinded}: no data tensors captured")
    for (layer, kind), cos in sorted(worst.items()):
        n, high = counts[(layer, kind)]
        print(f"layer {layer} {kind:5s}: largest |cos| with a plaintext {kind} {cos:.4f}; "
              f"{high} of {n} mixtures at 0.5 or more")
    print(f"{tensors} captured data tensors audited")
    for v in violations:
        print("LEAK:", v)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
