/* lsync.c -- "lmp.c.sync": Lock, RLock, Semaphore, BoundedSemaphore,
 * Event, Condition, Barrier, each in a small shared-memory block of its
 * own (core/sync.h), attachable by name (pickling) and inherited by fork.
 *
 * Lock/RLock are robust mutexes owned by the acquiring THREAD (of one
 * process): release from another process raises, and a holder that dies
 * hands the lock to the next acquirer, whose acquire returns true, true. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "../core/clock.h"
#include "../core/sync.h"
#include "lshm.h"

#define SYNC_MAGIC 0x536d706cu     /* "lmpS" */
#define OBJ_OFF 64

enum { K_LOCK, K_RLOCK, K_SEM, K_BSEM, K_EVENT, K_COND, K_BARRIER, K_N };

static const char *const class_names[K_N] = {
  "lmp.Lock", "lmp.RLock", "lmp.Semaphore", "lmp.BoundedSemaphore",
  "lmp.Event", "lmp.Condition", "lmp.Barrier"
};

typedef struct shead { uint32_t magic, kind; } shead;

typedef struct sobj {
  lmp_shm shm;
  void *p;          /* the object, OBJ_OFF into the block; NULL if closed */
  int kind;
  uint32_t held;    /* Lock/RLock: holds taken through this object */
} sobj;

static size_t obj_size(int kind) {
  switch (kind) {
    case K_LOCK: case K_RLOCK: return sizeof(lmp_mutex);
    case K_SEM: case K_BSEM: return sizeof(lmp_sem);
    case K_EVENT: return sizeof(lmp_event);
    case K_COND: return sizeof(lmp_cond);
    default: return sizeof(lmp_barrier);
  }
}

static sobj *check(lua_State *L, int idx, int kind) {
  sobj *o = luaL_checkudata(L, idx, class_names[kind]);
  if (!o->p) lmp_error_raise(L, "closed", "%s is closed", class_names[kind]);
  return o;
}

/* A Lock or an RLock at idx. */
static sobj *check_lock(lua_State *L, int idx) {
  sobj *o = luaL_testudata(L, idx, class_names[K_LOCK]);
  if (!o) o = luaL_testudata(L, idx, class_names[K_RLOCK]);
  if (!o) luaL_argerror(L, idx, "lmp.Lock or lmp.RLock expected");
  if (!o->p) lmp_error_raise(L, "closed", "lock is closed");
  return o;
}

static sobj *new_sobj(lua_State *L, int kind) {
  sobj *o = lua_newuserdatauv_compat(L, sizeof *o);
  memset(o, 0, sizeof *o);
  o->kind = kind;
  luaL_setmetatable(L, class_names[kind]);
  return o;
}

/* Creates the block for the new object at -1; init runs on o->p. */
static sobj *create(lua_State *L, int kind) {
  sobj *o = new_sobj(L, kind);
  shead *h;
  int r = lmp_shm_create(&o->shm, NULL, OBJ_OFF + obj_size(kind));
  if (r < 0) lmp_shmobj_raise(L, r, "create", class_names[kind]);
  h = o->shm.addr;
  h->kind = (uint32_t)kind;
  o->p = (char *)o->shm.addr + OBJ_OFF;
  return o;
}

static void publish(lua_State *L, sobj *o) {
  __atomic_store_n(&((shead *)o->shm.addr)->magic, SYNC_MAGIC, __ATOMIC_RELEASE);
  lmp_shmobj_cache_put(L, -1, o->shm.name);
}

static int raise_init(lua_State *L, int r) {
  return lmp_error_raise_errno(L, r, "pthread mutex init");
}

/* ------------------------------------------------------------- constructors */

static int new_lock(lua_State *L, int kind) {
  sobj *o = create(L, kind);
  int r = lmp_mutex_init(o->p, kind == K_RLOCK);
  if (r < 0) return raise_init(L, r);
  publish(L, o);
  return 1;
}
static int l_lock(lua_State *L) { return new_lock(L, K_LOCK); }
static int l_rlock(lua_State *L) { return new_lock(L, K_RLOCK); }

static uint32_t check_count(lua_State *L, int idx, lua_Number def, lua_Number min) {
  lua_Number n = luaL_optnumber(L, idx, def);
  if (!(n >= min && n <= 2147483647.0 && n == floor(n)))
    luaL_argerror(L, idx, min > 0 ? "integer >= 1 expected" : "integer >= 0 expected");
  return (uint32_t)n;
}

