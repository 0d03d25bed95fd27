/* load.c -- HTTP/1.0 load generator for bench/prefork: C threads, each
 * doing connect / GET / read to EOF / close in a loop for a fixed time.
 *
 *   load PORT CONCURRENCY SECONDS  ->  "requests=N errors=E rps=R"
 *
 * The same generator drives the lmp server and the Python ones, so the
 * figures compare the servers, not the clients. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int port;
static double stop_at;
static long total_ok[256], total_err[256];

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int one_request(int n) {
  struct sockaddr_in sa;
  char req[128], buf[4096];
  size_t got = 0;
  ssize_t r;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), len, one = 1;
  struct timeval tv = {2, 0};   /* a stalled server counts an error, never hangs */
  if (fd < 0) return -1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((unsigned short)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { close(fd); return -1; }
  len = snprintf(req, sizeof req, "GET /bench/%d HTTP/1.0\r\nHost: x\r\n\r\n", n);
  if (write(fd, req, (size_t)len) != len) { close(fd); return -1; }
  while ((r = read(fd, buf + got, sizeof buf - 1 - got)) > 0) {
    got += (size_t)r;
    if (got >= sizeof buf - 1) break;
  }
  close(fd);
  buf[got] = '\0';
  return (strncmp(buf, "HTTP/1.0 200 OK", 15) == 0 && strstr(buf, "path=/bench/")) ? 0 : -1;
}

static void *worker(void *arg) {
  long id = (long)arg;
  int n = 0;
  while (now() < stop_at) {
    if (one_request(n++) == 0) total_ok[id]++;
    else total_err[id]++;
  }
  return NULL;
}

int main(int argc, char **argv) {
  pthread_t th[256];
  long c, ok = 0, err = 0;
  double secs, t0;
  if (argc != 4) { fprintf(stderr, "usage: load PORT CONCURRENCY SECONDS\n"); return 2; }
  port = atoi(argv[1]);
  c = atol(argv[2]);
  secs = atof(argv[3]);
  if (c < 1 || c > 256) c = 16;
  t0 = now();
  stop_at = t0 + secs;
  for (long i = 0; i < c; i++) pthread_create(&th[i], NULL, worker, (void *)i);
  for (long i = 0; i < c; i++) pthread_join(th[i], NULL);
  secs = now() - t0;
  for (long i = 0; i < c; i++) { ok += total_ok[i]; err += total_err[i]; }
  printf("requests=%ld errors=%ld rps=%.1f\n", ok, err, ok / secs);
  return 0;
}
