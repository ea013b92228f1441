#!/usr/bin/env bash
# kill -9 during `darknight train --checkpoint DIR --checkpoint-every 2` at random moments
# (during a step, and twice while a checkpoint is being written), then `--resume` until the
# run completes:
#  - with --seed the final model is byte-identical to an uninterrupted run's, and the
#    metrics CSV and report have its epochs and steps, none lost or repeated;
#  - without --seed the run resumes from its last complete checkpoint and ends with the
#    right epoch and step counts;
#  - --resume with no complete checkpoint yet (none, or only a partly written .tmp) says so
#    and starts from the beginning; a damaged checkpoint.dkm is refused.
# The kills while saving use DARKNIGHT_TEST_SLOW_SAVE_MS (nn/model_file.cpp: half the file,
# a pause, the rest): the test waits for checkpoint.dkm.tmp to be rewritten and kills then.
# The random kills wait for a new checkpoint (so every round gets further however loaded the
# machine is), then a random 0-0.6 s: within the next one to three steps.
# Usage: kill_resume_test.sh BUILD_DIR   (KILL_RESUME_ROUNDS: random kills per seeded run,
# default 4, at least 1; the unseeded run gets half as many, at least 1)
set -u
dk="${1:?usage: kill_resume_test.sh BUILD_DIR}/darknight"
rounds=${KILL_RESUME_ROUNDS:-4}
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; rm -rf "$tmp"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
json() { python3 -c "import json,sys; r=json.load(open('$1')); print($2)"; }
# Prints a Python expression of a checkpoint's header meta (nn/model_file.cpp's layout:
# magic[8], version u32, header length u64, header JSON).
meta() {
  python3 - "$1" "$2" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], 'rb').read()
(n,) = struct.unpack_from('<Q', b, 12)
meta = json.loads(b[20:20 + n])['meta']
print(eval(sys.argv[2]))
EOF
}
stamp() { stat -c '%y %s' "$1" 2>/dev/null || echo none; }
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }

# 3 epochs of 6 steps, a checkpoint every 2 steps and after each epoch.
train=(train --model fmnist-cnn --data synthetic --limit 96 --test-limit 16 --batch 16 -k 2
       --epochs 3 --lr 0.01 --momentum 0.9 --grad-decode folded)
steps=18
kills=0

# start ARGS...: `train ARGS --resume` in the background (pid in $pid, output in $tmp/log.N).
start() {
  runs=$((${runs:-0} + 1))
  "$dk" "${train[@]}" "$@" --resume > "$tmp/out.$runs" 2> "$tmp/log.$runs" &
  pid=$!
}
# until_changed FILE BEFORE: waits until FILE's stamp differs from BEFORE (and it is not
# empty) or the run ends; 0 if it changed while the run was alive.
until_changed() {
  local t=0
  while alive $pid; do
    if [ "$(stamp "$1")" != "$2" ] && [ -s "$1" ]; then return 0; fi
    sleep 0.05
    t=$((t + 1))
    [ $t -gt 4000 ] && { fail "no progress in 200 s: $(tail -3 "$tmp/log.$runs")"; return 1; }
  done
  return 1
}
# finish_or_kill: kills the run if alive; else checks that it succeeded.
finish_or_kill() {
  if alive $pid && kill -9 $pid 2>/dev/null; then
    wait $pid 2>/dev/null
    kills=$((kills + 1))
  else
    wait $pid || fail "run $runs failed: $(tail -3 "$tmp/log.$runs")"
  fi
  pid=
}
# random_kill DIR ARGS...: resumes, waits for a new checkpoint, kills at a random moment.
random_kill() {
  local dir=$1; shift
  local before; before=$(stamp "$dir/checkpoint.dkm")
  start "$@" --checkpoint "$dir" --checkpoint-every 2
  until_changed "$dir/checkpoint.dkm" "$before" &&
    sleep "$(printf '0.%03d' $((RANDOM % 600)))"
  finish_or_kill
}
# saving_kill DIR ARGS...: resumes and kills it while it writes its next checkpoint; the
# .tmp must be left partial and checkpoint.dkm as it was.
saving_kill() {
  local dir=$1; shift
  local before; before=$(stamp "$dir/checkpoint.dkm")
  local tmp_before; tmp_before=$(stamp "$dir/checkpoint.dkm.tmp")
  DARKNIGHT_TEST_SLOW_SAVE_MS=3000 start "$@" --checkpoint "$dir" --checkpoint-every 2
  if until_changed "$dir/checkpoint.dkm.tmp" "$tmp_before"; then
    finish_or_kill
    [ "$(stamp "$dir/checkpoint.dkm")" = "$before" ] ||
      fail "checkpoint.dkm changed although the run was killed while writing the next one"
    if [ -e "$dir/checkpoint.dkm" ]; then
      [ "$(stat -c %s "$dir/checkpoint.dkm.tmp")" -lt "$(stat -c %s "$dir/checkpoint.dkm")" ] ||
        fail "the checkpoint being written when killed is not partial"
    fi
  else
    finish_or_kill
    fail "the run ended without writing a checkpoint"
  fi
}
# resume_to_end DIR ARGS...: resumes until done.
resume_to_end() {
  local dir=$1; shift
  start "$@" --checkpoint "$dir" --checkpoint-every 2
  wait $pid || fail "the resumed run failed: $(tail -3 "$tmp/log.$runs")"
  pid=
}
t0=$SECONDS

