/* shm.h -- named POSIX shared-memory blocks (shm_open + mmap).
 *
 * A block is created under a unique name ("/lmp.<pid>.<n>.<random>") or a
 * name of the caller's choice, so that any process -- a fork child, a spawn
 * child, a pool worker, an unrelated program -- can attach to it BY NAME.
 * Names made by lmp_shm_create embed the creator's pid: lmp_shm_sweep()
 * unlinks those whose creator no longer exists (what a process killed with
 * SIGKILL could not unlink itself). The mapping outlives the name: unlinking
 * only stops new attachments. No fd stays open after create/attach. */
#ifndef LMP_SHM_H
#define LMP_SHM_H

#include <stddef.h>
#include <sys/types.h>

#define LMP_SHM_NAME_MAX 64

typedef struct lmp_shm {
  void *addr;                  /* NULL when closed */
  size_t size;
  pid_t creator;               /* pid that created the name, 0 if attached */
  char name[LMP_SHM_NAME_MAX]; /* with the leading '/' */
} lmp_shm;

/* Creates and maps a new zero-filled block of size bytes (> 0). name NULL
 * picks a unique lmp name; otherwise name must start with '/', hold no
 * other '/', be shorter than LMP_SHM_NAME_MAX and not exist yet (-EEXIST).
 * Returns 0 or -errno (-EINVAL for a bad name or size). The first
 * unique-name create of each process runs lmp_shm_sweep() first. */
int lmp_shm_create(lmp_shm *s, const char *name, size_t size);

/* Maps the existing block name (whole size). 0, -ENOENT, -EINVAL, -errno. */
int lmp_shm_attach(lmp_shm *s, const char *name);

/* Unmaps the block (idempotent); the name is left alone. */
void lmp_shm_close(lmp_shm *s);

/* Closes without unmapping: the mapping stays for the life of the process.
 * For a block holding a mutex that a thread of this process still holds
 * (see lmp_mutex_held_here): one page kept beats a corrupt robust list. */
void lmp_shm_abandon(lmp_shm *s);

/* Removes a name: 0 or -errno (-ENOENT if already gone). */
int lmp_shm_unlink(const char *name);

/* 1 if name looks like a valid block name for create/attach. */
int lmp_shm_name_ok(const char *name);

/* Unlinks the lmp-made names whose creator process is gone. Cheap enough
 * to call once per process; returns how many names were removed. */
int lmp_shm_sweep(void);

#endif
