#!/usr/bin/env bash
# The trust boundary in the layout (docs/architecture.md), by grep over every #include. The
# build enforces the same with one include root per library (src/CMakeLists.txt); this test
# also catches what include roots cannot: relative includes that step around them.
#  - no file includes with "..": it would reach folders its library does not link;
#  - the interface and the backends (accel/, backends/, worker/, faults/) never include
#    trusted/, crypto or codec headers;
#  - src/trusted/ never includes a backend, the worker, fault injection, measurement, CUDA or
#    the unprotected path, and never uses RawTransfer (unblinded byte copies);
#  - only the trusted encoders, Slalom's and the unprotected path derive from BlindingFactory;
#  - src/audit/ (the accelerator's attacks) includes no trusted-side code;
#  - src/protocol/ includes nothing of the project but protocol/.
# Usage: layering_test.sh SRC_DIR
set -u
src=${1:?usage: layering_test.sh SRC_DIR}
fail=0
violation() { echo "layering violation: $1"; fail=1; }

while IFS= read -r line; do
  violation "$line (relative include: name the folder from its library's root)"
done < <(grep -rnE '#include [<"][^">]*\.\./' "$src")

while IFS= read -r line; do
  violation "$line (accelerator code includes trusted/crypto code)"
done < <(grep -rnE '#include [<"](trusted/|sodium|.*codec)' "$src/accel" "$src/backends" \
           "$src/worker" "$src/faults" "$src/registry" 2>/dev/null)

if [ -d "$src/trusted" ]; then
  while IFS= read -r line; do
    violation "$line (trusted code includes a backend, the worker, faults, CUDA or the unprotected path)"
  done < <(grep -rnE '#include [<"](backends/|worker/|faults/|registry/|measure/|cuda|cudnn|cublas|baselines/)' "$src/trusted")
  while IFS= read -r line; do
    violation "$line (trusted code hands bytes over unblinded)"
  done < <(grep -rn 'RawTransfer' "$src/trusted")
fi

# The audit plays the accelerator: it reads captures and reference data, never the trusted
# runtime's code or secrets.
while IFS= read -r line; do
  violation "$line (the audit includes trusted-side code)"
done < <(grep -rnE '#include [<"](trusted/|baselines/|session/|registry/|backends/|worker/|sodium)' \
           "$src/audit" 2>/dev/null)

# Only the encoders and the named unprotected path may make blinded tensors.
while IFS= read -r line; do
  violation "$line (only the encoders and the unprotected path derive from BlindingFactory)"
done < <(grep -rnE '(public|protected|private)[[:space:]]+BlindingFactory' "$src" |
           grep -vE "^$src/(trusted/codec\.h|baselines/slalom\.h|baselines/unprotected\.h):")

while IFS= read -r line; do
  violation "$line (protocol depends on another module)"
done < <(grep -rnE '#include "' "$src/protocol" | grep -vE '#include "protocol/')

[ $fail -eq 0 ] && echo "layering: ok"
exit $fail
