/* C tests of core/auth.c and core/server.c: the handshake both ways,
 * refusals, and a server serving, denying and dropping peers. Clients run
 * in forked children; the parent drives the server loop. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "auth.h"
#include "clock.h"
#include "ctest.h"
#include "fd.h"
#include "frame.h"
#include "net.h"
#include "server.h"

#define KEY "the key"

static lmp_srv *new_server(int *port, double hs_timeout) {
  char host[64];
  int err = 0, fd = lmp_net_tcp_listen("127.0.0.1", 0, 16, 0, NULL, 0);
  lmp_srv_opts o = {1 << 20, 1 << 20, hs_timeout, 64, 0};
  if (fd < 0) abort();
  lmp_net_sockname(fd, host, sizeof host, port);
  return lmp_srv_new(fd, KEY, strlen(KEY), &o, &err);
}

/* A child that authenticates with key, sends "ping" and expects "pong";
 * exits 0 on success, 10 + the failing step otherwise. */
static pid_t client(int port, const char *key) {
  pid_t pid = fork();
  if (pid == 0) {
    lmp_frame_hdr h;
    char *p;
    int partial, rc;
    int fd = lmp_net_tcp_connect("127.0.0.1", port, lmp_deadline(5), NULL, 0);
    if (fd < 0) _exit(11);
    rc = lmp_auth_client(fd, key, strlen(key), lmp_deadline(5));
    if (rc == -EACCES) _exit(2);
    if (rc < 0) _exit(12);
    if (lmp_frame_send(fd, LMP_FRAME_PICKLE, 0, "ping", 4, lmp_deadline(5)) < 0)
      _exit(13);
    if (lmp_frame_recv(fd, &h, &p, 1024, lmp_deadline(5), &partial) < 0)
      _exit(14);
    _exit(h.len == 4 && memcmp(p, "pong", 4) == 0 ? 0 : 15);
  }
  return pid;
}

static int exit_code(pid_t pid) {
  int st;
  if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) return -1;
  return WEXITSTATUS(st);
}

typedef struct seen {
  int requests, closed, denied;
  uint64_t cid;
} seen;

static void on_event(void *ud, const lmp_srv_event *ev) {
  seen *s = ud;
  if (ev->kind == LMP_SRV_REQUEST) {
    s->requests++;
    s->cid = ev->cid;
  } else if (ev->kind == LMP_SRV_CLOSED) {
    s->closed++;
  } else if (ev->kind == LMP_SRV_DENIED) {
    s->denied++;
  }
}

/* Steps the server until pred holds or 5 s pass. */
#define SERVE_UNTIL(srv, s, pred) do { double _d = lmp_deadline(5); \
  while (!(pred) && !lmp_deadline_passed(_d)) \
    lmp_srv_step(srv, lmp_deadline(0.05), on_event, &(s)); } while (0)

TEST(serves_an_authenticated_client) {
  int port;
  seen s = {0, 0, 0, 0};
  lmp_srv *srv = new_server(&port, 5);
  pid_t pid = client(port, KEY);
  SERVE_UNTIL(srv, s, s.requests == 1);
  CHECK_EQ(s.requests, 1);
  CHECK_EQ(lmp_srv_send(srv, s.cid, LMP_FRAME_PICKLE, "pong", 4), 0);
  SERVE_UNTIL(srv, s, s.closed == 1);
  CHECK_EQ(s.closed, 1);
  CHECK_EQ(exit_code(pid), 0);
  /* a reply to a connection that has gone is dropped, not misdelivered */
  CHECK_EQ(lmp_srv_send(srv, s.cid, LMP_FRAME_PICKLE, "late", 4), 1);
  CHECK_EQ(lmp_srv_clients(srv, NULL), 0);
  lmp_srv_free(srv);
}

TEST(denies_a_wrong_key) {
  int port;
  seen s = {0, 0, 0, 0};
  lmp_srv *srv = new_server(&port, 5);
  pid_t pid = client(port, "not the key");
  SERVE_UNTIL(srv, s, s.denied == 1);
  CHECK_EQ(s.denied, 1);
  CHECK_EQ(s.requests, 0);
  CHECK_EQ(exit_code(pid), 2);
  lmp_srv_free(srv);
}

