/* ctest.h -- a minimal test harness for the C tests of core/.
 *
 *   TEST(name) { CHECK(cond); CHECK_EQ(a, b); }
 *   int main(void) { RUN(name); ...; return ctest_summary(); }
 *
 * Prints one line per failed check and ends with "N passed, N failed"
 * (counted per test), which spec/run_all.sh adds to the total. */
#ifndef CTEST_H
#define CTEST_H

#include <stdio.h>

static int ctest_passed, ctest_failed, ctest_cur_failed;

#define TEST(name) static void name(void)
#define CHECK(cond) do { if (!(cond)) { ctest_cur_failed++; \
  fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
  } } while (0)
#define CHECK_EQ(a, b) do { long long _a = (long long)(a), _b = (long long)(b); \
  if (_a != _b) { ctest_cur_failed++; \
  fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__, \
          __LINE__, #a, _a, #b, _b); } } while (0)
#define RUN(name) do { ctest_cur_failed = 0; name(); \
  if (ctest_cur_failed) { ctest_failed++; \
    fprintf(stderr, "FAIL %s\n", #name); } \
  else ctest_passed++; } while (0)

static int ctest_summary(void) {
  printf("%d passed, %d failed\n", ctest_passed, ctest_failed);
  return ctest_failed ? 1 : 0;
}

#endif
