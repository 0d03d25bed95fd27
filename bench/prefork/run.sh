#!/usr/bin/env bash
# Prefork HTTP/1.0 server: requests/s of examples/prefork_server.lua
# (4 children accepting on one socket) against the same server in Python,
# Tornado-style (bind, fork 4 children accepting on it: server.py prefork)
# and socketserver.ForkingTCPServer (a fork per connection), in the same
# run, driven by the same C load generator (load.c: 16 threads doing
# connect / GET / read / close for SECS seconds). Best of REPS runs each.
set -eu
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
LMP_BIN=${LMP_BIN:-$ROOT/lmp}
export LUA_PATH=${LUA_PATH:-"$ROOT/lua/?.lua;$ROOT/bench/?.lua;;"}
CONC=${CONC:-16} SECS=${SECS:-3} CHILDREN=${CHILDREN:-4} REPS=${REPS:-2}
LOAD=/tmp/lmp_bench_prefork_load.$$
cc -O2 -pthread -o "$LOAD" load.c
trap 'rm -f "$LOAD"' EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# measure NAME CMD...: starts CMD (the port is appended), loads it, stops it.
measure() {
  local port pid rps i
  port=$(free_port)
  "$@" "$port" >/dev/null 2>&1 &
  pid=$!
  for i in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
  sleep 0.3                                 # let every child reach accept
  rps=$("$LOAD" "$port" "$CONC" "$SECS")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  echo "$rps" >&2
  echo "$rps" | sed -n 's/.*rps=\([0-9.]*\).*/\1/p'
}

# exec: the background job's pid is the server's own, so kill -TERM reaches it
lmp_server() { exec "$LMP_BIN" "$ROOT/examples/prefork_server.lua" "$1" "$CHILDREN"; }
py_prefork() { exec python3 server.py "$1" "$CHILDREN" prefork; }
py_forking() { exec python3 server.py "$1" "$CHILDREN" forking; }

best() { printf '%s\n' "$@" | sort -g | tail -1; }
lmp_r=() pre_r=() fork_r=()
for _ in $(seq "$REPS"); do
  lmp_r+=("$(measure lmp_server)")
  pre_r+=("$(measure py_prefork)")
  fork_r+=("$(measure py_forking)")
done
"$LMP_BIN" report_lines.lua "$(best "${lmp_r[@]}")" "$(best "${pre_r[@]}")" \
  "$(best "${fork_r[@]}")" "$CHILDREN" "$CONC"
