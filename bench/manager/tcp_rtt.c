/* The floor of a manager call: raw round trips of a 64-byte message over
 * loopback TCP (TCP_NODELAY, as lmp's manager sockets) between this
 * process and a forked echo child. Prints "rtt_us=<microseconds>". */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void full(int fd, char *b, size_t n, int wr) {
  while (n) {
    ssize_t r = wr ? write(fd, b, n) : read(fd, b, n);
    if (r <= 0) exit(1);
    b += r;
    n -= (size_t)r;
  }
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20000, i, ls, fd, one = 1, st;
  struct sockaddr_in a = {0};
  socklen_t len = sizeof a;
  char buf[64] = "ping";
  double t0;
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ls = socket(AF_INET, SOCK_STREAM, 0);
  if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1) ||
      getsockname(ls, (struct sockaddr *)&a, &len)) return 1;
  if (fork() == 0) {
    int c = accept(ls, NULL, NULL);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (i = 0; i < n; i++) { full(c, buf, sizeof buf, 0); full(c, buf, sizeof buf, 1); }
    _exit(0);
  }
  fd = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(fd, (struct sockaddr *)&a, sizeof a)) return 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  t0 = now();
  for (i = 0; i < n; i++) { full(fd, buf, sizeof buf, 1); full(fd, buf, sizeof buf, 0); }
  printf("rtt_us=%.3f\n", (now() - t0) / n * 1e6);
  wait(&st);
  return 0;
}
