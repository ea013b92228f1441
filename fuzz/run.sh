#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (libFuzzer -max_total_time), one after the other, on a
# copy of its seed corpus (fuzz/corpus/<target>, which stays as committed). Fails when any
# target reports a crash, a sanitizer error, a leak, a timeout or an out-of-memory; the
# reproducer is then in BUILD/fuzz-out/<target>/artifacts/ (see docs/fuzzing.md).
#   fuzz/run.sh BUILD_DIR SECONDS [TARGET...]
set -uo pipefail
build=${1:?build directory (make fuzz uses build-fuzz)}
seconds=${2:?seconds per target}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(onnx_model onnx_tensor idx cifar gzip jpeg sealed wire model_file npy)

failed=()
for t in "${targets[@]}"; do
  out="$build/fuzz-out/$t"
  mkdir -p "$out/corpus" "$out/artifacts"
  echo "== fuzz_$t: ${seconds}s"
  # -rss_limit_mb / -malloc_limit_mb: an input that makes a parser allocate 256 MiB at once
  # (or hold 2 GiB) fails: no seed or mutation of a few kB has a reason to.
  # -timeout: one input may take at most 10 s.
  if "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=256 \
      -timeout=10 -print_final_stats=1 -artifact_prefix="$out/artifacts/" \
      "$out/corpus" "$here/corpus/$t" > "$out/log.txt" 2>&1; then
    # The last status line: executions, coverage (cov: edges, ft: features), corpus.
    echo "fuzz_$t: $(grep -E '^#[0-9]+' "$out/log.txt" | tail -n 1)"
  else
    echo "fuzz_$t FAILED; the end of $out/log.txt:"
    tail -n 40 "$out/log.txt"
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failures in ${failed[*]} (reproducers in $build/fuzz-out/<target>/artifacts/)"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each, no failure"