TEST(drops_a_silent_peer_after_the_handshake_timeout) {
  int port, hs = 0;
  seen s = {0, 0, 0, 0};
  lmp_srv *srv = new_server(&port, 0.1);
  int fd = lmp_net_tcp_connect("127.0.0.1", port, lmp_deadline(5), NULL, 0);
  char buf[64];
  SERVE_UNTIL(srv, s, (lmp_srv_clients(srv, &hs), hs == 1));
  CHECK_EQ(hs, 1);
  SERVE_UNTIL(srv, s, (lmp_srv_clients(srv, &hs), hs == 0));
  CHECK_EQ(hs, 0);
  CHECK_EQ(lmp_fd_read_full(fd, buf, 40, lmp_deadline(1)), 0);  /* challenge */
  CHECK_EQ(lmp_fd_read_full(fd, buf, 1, lmp_deadline(1)), -EPIPE);
  CHECK_EQ(s.closed + s.denied, 0);
  lmp_fd_close(fd);
  lmp_srv_free(srv);
}

/* A fake server that accepts any proof and answers garbage: the client
 * must not believe it (-EPERM); one that sends a foreign magic: -EPROTO. */
TEST(client_checks_the_servers_proof_and_magic) {
  int sv[2];
  unsigned char buf[LMP_AUTH_RESPONSE];
  pid_t pid;
  CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  pid = fork();
  if (pid == 0) {
    lmp_fd_write_full(sv[1], "LMPAUTH1abcdefghijklmnopqrstuvwxyz012345", 40, lmp_deadline(5));
    lmp_fd_read_full(sv[1], buf, sizeof buf, lmp_deadline(5));
    lmp_fd_write_full(sv[1], "0123456789abcdef0123456789abcdef", 32, lmp_deadline(5));
    _exit(0);
  }
  CHECK_EQ(lmp_auth_client(sv[0], KEY, strlen(KEY), lmp_deadline(5)), -EPERM);
  CHECK_EQ(exit_code(pid), 0);
  close(sv[0]);
  close(sv[1]);
  CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  lmp_fd_write_full(sv[1], "LMPAUTH0abcdefghijklmnopqrstuvwxyz012345", 40, lmp_deadline(5));
  CHECK_EQ(lmp_auth_client(sv[0], KEY, strlen(KEY), lmp_deadline(5)), -EPROTO);
  close(sv[0]);
  close(sv[1]);
}

TEST(closes_a_connection_sending_a_bad_header) {
  int port, fd;
  seen s = {0, 0, 0, 0};
  lmp_srv *srv = new_server(&port, 5);
  pid_t pid = fork();
  if (pid == 0) {
    char b[8];
    lmp_srv_free(srv);                 /* the parent's: not ours to keep */
    fd = lmp_net_tcp_connect("127.0.0.1", port, lmp_deadline(5), NULL, 0);
    if (lmp_auth_client(fd, KEY, strlen(KEY), lmp_deadline(5)) < 0) _exit(1);
    lmp_fd_write_full(fd, "\xff\xff\xff\xff\x01\x00LM", 8, lmp_deadline(5));
    _exit(lmp_fd_read_full(fd, b, 1, lmp_deadline(5)) == -EPIPE ? 0 : 2);
  }
  SERVE_UNTIL(srv, s, s.closed == 1);
  CHECK_EQ(s.closed, 1);
  CHECK_EQ(s.requests, 0);
  CHECK_EQ(exit_code(pid), 0);
  lmp_srv_free(srv);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  RUN(serves_an_authenticated_client);
  RUN(denies_a_wrong_key);
  RUN(drops_a_silent_peer_after_the_handshake_timeout);
  RUN(client_checks_the_servers_proof_and_magic);
  RUN(closes_a_connection_sending_a_bad_header);
  return ctest_summary();
}
