/* intr.h -- interruption requests (Ctrl-C) seen by blocking calls.
 *
 * A program that wants SIGINT/SIGTERM to interrupt lmp's blocking calls
 * (the lmp runtime does; an embedded host does only if it asks) sets
 * lmp_intr_pending from its signal handler. Blocking helpers in core/
 * that see EINTR while it is set return -EINTR instead of retrying. */
#ifndef LMP_INTR_H
#define LMP_INTR_H

#include <signal.h>

extern volatile sig_atomic_t lmp_intr_pending;   /* the signal number, or 0 */

#endif
