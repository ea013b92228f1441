#!/usr/bin/env bash
# Every reply from a worker is untrusted input: `darknight infer` and `train` against a worker
# that misbehaves on purpose (tests/support/hostile_worker.cpp: wrong shapes, truncated,
# oversized and garbage replies, out-of-order and stalled ones, a worker that exits
# mid-session). Each run must end in a non-zero exit with a clear error naming the problem:
# no crash (no signal, no sanitizer report), no hang (each run under `timeout 60`).
# Usage: hostile_worker_test.sh BUILD_DIR
set -u
export OMP_WAIT_POLICY=passive  # two processes share the cores: no busy-waiting threads
dk="$1/darknight"
hostile="$1/tests/dk_hostile_worker"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
fail=0

# start_hostile NAME KIND TYPE N: a hostile worker on a free port; sets $ep and $wpid.
start_hostile() {
  local log="$tmp/$1.worker"
  "$hostile" --listen tcp://127.0.0.1:0 --misbehave "$2" --on "$3" --nth "$4" >"$log" 2>&1 &
  wpid=$!
  ep=""
  for _ in $(seq 100); do
    ep=$(grep -o 'tcp://[0-9.:]*' "$log" 2>/dev/null) && break
    sleep 0.1
  done
}

# The same small runs as tests/worker_test.sh, with the reads that integrity checks and
# checkpoints make: train reads the weights and momentum back (Freivalds' check before the
# first step and after each; the checkpoint; --save). fmnist-cnn has 4 linear layers, so
# train makes read_weights #1-4 before the first step, #5-12 after the two steps, #13-16
# for the checkpoint and #17-20 for --save (read_momentum: #1-4 empty, #5-12, #13-16).
infer="infer --model fmnist-cnn --data fashion-mnist --limit 32 --batch 16 --seed 7 --integrity freivalds"
train="train --model fmnist-cnn --data fashion-mnist --limit 32 --test-limit 16 --batch 16 --steps 2 --seed 7 --momentum 0.9 --grad-decode folded"

# run NAME KIND TYPE N EXPECT COMMAND...: runs darknight COMMAND against a worker that does KIND
# on the Nth TYPE request. EXPECT: "ok" (it must succeed), or a regular expression its error
# must match.
run() {
  local name=$1 kind=$2 type=$3 nth=$4 expect=$5
  shift 5
  start_hostile "$name" "$kind" "$type" "$nth"
  local out="$tmp/$name.out"
  if [ -z "$ep" ]; then
    echo "FAIL $name: the hostile worker did not start"; cat "$tmp/$name.worker"; fail=1; return
  fi
  timeout 60 "$dk" "$@" --accelerator "$ep" --accelerator-timeout 3 >"$out" 2>&1
  local rc=$?
  kill "$wpid" 2>/dev/null
  wait "$wpid" 2>/dev/null
  local why=""
  if [ "$expect" = ok ]; then
    [ $rc -eq 0 ] || why="exit $rc, expected success"
  elif [ $rc -eq 0 ]; then
    why="succeeded"
  elif [ $rc -eq 124 ]; then
    why="hung (killed after 60 s)"
  elif [ $rc -ge 124 ]; then
    why="crashed (exit $rc)"
  elif ! grep -q "FIRED $kind on $type #$nth " "$tmp/$name.worker"; then
    why="the worker never misbehaved (no $type #$nth)"
  elif ! grep -Eq "darknight: error: .*($expect)" "$out"; then
    why="no error matching '$expect'"
  fi
  if grep -Eq "Sanitizer|Segmentation|Aborted|assertion|terminate called" "$out"; then
    why="${why:+$why; }crash report in the output"
  fi
  if [ -z "$why" ]; then
    echo "ok   $name ($kind on $type #$nth: exit $rc)"
  else
    echo "FAIL $name ($kind on $type #$nth): $why"
    tail -n 20 "$out"
    tail -n 5 "$tmp/$name.worker"
    fail=1
  fi
}

mkdir -p "$tmp/ck"
# Controls: the hostile worker serves honestly when told to.
run honest_infer honest any 1 ok $infer
run honest_train honest any 1 ok $train --integrity freivalds --checkpoint "$tmp/ck" --save "$tmp/m.dkm"

# Wrong shapes in read_weights / read_momentum: checked against the weights' own shape before
# any digest indexes them.
shape="returned a tensor of|returned nothing"
run shape_weights_digest wrong-shape read_weights 1 "$shape" $train --integrity freivalds
run shape_weights_step reshape read_weights 5 "$shape" $train --integrity freivalds
run shape_weights_redundant wrong-shape read_weights 1 "$shape" $train --integrity redundant
run shape_weights_save wrong-shape read_weights 17 "$shape" $train --integrity freivalds --checkpoint "$tmp/ck" --save "$tmp/m.dkm"
run shape_momentum_empty wrong-shape read_momentum 1 "$shape" $train --integrity freivalds
run shape_momentum_step wrong-shape read_momentum 5 "$shape" $train --integrity freivalds
run shape_momentum_checkpoint reshape read_momentum 13 "$shape" $train --integrity freivalds --checkpoint "$tmp/ck"

# Truncated payloads.
run truncate_weights truncate read_weights 2 "payload bytes" $train --integrity freivalds
run truncate_download_infer truncate download 1 "download reply" $infer
run truncate_download_train truncate download 7 "download reply" $train --integrity freivalds
run truncate_ok_reply truncate upload 3 "malformed reply" $infer

# Oversized replies: refused by the socket before they are read (the worker is cut off).
run oversize_download oversize download 2 "disconnected" $infer
run oversize_weights oversize read_weights 1 "disconnected" $train --integrity freivalds

# Garbage frames.
run bad_magic bad-magic any 5 "malformed reply.*magic" $infer
run extra_frame extra-frame download 2 "malformed reply.*frames" $infer
run random_bytes random-bytes any 30 "malformed reply" $train --integrity freivalds
run random_hello random-bytes hello 1 "malformed reply" $infer
run wrong_type wrong-type any 3 "reply of type 77" $infer
run bad_stats bad-stats stats 1 "stats reply" $infer

# Out-of-order replies.
run wrong_seq_download wrong-seq download 1 "reply to request" $infer
run wrong_seq_momentum wrong-seq read_momentum 1 "reply to request" $train --integrity freivalds

# Stalled replies: --accelerator-timeout (3 s here) fires.
run stall_download stall download 2 "sent no reply within" $infer
run stall_train stall any 40 "sent no reply within" $train --integrity freivalds

# The worker exits mid-session.
run exit_infer exit any 10 "disconnected" $infer
run exit_read_weights exit read_weights 1 "disconnected" $train --integrity freivalds

[ $fail -eq 0 ] && echo "hostile_worker: all passed"
exit $fail
