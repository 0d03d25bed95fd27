/* hugepage.h -- the lmp runtime asks glibc's malloc for huge pages.
 *
 * A big message lands in memory the process has never touched, and each
 * first touch of a 4 KiB page is a page fault: about 10 us on the VM lmp
 * is measured on (380 MiB/s of fresh memory), where a 2 MiB transparent
 * huge page costs 0.24 us per 4 KiB. Lua frees a message's memory only at
 * its next collection, so a fresh process meets such memory often (a new
 * pool's first map of big values, a map's result table).
 *
 * glibc's malloc advises huge pages (MADV_HUGEPAGE) for the memory it
 * takes from the system when the tunable glibc.malloc.hugetlb=1 is set,
 * and tunables are read only when a program starts. So the runtime, first
 * thing in main, starts itself again (same pid, same argv, same fds) with
 * the tunable added, then puts GLIBC_TUNABLES back as it was: programs lmp
 * runs (python3, a shell) see the environment they were given; an lmp
 * child spawned by lmp gets the tunable in its environment and needs no
 * second exec (lmp_hugepage_environ). It does nothing when
 *   LMP_MALLOC=default        (the opt-out),
 *   GLIBC_TUNABLES already names glibc.malloc.hugetlb (the user chose),
 *   the kernel's transparent huge pages are "never",
 *   the process runs under valgrind (it must stay traced) or is built
 *   with ASan (whose allocator is not glibc's),
 * and if the exec fails the runtime goes on as it is. */
#ifndef LMP_HUGEPAGE_H
#define LMP_HUGEPAGE_H

/* Re-executes /proc/self/exe with argv when the above applies (returns
 * only if it does not); on the second start, restores GLIBC_TUNABLES. */
void lmp_hugepage_reexec(char **argv);

/* For an exec of an lmp child: a malloc'd copy of environ (the strings
 * are not copied) with the entries that make it start tuned, or NULL
 * when this process was not tuned. Free only the array. */
char **lmp_hugepage_environ(void);

#endif
