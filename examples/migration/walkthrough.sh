#!/usr/bin/env bash
# The threads-to-asyncio migration of the seeds' playbook, worked end to end
# on real services with stackaudit:
#
#   1. audit      the threaded service (gunicorn gthread) under load: a baseline
#                 window (the agent, with a latency probe) and a dump of its
#                 blocking calls
#   2. bridge     the async service replaces it on the same port; its blocking
#                 calls run on the bounded legacy_bridge pool
#   3. dual path  async_weight 0.1 -> 0.5 -> 1.0, each a write to a flag file;
#                 a window and `stackaudit gate` against the baseline per step;
#                 a failing gate rolls the flag back to 0.0 and stops
#   4. cutover    at 1.0 the legacy path drains and its fan-out pool retires:
#                 the last gate is the cutover's
#
# usage: examples/migration/walkthrough.sh [--window SECONDS] [--broken] [--out DIR]
#
#   --window S   seconds per recorded window (default 30)
#   --broken     the async service leaves one blocking urllib call in a
#                coroutine: a gate must fail and name its file:line
#   --out DIR    keep the audits and gate reports in DIR (default: a
#                temporary folder, removed at the end)
#
# Run it as root (the agent traces the services), from the repository, after
# ./setup.sh build; it uses build/stackaudit, or $STACKAUDIT. Everything
# listens on 127.0.0.1, on free ports. Every process it starts is stopped when
# it ends, also on Ctrl-C.
#
# Exit status: 0 when the last gate passes; the gate's own code when it does
# not (1: a gate failed, 2: gate usage error); 2 for a bad option; 3 when a
# service or the agent could not be started.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
STACKAUDIT=${STACKAUDIT:-$REPO/build/stackaudit}
# The gates' thresholds file; $THRESHOLDS overrides it.
THRESHOLDS=${THRESHOLDS:-$HERE/thresholds.toml}
PYTHON=${PYTHON:-/usr/bin/python3}     # Debian's interpreter: aiohttp is its package
GUNICORN=${GUNICORN:-/usr/bin/gunicorn}

# The shape of the example (see README.md for why these numbers).
UPSTREAM_DELAY=0.1    # seconds per upstream answer: scheduling noise stays a few % of it
PROBE_RATE=20         # probe requests per second: 200 samples for the p99 in a 10 s window
LOAD_RATE=10          # background requests per second: the service's other traffic
GTHREAD_WORKERS=2     # gunicorn worker processes ...
GTHREAD_THREADS=16    # ... each with this many request threads
FANOUT_WORKERS=32     # each worker's fan-out pool (threaded_service.FANOUT)
WARMUP=3              # seconds of traffic before each window
INTERVAL=100ms        # the agent's rounds: a 10 s window has 100 looks at the event loop. At
                      # 10 % async the --broken call blocks the loop 2-10 % of the time
                      # (the router sends the first tenth of each second async; one
                      # blocking call then holds the rest): 100 looks see it with
                      # better than 87 % odds at 2 %, 99.99 % at 10 %; 40 looks missed it

WINDOW=30
BROKEN=0
OUT=""
die() { echo "walkthrough: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --window) [ $# -ge 2 ] || die "--window needs a number of seconds"; WINDOW=$2; shift 2 ;;
    --window=*) WINDOW=${1#*=}; shift ;;
    --broken) BROKEN=1; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a folder"; OUT=$2; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    -h|--help) sed -n '2,32p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ "$WINDOW" =~ ^[0-9]+$ ]] && [ "$WINDOW" -ge 5 ] && [ "$WINDOW" -le 3600 ] ||
  die "--window must be a whole number of seconds from 5 to 3600, not '$WINDOW'"

cannot() { echo "walkthrough: $*" >&2; exit 3; }
[ -x "$STACKAUDIT" ] || cannot "no stackaudit at $STACKAUDIT: run ./setup.sh build first, or set STACKAUDIT"
[ -x "$PYTHON" ] || cannot "no Python interpreter at $PYTHON (set PYTHON)"
[ -x "$GUNICORN" ] || cannot "no gunicorn at $GUNICORN: apt-get install gunicorn (or set GUNICORN)"
"$PYTHON" -c 'import aiohttp' 2>/dev/null || cannot "$PYTHON cannot import aiohttp: apt-get install python3-aiohttp"
[ "$(id -u)" -eq 0 ] || echo "walkthrough: not root: the agent may not be allowed to trace the services" >&2

WORK=$(mktemp -d /tmp/stackaudit-migration.XXXXXX)
if [ -n "$OUT" ]; then
  mkdir -p "$OUT" || die "cannot make --out folder $OUT"
  OUT=$(cd "$OUT" && pwd)
else
  OUT=$WORK
fi

