#!/usr/bin/env bash
# The local stack: Redis, the tansu broker, PostgreSQL when installed, and the topics.
#   scripts/stack.sh up       install what is missing, start what is down, create topics
#   scripts/stack.sh status   say what runs (exit 1 when something is down)
#   scripts/stack.sh down     stop the broker (and Redis, if this script started it)
# Logs go to ./data/logs. Idempotent: running `up` twice changes nothing.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start_redis() {
  if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then return; fi
  say "starting redis-server on $REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$DATA" --logfile "$LOGS/redis.log" --pidfile "$DATA/redis.pid" \
    || die "redis-server did not start; see $LOGS/redis.log"
  wait_for 20 "redis" redis-cli -p "$REDIS_PORT" ping >/dev/null \
    || die "redis did not answer PING within 20 s; see $LOGS/redis.log"
}

start_postgres() {
  if port_open "$PG_PORT"; then return; fi
  if command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql ]]; then
    say "starting PostgreSQL"
    local v; v=$(ls /etc/postgresql | sort -V | tail -1)
    pg_ctlcluster --skip-systemctl-redirect "$v" main start >/dev/null 2>&1 || true
    wait_for 30 "postgres" port_open "$PG_PORT" || say "PostgreSQL did not start; the SQLite sink still works"
  else
    say "PostgreSQL is not installed; the default SQLite sink is used (tests of the Postgres sink need it)"
  fi
}

start_broker() {
  if port_open "$BROKER_PORT"; then return; fi
  [[ -x "$TANSU_BIN" ]] || die "tansu is not installed; run scripts/install.sh"
  say "starting the tansu broker on $BROKER_HOST:$BROKER_PORT"
  nohup "$TANSU_BIN" broker \
    --listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
    --advertised-listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
    --storage-engine "${CUSTFLOW_BROKER_STORAGE:-memory://tansu/}" \
    >>"$LOGS/tansu.log" 2>&1 &
  echo $! >"$DATA/tansu.pid"
  wait_for 30 "broker" port_open "$BROKER_PORT" \
    || die "the broker did not listen on $BROKER_PORT within 30 s; see $LOGS/tansu.log"
}

build() {
  say "building custflow (release)"
  (cd "$ROOT" && cargo build --release --locked -q -p custflow) || die "cargo build failed"
}

create_topics() {
  local out
  out=$("$(custflow_bin)" topics --json) || die "creating topics failed; see $LOGS/tansu.log"
  say "topics ready: $(tail -1 <<<"$out")"
}

status() {
  local ok=0
  if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then echo "redis     up    127.0.0.1:$REDIS_PORT"; else echo "redis     DOWN  127.0.0.1:$REDIS_PORT"; ok=1; fi
  if port_open "$BROKER_PORT"; then echo "broker    up    $BROKER_HOST:$BROKER_PORT (tansu)"; else echo "broker    DOWN  $BROKER_HOST:$BROKER_PORT"; ok=1; fi
  if port_open "$PG_PORT"; then echo "postgres  up    127.0.0.1:$PG_PORT"; else echo "postgres  down  127.0.0.1:$PG_PORT (optional)"; fi
  return $ok
}

down() {
  if [[ -f "$DATA/tansu.pid" ]]; then
    kill "$(cat "$DATA/tansu.pid")" 2>/dev/null || true
    rm -f "$DATA/tansu.pid"
    say "broker stopped"
  fi
  if [[ -f "$DATA/redis.pid" ]]; then
    kill "$(cat "$DATA/redis.pid")" 2>/dev/null || true
    rm -f "$DATA/redis.pid"
    say "redis stopped"
  fi
}

mkdir -p "$LOGS"
case "${1:-up}" in
  up)
    bash "$ROOT/scripts/install.sh"
    start_redis
    start_postgres
    start_broker
    build
    create_topics
    status
    ;;
  status) status ;;
  down) down ;;
  *) die "usage: scripts/stack.sh up|status|down" ;;
esac