# --- Seeded: the reference, uninterrupted and without checkpoints.
"$dk" "${train[@]}" --seed 3 --save "$tmp/ref.dkm" --metrics "$tmp/ref.csv" > /dev/null \
  2> "$tmp/err" || fail "reference run: $(tail -3 "$tmp/err")"
s=(--seed 3 --save "$tmp/s.dkm" --metrics "$tmp/s.csv" --report "$tmp/s.json")
# Killed while writing its first checkpoint: only a partial .tmp, no checkpoint.
saving_kill "$tmp/s" "${s[@]}"
grep -q "no complete checkpoint in $tmp/s yet; starting from the beginning" "$tmp/log.$runs" ||
  fail "--resume without a checkpoint does not say so: $(cat "$tmp/log.$runs")"
[ -e "$tmp/s/checkpoint.dkm" ] && fail "a checkpoint.dkm exists after a kill while writing the first"
[ -s "$tmp/s/checkpoint.dkm.tmp" ] || fail "no partial checkpoint.dkm.tmp after a kill while writing"
# The next run ignores the partial file: starts from the beginning.
first_random=$((runs + 1))
for ((i = 0; i < rounds || i < 1; ++i)); do random_kill "$tmp/s" "${s[@]}"; done
grep -q "no complete checkpoint in $tmp/s yet" "$tmp/log.$first_random" ||
  fail "a partial checkpoint.dkm.tmp was not ignored: $(cat "$tmp/log.$first_random")"
# Killed while writing a later checkpoint: the one before is used.
saving=1
if [ "$(meta "$tmp/s/checkpoint.dkm" "meta['steps']")" -lt $steps ]; then
  saving_kill "$tmp/s" "${s[@]}"
  saving=2
fi
at=$(meta "$tmp/s/checkpoint.dkm" "meta['steps']")
resume_to_end "$tmp/s" "${s[@]}"
grep -q "resuming from $tmp/s/checkpoint.dkm at epoch [0-9]*, step $at\$" "$tmp/log.$runs" ||
  fail "the last run did not resume from the last complete checkpoint (step $at): $(cat "$tmp/log.$runs")"
if cmp -s "$tmp/ref.dkm" "$tmp/s.dkm"; then
  echo "seeded: $kills kills ($saving while saving), resumed at step $at of $steps: same model"
else
  fail "the seeded run killed $kills times ends with another model than the uninterrupted run"
fi
# The same epochs in the CSV (all but the seconds) and the report.
cut -d, -f1-4 "$tmp/ref.csv" > "$tmp/ref4.csv"
cut -d, -f1-4 "$tmp/s.csv" > "$tmp/s4.csv"
cmp -s "$tmp/ref4.csv" "$tmp/s4.csv" ||
  fail "metrics CSV differs from the uninterrupted run's: $(diff "$tmp/ref4.csv" "$tmp/s4.csv")"
[ "$(json "$tmp/s.json" "r['steps'], len(r['epochs']), r['resumed']['step']")" = "$steps 3 $at" ] ||
  fail "seeded report: steps, epochs, resumed: $(json "$tmp/s.json" "r['steps'], len(r['epochs']), r.get('resumed')")"
# Resuming a finished run changes nothing.
resume_to_end "$tmp/s" "${s[@]}"
cmp -s "$tmp/ref.dkm" "$tmp/s.dkm" || fail "resuming a finished run changes the model"
# A damaged checkpoint is refused, with a clear error.
head -c 2000 "$tmp/s/checkpoint.dkm" > "$tmp/cut" && mv "$tmp/cut" "$tmp/s/checkpoint.dkm"
if "$dk" "${train[@]}" "${s[@]}" --checkpoint "$tmp/s" --resume > /dev/null 2> "$tmp/err"; then
  fail "a damaged checkpoint was loaded"
else
  grep -q "not a valid DarKnight model file" "$tmp/err" ||
    fail "damaged checkpoint: unclear error: $(cat "$tmp/err")"
fi

# --- Unseeded: resumes from its last complete checkpoint.
u=(--save "$tmp/u.dkm" --metrics "$tmp/u.csv" --report "$tmp/u.json")
kills=0
for ((i = 0; i < (rounds + 1) / 2 || i < 1; ++i)); do random_kill "$tmp/u" "${u[@]}"; done
at=$(meta "$tmp/u/checkpoint.dkm" "meta['steps']")
[ "$(meta "$tmp/u/checkpoint.dkm" "'rng' in meta")" = False ] ||
  fail "an unseeded checkpoint holds generator positions"
resume_to_end "$tmp/u" "${u[@]}"
grep -q "resuming from $tmp/u/checkpoint.dkm at epoch [0-9]*, step $at\$" "$tmp/log.$runs" ||
  fail "unseeded: did not resume from the last checkpoint (step $at): $(cat "$tmp/log.$runs")"
[ "$(json "$tmp/u.json" "r['steps'], len(r['epochs']), r['resumed']['step']")" = "$steps 3 $at" ] ||
  fail "unseeded report: steps, epochs, resumed: $(json "$tmp/u.json" "r['steps'], len(r['epochs']), r.get('resumed')")"
[ "$(cut -d, -f1 "$tmp/u.csv" | tr '\n' ' ')" = "epoch 1 2 3 " ] ||
  fail "unseeded metrics CSV rows: $(cat "$tmp/u.csv")"
[ -s "$tmp/u.dkm" ] || fail "unseeded: no final model"
echo "unseeded: $kills kills, resumed at step $at of $steps"

echo "$((SECONDS - t0)) s"
[ $failures -eq 0 ] && echo "kill_resume: ok"
exit $failures
