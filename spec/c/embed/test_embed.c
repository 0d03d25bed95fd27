/* test_embed.c -- C tests of the embedding API (modules/lmp.h): runtimes,
 * lmp_poll/lmp_fileno in a host's loop, callback errors, signal handlers.
 *
 *   test_embed [test ...]    runs the named tests (default: all)
 *
 * LMP_EMBED_RUNTIMES sets how many runtimes many_runtimes makes (1000).
 * Every wait is bounded; spec/09-embed_spec.lua runs each test alone. */
#define _GNU_SOURCE
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "ctest.h"
#include "lmp.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Open fds of this process (the directory's own fd counts both times). */
static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  int n = 0;
  if (!d) return -1;
  while ((e = readdir(d)))
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* Number of children of this process, zombies included. */
static int count_children(void) {
  char path[64], buf[4096];
  FILE *f;
  size_t len;
  int n = 0;
  char *tok;
  snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
  if (!(f = fopen(path, "r"))) return -1;
  len = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[len] = '\0';
  for (tok = strtok(buf, " \n"); tok; tok = strtok(NULL, " \n")) n++;
  return n;
}

/* A temporary file holding code; the caller unlinks and frees it. */
static char *script(const char *code) {
  char *path = strdup("/tmp/lmp_embed_XXXXXX");
  int fd = mkstemp(path);
  size_t len = strlen(code);
  if (fd < 0 || write(fd, code, len) != (ssize_t)len) {
    fprintf(stderr, "cannot write a temporary script\n");
    exit(2);
  }
  close(fd);
  return path;
}

static void drop_script(char *path) {
  unlink(path);
  free(path);
}

/* Runs code in L; 1 on success, 0 after printing the error. */
static int run(lua_State *L, const char *code) {
  if (luaL_loadstring(L, code) == 0 && lua_pcall(L, 0, 0, 0) == 0) return 1;
  fprintf(stderr, "lua error: %s\n", lua_tostring(L, -1));
  lua_pop(L, 1);
  return 0;
}

