#!/usr/bin/env bash
# End-to-end test of attestation and sealed data ingress on the command line: the owner
# verifies a report and seals Fashion-MNIST, `train` and `infer` read it with
# --data sealed:FILE, and every falsified report and damaged file is refused with its own
# message. Keys live in a temporary DARKNIGHT_HOME, never the user's.
# Usage: seal_cli_test.sh BUILD_DIR
set -u
dk="${1:?usage: seal_cli_test.sh BUILD_DIR}/darknight"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export DARKNIGHT_HOME="$tmp/home"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { "$@" > "$tmp/out" 2> "$tmp/err" || { fail "$* (exit $?): $(tail -3 "$tmp/err")"; }; }
refuses() {
  local pattern=$1; shift
  if "$@" > "$tmp/out" 2> "$tmp/err"; then fail "$* succeeded"; return; fi
  grep -q -- "$pattern" "$tmp/err" || fail "$*: error does not mention '$pattern': $(cat "$tmp/err")"
}
field() { python3 -c "import json; print(json.load(open('$1'))['$2'])"; }

# Fashion-MNIST (a small IDX copy when the dataset is not installed).
fm=/usr/share/datasets/fashion-mnist
if [ ! -f "$fm/t10k-images-idx3-ubyte.gz" ]; then
  fm="$tmp/fm" && mkdir -p "$fm"
  python3 - "$fm" <<'EOF'
