#!/usr/bin/env bash
# End-to-end tests of the darknight command line: reports, errors on bad input,
# checkpoints and resume, saving, ONNX export and re-import.
# Usage: cli_test.sh BUILD_DIR
set -u
dk="${1:?usage: cli_test.sh BUILD_DIR}/darknight"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# Runs a command that must succeed.
ok() { "$@" > "$tmp/out" 2> "$tmp/err" || { fail "$* (exit $?): $(tail -3 "$tmp/err")"; }; }
# Runs a command that must fail with a message matching a pattern.
refuses() {
  local pattern=$1; shift
  if "$@" > "$tmp/out" 2> "$tmp/err"; then fail "$* succeeded"; return; fi
  grep -q -- "$pattern" "$tmp/err" || fail "$*: error does not mention '$pattern': $(cat "$tmp/err")"
}
json() { python3 -c "import json,sys; r=json.load(open('$1')); print($2)"; }

ok "$dk" --version
grep -q "darknight" "$tmp/out" || fail "--version prints no name"
ok "$dk" --help
ok "$dk" infer --help

# Inference report.
ok "$dk" infer --model fmnist-cnn --data synthetic --limit 12 -k 4 --compare-plain --seed 1 \
  --report "$tmp/r.json"
for field in mode model images seconds images_per_second peak_trusted_bytes \
             max_rel_error_vs_plain top1_agreement_vs_plain; do
  [ "$(json "$tmp/r.json" "'$field' in r")" = True ] || fail "infer report lacks $field"
done
[ "$(json "$tmp/r.json" "r['images']")" = 12 ] || fail "infer report: images != 12"
# --compare-plain and --seed weaken secrecy: a warning on every run, and the report says so.
grep -q "warning: --compare-plain" "$tmp/err" || fail "--compare-plain gives no warning"
grep -q "warning: --seed" "$tmp/err" || fail "--seed gives no warning"
[ "$(json "$tmp/r.json" "r['insecure']")" = True ] || fail "a seeded run's report is not insecure"
ok "$dk" infer --model fmnist-cnn --data synthetic --limit 4 --report "$tmp/r0.json"
[ "$(json "$tmp/r0.json" "r['insecure']")" = False ] || fail "a default run's report is insecure"
grep -q "warning" "$tmp/err" && fail "a default run warns: $(cat "$tmp/err")"

# Noise-free blinding (each K = 1 mixture a scaled copy of its input) only with --insecure.
refuses "noise-free" "$dk" infer --model fmnist-cnn --data synthetic --limit 4 -k 1 --noise-std 0
refuses "noise-free" "$dk" train --model fmnist-cnn --data synthetic --limit 8 --steps 1 -k 1 \
  --noise-std 0
refuses "noise-free" "$dk" infer --model fmnist-cnn --data synthetic --limit 4 -k 4 \
  --noise-mean 1e4 --noise-std 1e-6
ok "$dk" infer --model fmnist-cnn --data synthetic --limit 4 -k 1 --noise-std 0 --insecure \
  --report "$tmp/ri.json"
grep -q "warning: --insecure" "$tmp/err" || fail "--insecure gives no warning"
[ "$(json "$tmp/ri.json" "r['insecure']")" = True ] || fail "an --insecure run's report is not insecure"
ok "$dk" train --model fmnist-cnn --data synthetic --limit 8 --batch 8 --steps 1 -k 1 --noise-std 0 --insecure
ok "$dk" infer --model fmnist-cnn --data synthetic --limit 4 -k 1  # K = 1 itself stays allowed

# The cuda backend: where it cannot run (no GPU, or not built), a clear error, no crash.
ok "$dk" backends
if ! grep -q "^cuda: NVIDIA\|^cuda: .*sm_" "$tmp/out"; then
  refuses "cuda" "$dk" infer --model fmnist-cnn --data synthetic --limit 4 \
    --accelerator cuda
  refuses "cuda" "$dk" worker --backend cuda --listen tcp://127.0.0.1:0
fi

# Integrity: a faulted run with Freivalds' check reports every fault caught and predicts
# what the clean run predicts; bad specs are refused.
ok "$dk" infer --model fmnist-cnn --data synthetic --limit 24 --batch 8 --seed 2 \
  --integrity freivalds --predictions "$tmp/clean.csv"
ok "$dk" infer --model fmnist-cnn --data synthetic --limit 24 --batch 8 --seed 2 \
  --integrity freivalds --inject-faults drop:0.5:1 --report "$tmp/i.json" --predictions "$tmp/f.csv"
for field in mode checks injected injected_above_tolerance changed_output detected missed failed \
    recomputed fallbacks false_alarms unattributed; do
  [ "$(json "$tmp/i.json" "'$field' in r['integrity']")" = True ] || fail "integrity report lacks $field"
