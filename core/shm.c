/* shm.c -- named POSIX shared-memory blocks (see shm.h). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shm.h"

#define LMP_PREFIX "lmp."

static unsigned long shm_counter;   /* process-wide, for unique names */
static pid_t swept_by;               /* pid that last ran lmp_shm_sweep */

int lmp_shm_name_ok(const char *name) {
  size_t n = name ? strlen(name) : 0;
  return n >= 2 && n < LMP_SHM_NAME_MAX && name[0] == '/'
         && strchr(name + 1, '/') == NULL;
}

static void unique_name(char *buf) {
  unsigned int r = 0;
  unsigned long n = __atomic_add_fetch(&shm_counter, 1, __ATOMIC_RELAXED);
  if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
    r = (unsigned int)rand();
  snprintf(buf, LMP_SHM_NAME_MAX, "/" LMP_PREFIX "%ld.%lu.%08x",
           (long)getpid(), n, r);
}

static int map_fd(lmp_shm *s, int fd, size_t size) {
  void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return -errno;
  s->addr = p;
  s->size = size;
  return 0;
}

int lmp_shm_create(lmp_shm *s, const char *name, size_t size) {
  int fd, r;
  memset(s, 0, sizeof *s);
  if (size == 0 || (name && !lmp_shm_name_ok(name))) return -EINVAL;
  if (name) {
    snprintf(s->name, sizeof s->name, "%s", name);
  } else {
    if (__atomic_load_n(&swept_by, __ATOMIC_RELAXED) != getpid()) {
      __atomic_store_n(&swept_by, getpid(), __ATOMIC_RELAXED);
      lmp_shm_sweep();
    }
    unique_name(s->name);
  }
  fd = shm_open(s->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return -errno;
  if (ftruncate(fd, (off_t)size) < 0) {
    r = -errno;
    goto fail;
  }
  if ((r = map_fd(s, fd, size)) < 0) goto fail;
  close(fd);
  s->creator = getpid();
  return 0;
fail:
  close(fd);
  shm_unlink(s->name);
  s->name[0] = '\0';
  return r;
}

int lmp_shm_attach(lmp_shm *s, const char *name) {
  struct stat st;
  int fd, r;
  memset(s, 0, sizeof *s);
  if (!lmp_shm_name_ok(name)) return -EINVAL;
  fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) return -errno;
  if (fstat(fd, &st) < 0) {
    r = -errno;
  } else if (st.st_size <= 0) {
    r = -EINVAL;      /* being created right now, or not a block of ours */
  } else {
    r = map_fd(s, fd, (size_t)st.st_size);
  }
  close(fd);
  if (r == 0) snprintf(s->name, sizeof s->name, "%s", name);
  return r;
}

void lmp_shm_close(lmp_shm *s) {
  if (s->addr) munmap(s->addr, s->size);
  s->addr = NULL;
}

void lmp_shm_abandon(lmp_shm *s) { s->addr = NULL; }

int lmp_shm_unlink(const char *name) {
  if (!lmp_shm_name_ok(name)) return -EINVAL;
  return shm_unlink(name) < 0 ? -errno : 0;
}

int lmp_shm_sweep(void) {
  DIR *d = opendir("/dev/shm");
  struct dirent *e;
  int removed = 0;
  if (!d) return 0;
  while ((e = readdir(d)) != NULL) {
    char path[LMP_SHM_NAME_MAX + 1];
    char *end;
    long pid;
    if (strncmp(e->d_name, LMP_PREFIX, sizeof LMP_PREFIX - 1) != 0) continue;
    pid = strtol(e->d_name + sizeof LMP_PREFIX - 1, &end, 10);
    if (pid <= 0 || *end != '.' || strlen(e->d_name) >= LMP_SHM_NAME_MAX)
      continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
    snprintf(path, sizeof path, "/%s", e->d_name);
    if (shm_unlink(path) == 0) removed++;
  }
  closedir(d);
  return removed;
}