# Every process started here, stopped (TERM, then KILL) in reverse order on exit.
STARTED=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local i pid
  for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
    pid=${STARTED[i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  # gunicorn's workers, should their master have been killed before them.
  for pid in ${GUNICORN_WORKERS:-}; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "walkthrough: interrupted" >&2; exit 130' INT
trap 'exit 143' TERM

# start NAME COMMAND...: in the background, output to $WORK/NAME.log; sets LAST_PID.
start() {
  local name=$1; shift
  "$@" >"$WORK/$name.log" 2>&1 &
  LAST_PID=$!
  STARTED+=("$LAST_PID")
}
# stop PID: TERM, wait (10 s), KILL.
stop() {
  kill -TERM "$1" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# wait_ready URL PID NAME: until URL answers 200 (30 s), or PID died.
wait_ready() {
  for _ in $(seq 300); do
    kill -0 "$2" 2>/dev/null || cannot "$3 exited at start: $(tail -3 "$WORK/$3.log" | tr '\n' ' ')"
    "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" \
      2>/dev/null && return 0
    sleep 0.1
  done
  cannot "$3 did not answer $1 within 30 s (log: $(tail -3 "$WORK/$3.log" | tr '\n' ' '))"
}
# set_weight W: the ramp is a file write (atomic: the service never reads half a number).
set_weight() {
  printf '%s\n' "$1" >"$FLAG.tmp"
  mv -f "$FLAG.tmp" "$FLAG"
}
say() { printf '\n== %s\n' "$*"; }

SERVICE_PORT=$(free_port)
SERVICE_URL="http://127.0.0.1:$SERVICE_PORT"
PROBE_URL="$SERVICE_URL/work?id=probe"    # the same name, path and rate in every window
FLAG="$WORK/async_weight"

# record NAME MATCH: one window of the agent on the processes MATCH finds,
# with the latency probe, into $OUT/NAME.json.
record() {
  local name=$1 match=$2 rc=0
  echo "   recording $name: ${WINDOW} s, probe api at ${PROBE_RATE}/s on $PROBE_URL"
  "$STACKAUDIT" agent --match "$match" --interval "$INTERVAL" --listen "127.0.0.1:$(free_port)" \
    --probe "api=$PROBE_URL" --probe-rate "${PROBE_RATE}/s" --probe-timeout 2s \
    --duration "${WINDOW}s" --audit-json "$OUT/$name.json" --log-level warn \
    >"$WORK/agent-$name.log" 2>&1 &
  local agent=$!
  STARTED+=("$agent")
  wait "$agent" || rc=$?
  if [ "$rc" -ne 0 ] || [ ! -s "$OUT/$name.json" ]; then
    cannot "the agent failed recording $name (exit $rc): $(tail -3 "$WORK/agent-$name.log" | tr '\n' ' ')"
  fi
  "$PYTHON" "$HERE/report.py" window "$OUT/$name.json"
}

# gate NAME LABEL [GATE OPTION...]: the gate of window NAME against the
# baseline; sets GATE_RC.
gate() {
  local name=$1 label=$2
  shift 2
  GATE_RC=0
  "$STACKAUDIT" gate --baseline "$OUT/baseline.json" --current "$OUT/$name.json" \
    --thresholds "$THRESHOLDS" "$@" >"$OUT/gate-$name.txt" 2>&1 || GATE_RC=$?
  "$STACKAUDIT" gate --baseline "$OUT/baseline.json" --current "$OUT/$name.json" \
    --thresholds "$THRESHOLDS" "$@" --format json \
    -o "$OUT/gate-$name.json" >/dev/null 2>&1 || true
  sed 's/^/   | /' "$OUT/gate-$name.txt"
  case "$GATE_RC" in
    0) echo "==> gate after $label: PASS" ;;
    1) echo "==> gate after $label: FAIL (exit 1)" ;;
    *) echo "==> gate after $label: ERROR (exit $GATE_RC)" ;;
  esac
}

echo "stackaudit migration walkthrough: window ${WINDOW} s$([ "$BROKEN" -eq 1 ] && echo ', --broken'), files in $OUT"

# --- the upstream and the service's other traffic --------------------------------
start upstream "$PYTHON" "$HERE/upstream.py" --port 0 --delay "$UPSTREAM_DELAY"
UPSTREAM_PID=$LAST_PID
for _ in $(seq 100); do grep -q 'listening on' "$WORK/upstream.log" 2>/dev/null && break; sleep 0.1; done
UPSTREAM_URL=$(sed -n 's/.*listening on \(.*\)$/http:\/\/\1/p' "$WORK/upstream.log")
[ -n "$UPSTREAM_URL" ] || cannot "the upstream did not start: $(tail -3 "$WORK/upstream.log" | tr '\n' ' ')"
wait_ready "$UPSTREAM_URL/ready" "$UPSTREAM_PID" upstream

