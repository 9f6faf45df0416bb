#!/usr/bin/env bash
# `make test`'s runner, once every test binary is built: the binaries run in three streams side
# by side, since most of their time is spent waiting on a control plane, not on the CPU:
#   worker   the worker tests (the longest binary), then the benchmarks' smoke runs
#   soak     the 2-minute soak
#   rest     every other test binary of the workspace
# Each stream's output goes to target/test-<stream>.log; the rest's is printed as it runs, the
# others' after it. Fails when any stream does.
set -uo pipefail
cd "$(dirname "$0")/.."

test_threads=4
others=()
for file in crates/*/tests/*.rs; do
  name=$(basename "$file" .rs)
  case $name in
    worker | soak) ;;
    *) others+=(--test "$name") ;;
  esac
done

worker() {
  cargo test --locked -p resource-controller --test worker -- --test-threads "$test_threads" &&
    cargo test --locked --workspace --bench '*'
}
soak() {
  cargo test --locked -p resource-controller --test soak -- --nocapture
}
rest() {
  cargo test --locked --workspace --lib --bins --examples "${others[@]}" \
    -- --test-threads "$test_threads"
}

for stream in worker soak; do
  ("$stream" >"target/test-$stream.log" 2>&1; echo $? >"target/test-$stream.rc") &
done
rest
failed=$(( $? != 0 ))
wait

echo "--- the worker tests and the benchmarks' smoke runs (target/test-worker.log) ---"
cat target/test-worker.log
echo "--- the soak (target/test-soak.log) ---"
# The soak's indented lines are its per-round detail; its summary is what a reader wants here.
grep -v '^ \{2,\}' target/test-soak.log | tail -n 60
for stream in worker soak; do
  rc=$(cat "target/test-$stream.rc")
  if [ "$rc" != 0 ]; then
    echo "the $stream stream failed (exit $rc)"
    failed=1
  fi
done
exit "$failed"