static lua_Integer global_int(lua_State *L, const char *name) {
  lua_Integer v;
  lua_getglobal(L, name);
  v = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

static int contains(const char *s, const char *part) {
  return s != NULL && strstr(s, part) != NULL;
}

/* A host that owns its state: standard libraries, then luaopen_lmp. */
static lua_State *host_state(void) {
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  lua_pushcfunction(L, luaopen_lmp);
  if (lua_pcall(L, 0, 1, 0) != 0) {
    fprintf(stderr, "luaopen_lmp: %s\n", lua_tostring(L, -1));
    exit(2);
  }
  lua_setglobal(L, "lmp");
  return L;
}

/* Calls lmp_poll(L, ms) until global `name` is truthy or secs pass;
 * returns the sum of the counts (-1 results counted in *errors). */
static int poll_until(lua_State *L, const char *name, int ms, double secs,
                      int *errors) {
  double deadline = now() + secs;
  int total = 0, r, done = 0;
  while (!done && now() < deadline) {
    r = lmp_poll(L, ms);
    if (r < 0) { if (errors) (*errors)++; }
    else total += r;
    lua_getglobal(L, name);
    done = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  return done ? total : -1;
}

/* ---- runtimes ------------------------------------------------------- */

TEST(runtime_dofile) {
  lmp_runtime *rt = lmp_runtime_new();
  lua_State *L;
  char *ok = script("x = 40 + 2\nassert(type(lmp.Pool) == 'function')\n");
  char *bad = script("local function f() error('boom') end\nf()\n");
  char *syntax = script("x = = 1\n");
  char *quit = script("os.exit(3)\n");
  CHECK(rt != NULL);
  if (!rt) return;
  L = lmp_runtime_state(rt);
  CHECK(lmp_runtime_error(rt) == NULL);
  CHECK_EQ(lmp_runtime_dofile(rt, ok), 0);
  CHECK_EQ(global_int(L, "x"), 42);
  CHECK(lmp_runtime_dofile(rt, bad) != 0);
  CHECK(contains(lmp_runtime_error(rt), "boom"));
  CHECK(contains(lmp_runtime_error(rt), "traceback"));
  CHECK(lmp_runtime_dofile(rt, syntax) != 0);
  CHECK(contains(lmp_runtime_error(rt), "expected"));
  CHECK(lmp_runtime_dofile(rt, "/nonexistent/lmp_embed.lua") != 0);
  CHECK(contains(lmp_runtime_error(rt), "cannot open"));
  CHECK(lmp_runtime_dofile(rt, quit) != 0);          /* the host goes on */
  CHECK(contains(lmp_runtime_error(rt), "os.exit(3)"));
  CHECK_EQ(lua_gettop(L), 0);
  CHECK_EQ(lmp_runtime_dofile(rt, ok), 0);           /* still usable */
  lmp_runtime_free(rt);
  lmp_runtime_free(NULL);
  drop_script(ok);
  drop_script(bad);
  drop_script(syntax);
  drop_script(quit);
}

/* Every 50th runtime runs a pool; half of those leave it for
 * lmp_runtime_free to terminate, some ask for the fd first. */
static const char *pool_code =
  "local pool = lmp.Pool{processes = 2}\n"
  "local r = pool:map(function(x) return x * 2 end, {1, 2, 3})\n"
  "assert(r[3] == 6)\n"
  "local a = pool:apply_async(function() return 7 end)\n"
  "assert(a:get(10) == 7)\n"
  "if N % 100 == 0 then pool:terminate() end\n";

TEST(many_runtimes) {
  const char *env = getenv("LMP_EMBED_RUNTIMES");
  int n = env ? atoi(env) : 1000, i, fds0 = count_fds(), failed = 0;
  char *pool = script(pool_code);
  double t0 = now();
  for (i = 0; i < n; i++) {
    lmp_runtime *rt = lmp_runtime_new();
    if (!rt) { failed++; continue; }
    if (i % 50 == 0) {
      lua_State *L = lmp_runtime_state(rt);
      lua_pushinteger(L, i);
      lua_setglobal(L, "N");
      if (i % 150 == 0 && lmp_fileno(L) < 0) failed++;
      if (lmp_runtime_dofile(rt, pool) != 0) {
        fprintf(stderr, "runtime %d: %s\n", i, lmp_runtime_error(rt));
        failed++;
      }
    } else if (lmp_runtime_error(rt) != NULL) {
      failed++;
    }
    lmp_runtime_free(rt);
  }
  drop_script(pool);
  CHECK_EQ(failed, 0);
  CHECK_EQ(count_fds(), fds0);
  CHECK_EQ(count_children(), 0);
  printf("many_runtimes: %d runtimes in %.2f s, fds %d -> %d\n", n,
         now() - t0, fds0, count_fds());
}

/* ---- the host's loop ------------------------------------------------ */

TEST(poll_delivers_callbacks) {
  lua_State *L = host_state();
  int n;
  CHECK_EQ(lmp_poll(L, 0), 0);                /* lmp.pool not loaded yet */
  CHECK(run(L,
    "pool = lmp.Pool{processes = 2}\n"
    "got = {}\n"
    "for i = 1, 5 do\n"
    "  pool:apply_async(function(x) return x * x end, {i},\n"
    "    {callback = function(v) got[#got + 1] = v\n"
    "       done = #got == 5 end})\n"
    "end\n"));
  CHECK_EQ(global_int(L, "done"), 0);         /* nothing ran behind our back */
  n = poll_until(L, "done", 100, 20, NULL);
  CHECK(n >= 1);
  CHECK(run(L, "table.sort(got) assert(table.concat(got, ' ') == '1 4 9 16 25')"));
  CHECK(run(L, "pool:apply_async(function() error('nope') end, {},"
               " {error_callback = function(e) failed = e.kind end})"));
  CHECK(poll_until(L, "failed", 100, 20, NULL) >= 1);
  CHECK(run(L, "assert(failed == 'remote', tostring(failed))"));
  CHECK_EQ(lua_gettop(L), 0);
  lua_close(L);                                /* terminates the pool */
  CHECK_EQ(count_children(), 0);
}

TEST(fileno_readable_when_result_ready) {
  lua_State *L = host_state();
  int fd = lmp_fileno(L), readable = 0, poll_errors = 0;
  double t0, deadline;
  struct pollfd p;
  CHECK(fd >= 0);
  CHECK_EQ(lmp_fileno(L), fd);                 /* the same fd for L's life */
  /* a pool made after lmp_fileno is watched too */
  CHECK(run(L,
    "pool = lmp.Pool{processes = 1}\n"
    "t_submit = lmp.time()\n"
    "pool:apply_async(function() lmp.sleep(0.3) return 1 end, {},\n"
    "  {callback = function() done = lmp.time() end})\n"));
  t0 = now();
  deadline = t0 + 20;
  lua_getglobal(L, "done");
  while (lua_isnil(L, -1) && now() < deadline) {
    lua_pop(L, 1);
    p.fd = fd;
    p.events = POLLIN;
    p.revents = 0;
    if (poll(&p, 1, 5000) == 1 && (p.revents & POLLIN)) {
      readable++;
      if (lmp_poll(L, 0) < 0) poll_errors++;
    }
    lua_getglobal(L, "done");
  }
  CHECK(!lua_isnil(L, -1));
  lua_pop(L, 1);
  CHECK(readable >= 1);
  CHECK_EQ(poll_errors, 0);
  CHECK(run(L, "assert(done - t_submit >= 0.25, done - t_submit)"));
  /* drained and idle: no longer readable (a host loop would not spin) */
  while (lmp_poll(L, 0) > 0) {}
  p.fd = fd;
  p.events = POLLIN;
  p.revents = 0;
  CHECK_EQ(poll(&p, 1, 100), 0);
  lua_close(L);
  CHECK_EQ(count_children(), 0);
}

TEST(poll_waits_at_most_its_timeout) {
  lua_State *L = host_state();
  double t0;
  int r;
  CHECK(run(L, "pool = lmp.Pool{processes = 1}\n"
               "pool:apply_async(function() lmp.sleep(30) end)\n"));
  t0 = now();
  r = lmp_poll(L, 150);                       /* the task runs 30 s */
  CHECK(r >= 0);
  CHECK(now() - t0 < 5.0);                    /* margin for a busy machine */
  CHECK(run(L, "pool:terminate()"));
  t0 = now();
  CHECK_EQ(lmp_poll(L, 5000), 0);             /* no live pool: no wait */
  CHECK_EQ(lmp_poll(L, -1), 0);
  CHECK(now() - t0 < 2.5);                    /* half the 5 s it would wait */
  /* a result wakes a long wait early */
  CHECK(run(L, "pool = lmp.Pool{processes = 1}\n"
               "pool:apply_async(function() lmp.sleep(0.1) return 1 end, {},\n"
               "  {callback = function() woke = true end})\n"));
  t0 = now();
  CHECK(poll_until(L, "woke", 10000, 20, NULL) >= 1);
  CHECK(now() - t0 < 5.0);
  lua_close(L);
}

TEST(callback_error_returns_minus_one) {
  lua_State *L = host_state();
  int errors = 0;
  CHECK(run(L,
    "pool = lmp.Pool{processes = 1}\n"
    "pool:apply_async(function() return 1 end, {},\n"
    "  {callback = function() error('boom in callback') end})\n"
    "pool:apply_async(function() return 2 end, {},\n"
    "  {callback = function(v) second = v end})\n"));
  CHECK(poll_until(L, "second", 100, 20, &errors) >= 0);
  CHECK_EQ(global_int(L, "second"), 2);        /* the other one still ran */
  CHECK_EQ(errors, 1);
  CHECK(contains(lmp_last_error(L), "boom in callback"));
  CHECK_EQ(lua_gettop(L), 0);
  CHECK(lmp_poll(L, 0) >= 0);                  /* and the pool goes on */
  CHECK(run(L, "assert(pool:apply(function() return 3 end) == 3)"));
  lua_close(L);
}

TEST(poll_and_fileno_without_lmp) {
  lua_State *L = luaL_newstate();              /* no libraries, no lmp */
  CHECK(lmp_last_error(L) == NULL);
  CHECK_EQ(lmp_poll(L, 0), 0);
  CHECK_EQ(lmp_poll(L, 1000), 0);
  CHECK_EQ(lmp_fileno(L), -1);
  CHECK(lmp_last_error(L) != NULL);
  CHECK_EQ(lua_gettop(L), 0);
  lua_close(L);
}

/* ---- signals -------------------------------------------------------- */

static int is_default(int sig) {
  struct sigaction sa;
  sigaction(sig, NULL, &sa);
  return sa.sa_handler == SIG_DFL && !(sa.sa_flags & SA_SIGINFO);
}

static int l_raise_int(lua_State *L) {
  (void)L;
  raise(SIGINT);
  return 0;
}

static volatile sig_atomic_t host_got = 0;
static void host_handler(int sig) { host_got = sig; }

TEST(no_signal_handlers_by_default) {
  static const int sigs[] = {SIGINT, SIGTERM, SIGPIPE, SIGCHLD, SIGHUP};
  lmp_runtime *rt = lmp_runtime_new();
  lua_State *L = host_state();
  char *pool = script(pool_code);
  size_t i;
  lua_pushinteger(lmp_runtime_state(rt), 100);
  lua_setglobal(lmp_runtime_state(rt), "N");
  CHECK_EQ(lmp_runtime_dofile(rt, pool), 0);
  CHECK(run(L, "local p = lmp.Pool{processes = 1}\n"
               "assert(p:apply(function(x) return -x end, {-1}) == 1)"));
  CHECK(lmp_fileno(L) >= 0);
  CHECK(lmp_poll(L, 10) >= 0);
  for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++) CHECK(is_default(sigs[i]));
  lua_close(L);
  lmp_runtime_free(rt);
  drop_script(pool);
}

TEST(signal_handlers_on_request) {
  lmp_runtime *rt = lmp_runtime_new();
  lua_State *L = lmp_runtime_state(rt);
  char *sleeper = script("raise_int()\nlmp.sleep(10)\n");
  struct sigaction sa, cur;
  double t0;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = host_handler;                 /* the host's own handler */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  lua_register(L, "raise_int", l_raise_int);
  CHECK_EQ(lmp_install_signal_handlers(L), 0);
  CHECK_EQ(lmp_install_signal_handlers(L), 0);  /* twice is harmless */
  sigaction(SIGINT, NULL, &cur);
  CHECK(cur.sa_handler != host_handler && cur.sa_handler != SIG_DFL);
  CHECK(!is_default(SIGTERM));
  t0 = now();
  CHECK(lmp_runtime_dofile(rt, sleeper) != 0);
  CHECK(now() - t0 < 5.0);
  CHECK(contains(lmp_runtime_error(rt), "interrupted"));
  CHECK_EQ(host_got, 0);
  lmp_runtime_free(rt);                         /* the host's come back */
  sigaction(SIGINT, NULL, &cur);
  CHECK(cur.sa_handler == host_handler);
  CHECK(is_default(SIGTERM));
  signal(SIGINT, SIG_DFL);
  drop_script(sleeper);
}

static int want(int argc, char **argv, const char *name) {
  int i;
  if (argc < 2) return 1;
  for (i = 1; i < argc; i++)
    if (strcmp(argv[i], name) == 0) return 1;
  return 0;
}

#define T(name) do { if (want(argc, argv, #name)) RUN(name); } while (0)

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  T(runtime_dofile);
  T(poll_delivers_callbacks);
  T(fileno_readable_when_result_ready);
  T(poll_waits_at_most_its_timeout);
  T(callback_error_returns_minus_one);
  T(poll_and_fileno_without_lmp);
  T(no_signal_handlers_by_default);
  T(signal_handlers_on_request);
  T(many_runtimes);
  return ctest_summary();
}
