#!/usr/bin/env bash
# The trust boundary in the layout (docs/architecture.md): checks every #include.
#  - src/accel/ (untrusted accelerator) never includes trusted/, crypto or codec headers;
#  - src/trusted/ never includes accel/ backends' internals, CUDA, or the unprotected path;
#  - src/protocol/ includes nothing of the project but protocol/.
# Usage: layering_test.sh SRC_DIR
set -u
src=${1:?usage: layering_test.sh SRC_DIR}
fail=0
violation() { echo "layering violation: $1"; fail=1; }

while IFS= read -r line; do
  violation "$line (accelerator code includes trusted/crypto code)"
done < <(grep -rnE '#include [<"](trusted/|sodium|.*codec)' "$src/accel" 2>/dev/null)

if [ -d "$src/trusted" ]; then
  while IFS= read -r line; do
    violation "$line (trusted code includes accelerator internals, CUDA or the unprotected path)"
  done < <(grep -rnE '#include [<"](accel/(ref|cpu|cuda|host|remote)/|accel/faults\.h|measure/|cuda|cudnn|cublas|baselines/)' "$src/trusted")
fi

while IFS= read -r line; do
  violation "$line (protocol depends on another module)"
done < <(grep -rnE '#include "' "$src/protocol" | grep -vE '#include "protocol/')

[ $fail -eq 0 ] && echo "layering: ok"
exit $fail
