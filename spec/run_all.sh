#!/usr/bin/env bash
# Runs every suite and ends with one line "N passed, N failed" summing
# them: the C tests of core/, then the busted specs under each Lua in
# $LUAS (default: 5.4 5.1 luajit), then, when $ASAN_BUILDROOT is set
# (make test sets it to build/asan), the C tests and the 5.4 specs once
# more against the ASan + UBSan build there (make LUA=5.4 SANITIZE=1),
# where any sanitizer report is a failure. Exits non-zero if anything
# failed.
set -u
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILDROOT=${BUILDROOT:-build}
LUAS=${LUAS-"5.4 5.1 luajit"}
SUITE_TIMEOUT=${SUITE_TIMEOUT:-420}
ASAN_BUILDROOT=${ASAN_BUILDROOT:-}
passed=0
failed=0
last_out=
failures=

# note_failures LABEL TEXT: keeps the first lines of each busted failure or
# error block (and C tests' FAIL lines), reprinted just above the summary so
# that the tail of a CI log names what failed.
note_failures() {
  local found
  found=$(printf '%s\n' "$2" | awk '
    /^(Failure|Error) .* @ [0-9]+$/ { n = 8 }
    /^FAIL|[^A-Za-z]FAIL[: ]/ { print; next }
    n > 0 { print; n--; if (n == 0) print "" }' | head -n 120)
  [ -z "$found" ] || failures="$failures
--- $1:
$found"
}

add() { passed=$((passed + $1)); failed=$((failed + $2)); }

# run_ctests [BUILDROOT [LABEL [VAR=VALUE...]]]: the C tests of BUILDROOT/5.4.
run_ctests() {
  local root=${1:-$BUILDROOT} label=${2:-} t out line
  shift $(($# < 2 ? $# : 2))
  for t in "$root"/5.4/ctest/test_*; do
    [ -x "$t" ] || continue
    out=$(env "$@" timeout 120 "$t" 2>&1); rc=$?
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1)
    if [ -z "$line" ]; then
      printf '%s\n' "$out"
      echo "C test $t: no summary (exit $rc)"
      failures="$failures
--- C test $t$label: no summary (exit $rc)"
      add 0 1
      continue
    fi
    [ "$rc" -ne 0 ] && printf '%s\n' "$out" && note_failures "C $(basename "$t")$label" "$out"
    echo "C $(basename "$t")$label: $line"
    add "$(echo "$line" | cut -d' ' -f1)" "$(echo "$line" | cut -d' ' -f3)"
  done
}

lua_bin() { case "$1" in luajit) echo luajit ;; *) echo "lua$1" ;; esac; }
lua_abi() { case "$1" in luajit) echo 5.1 ;; *) echo "$1" ;; esac; }