# --- phase 1: audit the threaded service, record the baseline --------------------
say "Phase 1: audit. The threaded service: gunicorn -k gthread -w $GTHREAD_WORKERS --threads $GTHREAD_THREADS, a $FANOUT_WORKERS-thread fan-out pool per worker, on $SERVICE_URL"
start threaded env UPSTREAM_URL="$UPSTREAM_URL" SERVICE_DB="$WORK/threaded.sqlite" \
  FANOUT_WORKERS="$FANOUT_WORKERS" \
  "$PYTHON" "$GUNICORN" -k gthread -w "$GTHREAD_WORKERS" --threads "$GTHREAD_THREADS" \
  --bind "127.0.0.1:$SERVICE_PORT" --chdir "$HERE" --log-level warning threaded_service:app
THREADED_PID=$LAST_PID
wait_ready "$SERVICE_URL/health" "$THREADED_PID" threaded
start load "$PYTHON" "$HERE/load.py" --url "$SERVICE_URL/work?id=load" --rate "$LOAD_RATE" --clients 16
sleep "$WARMUP"
GUNICORN_WORKERS=$(ps -o pid= --ppid "$THREADED_PID" | tr -d ' ' | tr '\n' ' ')

echo "   the blocking calls (stackaudit dump --children, three times, half a second apart):"
for i in 1 2 3; do
  rc=0
  "$STACKAUDIT" dump --pid "$THREADED_PID" --children --format json -o "$OUT/dump-threaded-$i.json" \
    2>"$WORK/dump-$i.log" || rc=$?
  # 1: done, some thread or worker could not be captured (said in the audit); still an audit.
  [ "$rc" -le 1 ] || cannot "stackaudit dump failed (exit $rc): $(head -1 "$WORK/dump-$i.log")"
  sleep 0.5
done
"$PYTHON" "$HERE/report.py" blocking "$OUT"/dump-threaded-[123].json
THREADED_MATCH="gunicorn .*127\\.0\\.0\\.1:$SERVICE_PORT .*threaded_service:app"
record baseline "$THREADED_MATCH"

# --- phase 2: the bridge: the async service takes the port --------------------------
say "Phase 2: bridge. The async service (aiohttp) replaces it on the same port; its legacy path runs the old handler on the legacy_bridge pool (10 threads at most)"
stop "$THREADED_PID"
set_weight 0.0
ASYNC_ARGS=(--port "$SERVICE_PORT" --upstream "$UPSTREAM_URL" --db "$WORK/async.sqlite" --flag "$FLAG")
[ "$BROKEN" -eq 1 ] && ASYNC_ARGS+=(--broken)
for _ in $(seq 50); do   # the port is free once gunicorn has closed it
  "$PYTHON" -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' \
    "$SERVICE_PORT" 2>/dev/null && break
  sleep 0.1
done
start async "$PYTHON" "$HERE/async_service.py" "${ASYNC_ARGS[@]}"
ASYNC_PID=$LAST_PID
wait_ready "$SERVICE_URL/health" "$ASYNC_PID" async
ASYNC_MATCH="async_service\\.py --port $SERVICE_PORT( |\$)"

# --- phase 3 and 4: ramp; the last step is the cutover ------------------------------
FINAL_RC=0
for weight in 0.1 0.5 1.0; do
  percent=$(awk -v w="$weight" 'BEGIN { printf "%d", w * 100 }')
  if [ "$weight" = 1.0 ]; then
    say "Phase 4: cutover. async_weight $weight: the legacy path drains, its fan-out pool retires"
  else
    say "Phase 3: dual path. async_weight $weight ($percent % of requests on the async path)"
  fi
  set_weight "$weight"
  sleep "$WARMUP"
  record "async-$percent" "$ASYNC_MATCH"
  # During the ramp the bridge carries the legacy path: it is busy by design.
  # At the cutover it must be bounded and drained (idle), so only then is it
  # a gate (--pool legacy_bridge).
  pool=()
  [ "$weight" = 1.0 ] && pool=(--pool legacy_bridge)
  gate "async-$percent" "$percent % async" "${pool[@]}"
  FINAL_RC=$GATE_RC
  if [ "$GATE_RC" -ne 0 ]; then
    set_weight 0.0
    sleep 1
    echo "==> rolled back: async_weight 0.0 (a file write); the legacy path serves every request again"
    echo "walkthrough: stopped at $percent % async: the gate failed (exit $GATE_RC); see the failing gates above"
    exit "$GATE_RC"
  fi
done

echo
echo "walkthrough: migration complete: every gate passed at 10 %, 50 % and 100 % async"
exit "$FINAL_RC"
