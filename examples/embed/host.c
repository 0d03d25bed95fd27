/* host.c -- a C "game" that embeds lmp (modules/lmp.h).
 *
 *   host [seconds [workers [nice]]]    (10 s, one worker per core, 10)
 *
 * It has no Lua of its own: it makes an lmp runtime, runs host.lua in it
 * (which starts an lmp.Pool and defines request_path), then ticks at
 * 60 Hz. Each tick it runs the callbacks that are due (lmp_poll(L, 0)),
 * keeps the pool saturated with path searches (two per worker in
 * flight), and updates its own little world. Between ticks it waits in
 * ppoll(2) on lmp_fileno(L), so results are taken in (and new searches
 * handed out) as they arrive, the way a host with its own epoll or libuv
 * loop would. It prints its worst frame: the longest time its thread
 * spent on one frame's work, lmp's callbacks included (in wall time, and
 * in the thread's CPU time, which other processes' load does not
 * inflate); and the longest interval between two frame starts (a hitch
 * a player would see).
 *
 * The workers are forked from this process, so its pthread_atfork
 * handlers run in them: one lowers their priority by `nice` (0: not at
 * all), so that the frame loop gets a core as soon as it wakes instead of
 * waiting for a worker's time slice to end. Built by `make examples`
 * into $(BUILD)/examples/. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>

#include "lmp.h"

#ifndef HOST_LUA
#define HOST_LUA "examples/embed/host.lua"
#endif

#define FRAME (1.0 / 60)

static long found, failed, cancelled, in_flight, poll_errors, workers, seed;
static int stopping;          /* searches failing from here on were cut short */
static int worker_nice;
static double path_total;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU time of the calling thread: waiting in ppoll does not count. */
static double thread_cpu(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Callbacks of the pool's tasks, called by Lua inside lmp_poll. */
static int path_found(lua_State *L) {
  found++;
  in_flight--;
  path_total += lua_tonumber(L, 1);
  return 0;
}

static int path_failed(lua_State *L) {
  in_flight--;
  if (stopping) { cancelled++; return 0; }
  lua_getglobal(L, "tostring");        /* the error object, as text */
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  fprintf(stderr, "host: a search failed: %s\n", lua_tostring(L, -1));
  failed++;
  return 0;
}

/* The game's own work for a tick: move some entities around. */
static double world[2048];

static void update_world(long frame) {
  int i;
  for (i = 0; i < 2048; i++)
    world[i] = sin(world[i] + 0.001 * (double)(frame + i));
}

/* Runs the callbacks that are due; lmp_poll never raises into the host. */
static void run_callbacks(lua_State *L) {
  if (lmp_poll(L, 0) < 0) {
    poll_errors++;
    fprintf(stderr, "host: lmp_poll: %s\n", lmp_last_error(L));
  }
}

/* Hands one search to the pool through host.lua's request_path. */
static int request_path(lua_State *L, long id) {
  lua_getglobal(L, "request_path");
  lua_pushinteger(L, (lua_Integer)id);
  if (lua_pcall(L, 1, 0, 0) != 0) {
    fprintf(stderr, "host: request_path: %s\n", lua_tostring(L, -1));
    lua_pop(L, 1);
    return -1;
  }
  in_flight++;
  return 0;
}

/* Keeps the pool saturated: two searches in flight per worker. */
static void keep_busy(lua_State *L) {
  while (in_flight < 2 * workers && request_path(L, seed) == 0) seed++;
}

/* Waits until `until` (monotonic seconds) while taking in results as the
 * fd says they come (and handing out new work at once); returns the time
 * spent doing so. */
static double idle_until(lua_State *L, int fd, double until) {
  double spent = 0, left, t;
  struct pollfd p;
  struct timespec ts;
  while ((left = until - now()) > 0) {
    ts.tv_sec = (time_t)left;
    ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
    p.fd = fd;
    p.events = POLLIN;
    p.revents = 0;
    if (ppoll(&p, 1, &ts, NULL) > 0) {
      t = now();
      run_callbacks(L);
      keep_busy(L);
      spent += now() - t;
    }
  }
  return spent;
}

/* In each forked worker (a pthread_atfork child handler). */
static void lower_priority(void) {
  if (worker_nice > 0 && nice(worker_nice) == -1) { /* stays as it is */ }
}

static void set_int(lua_State *L, const char *name, long v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setglobal(L, name);
}

int main(int argc, char **argv) {
  double seconds = argc > 1 ? atof(argv[1]) : 10;
  long frames = 0, late = 0;
  double start, next, worst = 0, worst_gap = 0, spent, t0, prev = 0;
  double cpu0, worst_cpu = 0;
  lmp_runtime *rt;
  lua_State *L;
  int fd;
  worker_nice = argc > 3 ? atoi(argv[3]) : 10;
  pthread_atfork(NULL, NULL, lower_priority);
  rt = lmp_runtime_new();
  if (!rt) { fprintf(stderr, "host: out of memory\n"); return 1; }
  L = lmp_runtime_state(rt);
  lua_register(L, "path_found", path_found);
  lua_register(L, "path_failed", path_failed);
  workers = argc > 2 ? atol(argv[2]) : 0;
  set_int(L, "WORKERS", workers);
  if (lmp_runtime_dofile(rt, HOST_LUA) != 0 || (fd = lmp_fileno(L)) < 0) {
    fprintf(stderr, "host: %s\n", lmp_runtime_error(rt));
    lmp_runtime_free(rt);
    return 1;
  }
  lua_getglobal(L, "WORKERS");
  workers = (long)lua_tointeger(L, -1);
  lua_pop(L, 1);

  start = next = now();
  while (next - start < seconds) {
    t0 = now();
    cpu0 = thread_cpu();
    if (frames > 0 && t0 - prev > worst_gap) worst_gap = t0 - prev;
    prev = t0;
    run_callbacks(L);
    keep_busy(L);
    update_world(frames);
    spent = now() - t0;
    frames++;
    next += FRAME;
    spent += idle_until(L, fd, next);
    if (spent > worst) worst = spent;
    if (thread_cpu() - cpu0 > worst_cpu) worst_cpu = thread_cpu() - cpu0;
    if (now() - next > FRAME) { late++; next = now(); }    /* fell behind */
  }
  spent = now() - start;
  stopping = 1;
  lmp_runtime_free(rt);                /* terminates the pool: the searches
                                          in flight fail with `closed` */

  printf("frames: %ld in %.1f s (%.1f fps), %ld late\n", frames, spent,
         frames / spent, late);
  printf("results: %ld paths (mean length %.1f) by %ld workers (nice %d),"
         " %ld failed, %ld poll errors, %ld cut short at exit\n", found,
         found ? path_total / found : 0.0, workers, worker_nice, failed,
         poll_errors, cancelled);
  printf("worst frame: %.2f ms of work (budget %.2f ms, goal <= 20 ms)\n",
         worst * 1000, FRAME * 1000);
  printf("worst frame cpu: %.2f ms (the frame thread's CPU time)\n",
         worst_cpu * 1000);
  printf("worst frame interval: %.2f ms (%.2f ms at 60 Hz)\n",
         worst_gap * 1000, FRAME * 1000);
  return failed || poll_errors ? 1 : 0;
}
