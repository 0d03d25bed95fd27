/* clock.h -- monotonic time and deadlines.
 *
 * A deadline is an absolute time on the monotonic clock, in seconds.
 * LMP_FOREVER (a negative value) means "no deadline". Blocking calls in
 * core/ take a deadline rather than a timeout so that loops which retry
 * after EINTR or partial I/O never stretch the total wait. */
#ifndef LMP_CLOCK_H
#define LMP_CLOCK_H

#define LMP_FOREVER (-1.0)

/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
double lmp_clock_now(void);

/* Deadline for a timeout in seconds: timeout < 0 (or NaN) gives LMP_FOREVER. */
double lmp_deadline(double timeout);

/* Milliseconds left before deadline, rounded up, for poll(2):
 * -1 for LMP_FOREVER, 0 once passed. */
int lmp_deadline_ms(double deadline);

/* 1 if deadline has passed, 0 otherwise (never for LMP_FOREVER). */
int lmp_deadline_passed(double deadline);

/* Sleeps for seconds (<= 0: returns at once), resuming after signals
 * unless an interruption is pending (intr.h): 0 or -EINTR. */
int lmp_clock_sleep(double seconds);

#endif