done
[ "$(json "$tmp/i.json" "r['integrity']['injected'] > 0 and r['integrity']['detected'] == r['integrity']['injected'] == r['integrity']['changed_output'] and r['integrity']['missed'] == 0")" = True ] ||
  fail "injected drop faults not all detected: $(json "$tmp/i.json" "r['integrity']")"
# The redundant check's blind spot, measured against the clean outputs: adversarial errors
# change the outputs and all pass it.
ok "$dk" infer --model fmnist-cnn --data synthetic --limit 24 --batch 8 --seed 2 \
  --integrity redundant --inject-faults adversarial:0.5:1 --report "$tmp/ra.json"
[ "$(json "$tmp/ra.json" "r['integrity']['injected'] > 0 and r['integrity']['changed_output'] == r['integrity']['missed'] == r['integrity']['injected'] and r['integrity']['detected'] == 0")" = True ] ||
  fail "redundant: adversarial faults not measured as missed: $(json "$tmp/ra.json" "r['integrity']")"
cmp -s "$tmp/clean.csv" "$tmp/f.csv" || fail "a faulted, checked run predicts differently"
refuses "unknown kind" "$dk" infer --model fmnist-cnn --limit 4 --inject-faults melt:0.5
refuses "RATE must be in" "$dk" infer --model fmnist-cnn --limit 4 --inject-faults drop:2
refuses "needs --mode darknight" "$dk" infer --model fmnist-cnn --limit 4 --mode plain --integrity freivalds

# Slalom: the report, top-1 agreement with float inference, its Freivalds check catching
# every fault that changes a result, no redundant check.
ok "$dk" infer --model fmnist-cnn --data synthetic --limit 16 --mode slalom --compare-plain --seed 1 \
  --report "$tmp/s.json"
[ "$(json "$tmp/s.json" "r['mode'] == 'slalom' and r['offline_seconds'] > 0 and r['slalom']['prime'] == 2**31 - 1")" = True ] ||
  fail "slalom report: mode, offline_seconds or prime"
[ "$(json "$tmp/s.json" "r['top1_agreement_vs_plain'] >= 0.8")" = True ] ||
  fail "slalom disagrees with float inference: $(json "$tmp/s.json" "r['top1_agreement_vs_plain']")"
ok "$dk" infer --model fmnist-cnn --data synthetic --limit 16 --mode slalom --seed 1 \
  --integrity freivalds --inject-faults scale:0.5:1 --report "$tmp/si.json"
[ "$(json "$tmp/si.json" "r['integrity']['injected'] > 0 and r['integrity']['detected'] == r['integrity']['injected_above_tolerance'] and r['integrity']['missed'] == 0")" = True ] ||
  fail "slalom: injected faults not all detected: $(json "$tmp/si.json" "r['integrity']")"
refuses "needs --mode darknight" "$dk" infer --model fmnist-cnn --limit 4 --mode slalom --integrity redundant

# Bad input: clear errors, no crash.
refuses "unknown data" "$dk" infer --model fmnist-cnn --data nowhere
refuses "unknown model" "$dk" infer --model alexnet
refuses "cannot open" "$dk" infer --model missing.onnx
refuses "cannot open" "$dk" infer --model fmnist-cnn --data cifar10:"$tmp"/none
python3 -c "open('$tmp/test_batch.bin','wb').write(bytes([3] + [7] * 3072) * 2)"
refuses "takes \[1, 28, 28\]" "$dk" infer --model fmnist-cnn --data cifar10:"$tmp"
echo "garbage" > "$tmp/bad.dkm"
refuses "not a valid DarKnight model file" "$dk" infer --model fmnist-cnn --weights "$tmp/bad.dkm"
refuses "enclave memory\|trusted memory" "$dk" infer --model vgg16 --input-size 224 --limit 4 \
  --enclave-memory 4MiB

# Training: checkpoint every epoch; 2 epochs straight = 1 epoch + resume (plain, seeded).
train=(train --model fmnist-cnn --data synthetic --limit 96 --test-limit 32 --batch 32 --lr 0.05
       --momentum 0.9 --mode plain --seed 3)
ok "$dk" "${train[@]}" --epochs 2 --checkpoint "$tmp/a" --save "$tmp/a.dkm" \
  --metrics "$tmp/m.csv" --report "$tmp/t.json"
ok "$dk" "${train[@]}" --epochs 1 --checkpoint "$tmp/b"
ok "$dk" "${train[@]}" --epochs 2 --checkpoint "$tmp/b" --resume --save "$tmp/b.dkm"
cmp -s "$tmp/a.dkm" "$tmp/b.dkm" || fail "resumed training differs from uninterrupted training"
[ "$(wc -l < "$tmp/m.csv")" = 3 ] || fail "metrics CSV has not a header and 2 rows"
head -1 "$tmp/m.csv" | grep -q "epoch,train_loss,train_accuracy,test_accuracy,seconds" ||
  fail "metrics CSV header"
for field in mode epochs final_test_accuracy peak_trusted_bytes seconds train_seconds; do
  [ "$(json "$tmp/t.json" "'$field' in r")" = True ] || fail "train report lacks $field"
