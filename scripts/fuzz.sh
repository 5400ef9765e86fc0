#!/usr/bin/env bash
# Fuzzes every decoder of outside input (fuzz/fuzz_targets/*) with cargo-fuzz.
#
#   scripts/fuzz.sh [TARGET ...]      FUZZ_SECS=600 FUZZ_PARALLEL=1
#
# Each target runs FUZZ_SECS seconds (default 600) from its committed corpus
# (fuzz/corpus/<target>); the inputs that found new coverage are then merged back
# into the corpus (libFuzzer's -merge=1 keeps only those that add coverage) and the
# corpus is minimised (`cargo fuzz cmin`). A crash leaves its input in
# fuzz/artifacts/<target>/ and makes the script exit 1: copy it into the corpus
# once fixed, so CI replays it (tests/tests/fuzz_corpus.rs). One line per target
# goes to stdout and to fuzz/artifacts/runs.tsv.
#
# The targets build with debug assertions (`-a`), so an arithmetic overflow is a crash
# too. cargo-fuzz needs a nightly toolchain (rustup's `nightly`); CI does not fuzz, it
# replays the corpus on stable.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECS:-600}"
parallel="${FUZZ_PARALLEL:-1}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(avro_wire json_event ndjson_body csv_presets connector_config)
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/custflow/fuzz-target}"
if ! rustup run nightly rustc --version > /dev/null 2>&1; then
  echo "cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 2
fi
command -v cargo-fuzz > /dev/null || cargo install cargo-fuzz --locked
cargo +nightly fuzz build -O -a

fuzz_one() {
  local t="$1" dir="fuzz/artifacts/$1"
  mkdir -p "fuzz/corpus/$t" "$dir"
  local fresh; fresh="$(mktemp -d)"
  local rc=0
  # New inputs go to the scratch folder first, the committed corpus is read-only here.
  cargo +nightly fuzz run -O -a "$t" "$fresh" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
    > "$dir/run.log" 2>&1 || rc=$?
  local before; before=$(find "fuzz/corpus/$t" -type f | wc -l)
  # Only the new inputs that add coverage join the corpus (libFuzzer's merge).
  cargo +nightly fuzz run -O -a "$t" "fuzz/corpus/$t" "$fresh" -- -merge=1 \
    -rss_limit_mb=2048 -max_len=65536 > "$dir/merge.log" 2>&1 || true
  cargo +nightly fuzz cmin -O -a "$t" "fuzz/corpus/$t" > "$dir/cmin.log" 2>&1 || true
  rm -rf "$fresh"
  local execs rate cov crashes
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$dir/run.log" | grep -o '[0-9]*$' || echo 0)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$dir/run.log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$dir/run.log" | tail -1 | grep -o '[0-9]*' || echo 0)
  crashes=$(find "$dir" -name 'crash-*' -o -name 'oom-*' -o -name 'timeout-*' | wc -l)
  local line
  line=$(printf '%s\t%s\t%ss\t%s execs\t%s/s\tcov %s\tcorpus %s→%s\tcrashes %s\trc %s' \
    "$(date -u +%FT%TZ)" "$t" "$secs" "$execs" "$rate" "$cov" "$before" \
    "$(find "fuzz/corpus/$t" -type f | wc -l)" "$crashes" "$rc")
  echo "$line"
  echo "$line" >> fuzz/artifacts/runs.tsv
  [ "$crashes" -eq 0 ] && [ "$rc" -eq 0 ]
}

status=0
running=0
for t in "${targets[@]}"; do
  fuzz_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$parallel" ]; then
    wait -n || status=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || status=1
  running=$((running - 1))
done
exit "$status"
