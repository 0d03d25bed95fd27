/* thread.h -- OS threads that can be waited for from a poll loop.
 *
 * Each thread gets a sentinel: an eventfd that becomes readable once the
 * thread's function has returned, so a pool's loop watches threads the
 * way it watches processes (pidfds). Joining never blocks past a
 * deadline: a thread that has not ended by then is left running (it ends
 * with the process). The thread block is freed by whichever of the owner
 * (lmp_thread_release) and the thread finishes last.
 *
 * lmp_thread_live() counts the threads started here and still running in
 * this process: fork refuses while it is not 0 (a child would inherit
 * locks held by threads that do not exist in it); in a fork child it is 0.
 * Functions return 0 or -errno; none prints or aborts. */
#ifndef LMP_THREAD_H
#define LMP_THREAD_H

typedef struct lmp_thread lmp_thread;
typedef int (*lmp_thread_fn)(void *arg);   /* returns the exit status */

/* Starts fn(arg) on a new thread with every asynchronous signal blocked
 * (signals go to the main thread). */
int lmp_thread_start(lmp_thread **out, lmp_thread_fn fn, void *arg);

/* The sentinel fd (owned by the thread block). */
int lmp_thread_sentinel(const lmp_thread *t);

/* 1 once fn has returned; *status then holds what it returned. */
int lmp_thread_done(const lmp_thread *t, int *status);

/* Waits until the thread ended or the deadline (clock.h): 0, -ETIMEDOUT,
 * -EINTR (interruption pending, intr.h). */
int lmp_thread_join(lmp_thread *t, double deadline);

/* The owner lets go: joins if ended, else detaches; frees when both sides
 * are done. */
void lmp_thread_release(lmp_thread *t);

int lmp_thread_live(void);

#endif
