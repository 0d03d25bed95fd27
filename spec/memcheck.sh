#!/usr/bin/env bash
# make check-mem: every C test of core/ under valgrind (errors and leaks
# fail), then spec/memcheck_smoke.lua (which drives every binding) run by
# the lmp runtime under valgrind. Children are not traced: each binding's
# parent side is what the smoke test checks.
set -u
cd "$(dirname "$0")/.."
BUILD=${1:-build/5.4}
VG="valgrind -q --error-exitcode=99 --leak-check=full --show-possibly-lost=no --errors-for-leak-kinds=definite --child-silent-after-fork=yes"
passed=0; failed=0
for t in "$BUILD"/ctest/test_*; do
  [ -x "$t" ] || continue
  if timeout 600 $VG "$t" >/dev/null; then passed=$((passed + 1)); echo "ok   $t"
  else failed=$((failed + 1)); echo "FAIL $t"; fi
done
if timeout 900 $VG --suppressions=spec/valgrind.supp "$BUILD/bin/lmp" spec/memcheck_smoke.lua; then
  passed=$((passed + 1)); echo "ok   memcheck_smoke.lua"
else
  failed=$((failed + 1)); echo "FAIL memcheck_smoke.lua"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
