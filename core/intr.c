/* intr.c -- see intr.h. */
#include "intr.h"

volatile sig_atomic_t lmp_intr_pending = 0;
