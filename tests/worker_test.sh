#!/usr/bin/env bash
# The accelerator as a separate process (`darknight worker`), end to end:
#  - infer and train through a worker over tcp give the in-process results, bit for bit;
#  - the worker's capture (the adversary's view, attacked by tests/audit_test.sh) has the
#    documented format;
#  - encrypted, authenticated links (CurveZMQ, --key / --worker-keys) give the same results,
#    and a wrong or missing key is refused at once with a clear error;
#  - faults injected by a worker are detected, and the worker's own count is reported;
#  - a worker killed mid-run makes the trusted side fail with a clear error, not hang.
# Usage: worker_test.sh BUILD_DIR
set -u
export OMP_WAIT_POLICY=passive  # two processes share the cores: no busy-waiting threads
dk="$1/darknight"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
fail=0
check() {  # check NAME COMMAND...: the command must succeed
  if "${@:2}" >"$tmp/out" 2>&1; then echo "ok   $1"; else
    echo "FAIL $1"; cat "$tmp/out"; fail=1
  fi
}

# start_worker DIR [worker options]: starts a worker on a free port; sets $ep and $wpid.
start_worker() {
  local log="$tmp/$1.log"
  "$dk" worker --listen tcp://127.0.0.1:0 "${@:2}" >"$log" 2>&1 &
  wpid=$!
  for _ in $(seq 50); do
    ep=$(grep -o 'tcp://[0-9.:]*' "$log" 2>/dev/null) && break
    sleep 0.1
  done
}
stop_worker() { kill -INT "$wpid"; wait "$wpid"; }

# capture NAME ARGS...: runs darknight ARGS through a worker capturing to $tmp/NAME.
capture() {
  start_worker "$1" --capture "$tmp/$1"
  "$dk" "${@:2}" --accelerator "$ep" >"$tmp/$1.run" 2>&1 || { echo "FAIL run $1"; cat "$tmp/$1.run"; fail=1; }
  stop_worker
}

infer="infer --model fmnist-cnn --data fashion-mnist --limit 48 --batch 16 --seed 7"
train="train --model fmnist-cnn --data fashion-mnist --limit 64 --test-limit 16 --batch 32 --steps 2 --seed 7 --lr 0.05 --momentum 0.9"

# Same results as in-process.
start_worker same
check "infer over tcp = in-process" bash -c "
  $dk $infer --predictions $tmp/p_local.txt >/dev/null 2>&1 &&
  $dk $infer --predictions $tmp/p_remote.txt --accelerator $ep >/dev/null 2>&1 &&
  cmp $tmp/p_local.txt $tmp/p_remote.txt"
check "train over tcp = in-process (saved model bit for bit)" bash -c "
  $dk $train --save $tmp/m_local.dkm >/dev/null 2>&1 &&
  $dk $train --save $tmp/m_remote.dkm --accelerator $ep >/dev/null 2>&1 &&
  cmp $tmp/m_local.dkm $tmp/m_remote.dkm"
stop_worker

