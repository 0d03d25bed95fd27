/* Linked only into the sanitized build (make SANITIZE=1): sends
 * UndefinedBehaviorSanitizer's reports to files named by the environment
 * variable LMP_UBSAN_LOG_PATH (PATH.<pid>, like log_path), so that
 * spec/run_all.sh sees every report, also those of children whose stderr a
 * spec captures or discards.
 *
 * Why not UBSAN_OPTIONS=log_path: with GCC, -fsanitize=address,undefined
 * loads two runtimes, libasan and libubsan, and both export
 * __sanitizer_set_report_path. libubsan applies its log_path by calling
 * that function through the PLT, which binds to libasan's copy (libasan is
 * loaded first), so libubsan's own report file is never set and its
 * reports go to stderr. dlsym on libubsan's handle finds libubsan's own
 * copy. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>

__attribute__((constructor)) static void lmp_ubsan_log(void) {
  const char *path = getenv("LMP_UBSAN_LOG_PATH");
  void *h, *sym;
  void (*set_path)(const char *);
  if (!path || !*path) return;
  h = dlopen("libubsan.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (!h) return;
  sym = dlsym(h, "__sanitizer_set_report_path");
  if (sym) {
    *(void **)&set_path = sym;
    set_path(path);
  }
  dlclose(h);
}
