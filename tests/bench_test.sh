#!/usr/bin/env bash
# `darknight bench`: a tiny problem list runs end to end (repeats, medians, CSV, JSON, tables
# and plots); a failing problem fails the bench; a malformed list is refused clearly.
# Usage: bench_test.sh BUILD_DIR
set -u
dk="$1/darknight"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { if "${@:2}" >"$tmp/out" 2>&1; then echo "ok   $1"; else echo "FAIL $1"; cat "$tmp/out"; fail=1; fi; }

cat >"$tmp/tiny.txt" <<'P'
# comment
set V infer --model fmnist-cnn --data synthetic --input-size 28 --limit 8 --batch 8 --seed 1
fig2a K=1 ${V} -k 1
fig2a K=2 ${V} -k 2
fig2b fmnist/plain ${V} --mode plain
fig2b fmnist/tee ${V} --mode tee
fig2b fmnist/darknight-k4 ${V} -k 4
fig4 fmnist/darknight train --model fmnist-cnn --data synthetic --input-size 28 --limit 8 --test-limit 8 --batch 8 --steps 1 --seed 1
fig3 clean repeat=1 train --model fmnist-cnn --data synthetic --input-size 28 --limit 16 --test-limit 8 --batch 8 --epochs 2 --seed 1 --mode plain --save ${OUT}/m.dkm
table2 clean repeat=1 infer --model fmnist-cnn --weights ${OUT}/m.dkm --data synthetic --input-size 28 --limit 8 --mode plain
P
check "a problem list runs end to end" "$dk" bench --suite "$tmp/tiny.txt" --out "$tmp/r" --repeat 2
check "results: medians of 2 runs, CSV, tables and plots" /usr/bin/python3 -c "
import json, os
r = json.load(open('$tmp/r/results.json'))
ps = {p['figure'] + ' ' + p['label']: p for p in r['problems']}
assert len(ps) == 8, list(ps)
s = ps['fig2a K=2']['summary']['per_image.seconds']
assert len(ps['fig2a K=2']['runs']) == 2 and s['min'] <= s['median'] <= s['max'], s
assert len(ps['fig3 clean']['runs']) == 1 and len(ps['fig3 clean']['runs'][0]['epochs']) == 2
assert os.path.exists('$tmp/r/m.dkm')
assert 'fig2b,fmnist/tee,per_image.seconds' in open('$tmp/r/results.csv').read()
md = open('$tmp/r/tables.md').read()
for h in ('Figure 2a', 'Figure 2b', 'Figure 4', 'Figure 3', 'Table 2', 'speedup vs tee'):
    assert h in md, h
for f in ('fig2a', 'fig2b', 'fig4', 'fig3'):
    assert os.path.getsize('$tmp/r/' + f + '.png') > 1000, f
"
printf 'fig2a bad infer --model no-such-model --limit 2\n' >"$tmp/bad.txt"
check "a failing problem fails the bench, naming its log" bash -c "
  ! $dk bench --suite $tmp/bad.txt --out $tmp/b --repeat 1 --no-plots > $tmp/b.txt 2>&1 &&
  grep -q 'FAILED (exit 1), log' $tmp/b.txt"
printf 'fig2a K=1 infer ${NOPE}\n' >"$tmp/undef.txt"
check "an undefined variable is refused with its line" bash -c "
  ! $dk bench --suite $tmp/undef.txt --out $tmp/u 2> $tmp/u.txt && grep -q 'undef.txt:1: \${NOPE} is not set' $tmp/u.txt"
check "an unknown suite names the available ones" bash -c "
  ! $dk bench --suite nope --out $tmp/n 2> $tmp/n.txt && grep -q 'one of: gpu, paper, quick' $tmp/n.txt"

[ $fail -eq 0 ] && echo "bench: all passed"
exit $fail
