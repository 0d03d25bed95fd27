#!/usr/bin/env bash
# Runs every suite and ends with one line "N passed, N failed" summing
# them: the C tests of core/, then the busted specs under each Lua in
# $LUAS (default: 5.4 5.1 luajit). Exits non-zero if anything failed.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILDROOT=${BUILDROOT:-build}
LUAS=${LUAS-"5.4 5.1 luajit"}
SUITE_TIMEOUT=${SUITE_TIMEOUT:-420}
passed=0
failed=0

add() { passed=$((passed + $1)); failed=$((failed + $2)); }

run_ctests() {
  local t out line
  for t in "$BUILDROOT"/5.4/ctest/test_*; do
    [ -x "$t" ] || continue
    out=$(timeout 120 "$t" 2>&1); rc=$?
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1)
    if [ -z "$line" ]; then
      printf '%s\n' "$out"
      echo "C test $t: no summary (exit $rc)"
      add 0 1
      continue
    fi
    [ "$rc" -ne 0 ] && printf '%s\n' "$out"
    echo "C $(basename "$t"): $line"
    add "$(echo "$line" | cut -d' ' -f1)" "$(echo "$line" | cut -d' ' -f3)"
  done
}

lua_bin() { case "$1" in luajit) echo luajit ;; *) echo "lua$1" ;; esac; }
lua_abi() { case "$1" in luajit) echo 5.1 ;; *) echo "$1" ;; esac; }

run_busted() {
  local v=$1 bin abi out summary s f e
  bin=$(lua_bin "$v"); abi=$(lua_abi "$v")
  echo "== busted under $bin"
  out=$(LUA_PATH="$ROOT/lua/?.lua;$ROOT/spec/?.lua;/usr/share/lua/$abi/?.lua;/usr/share/lua/$abi/?/init.lua;;" \
        LUA_CPATH="$ROOT/$BUILDROOT/$v/?.so;;" \
        LMP_BIN="$ROOT/$BUILDROOT/$v/bin/lmp" LMP_LUA="$v" LMP_ROOT="$ROOT" \
        timeout -k 10 "$SUITE_TIMEOUT" busted --lua="$bin" -o utfTerminal \
        ${BUSTED_ARGS:-spec} 2>&1 </dev/null)
  rc=$?
  printf '%s\n' "$out" | tail -n 60
  summary=$(printf '%s\n' "$out" | grep -E '[0-9]+ successes? / [0-9]+ failures? / [0-9]+ errors?' | tail -1)
  if [ -z "$summary" ]; then
    echo "busted under $bin: no summary (exit $rc)"
    add 0 1
    return
  fi
  s=$(echo "$summary" | sed -E 's/.*\b([0-9]+) success.*/\1/')
  f=$(echo "$summary" | sed -E 's/.* ([0-9]+) failures?.*/\1/')
  e=$(echo "$summary" | sed -E 's/.* ([0-9]+) errors?.*/\1/')
  echo "busted $bin: $s passed, $((f + e)) failed"
  add "$s" "$((f + e))"
}

run_rockspec() {
  local out line
  out=$(bash spec/rockspec_check.sh 5.4 lua5.4 2>&1)
  printf '%s\n' "$out"
  line=$(printf '%s\n' "$out" | tail -1)
  line=${line#rockspec: }
  add "$(echo "$line" | cut -d' ' -f1)" "$(echo "$line" | cut -d' ' -f3)"
}

[ -n "${NO_CTEST:-}" ] || run_ctests
for v in $LUAS; do run_busted "$v"; done
[ -n "${NO_CTEST:-}" ] || ! command -v luarocks >/dev/null || run_rockspec
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