done
[ "$(json "$tmp/t.json" "sorted(r['seconds_by_kind'])")" = "['backward', 'forward']" ] ||
  fail "train report: no forward/backward breakdown"
# A damaged checkpoint is refused.
head -c 1000 "$tmp/b/checkpoint.dkm" > "$tmp/b/cut" && mv "$tmp/b/cut" "$tmp/b/checkpoint.dkm"
refuses "not a valid DarKnight model file" "$dk" "${train[@]}" --epochs 3 --checkpoint "$tmp/b" --resume

# darknight training; the saved model and its ONNX export predict alike.
ok "$dk" train --model fmnist-cnn --data synthetic --limit 64 --test-limit 16 --batch 16 --seed 4 \
  --save "$tmp/d.dkm" --export "$tmp/d.onnx"
ok "$dk" infer --model fmnist-cnn --weights "$tmp/d.dkm" --data synthetic --limit 16 --mode plain \
  --seed 9 --predictions "$tmp/w.csv"
ok "$dk" infer --model "$tmp/d.onnx" --data synthetic --limit 16 --mode plain --seed 9 \
  --predictions "$tmp/o.csv"
cmp -s "$tmp/w.csv" "$tmp/o.csv" || fail "the ONNX export predicts differently from the saved model"
[ "$(wc -l < "$tmp/w.csv")" = 17 ] || fail "predictions CSV has not a header and 16 rows"
refuses "holds a trained 'fmnist-cnn'" "$dk" infer --model vgg16 --weights "$tmp/d.dkm"
if python3 -c "import onnx" 2>/dev/null; then
  python3 -c "import onnx; onnx.checker.check_model(onnx.load('$tmp/d.onnx'))" ||
    fail "the exported model fails onnx.checker"
fi

# Checked training (redundant, f64): dropped mixtures are all caught and the faulted run
# saves exactly the clean run's model; the checks need the folded gradient decode.
chk=(train --model fmnist-cnn --data synthetic --limit 48 --test-limit 16 --batch 16 --seed 5
     --precision f64 --integrity redundant -k 3)
ok "$dk" "${chk[@]}" --grad-decode folded --save "$tmp/c0.dkm"
ok "$dk" "${chk[@]}" --grad-decode folded --inject-faults drop:0.3:2 --save "$tmp/c1.dkm" \
  --report "$tmp/c1.json"
[ "$(json "$tmp/c1.json" "r['integrity']['mode'] == 'redundant' and r['integrity']['injected'] > 0 and r['integrity']['detected'] == r['integrity']['injected_above_tolerance'] > 0 and r['integrity']['false_alarms'] == 0 and r['integrity']['missed'] == 0")" = True ] ||
  fail "redundant training: faults not all detected: $(json "$tmp/c1.json" "r['integrity']")"
cmp -s "$tmp/c0.dkm" "$tmp/c1.dkm" || fail "a faulted, checked training run saves another model"
refuses "needs --mode darknight --grad-decode folded" "$dk" "${chk[@]}" --grad-decode trusted

# An accelerator that keeps failing Freivalds' check (60% of its operations dropped) stops
# the run; --fallback-accelerator restores the last checkpoint on another one and goes on:
# the same model as a clean run resumed from its checkpoint after the same epoch (f64).
fb=(train --model fmnist-cnn --data synthetic --limit 96 --test-limit 16 --batch 16 --seed 5
    --precision f64 --integrity freivalds --grad-decode folded --lr 0.05 --momentum 0.9)
ok "$dk" "${fb[@]}" --epochs 1 --checkpoint "$tmp/fc"
ok "$dk" "${fb[@]}" --epochs 3 --checkpoint "$tmp/fc" --resume --save "$tmp/f0.dkm"
refuses "failed the check" "$dk" "${fb[@]}" --epochs 3 --inject-faults drop:0.6:3 --checkpoint "$tmp/fx" \
  --report "$tmp/fx.json"
[ "$(json "$tmp/fx.json" "'failed the check' in r['stopped'] and r['integrity']['detected'] > 0")" = True ] ||
  fail "a stopped run's report lacks what stopped it or its counts"
ok "$dk" "${fb[@]}" --epochs 3 --inject-faults drop:0.6:3 --checkpoint "$tmp/fd" \
  --fallback-accelerator cpu --save "$tmp/f1.dkm" --report "$tmp/f1.json"
[ "$(json "$tmp/f1.json" "r['restarts'][0]['restored'] == 'checkpoint' and r['restarts'][0]['epochs_done'] == 1 and r['restarts'][0]['integrity']['detected'] > 0 and len(r['epochs']) == 3")" = True ] ||
  fail "fallback: restarts $(json "$tmp/f1.json" "r.get('restarts')")"
cmp -s "$tmp/f0.dkm" "$tmp/f1.dkm" || fail "the run restored on the fallback ends with another model"

[ $failures -eq 0 ] && echo "cli: ok"
exit $failures
