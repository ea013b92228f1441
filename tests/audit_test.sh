#!/usr/bin/env bash
# `darknight audit` end to end on real captures (Fashion-MNIST through a capturing worker):
# each attack recovers a planted or known leak, and the audit's own control (independent
# noise of the capture's shapes, attacked and scored by the same code) stays at chance.
#  - noise strip: K = 1 darknight training (the deltas' null vector strips the noise);
#  - labels: the same capture (K = 1: a delta's one negative entry);
#  - FastICA: K = 4 darknight inference (one shared noise vector per virtual batch);
#  - weak noise: K = 1 inference with the noise switched off (--insecure): scaled copies;
#  - the paper's decode (K = 1): Gamma fitted to the decoded gradient pieces it receives,
#    then the noise strip; each example's gradient is visible;
#  - gradient: K = 4 training, scored against a plain capture of the same run;
#  - lattice: Slalom's one-time pads stay at chance (its planted leak, a reused mask, is
#    tests/audit/lattice_test.cpp's);
#  - two captures given at once are pooled (a capture split in two parts, each short alone);
#    bad input is a clear error.
# Usage: audit_test.sh BUILD_DIR
set -u
export OMP_WAIT_POLICY=passive
dk="$1/darknight"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
fail=0

# capture NAME ARGS...: runs darknight ARGS through a worker capturing to $tmp/NAME.
capture() {
  "$dk" worker --listen tcp://127.0.0.1:0 --capture "$tmp/$1" >"$tmp/$1.log" 2>&1 &
  local pid=$! ep=
  for _ in $(seq 50); do ep=$(grep -o 'tcp://[0-9.:]*' "$tmp/$1.log") && break; sleep 0.1; done
  "$dk" "${@:2}" --accelerator "$ep" >"$tmp/$1.run" 2>&1 || { echo "FAIL run $1"; cat "$tmp/$1.run"; fail=1; }
  kill -INT $pid; wait $pid
}
# audit NAME CAPTURE... -- AUDIT OPTIONS: writes $tmp/NAME.json.
audit() {
  local name=$1; shift
  if ! "$dk" audit "$@" --report "$tmp/$name.json" >"$tmp/$name.out" 2>&1; then
    echo "FAIL audit $name"; cat "$tmp/$name.out"; fail=1
  fi
}
# expect NAME 'PYTHON CONDITION' DESCRIPTION: the condition on report r and attacks a.
expect() {
  if /usr/bin/python3 -c "
import json, sys
r = json.load(open('$tmp/$1.json')); a = r['attacks']
sys.exit(0 if ($2) else 1)" 2>"$tmp/py.err"; then echo "ok   $1: $3"; else
    echo "FAIL $1: $3"; cat "$tmp/py.err" "$tmp/$1.out"; fail=1
  fi
}

train="train --model fmnist-cnn --data fashion-mnist --limit 64 --test-limit 16 --batch 16 --steps 2 --seed 5 --grad-decode folded"
infer="infer --model fmnist-cnn --data fashion-mnist --limit 32 --seed 5"
capture train-k1 $train -k 1
capture train-k4 $train -k 4
capture train-k1-paper ${train/folded/trusted} -k 1
capture train-plain $train --mode plain
capture infer-k4 $infer -k 4
capture infer-copies $infer -k 1 --noise-std 0 --insecure
capture infer-slalom $infer --mode slalom

audit train-k1 "$tmp/train-k1" --reference fashion-mnist --images "$tmp/img"
expect train-k1 "a['noise_strip']['score'] > 0.99 and a['noise_strip']['chance'] < 0.3 and a['noise_strip']['frac_recovered'] == 1" \
  "noise strip recovers every K = 1 training input; the control stays at chance"
expect train-k1 "a['labels']['score'] > 0.99 and a['labels']['chance'] < 0.5" \
  "labels of K = 1 deltas recovered; the control near chance"
expect train-k1 "a['lattice'] is None and r['reference'].startswith('dataset')" \
  "the lattice attack does not apply to real-valued mixtures"
compgen -G "$tmp/img/noise_strip-*.png" >/dev/null &&
  echo "ok   train-k1: PNG grid written" || { echo "FAIL train-k1: no PNG grid"; ls "$tmp/img"; fail=1; }