static int new_sem(lua_State *L, int kind) {
  uint32_t n = check_count(L, 1, 1, 0);
  sobj *o = create(L, kind);
  lmp_sem_init(o->p, n, kind == K_BSEM ? (n ? n : 1) : 0);
  publish(L, o);
  return 1;
}
static int l_semaphore(lua_State *L) { return new_sem(L, K_SEM); }
static int l_bsemaphore(lua_State *L) { return new_sem(L, K_BSEM); }

static int l_event(lua_State *L) {
  publish(L, create(L, K_EVENT));
  return 1;
}

/* Condition([lock]): a new RLock when lock is nil. */
static int l_condition(lua_State *L) {
  sobj *o;
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    l_rlock(L);
  } else {
    check_lock(L, 1);
  }
  o = create(L, K_COND);
  lmp_uv_set(L, -1, 1);
  publish(L, o);
  return 1;
}

static int l_barrier(lua_State *L) {
  uint32_t n = check_count(L, 1, -1, 1);
  sobj *o = create(L, K_BARRIER);
  int r = lmp_barrier_init(o->p, n);
  if (r < 0) return raise_init(L, r);
  publish(L, o);
  return 1;
}

/* ------------------------------------------------------------- common */

/* The robust mutex inside the object, if it has one. */
static lmp_mutex *obj_mutex(sobj *o) {
  switch (o->kind) {
    case K_LOCK: case K_RLOCK: return o->p;
    case K_BARRIER: return &((lmp_barrier *)o->p)->m;
    default: return NULL;
  }
}

/* close() and __gc, safe in every state: a lock this thread still holds
 * through this object is handed on (the next acquirer is told its holder
 * died), and a block whose mutex some thread of ours still holds stays
 * mapped, for that thread's robust list points into it. */
static int s_close(lua_State *L) {
  sobj *o = lua_touserdata(L, 1);
  lmp_mutex *m;
  if (!o->p) return 0;
  m = obj_mutex(o);
  if (m && o->held) lmp_mutex_abandon(m, o->held);
  o->held = 0;
  if (m && lmp_mutex_held_here(m)) {
    if (o->shm.creator == getpid()) lmp_shm_unlink(o->shm.name);
    lmp_shm_abandon(&o->shm);
  } else {
    lmp_shmobj_release(&o->shm, 0);
  }
  o->p = NULL;
  return 0;
}

static int s_tostring(lua_State *L) {
  sobj *o = lua_touserdata(L, 1);
  if (o->p)
    lua_pushfstring(L, "%s (%s)", class_names[o->kind], o->shm.name);
  else
    lua_pushfstring(L, "%s (closed)", class_names[o->kind]);
  return 1;
}

static int s_name(lua_State *L) {
  sobj *o = lua_touserdata(L, 1);
  lua_pushstring(L, o->shm.name);
  return 1;
}

static int s_pickle(lua_State *L) {
  sobj *o = lua_touserdata(L, 1);
  if (!o->p) return lmp_error_raise(L, "closed", "%s is closed", class_names[o->kind]);
  lmp_shmobj_state(L, &o->shm, "lmp.sync", "lmp.c.sync");
  if (o->kind == K_COND) {
    lmp_uv_get(L, 1);
    lua_setfield(L, -2, "lock");
  }
  return 1;
}

static int s_unpickle(lua_State *L, int kind) {
  const char *name = lmp_shmobj_state_name(L, 1);
  sobj *o;
  shead *h;
  int r;
  if (lmp_shmobj_cache_get(L, name, class_names[kind])) return 1;
  if (kind == K_COND) {
    lua_getfield(L, 1, "lock");
    check_lock(L, -1);
  }
  o = new_sobj(L, kind);
  if ((r = lmp_shm_attach(&o->shm, name)) < 0)
    return lmp_shmobj_raise(L, r, "attach", name);
  h = o->shm.addr;
  if (o->shm.size < OBJ_OFF + obj_size(kind)
      || __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != SYNC_MAGIC
      || h->kind != (uint32_t)kind) {
    lmp_shm_close(&o->shm);
    return lmp_error_raise(L, "os", "'%s' is not an %s", name, class_names[kind]);
  }
  o->p = (char *)o->shm.addr + OBJ_OFF;
  if (kind == K_COND) lmp_uv_set(L, -1, -2);
  lmp_shmobj_cache_put(L, -1, name);
  return 1;
}

