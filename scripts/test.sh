#!/usr/bin/env bash
# The README's test command: sets everything up, then runs lint and the whole test suite
# against the real local stack. Idempotent; CI runs exactly this (.ci/run).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
bash scripts/stack.sh up
# A Python with the Confluent client, for the interoperability test (not a runtime dependency).
CUSTFLOW_PYTHON="$(peer_python test "confluent_kafka.schema_registry.avro, fastavro" "confluent-kafka[avro]")"
export CUSTFLOW_PYTHON
say "cargo fmt --check"
cargo fmt --all -- --check || die "code is not formatted: run cargo fmt --all"
say "cargo clippy"
cargo clippy --workspace --all-targets --locked -q -- -D warnings
say "cargo test"
cargo test --workspace --locked
