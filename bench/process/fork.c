/* Bare fork + _exit + waitpid, the machine's floor: prints us per child. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 100, i, st;
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (i = 0; i < n; i++) {
    pid_t p = fork();
    if (p == 0) _exit(0);
    waitpid(p, &st, 0);
  }
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e3 / n);
  return 0;
}