# Encrypted, authenticated links (CurveZMQ): the same results; a worker that serves them
# refuses a plain client, and a client refuses a worker that does not hold the pinned key.
check "worker --keygen prints the public key it writes; the secret key is the owner's only" bash -c "
  [ \"\$($dk worker --keygen $tmp/keys)\" = \"\$(cat $tmp/keys/public.key)\" ] &&
  [ \$(wc -c < $tmp/keys/public.key) = 41 ] && [ \$(stat -c %a $tmp/keys/secret.key) = 600 ] &&
  ! $dk worker --keygen $tmp/keys 2>/dev/null"
start_worker curve --key "$tmp/keys"
echo "$ep $(cat "$tmp/keys/public.key")" >"$tmp/worker-keys"
"$dk" worker --keygen "$tmp/other" >/dev/null
echo "$ep $(cat "$tmp/other/public.key")" >"$tmp/wrong-keys"
check "infer over an encrypted link = in-process" bash -c "
  $dk $infer --predictions $tmp/p_curve.txt --accelerator $ep --worker-keys $tmp/worker-keys \
    >/dev/null 2>&1 && cmp $tmp/p_local.txt $tmp/p_curve.txt"
check "a worker with --key refuses a plain client, at once" bash -c "
  ! $dk $infer --accelerator $ep --accelerator-timeout 30 > $tmp/plain.txt 2>&1 &&
  grep -q 'handshake failed.*no key is pinned' $tmp/plain.txt"
check "a worker without the pinned key is refused, at once" bash -c "
  ! $dk $infer --accelerator $ep --worker-keys $tmp/wrong-keys --accelerator-timeout 30 \
    > $tmp/wrong.txt 2>&1 && grep -q 'handshake failed.*not its key' $tmp/wrong.txt"
stop_worker
start_worker plainlink
echo "$ep $(cat "$tmp/keys/public.key")" >"$tmp/plain-keys"
check "a pinned key refuses a worker on a plain link" bash -c "
  ! $dk $infer --accelerator $ep --worker-keys $tmp/plain-keys --accelerator-timeout 30 \
    > $tmp/plainlink.txt 2>&1 && grep -q 'handshake failed' $tmp/plainlink.txt &&
  ! $dk $infer --accelerator $ep --worker-keys $tmp/worker-keys > $tmp/nokey.txt 2>&1 &&
  grep -q 'holds no key for the worker' $tmp/nokey.txt"
stop_worker

# Faults injected by the worker (the trusted side cannot count them, only detect them): with
# Freivalds' check the predictions are the clean run's, and the report carries the worker's
# own count next to the detections.
start_worker faulty --inject-faults drop:0.5:1
check "faults injected in a worker: detected, reported, predictions unchanged" bash -c "
  $dk $infer --integrity freivalds --predictions $tmp/f_clean.txt >/dev/null 2>&1 &&
  $dk $infer --integrity freivalds --predictions $tmp/f_worker.txt --accelerator $ep \
    --report $tmp/f.json >/dev/null 2>&1 &&
  cmp $tmp/f_clean.txt $tmp/f_worker.txt &&
  /usr/bin/python3 -c \"
import json
i = json.load(open('$tmp/f.json'))['integrity']
w = i['worker_reported']
assert w['injected'] > 0 and w['operations'] > w['injected'], w
assert i['unattributed'] == w['injected'], i  # each fault caught (drops are all above tolerance)
assert i['detected'] == 0 and i['false_alarms'] == 0, i  # nothing to attribute them with here
\""
stop_worker

# The capture's format (its attacks: tests/audit_test.sh, `darknight audit`).
capture infer_dk $infer
check "capture index: fields, K+1 mixtures per virtual batch as rows" /usr/bin/python3 -c "
import json, numpy as np
lines = [json.loads(l) for l in open('$tmp/infer_dk/index.jsonl')]
for e in lines:
    assert set(e) >= {'file', 'type', 'layer', 'virtual_batch', 'mixture', 'shape', 'dtype'}, e
    a = np.load('$tmp/infer_dk/' + e['file'])
    assert list(a.shape) == e['shape'] and str(a.dtype) == e['dtype'], e
first = [e for e in lines if e['type'] == 'conv2d_forward.src' and e['layer'] == 0]
assert first[0]['shape'] == [20, 1, 28, 28] and first[0]['mixtures'] == 5, first[0]  # 16 images, K = 4
assert [e['virtual_batch'] for e in first] == [0, 4, 8], first
"

# A worker that dies mid-run: a clear error, well before the timeout.
start_worker dying
"$dk" train --model fmnist-cnn --data fashion-mnist --limit 2048 --test-limit 16 --batch 32 \
  --seed 7 --accelerator "$ep" --accelerator-timeout 60 >"$tmp/dying.run" 2>&1 &
tpid=$!
for _ in $(seq 300); do grep -q "session started" "$tmp/dying.log" && break; sleep 0.1; done
sleep 1  # mid-run: the session has started
kill -9 "$wpid"
wait "$wpid" 2>/dev/null
start=$(date +%s)
wait "$tpid"
rc=$?
elapsed=$(($(date +%s) - start))
check "a killed worker fails the run with a clear error (rc $rc, ${elapsed} s)" bash -c "
  [ $rc -ne 0 ] && [ $elapsed -lt 30 ] &&
  grep -E 'darknight: error: accelerator worker at tcp://.* (disconnected|sent no reply)' $tmp/dying.run"

[ $fail -eq 0 ] && echo "worker: all passed"
exit $fail