#define UNPICKLER(k, fn) static int fn(lua_State *L) { return s_unpickle(L, k); }
UNPICKLER(K_LOCK, u_lock)
UNPICKLER(K_RLOCK, u_rlock)
UNPICKLER(K_SEM, u_sem)
UNPICKLER(K_BSEM, u_bsem)
UNPICKLER(K_EVENT, u_event)
UNPICKLER(K_COND, u_cond)
UNPICKLER(K_BARRIER, u_barrier)

static int raise_wait(lua_State *L, int r, const char *what) {
  if (r == -EINTR) return lmp_error_raise_interrupt(L);
  return lmp_error_raise_errno(L, r, what);
}

/* ------------------------------------------------------------- locks */

/* Acquires the lock at idx; returns 1 with owner_died pushed... */
static int lock_acquire_at(lua_State *L, sobj *o, int targ) {
  double deadline = lmp_shmobj_deadline(L, targ);
  int r = lmp_mutex_lock(o->p, deadline);
  if (r >= 0) {
    o->held++;
    lua_pushboolean(L, 1);
    lua_pushboolean(L, r == 1);
    return 2;
  }
  if (r == -ETIMEDOUT) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (r == -EDEADLK) {
    /* Python waits out the timeout and returns False; only an acquire
     * that would wait forever is an error (Python would hang there). */
    uint32_t never = 0;
    if (deadline < 0)
      return luaL_error(L, "this thread already holds this lmp.Lock (acquiring "
                        "it again without a timeout would deadlock; use an lmp.RLock)");
    r = lmp_futex_wait(&never, 0, deadline);
    if (r == -EINTR) return raise_wait(L, r, "acquire");
    lua_pushboolean(L, 0);
    return 1;
  }
  return raise_wait(L, r, "acquire");
}

static int lock_release_at(lua_State *L, sobj *o) {
  if (lmp_mutex_unlock(o->p) < 0)
    return luaL_error(L, "release of a lock this thread does not hold");
  if (o->held) o->held--;
  return 0;
}

/* The Lock or RLock at 1, checked against the metatables held as
 * upvalues 1 and 2 (cheaper than luaL_testudata on this hot path). */
static sobj *fast_lock(lua_State *L) {
  sobj *o = lua_touserdata(L, 1);
  if (o && lua_getmetatable(L, 1)) {
    int ok = lua_rawequal(L, -1, lua_upvalueindex(1))
             || lua_rawequal(L, -1, lua_upvalueindex(2));
    lua_pop(L, 1);
    if (ok && o->p) return o;
  }
  return check_lock(L, 1);
}

/* acquire([timeout]) / acquire(false) / acquire(true, timeout)
 *   -> true, owner_died | false on timeout */
static int lock_acquire(lua_State *L) {
  sobj *o = fast_lock(L);
  if (lua_gettop(L) == 1) {               /* the common case, no timeout */
    int r = lmp_mutex_lock(o->p, LMP_FOREVER);
    if (r >= 0) {
      o->held++;
      lua_pushboolean(L, 1);
      lua_pushboolean(L, r == 1);
      return 2;
    }
  }
  return lock_acquire_at(L, o, 2);
}

static int lock_release(lua_State *L) {
  return lock_release_at(L, fast_lock(L));
}

static int lock_locked(lua_State *L) {
  lua_pushboolean(L, lmp_mutex_locked(check_lock(L, 1)->p));
  return 1;
}

static int lock_owned(lua_State *L) {
  lua_pushboolean(L, lmp_mutex_mine(check_lock(L, 1)->p));
  return 1;
}

/* ------------------------------------------------------------- semaphores */

static sobj *check_sem(lua_State *L) {
  sobj *o = luaL_testudata(L, 1, class_names[K_SEM]);
  if (!o) return check(L, 1, K_BSEM);
  if (!o->p) lmp_error_raise(L, "closed", "semaphore is closed");
  return o;
}

static int sem_acquire(lua_State *L) {
  sobj *o = check_sem(L);
  int r = lmp_sem_acquire(o->p, lmp_shmobj_deadline(L, 2));
  if (r == -ETIMEDOUT) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (r < 0) return raise_wait(L, r, "acquire");
  lua_pushboolean(L, 1);
  return 1;
}

