/* Raw C baselines over a socketpair with a forked echo/sink child:
 * prints "pingpong=<us per round trip> mibs=<MiB/s of 1 MiB writes>". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static void full(int fd, char *b, size_t n, int wr) {
  while (n) { ssize_t r = wr ? write(fd, b, n) : read(fd, b, n); if (r <= 0) exit(1); b += r; n -= (size_t)r; }
}
int main(void) {
  int sv[2], i, n = 10000, st; char buf[16] = "ping";
  size_t mib = 1 << 20; char *blob = malloc(mib); double t0, pp, mibs;
  memset(blob, 'x', mib);
  socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
  if (fork() == 0) { for (i = 0; i < n; i++) { full(sv[1], buf, 16, 0); full(sv[1], buf, 16, 1); } _exit(0); }
  t0 = now();
  for (i = 0; i < n; i++) { full(sv[0], buf, 16, 1); full(sv[0], buf, 16, 0); }
  pp = (now() - t0) / n * 1e6; wait(&st);
  if (fork() == 0) { for (i = 0; i < 200; i++) full(sv[1], blob, mib, 0); full(sv[1], buf, 1, 1); _exit(0); }
  t0 = now();
  for (i = 0; i < 200; i++) full(sv[0], blob, mib, 1);
  full(sv[0], buf, 1, 0); mibs = 200 / (now() - t0); wait(&st);
  printf("pingpong=%.3f mibs=%.1f\n", pp, mibs);
  return 0;
}