import gzip, random, struct, sys
random.seed(1)
for prefix, n in (("train", 400), ("t10k", 400)):
    with gzip.open(f"{sys.argv[1]}/{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28) + bytes(random.randrange(256) for _ in range(n * 784)))
    with gzip.open(f"{sys.argv[1]}/{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + bytes(random.randrange(10) for _ in range(n)))
EOF
fi

# The enclave's side: platform key (pinned by the owner), a report with the owner's nonce.
ok "$dk" platform-key
pk=$(cat "$tmp/out")
[ "$(stat -c %a "$DARKNIGHT_HOME/platform.key")" = 600 ] || fail "platform key file is not mode 600"
ok "$dk" enclave-info --nonce 00c0ffee --report "$tmp/r.json"
m=$(field "$tmp/r.json" measurement)
[ "$(field "$tmp/r.json" public_key)" != "" ] || fail "report lacks public_key"
grep -q "$m" "$tmp/out" || fail "enclave-info does not print the measurement"
ok "$dk" enclave-info
grep -q '"signature"' "$tmp/out" || fail "enclave-info without --report prints no report"

# The owner's side: verify and seal (small chunks, so that there are many).
seal=(seal --platform-key "$pk" --expect-measurement "$m" --data "fashion-mnist:$fm" --limit 300
      --chunk-size 64KiB)
ok "$dk" "${seal[@]}" --report "$tmp/r.json" --expect-nonce 00c0ffee --out "$tmp/a.sealed"
ok "$dk" "${seal[@]}" --report "$tmp/r.json" --out "$tmp/b.sealed"

# Each falsified report is refused.
python3 -c "import json; r=json.load(open('$tmp/r.json')); r['timestamp']+=1; json.dump(r, open('$tmp/altered.json','w'))"
refuses "signature does not verify" "$dk" "${seal[@]}" --report "$tmp/altered.json" --out "$tmp/x"
DARKNIGHT_HOME="$tmp/forger" "$dk" enclave-info --report "$tmp/forged.json" > /dev/null
refuses "self-signed" "$dk" "${seal[@]}" --report "$tmp/forged.json" --out "$tmp/x"
refuses "measurement mismatch" "$dk" seal --platform-key "$pk" --expect-measurement "$(printf '%064d' 0)" \
  --data "fashion-mnist:$fm" --report "$tmp/r.json" --out "$tmp/x"
refuses "nonce mismatch" "$dk" "${seal[@]}" --report "$tmp/r.json" --expect-nonce 01 --out "$tmp/x"
[ -e "$tmp/x" ] && fail "a refused seal wrote a file"

# End to end: train one short epoch on the sealed train split, infer on its test split;
# the sealed test images give exactly the predictions of the plain files.
ok "$dk" train --model fmnist-cnn --data "sealed:$tmp/a.sealed" --limit 64 --test-limit 32 \
  --batch 32 --epochs 1 --seed 3 --save "$tmp/m.dkm"
grep -q "64 sealed:fashion-mnist images" "$tmp/out" || fail "train did not use the sealed data: $(cat "$tmp/out")"
ok "$dk" infer --model fmnist-cnn --weights "$tmp/m.dkm" --data "sealed:$tmp/a.sealed" --limit 48 \
  --mode plain --predictions "$tmp/sealed.csv"
grep -q "48 sealed:fashion-mnist images" "$tmp/out" || fail "infer did not use the sealed data"
ok "$dk" infer --model fmnist-cnn --weights "$tmp/m.dkm" --data "fashion-mnist:$fm" --limit 48 \
  --mode plain --predictions "$tmp/plain.csv"
cmp -s "$tmp/sealed.csv" "$tmp/plain.csv" || fail "sealed and plain test images predict differently"

# Damaged files: each refused with its own message, whatever --limit says.
python3 - "$tmp" <<'EOF'
import struct, sys
d = sys.argv[1]
a, b = open(f"{d}/a.sealed", "rb").read(), open(f"{d}/b.sealed", "rb").read()
count, chunk, plain = struct.unpack("<QQQ", a[120:144])
assert count > 4, count
frame = 24 + chunk + 16
def at(i): return 144 + i * frame
def put(data, i, f): return data[:at(i)] + f + data[at(i) + len(f):]
def write(name, data): open(f"{d}/{name}", "wb").write(data)
t = bytearray(a); t[at(2) + 24 + 7] ^= 1; write("tampered", bytes(t))
t = bytearray(a); t[-1] ^= 1; write("tampered_last", bytes(t))
write("truncated", a[:at(count - 1)])
write("reordered", put(put(a, 1, a[at(2):at(3)]), 2, a[at(1):at(2)]))
write("duplicate", put(a, 2, a[at(1):at(2)]))
write("foreign", put(a, 2, b[at(2):at(3)]))
EOF
infer=(infer --model fmnist-cnn --limit 8)
refuses "authentication failed at chunk 2 of" "$dk" "${infer[@]}" --data "sealed:$tmp/tampered"
refuses "authentication failed at chunk" "$dk" "${infer[@]}" --data "sealed:$tmp/tampered_last"
refuses "truncated" "$dk" "${infer[@]}" --data "sealed:$tmp/truncated"
refuses "chunk 1 of .* is out of order: it holds chunk 2 (reordered)" "$dk" "${infer[@]}" \
  --data "sealed:$tmp/reordered"
refuses "chunk 2 of .* is a replay of chunk 1" "$dk" "${infer[@]}" --data "sealed:$tmp/duplicate"
refuses "chunk 2 of .* belongs to another sealed dataset" "$dk" "${infer[@]}" --data "sealed:$tmp/foreign"
refuses "authentication failed at chunk 2 of" "$dk" train --model fmnist-cnn --limit 8 \
  --data "sealed:$tmp/tampered"

# Sealed for another enclave: a rebuilt runtime (here, the binary with one byte appended)
# is another measurement; data sealed for it is refused by this one, and vice versa.
cp "$dk" "$tmp/darknight2" && printf 'x' >> "$tmp/darknight2"
ok "$tmp/darknight2" enclave-info --report "$tmp/r2.json"
m2=$(field "$tmp/r2.json" measurement)
[ "$m2" != "$m" ] || fail "a changed binary has the same measurement"
ok "$dk" seal --platform-key "$pk" --expect-measurement "$m2" --data "fashion-mnist:$fm" \
  --limit 50 --report "$tmp/r2.json" --out "$tmp/other.sealed"
refuses "sealed for another enclave" "$dk" "${infer[@]}" --data "sealed:$tmp/other.sealed"
refuses "sealed for another enclave" "$tmp/darknight2" "${infer[@]}" --data "sealed:$tmp/a.sealed"
ok "$tmp/darknight2" "${infer[@]}" --data "sealed:$tmp/other.sealed"

if [ $failures -eq 0 ]; then echo "seal_cli: all passed"; else echo "seal_cli: $failures failed"; fi
[ $failures -eq 0 ]
