/* The floor of a fresh pool's first map of big strings: what moving the
 * same bytes costs with nothing but the unavoidable calls. Two freshly
 * forked children each take messages of SIZE bytes into one reused buffer
 * and send them straight back; the parent sends COUNT messages, half to
 * each, over socketpairs and keeps every reply in new memory (a map's
 * results must exist), one arena for all of them, so that fresh memory
 * comes in the fewest faults malloc can give. The children are forked
 * before the clock starts, as a pool's workers are. Prints
 * "mibs=<MiB/s, there and back>".
 *   cc -O2 -o /tmp/fresh_floor fresh_floor.c && /tmp/fresh_floor [COUNT [SIZE]]
 * Run it under the same malloc settings as the lmp runtime
 * (GLIBC_TUNABLES=glibc.malloc.hugetlb=1) to compare like with like. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void full(int fd, char *b, size_t n, int wr) {
  while (n) {
    ssize_t r = wr ? write(fd, b, n) : read(fd, b, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) _exit(1);
    b += r;
    n -= (size_t)r;
  }
}

static void echo(int fd, size_t size) {
  char *buf = malloc(size);
  uint32_t len;
  if (!buf) _exit(1);
  for (;;) {
    full(fd, (char *)&len, 4, 0);
    if (len == 0) _exit(0);
    full(fd, buf, len, 0);
    full(fd, (char *)&len, 4, 1);
    full(fd, buf, len, 1);
  }
}

/* One child's side in the parent: what is being sent and received. */
typedef struct {
  int fd, left_out, left_in;   /* messages still to send / to receive */
  size_t out_off, in_off;      /* bytes of the current frame done */
  char *in;                    /* where the reply goes (its arena slot) */
} side;

int main(int argc, char **argv) {
  int count = argc > 1 ? atoi(argv[1]) : 60, k, st;
  size_t size = argc > 2 ? (size_t)atol(argv[2]) : (size_t)1 << 20;
  char *blob = malloc(size + 4), *arena = malloc((size_t)count * (size + 4));
  uint32_t len = (uint32_t)size;
  side s[2];
  double t0;
  int got = 0, slot = 0;
  if (!blob || !arena) return 1;
  memcpy(blob, &len, 4);                 /* the frame: length, then bytes */
  memset(blob + 4, 'x', size);
  for (k = 0; k < 2; k++) {
    int sv[2];
    pid_t pid;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return 1;
    if ((pid = fork()) < 0) return 1;
    if (pid == 0) { close(sv[0]); echo(sv[1], size); }
    close(sv[1]);
    s[k] = (side){sv[0], count / 2 + (k < count % 2), count / 2 + (k < count % 2), 0, 0, NULL};
  }
  t0 = now();
  while (got < count) {
    struct pollfd p[2];
    for (k = 0; k < 2; k++) {
      p[k].fd = s[k].fd;
      p[k].events = (s[k].left_out ? POLLOUT : 0) | (s[k].left_in ? POLLIN : 0);
    }
    if (poll(p, 2, -1) < 0 && errno != EINTR) return 1;
    for (k = 0; k < 2; k++) {
      side *d = &s[k];
      if ((p[k].revents & POLLOUT) && d->left_out) {
        ssize_t r = send(d->fd, blob + d->out_off, size + 4 - d->out_off, MSG_DONTWAIT);
        if (r > 0 && (d->out_off += (size_t)r) == size + 4) { d->out_off = 0; d->left_out--; }
      }
      if (p[k].revents & (POLLIN | POLLHUP)) {
        if (!d->in) d->in = arena + (size_t)slot++ * (size + 4);
        ssize_t r = recv(d->fd, d->in + d->in_off, size + 4 - d->in_off, MSG_DONTWAIT);
        if (r == 0) return 1;
        if (r > 0 && (d->in_off += (size_t)r) == size + 4) {
          got++;
          d->in = NULL;
          d->in_off = 0;
          d->left_in--;
        }
      }
    }
  }
  printf("mibs=%.1f\n", 2.0 * count * (double)size / (1 << 20) / (now() - t0));
  len = 0;
  for (k = 0; k < 2; k++) { full(s[k].fd, (char *)&len, 4, 1); wait(&st); }
  free(arena);
  free(blob);
  return 0;
}
