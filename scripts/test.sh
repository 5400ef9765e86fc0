#!/usr/bin/env bash
# The README's test command: sets everything up, then runs lint and the whole test suite
# against the real local stack. Idempotent; CI runs exactly this (.ci/run).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"
bash scripts/stack.sh up
# A Python with the Confluent client, for the interoperability test (not a runtime dependency).
VENV="$CACHE/venv-test"
if ! "$VENV/bin/python" -c "import confluent_kafka.schema_registry.avro, fastavro" 2>/dev/null; then
  say "installing confluent-kafka[avro] into $VENV (test peer)"
  python3 -m venv "$VENV" || die "python3 -m venv failed; install python3-venv"
  "$VENV/bin/pip" install -q "confluent-kafka[avro]" || die "pip install confluent-kafka[avro] failed"
fi
export CUSTFLOW_PYTHON="$VENV/bin/python"
say "cargo fmt --check"
cargo fmt --all -- --check || die "code is not formatted: run cargo fmt --all"
say "cargo clippy"
cargo clippy --workspace --all-targets --locked -q -- -D warnings
say "cargo test"
cargo test --workspace --locked
