#!/usr/bin/env bash
# The README's test command: sets everything up, then runs lint and the whole test suite
# against the real local stack. Idempotent; CI runs exactly this (.ci/run).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
bash scripts/install.sh --test
bash scripts/stack.sh up
# A Python with the Confluent client (interoperability test) and schemathesis (the API
# against its OpenAPI document); test tools, not runtime dependencies.
CUSTFLOW_PYTHON="$(peer_python test "confluent_kafka.schema_registry.avro, fastavro, schemathesis" \
  "confluent-kafka[avro]" schemathesis)"
export CUSTFLOW_PYTHON
say "cargo fmt --check"
cargo fmt --all -- --check || die "code is not formatted: run cargo fmt --all"
say "cargo clippy"
cargo clippy --workspace --all-targets --locked -q -- -D warnings
# Tests that need an optional external tool the machine lacks skip themselves and say so
# here (README, "Optional external tools").
export CUSTFLOW_SKIP_REPORT="$DATA/test-skips.txt"
mkdir -p "$DATA" && : >"$CUSTFLOW_SKIP_REPORT"
say "cargo test"
status=0
cargo test --workspace --locked --no-fail-fast || status=$?
if [[ -s "$CUSTFLOW_SKIP_REPORT" ]]; then
  say "skipped (an optional tool is missing; everything else ran):"
  sort -u "$CUSTFLOW_SKIP_REPORT" >&2
else
  say "no test was skipped"
fi
exit "$status"