static int sem_release(lua_State *L) {
  sobj *o = check_sem(L);
  uint32_t n = check_count(L, 2, 1, 1);
  if (lmp_sem_release(o->p, n) < 0)
    return luaL_error(L, o->kind == K_BSEM ? "semaphore released too many times"
                      : "semaphore value would overflow");
  return 0;
}

static int sem_get_value(lua_State *L) {
  lua_pushinteger(L, lmp_sem_value(check_sem(L)->p));
  return 1;
}

/* ------------------------------------------------------------- events */

static int ev_set(lua_State *L) { lmp_event_set(check(L, 1, K_EVENT)->p); return 0; }
static int ev_clear(lua_State *L) { lmp_event_clear(check(L, 1, K_EVENT)->p); return 0; }

static int ev_is_set(lua_State *L) {
  lua_pushboolean(L, lmp_event_is_set(check(L, 1, K_EVENT)->p));
  return 1;
}

static int ev_wait(lua_State *L) {
  sobj *o = check(L, 1, K_EVENT);
  int r = lmp_event_wait(o->p, lmp_check_deadline(L, 2));
  if (r < 0) return raise_wait(L, r, "wait");
  lua_pushboolean(L, r);
  return 1;
}

/* ------------------------------------------------------------- conditions */

/* The condition at 1 and its lock (pushed). */
static sobj *cond_lock(lua_State *L, sobj **lk) {
  sobj *o = check(L, 1, K_COND);
  lua_settop(L, 3);               /* arguments stay at 2 and 3 */
  lmp_uv_get(L, 1);
  *lk = check_lock(L, -1);
  return o;
}

static int cond_acquire(lua_State *L) {
  sobj *lk;
  cond_lock(L, &lk);
  return lock_acquire_at(L, lk, 2);
}

static int cond_release(lua_State *L) {
  sobj *lk;
  cond_lock(L, &lk);
  return lock_release_at(L, lk);
}

static int cond_get_lock(lua_State *L) {
  sobj *lk;
  cond_lock(L, &lk);
  return 1;
}

static int cond_wait(lua_State *L) {
  sobj *lk, *o = cond_lock(L, &lk);
  int r = lmp_cond_wait(o->p, lk->p, lmp_check_deadline(L, 2));
  if (r == -EPERM) return luaL_error(L, "cannot wait on an un-acquired lock");
  if (r < 0) return raise_wait(L, r, "wait");
  lua_pushboolean(L, r);
  return 1;
}

/* wait_for(pred [, timeout]) -> pred's last result */
static int cond_wait_for(lua_State *L) {
  sobj *lk, *o = cond_lock(L, &lk);
  double deadline = lmp_check_deadline(L, 3);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 3);
  for (;;) {
    int r;
    lua_pushvalue(L, 2);
    lua_call(L, 0, 1);
    if (lua_toboolean(L, -1) || lmp_deadline_passed(deadline)) return 1;
    lua_pop(L, 1);
    r = lmp_cond_wait(o->p, lk->p, deadline);
    if (r == -EPERM) return luaL_error(L, "cannot wait on an un-acquired lock");
    if (r < 0) return raise_wait(L, r, "wait_for");
  }
}

static int cond_notify_n(lua_State *L, int n) {
  sobj *lk, *o = cond_lock(L, &lk);
  if (lmp_cond_notify(o->p, lk->p, n) < 0)
    return luaL_error(L, "cannot notify on an un-acquired lock");
  return 0;
}

static int cond_notify(lua_State *L) {
  return cond_notify_n(L, (int)check_count(L, 2, 1, 0));
}

static int cond_notify_all(lua_State *L) { return cond_notify_n(L, -1); }

/* ------------------------------------------------------------- barriers */

static int bar_wait(lua_State *L) {
  sobj *o = check(L, 1, K_BARRIER);
  uint32_t idx = 0;
  int r = lmp_barrier_wait(o->p, lmp_check_deadline(L, 2), &idx);
  if (r == -EPIPE) return lmp_error_raise(L, "broken", "barrier is broken");
  if (r == -ETIMEDOUT)
    return lmp_error_raise(L, "timeout", "barrier wait timed out (the barrier is now broken)");
  if (r < 0) return raise_wait(L, r, "barrier wait");
  lua_pushinteger(L, idx);
  return 1;
}

