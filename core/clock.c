/* clock.c -- monotonic time and deadlines (see clock.h). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <math.h>
#include <time.h>

#include "clock.h"
#include "intr.h"

double lmp_clock_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double lmp_deadline(double timeout) {
  if (!(timeout >= 0)) return LMP_FOREVER;   /* negative or NaN */
  return lmp_clock_now() + timeout;
}

int lmp_deadline_ms(double deadline) {
  double left;
  if (deadline < 0) return -1;
  left = deadline - lmp_clock_now();
  if (left <= 0) return 0;
  if (left > 2e6) return 2000000000;         /* ~23 days: poll(2) takes int */
  return (int)ceil(left * 1000.0);
}

int lmp_deadline_passed(double deadline) {
  return deadline >= 0 && lmp_clock_now() >= deadline;
}

int lmp_clock_sleep(double seconds) {
  struct timespec ts;
  if (!(seconds > 0)) return 0;
  ts.tv_sec = (time_t)seconds;
  ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
    if (lmp_intr_pending) return -EINTR;
  return 0;
}
