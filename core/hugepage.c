/* hugepage.c -- see hugepage.h. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hugepage.h"

#define TUNABLE "glibc.malloc.hugetlb=1"
/* Set only between the two starts: "-" when GLIBC_TUNABLES was unset,
 * else "+" and its value. */
#define SAVED "LMP_MALLOC_SAVED_TUNABLES"

/* After the second start: the two entries a spawned lmp child gets, so
 * that it starts tuned without an exec of its own (that took a spawn's
 * start+join from 13 to 21 ms). */
static char *child_entries[2];

static void restore(const char *saved) {
  if (saved[0] == '+') setenv("GLIBC_TUNABLES", saved + 1, 1);
  else unsetenv("GLIBC_TUNABLES");
  unsetenv(SAVED);
}

/* The second start: remember the entries for children, then restore. */
static void second_start(const char *saved) {
  const char *tun = getenv("GLIBC_TUNABLES");
  char *e0, *e1;     /* (asprintf leaves its pointer undefined on failure) */
  if (tun && asprintf(&e0, "GLIBC_TUNABLES=%s", tun) >= 0) {
    if (asprintf(&e1, SAVED "=%s", saved) >= 0) {
      child_entries[0] = e0;
      child_entries[1] = e1;
    } else {
      free(e0);
    }
  }
  restore(saved);
}

static int is_entry(const char *e, const char *name) {
  size_t n = strlen(name);
  return strncmp(e, name, n) == 0 && e[n] == '=';
}

char **lmp_hugepage_environ(void) {
  extern char **environ;
  size_t n = 0, i, j = 0;
  char **env;
  if (!child_entries[0]) return NULL;
  while (environ[n]) n++;
  if (!(env = malloc((n + 3) * sizeof *env))) return NULL;
  for (i = 0; i < n; i++)
    if (!is_entry(environ[i], "GLIBC_TUNABLES") && !is_entry(environ[i], SAVED))
      env[j++] = environ[i];
  env[j++] = child_entries[0];
  env[j++] = child_entries[1];
  env[j] = NULL;
  return env;
}

/* 1 unless the kernel never gives transparent huge pages. */
static int thp_possible(void) {
  char buf[128] = "";
  FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
  if (!f) return 0;
  if (!fgets(buf, sizeof buf, f)) buf[0] = '\0';
  fclose(f);
  return strstr(buf, "[never]") == NULL && buf[0] != '\0';
}

void lmp_hugepage_reexec(char **argv) {
  const char *old = getenv("GLIBC_TUNABLES"), *opt = getenv("LMP_MALLOC");
  const char *pre = getenv("LD_PRELOAD"), *saved = getenv(SAVED);
  char *tun, *keep;
  if (saved) { second_start(saved); return; }
#ifdef __SANITIZE_ADDRESS__
  return;                         /* ASan's allocator: no glibc malloc to tune */
#endif
  if (opt && strcmp(opt, "default") == 0) return;
  if (pre && strstr(pre, "vgpreload")) return;
  if (old && strstr(old, "glibc.malloc.hugetlb")) return;
  if (!argv || !argv[0] || !thp_possible()) return;
  if (asprintf(&tun, "%s%s%s", old ? old : "", old ? ":" : "", TUNABLE) < 0) return;
  if (asprintf(&keep, "%s%s", old ? "+" : "-", old ? old : "") < 0) { free(tun); return; }
  fflush(NULL);
  if (setenv(SAVED, keep, 1) == 0 && setenv("GLIBC_TUNABLES", tun, 1) == 0)
    execv("/proc/self/exe", argv);
  restore(keep);                                   /* exec failed: go on */
  free(tun);
  free(keep);
}