audit train-k1-paper "$tmp/train-k1-paper" --reference "$tmp/train-plain"
expect train-k1-paper "any('Gamma fitted' in row['variant'] and row['score'] > 0.99 for row in a['noise_strip']['per_layer'])" \
  "the paper's decode: Gamma fitted to the gradient pieces, then the noise strip recovers every input"
expect train-k1-paper "a['gradient']['examples_covered'] == 1 and all(row['score'] > 0.99 for row in a['gradient']['per_layer'])" \
  "the paper's decode: each example's gradient is received, conv layers included"

audit infer-k4 "$tmp/infer-k4" --reference fashion-mnist
expect infer-k4 "a['ica']['score'] > 0.9 and a['ica']['chance'] < 0.3 and a['noise_strip'] is None" \
  "FastICA separates K = 4 inference mixtures; the control stays at chance"
expect infer-k4 "a['weak_noise']['score'] < 0.5" "no mixture is close to one input at noise N(0, 100^2)"

audit infer-copies "$tmp/infer-copies" --reference fashion-mnist
expect infer-copies "a['weak_noise']['score'] > 0.99 and a['weak_noise']['chance'] < 0.3" \
  "noise-free K = 1 mixtures are found as copies; the control stays at chance"

audit train-k4 "$tmp/train-k4" --reference "$tmp/train-plain"
expect train-k4 "a['gradient']['score'] > 0.99 and a['gradient']['examples_covered'] == 4 and a['gradient']['chance'] < 0.3" \
  "each virtual batch's gradient (4 examples) is visible; the control is not"
expect train-k4 "all(row['score'] is not None for row in a['ica']['per_layer'])" \
  "a plain capture scores every layer"

audit infer-slalom "$tmp/infer-slalom" --reference fashion-mnist
expect infer-slalom "abs(a['lattice']['score'] - a['lattice']['chance']) < 0.05 and a['lattice']['score'] > 0.02 and a['ica'] is None" \
  "Slalom's one-time pads: lattice reduction at chance"

# Pooling: the K = 4 capture split in two (3 and 2 of each virtual batch's 5 mixtures), as
# two workers would hold it; each part alone leaves FastICA short, the two pooled do not.
/usr/bin/python3 - "$tmp" <<'PY'
import json, os, sys
import numpy as np
d = sys.argv[1]
for name, rows in (("part-a", [0, 1, 2]), ("part-b", [3, 4])):
    os.makedirs(f"{d}/{name}")
    with open(f"{d}/{name}/index.jsonl", "w") as out:
        for line in open(f"{d}/infer-k4/index.jsonl"):
            e = json.loads(line)
            a = np.load(f"{d}/infer-k4/{e['file']}")
            if e.get("mixtures"):
                a = a[[r for r in range(a.shape[0]) if r % e["mixtures"] in rows]]
                e["mixtures"], e["shape"] = len(rows), list(a.shape)
            np.save(f"{d}/{name}/{e['file']}", a)
            out.write(json.dumps(e) + "\n")
PY
audit part-a "$tmp/part-a" --reference fashion-mnist
audit part-b "$tmp/part-b" --reference fashion-mnist
audit pooled "$tmp/part-a" "$tmp/part-b" --reference fashion-mnist
expect part-a "a['ica']['score'] < 0.8" "3 of 5 mixtures alone: FastICA falls short"
expect part-b "a['ica']['score'] < 0.8" "2 of 5 mixtures alone: FastICA falls short"
expect pooled "a['ica']['score'] > 0.9" "the two parts pooled, virtual batch by virtual batch: recovered"

for bad in "$tmp/nowhere" "$tmp/train-k1.log"; do
  if "$dk" audit "$bad" >"$tmp/bad.out" 2>&1; then echo "FAIL audit of $bad succeeded"; fail=1
  else echo "ok   refused: $(tail -1 "$tmp/bad.out")"; fi
done
mkdir -p "$tmp/broken" && echo '{"file": "x.npy"}' >"$tmp/broken/index.jsonl"
if "$dk" audit "$tmp/broken" >"$tmp/bad.out" 2>&1; then echo "FAIL a broken index was accepted"; fail=1
else echo "ok   refused: $(tail -1 "$tmp/bad.out")"; fi
exit $fail