static int bar_abort(lua_State *L) { lmp_barrier_abort(check(L, 1, K_BARRIER)->p); return 0; }
static int bar_reset(lua_State *L) { lmp_barrier_reset(check(L, 1, K_BARRIER)->p); return 0; }

static int bar_parties(lua_State *L) {
  lua_pushinteger(L, ((lmp_barrier *)check(L, 1, K_BARRIER)->p)->parties);
  return 1;
}

static int bar_n_waiting(lua_State *L) {
  lua_pushinteger(L, lmp_barrier_waiting(check(L, 1, K_BARRIER)->p));
  return 1;
}

static int bar_broken(lua_State *L) {
  lua_pushboolean(L, lmp_barrier_broken(check(L, 1, K_BARRIER)->p));
  return 1;
}

/* ------------------------------------------------------------- classes */

static void add_class(lua_State *L, int kind, lua_CFunction unpickle,
                      const luaL_Reg *methods, int nup) {
  static const luaL_Reg meta[] = {
    {"__close", s_close},
    {"__gc", s_close},
    {"__pickle", s_pickle},
    {"__tostring", s_tostring},
    {NULL, NULL}
  };
  static const luaL_Reg common[] = {
    {"close", s_close},
    {"name", s_name},
    {NULL, NULL}
  };
  luaL_newmetatable(L, class_names[kind]);    /* may exist: see luaopen */
  luaL_setfuncs(L, meta, 0);
  lua_pushstring(L, class_names[kind]);
  lua_setfield(L, -2, "__name");
  lua_newtable(L);
  for (int i = 0; i < nup; i++) luaL_getmetatable(L, class_names[i]);
  luaL_setfuncs(L, methods, nup);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, unpickle);
  lua_setfield(L, -2, "__unpickle");
  lua_getfield(L, -1, "__index");
  luaL_setfuncs(L, common, 0);
  lua_pop(L, 2);
}

int luaopen_lmp_c_sync(lua_State *L) {
  static const luaL_Reg lock_m[] = {
    {"acquire", lock_acquire},
    {"locked", lock_locked},
    {"owned", lock_owned},
    {"release", lock_release},
    {NULL, NULL}
  };
  static const luaL_Reg sem_m[] = {
    {"acquire", sem_acquire},
    {"get_value", sem_get_value},
    {"release", sem_release},
    {NULL, NULL}
  };
  static const luaL_Reg ev_m[] = {
    {"clear", ev_clear},
    {"is_set", ev_is_set},
    {"set", ev_set},
    {"wait", ev_wait},
    {NULL, NULL}
  };
  static const luaL_Reg cond_m[] = {
    {"acquire", cond_acquire},
    {"get_lock", cond_get_lock},
    {"notify", cond_notify},
    {"notify_all", cond_notify_all},
    {"release", cond_release},
    {"wait", cond_wait},
    {"wait_for", cond_wait_for},
    {NULL, NULL}
  };
  static const luaL_Reg bar_m[] = {
    {"abort", bar_abort},
    {"broken", bar_broken},
    {"n_waiting", bar_n_waiting},
    {"parties", bar_parties},
    {"reset", bar_reset},
    {"wait", bar_wait},
    {NULL, NULL}
  };
  static const luaL_Reg funcs[] = {
    {"Barrier", l_barrier},
    {"BoundedSemaphore", l_bsemaphore},
    {"Condition", l_condition},
    {"Event", l_event},
    {"Lock", l_lock},
    {"RLock", l_rlock},
    {"Semaphore", l_semaphore},
    {NULL, NULL}
  };
  luaL_newmetatable(L, class_names[K_LOCK]);     /* upvalues of lock_m */
  luaL_newmetatable(L, class_names[K_RLOCK]);
  lua_pop(L, 2);
  add_class(L, K_LOCK, u_lock, lock_m, 2);
  add_class(L, K_RLOCK, u_rlock, lock_m, 2);
  add_class(L, K_SEM, u_sem, sem_m, 0);
  add_class(L, K_BSEM, u_bsem, sem_m, 0);
  add_class(L, K_EVENT, u_event, ev_m, 0);
  add_class(L, K_COND, u_cond, cond_m, 0);
  add_class(L, K_BARRIER, u_barrier, bar_m, 0);
  lua_createtable(L, 0, 8);
  luaL_setfuncs(L, funcs, 0);
  lua_pushliteral(L, "lmp.c.sync 1");
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