# run_busted LUA [BUILDROOT [LABEL [VAR=VALUE...]]]: the busted specs under
# that Lua against BUILDROOT/LUA, with the extra environment given.
run_busted() {
  local v=$1 root=${2:-$BUILDROOT} label=${3:-} bin abi out summary s f e
  shift $(($# < 3 ? $# : 3))
  bin=$(lua_bin "$v"); abi=$(lua_abi "$v")
  echo "== busted under $bin$label"
  out=$(env "$@" \
        LUA_PATH="$ROOT/lua/?.lua;$ROOT/spec/?.lua;/usr/share/lua/$abi/?.lua;/usr/share/lua/$abi/?/init.lua;;" \
        LUA_CPATH="$ROOT/$root/$v/?.so;;" \
        LMP_BIN="$ROOT/$root/$v/bin/lmp" LMP_LUA="$v" LMP_ROOT="$ROOT" \
        timeout -k 10 "$SUITE_TIMEOUT" busted --lua="$bin" -o utfTerminal \
        ${BUSTED_ARGS:-spec} 2>&1 </dev/null)
  rc=$?
  last_out=$out
  printf '%s\n' "$out" | tail -n 60
  summary=$(printf '%s\n' "$out" | grep -E '[0-9]+ successes? / [0-9]+ failures? / [0-9]+ errors?' | tail -1)
  if [ -z "$summary" ]; then
    echo "busted under $bin$label: no summary (exit $rc)"
    failures="$failures
--- busted under $bin$label: no summary (exit $rc); its last lines:
$(printf '%s\n' "$out" | tail -n 15)"
    add 0 1
    return
  fi
  s=$(echo "$summary" | sed -E 's/.*\b([0-9]+) success.*/\1/')
  f=$(echo "$summary" | sed -E 's/.* ([0-9]+) failures?.*/\1/')
  e=$(echo "$summary" | sed -E 's/.* ([0-9]+) errors?.*/\1/')
  echo "busted $bin$label: $s passed, $((f + e)) failed"
  [ $((f + e)) -eq 0 ] || note_failures "busted $bin$label" "$out"
  add "$s" "$((f + e))"
}

# The C tests and the 5.4 specs against the sanitized build. busted runs
# in Debian's lua5.4, which is not built with ASan: the sanitized
# lmp/core.so needs the ASan runtime loaded first, hence LD_PRELOAD
# (inherited by every process the specs start: lmp runtimes, spawned
# lua5.4 children, sh, redis...).
#
# Options (ASAN_OPTIONS / UBSAN_OPTIONS):
# - log_path: every report goes to a file $dir/report.PID, whatever process
#   wrote it and wherever its stderr went (many specs capture a child's
#   stderr, or expect a child to die): after the suite, each report file
#   counts as one failure and is printed.
# - detect_leaks=0 by default: LD_PRELOAD puts LeakSanitizer into every
#   program the specs start. Programs that are not lmp's (python3,
#   redis-cli) report their own exit-time leaks; and in lua5.4 a child
#   forked while lmp threads run (09-thread_spec's allow_threads fork)
#   keeps those threads' Lua states without the threads whose stacks
#   pointed to them, which LeakSanitizer reports as leaked.
#   include_if_exists=$dir/%b.opts turns leak detection back on for the
#   binaries lmp builds (%b is the binary's name: lmp, host, test_*):
#   every exit of an lmp runtime (H.run_lmp, spawn children, workers of
#   `lmp worker`...), of the example host and of the C tests is checked.
# - verify_asan_link_order=0: a spec may set LD_PRELOAD to a shim of its own
#   for an lmp runtime (spec/conformance/connection_spec.lua does), which
#   then comes before libasan; the runtime links libasan itself, ahead of
#   libc, so its allocator still wins; only the start-up check would object.
# - UBSan: the build uses -fno-sanitize-recover, so a finding ends the
#   process. UBSAN_OPTIONS=log_path does not work beside ASan under GCC;
#   LMP_UBSAN_LOG_PATH does the same (spec/c/ubsan_log.c).
# - halt_on_error=1, exitcode=86: a process stops at its first finding,
#   with a status no spec expects.
run_sanitized() {
  local v=5.4 dir preload b r n
  preload=$(gcc -print-file-name=libasan.so)
  if [ ! -x "$ASAN_BUILDROOT/$v/bin/lmp" ] || [ ! -f "$preload" ]; then
    echo "sanitized: no build in $ASAN_BUILDROOT/$v (make LUA=5.4 SANITIZE=1) or no libasan"
    add 0 1
    return
  fi
  dir=$(mktemp -d "${TMPDIR:-/tmp}/lmp-asan.XXXXXX")
  for b in lmp host "$ASAN_BUILDROOT"/$v/ctest/test_*; do
    echo "detect_leaks=1" > "$dir/$(basename "$b").opts"
  done
  set -- \
    ASAN_OPTIONS="detect_leaks=0:verify_asan_link_order=0:log_path=$dir/report:halt_on_error=1:abort_on_error=0:exitcode=86:include_if_exists=$dir/%b.opts" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=86" \
    LMP_UBSAN_LOG_PATH="$dir/report" \
    LSAN_OPTIONS="exitcode=86"
  # the C tests too (a few seconds), unless only specs were asked for
  [ -n "${NO_CTEST:-}" ] || run_ctests "$ASAN_BUILDROOT" " (ASan+UBSan)" "$@"
  run_busted "$v" "$ASAN_BUILDROOT" " (ASan+UBSan)" LD_PRELOAD="$preload" "$@"
  # report files, and (should one escape log_path) the suite's own output
  # (a file with no finding holds a warning, e.g. LeakSanitizer's "Running
  # thread ... was not suspended": shown, not counted)
  n=0
  for r in "$dir"/report.*; do
    [ -s "$r" ] || continue
    if grep -q -E 'ERROR: |runtime error:|SUMMARY: ' "$r"; then
      n=$((n + 1)); echo "--- sanitizer report $(basename "$r"):"; head -n 80 "$r"
    else
      echo "--- sanitizer warning $(basename "$r"): $(head -c 300 "$r")"
    fi
  done
  if printf '%s\n' "$last_out" | grep -q -E 'ERROR: (Address|Leak)Sanitizer|runtime error:'; then
    n=$((n + 1)); echo "--- sanitizer report in the suite's output:"
    printf '%s\n' "$last_out" | grep -E -A 30 'ERROR: (Address|Leak)Sanitizer|runtime error:' | head -n 80
  fi
  echo "sanitized: $n sanitizer report(s)"
  [ "$n" -eq 0 ] || failures="$failures
--- sanitized: $n sanitizer report(s), printed above"
  add 0 "$n"
  rm -rf "$dir"
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
[ -z "$ASAN_BUILDROOT" ] || run_sanitized
[ -n "${NO_CTEST:-}" ] || ! command -v luarocks >/dev/null || run_rockspec
if [ -n "$failures" ]; then
  echo "=== what failed (first lines of each):$failures"
  echo "==="
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
