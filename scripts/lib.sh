# shellcheck shell=bash
# Shared settings and helpers of custflow's scripts; sourced, not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${CUSTFLOW_CACHE:-$HOME/.cache/custflow}"
# Build outside the clone so repeated (CI) runs of fresh clones stay fast.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
TANSU_VERSION="0.6.0"
# libsql: the durable SQLite engine of the local stack (the default); dynostore: the
# in-memory engine, an explicit opt-in for benchmarks (CUSTFLOW_BROKER_STORAGE=memory://);
# postgres: tansu's PostgreSQL engine for users who give it a database with tansu's schema.
# (The binary's folder names the features, so changing them builds a new one.)
TANSU_FEATURES="dynostore,libsql,postgres"
TANSU_BIN="${TANSU_BIN:-$CACHE/tansu-$TANSU_VERSION-${TANSU_FEATURES//,/-}/bin/tansu}"
export TANSU_BIN
# The stack's data folder and ports. Settings, so a second, private stack can run beside
# the default one (tests of restarts, side-by-side benchmarks): CUSTFLOW_DATA,
# CUSTFLOW_BROKER_PORT, CUSTFLOW_REDIS_PORT.
DATA="${CUSTFLOW_DATA:-$ROOT/data}"
LOGS="$DATA/logs"
# Where the broker keeps topics, offsets, schemas and connector state (a SQLite file, in
# the folder the broker runs in), unless CUSTFLOW_BROKER_STORAGE names another engine.
BROKER_DIR="$DATA/broker"
BROKER_STORAGE="${CUSTFLOW_BROKER_STORAGE:-sqlite://tansu.db}"
BROKER_HOST="127.0.0.1"
BROKER_PORT="${CUSTFLOW_BROKER_PORT:-9092}"
REDIS_PORT="${CUSTFLOW_REDIS_PORT:-6379}"
PG_PORT="5432"
# A stack on other ports is addressed by them, whatever the environment said before.
if [[ -n "${CUSTFLOW_BROKER_PORT:-}" ]]; then export CUSTFLOW_BROKERS="$BROKER_HOST:$BROKER_PORT"; fi
if [[ -n "${CUSTFLOW_REDIS_PORT:-}" ]]; then export CUSTFLOW_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"; fi
export CUSTFLOW_BROKERS="${CUSTFLOW_BROKERS:-$BROKER_HOST:$BROKER_PORT}"
export CUSTFLOW_REDIS_URL="${CUSTFLOW_REDIS_URL:-redis://127.0.0.1:$REDIS_PORT}"
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local secs=$1 what=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
  say "$what is up"
}

custflow_bin() { echo "$CARGO_TARGET_DIR/release/custflow"; }

# backfill_year BIN PREFIX CUSTOMERS: synthesises a year of events of CUSTOMERS customers
# into the topics of PREFIX and prints how many events it wrote.
backfill_year() {
  local synth
  say "backfill: $3 customers over 365 days into $2*"
  synth=$("$1" synth --customers "$3" --days 365 --topic-prefix "$2" --json | tail -1) ||
    die "custflow synth failed"
  python3 -c "import json,sys; print(json.loads(sys.argv[1])['events'])" "$synth"
}

# scratch_db NAME: creates the PostgreSQL database NAME for a benchmark's sink and prints
# its URL.
scratch_db() {
  psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d test -qc "CREATE DATABASE $1" >/dev/null
  echo "postgres://postgres@127.0.0.1:$PG_PORT/$1"
}

# peer_python NAME IMPORTS PIP_SPEC...: the python of a venv under the cache holding a
# peer to measure or test against (never a runtime dependency); installs it when missing.
peer_python() {
  local venv="$CACHE/venv-$1" imports=$2
  shift 2
  if ! "$venv/bin/python" -c "import $imports" 2>/dev/null; then
    say "installing $* into $venv (a peer for comparison)"
    python3 -m venv "$venv" >&2 || die "python3 -m venv failed; install python3-venv"
    "$venv/bin/pip" install -q "$@" >&2 || die "pip install $* failed"
  fi
  echo "$venv/bin/python"
}
