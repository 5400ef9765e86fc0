#!/usr/bin/env bash
# The local stack: Redis, the tansu broker, PostgreSQL when installed, and the topics.
#   scripts/stack.sh up       install what is missing, start what is down, create topics
#   scripts/stack.sh status   say what runs and what it keeps (exit 1 when something is down)
#   scripts/stack.sh down     stop the broker (and Redis, if this script started it)
# Durable by default: the broker keeps topics, committed offsets, registered schemas and
# connector configs and offsets in data/broker/tansu.db (SQLite), so `down` and `up`, a
# killed broker or a reboot lose nothing; CUSTFLOW_BROKER_STORAGE=memory:// opts into the
# in-memory engine (benchmarks). A Redis this script starts keeps an append-only file in
# data/redis; a Redis that keeps nothing is rebuilt from the topics by the processors.
# Logs go to ./data/logs. Idempotent: running `up` twice changes nothing.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

start_redis() {
  if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then return; fi
  say "starting redis-server on $REDIS_PORT (append-only file in $DATA/redis)"
  mkdir -p "$DATA/redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
    --appendonly yes --appendfsync everysec \
    --dir "$DATA/redis" --logfile "$LOGS/redis.log" --pidfile "$DATA/redis.pid" \
    || die "redis-server did not start; see $LOGS/redis.log"
  wait_for 60 "redis" redis-cli -p "$REDIS_PORT" ping >/dev/null \
    || die "redis did not answer PING within 60 s; see $LOGS/redis.log"
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

# The storage engine of the tansu running on the broker port, from its command line
# (empty when it is not a tansu this machine can see).
running_storage() {
  local pid
  for pid in $(pgrep -x tansu 2>/dev/null); do
    local args; args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
    [[ "$args" == *":$BROKER_PORT "* ]] || continue
    sed -n 's/.*--storage-engine \([^ ]*\).*/\1/p' <<<"$args"
    return
  done
}

# index_broker_db: adds the indexes tansu 0.6's SQLite schema lacks. Without one on
# header (topition, offset_id), the broker scanned every stored header once for each
# record it fetched (headers of any topic: every score carries one), so reading grew
# slower as the broker filled (1 ms a record at 30,000 headers, 30 times slower than
# with the index), and compaction, whose deletes check that table, slowed down the same
# way. Idempotent; runs before the broker opens an existing file, and right after it
# created a new one.
index_broker_db() {
  [[ "$BROKER_STORAGE" == sqlite://* ]] || return 0
  local db="$BROKER_DIR/${BROKER_STORAGE#sqlite://}"
  [[ -f "$db" ]] || return 0
  python3 - "$db" <<'PY' || die "could not index the broker's database $db"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=60)
if c.execute("select 1 from sqlite_master where name = 'header'").fetchone():
    c.execute("create index if not exists custflow_header_record on header (topition, offset_id)")
    c.execute("create index if not exists custflow_watermark_topition on watermark (topition)")
    c.commit()
PY
}

start_broker() {
  if port_open "$BROKER_PORT"; then
    local running; running=$(running_storage)
    if [[ "$running" == memory://* && "$BROKER_STORAGE" != memory://* ]]; then
      say "warning: the broker on $BROKER_PORT keeps everything in memory ($running); it was started elsewhere. Stop it and run scripts/stack.sh up for a durable one"
    fi
    return
  fi
  [[ -x "$TANSU_BIN" ]] || die "tansu is not installed; run scripts/install.sh"
  mkdir -p "$BROKER_DIR"
  index_broker_db
  say "starting the tansu broker on $BROKER_HOST:$BROKER_PORT (storage: $BROKER_STORAGE in $BROKER_DIR)"
  # The SQLite engine resolves its file against the working folder. In a session of its
  # own (like redis-server --daemonize and pg_ctlcluster's postgres): a Ctrl-C in the
  # terminal that ran `scripts/demo.sh` goes to the demo, not to the broker the demo
  # needs to stop cleanly (tansu handles SIGINT itself, so the shell's ignoring it for a
  # background job did not protect it). Not a process group leader, so setsid does not
  # fork and $! is the broker's pid.
  (
    cd "$BROKER_DIR"
    setsid nohup "$TANSU_BIN" broker \
      --listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
      --advertised-listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
      --storage-engine "$BROKER_STORAGE" \
      >>"$LOGS/tansu.log" 2>&1 &
    echo $! >"$DATA/tansu.pid"
  )
  wait_for 60 "broker" port_open "$BROKER_PORT" \
    || die "the broker did not listen on $BROKER_PORT within 60 s; see $LOGS/tansu.log"
  index_broker_db # a new file: tansu created its tables before it listened
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
  if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
    local aof; aof=$(redis-cli -p "$REDIS_PORT" config get appendonly 2>/dev/null | tail -1)
    if [[ "$aof" == yes ]]; then aof="append-only file on"; else aof="keeps nothing on disk: rebuilt from the topics after a restart"; fi
    echo "redis     up    127.0.0.1:$REDIS_PORT ($aof)"
  else echo "redis     DOWN  127.0.0.1:$REDIS_PORT"; ok=1; fi
  if port_open "$BROKER_PORT"; then
    local storage; storage=$(running_storage)
    echo "broker    up    $BROKER_HOST:$BROKER_PORT (tansu, storage ${storage:-unknown: not started here})"
  else echo "broker    DOWN  $BROKER_HOST:$BROKER_PORT"; ok=1; fi
  if port_open "$PG_PORT"; then echo "postgres  up    127.0.0.1:$PG_PORT"; else echo "postgres  down  127.0.0.1:$PG_PORT (optional)"; fi
  return $ok
}

# stop_pid FILE WHAT: stops the process in FILE and waits until it is gone (a broker
# restarted at once must find its storage released).
stop_pid() {
  local pid; pid=$(cat "$1" 2>/dev/null) || return 0
  rm -f "$1"
  kill "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then kill -9 "$pid" 2>/dev/null || true; break; fi
    sleep 0.1
  done
  say "$2 stopped"
}

down() {
  stop_pid "$DATA/tansu.pid" "broker"
  stop_pid "$DATA/redis.pid" "redis"
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
