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
say "cargo test"
cargo test --workspace --locked
