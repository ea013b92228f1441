#!/usr/bin/env bash
# docs/SECURITY.md's privacy figures, each measured by `darknight audit` on the capture of a
# real run (Fashion-MNIST, a trained fmnist-cnn, 64 images), scored against a capture of the
# same run in plain mode (same seed: the same images in the same order) and, once, against
# the dataset itself. Writes results/privacy/: the captures, one report per audit
# (AUDIT.json), its terminal table (AUDIT.txt), PNG grids (AUDIT-images/), and
# figures.md, the tables SECURITY.md shows.
# Run: scripts/privacy-figures.sh   (after make build; BUILD_DIR=... for another build tree)
set -euo pipefail
cd "$(dirname "$0")/.."
dk=${BUILD_DIR:-build}/darknight
out=results/privacy
mkdir -p "$out"
export OMP_WAIT_POLICY=passive  # the worker and the run share the cores

model=$out/fmnist-cnn.dkm
[[ -f $model ]] || $dk train --model fmnist-cnn --data fashion-mnist --mode plain --epochs 1 \
  --batch 64 --lr 0.05 --momentum 0.9 --seed 1 --save "$model" | tail -1

# capture NAME ARGS...: darknight ARGS through a worker capturing to $out/NAME.
capture() {
  rm -rf "${out:?}/$1"
  $dk worker --listen tcp://127.0.0.1:0 --capture "$out/$1" >"$out/$1.log" 2>&1 &
  local pid=$! ep=
  for _ in $(seq 50); do ep=$(grep -o 'tcp://[0-9.:]*' "$out/$1.log") && break; sleep 0.1; done
  $dk "${@:2}" --accelerator "$ep" >"$out/$1.run" 2>&1
  kill -INT $pid; wait $pid
}
# audit NAME CAPTURE REFERENCE: the audit, timed (seconds in NAME.seconds).
audit() {
  local start=$SECONDS
  $dk audit "$out/$2" --reference "$3" --report "$out/$1.json" --images "$out/$1-images" \
    >"$out/$1.txt" 2>"$out/$1.log"
  echo $((SECONDS - start)) >"$out/$1.seconds"
  echo "== darknight audit $out/$2 --reference $3 ($((SECONDS - start)) s)"
  cat "$out/$1.txt"
}

infer=(infer --model fmnist-cnn --weights "$model" --data fashion-mnist --limit 64 --seed 2)
train=(train --model fmnist-cnn --weights "$model" --data fashion-mnist --limit 64
       --test-limit 16 --batch 16 --steps 4 --lr 0.05 --momentum 0.9 --seed 2)
capture infer-plain "${infer[@]}" --mode plain
capture infer-k4 "${infer[@]}" -k 4
capture infer-k4-paper-noise "${infer[@]}" -k 4 --noise-mean 1e4 --noise-std 4e3
capture infer-slalom "${infer[@]}" --mode slalom
capture train-plain "${train[@]}" --mode plain
capture train-k1-folded "${train[@]}" -k 1 --grad-decode folded
capture train-k4-folded "${train[@]}" -k 4 --grad-decode folded
capture train-k1-paper "${train[@]}" -k 1 --grad-decode trusted
capture train-k4-paper "${train[@]}" -k 4 --grad-decode trusted

audit infer-k4 infer-k4 "$out/infer-plain"
audit infer-k4-dataset infer-k4 fashion-mnist
audit infer-k4-paper-noise infer-k4-paper-noise "$out/infer-plain"
audit infer-slalom infer-slalom "$out/infer-plain"
audit train-k1-folded train-k1-folded "$out/train-plain"
audit train-k4-folded train-k4-folded "$out/train-plain"
audit train-k1-paper train-k1-paper "$out/train-plain"
audit train-k4-paper train-k4-paper "$out/train-plain"

/usr/bin/python3 - "$out" >"$out/figures.md" <<'PY'
import json, sys
d = sys.argv[1]
runs = [("infer-k4", "darknight inference, K = 4, noise N(0, 100^2)"),
        ("infer-k4-dataset", "the same, scored against the dataset (both splits)"),
        ("infer-k4-paper-noise", "darknight inference, K = 4, the paper's noise N(1e4, 4e3^2)"),
        ("infer-slalom", "slalom inference"),
        ("train-k1-folded", "darknight training, K = 1, folded decode"),
        ("train-k4-folded", "darknight training, K = 4, folded decode"),
        ("train-k1-paper", "darknight training, K = 1, the paper's decode"),
        ("train-k4-paper", "darknight training, K = 4, the paper's decode")]
attacks = ["noise_strip", "ica", "labels", "weak_noise", "lattice", "gradient"]
f = lambda v: "-" if v is None else f"{v:.3f}"
print("| run | audit s | " + " | ".join(attacks) + " |")
print("|---|---|" + "---|" * len(attacks))
for name, what in runs:
    r = json.load(open(f"{d}/{name}.json"))["attacks"]
    secs = open(f"{d}/{name}.seconds").read().strip()
    cells = []
    for a in attacks:
        x = r[a]
        if x is None: cells.append("n/a")
        elif x["score"] is None: cells.append("not scored")
        else:
            c = f"{f(x['score'])} ({f(x['chance'])}), {x['frac_recovered']:.0%}"
            if a == "gradient" and x.get("examples_covered") is not None:
                c += f", {x['examples_covered']} examples"
            cells.append(c)
    print(f"| {what} | {secs} | " + " | ".join(cells) + " |")
print()
print("Per layer (score, chance in parentheses):")
for name in ("infer-k4", "train-k4-folded", "train-k4-paper"):
    r = json.load(open(f"{d}/{name}.json"))["attacks"]
    print(f"\n{name}:\n")
    print("| attack | variant | layer 0 | layer 1 | layer 2 | layer 3 |")
    print("|---|---|---|---|---|---|")
    for a in attacks:
        if r[a] is None: continue
        rows = {}
        for row in r[a]["per_layer"]:
            key = row.get("variant", "") or row["tensor"]
            rows.setdefault(key, {})[row["layer"]] = row
        for key, by in rows.items():
            cells = [f"{f(by[l]['score'])} ({f(by[l].get('chance'))})" if l in by else "" for l in range(4)]
            print(f"| {a} | {key} | " + " | ".join(cells) + " |")
PY
cat "$out/figures.md"
