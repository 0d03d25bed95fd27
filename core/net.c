/* net.c -- TCP and Unix stream sockets (see net.h). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "clock.h"
#include "fd.h"
#include "net.h"

static void set_err(char *err, size_t errlen, const char *fmt, const char *a,
                    const char *b) {
  if (err && errlen) snprintf(err, errlen, fmt, a, b);
}

int lmp_net_set_nodelay(int fd) {
  int on = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on) < 0)
    return -errno;
  return 0;
}

static int resolve(const char *host, int port, int passive,
                   struct addrinfo **res, char *err, size_t errlen) {
  struct addrinfo hints;
  char portstr[16];
  int rc;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : 0;
  snprintf(portstr, sizeof portstr, "%d", port);
  if (host && !*host) host = NULL;
  rc = getaddrinfo(host, portstr, &hints, res);
  if (rc != 0) {
    set_err(err, errlen, "cannot resolve %s: %s", host ? host : "*",
            gai_strerror(rc));
    return -EHOSTUNREACH;
  }
  return 0;
}

static int tcp_listen_one(struct addrinfo *ai, int backlog, int flags) {
  int on = 1, fd;
  fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
              ai->ai_protocol);
  if (fd < 0) return -errno;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if ((flags & LMP_NET_REUSEPORT) &&
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) < 0)
    goto fail;
  if (ai->ai_family == AF_INET6)  /* "::" means IPv6 and IPv4 both */
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &(int){0}, sizeof(int));
  if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) goto fail;
  if (listen(fd, backlog > 0 ? backlog : 128) < 0) goto fail;
  return fd;
fail:
  { int e = -errno; lmp_fd_close(fd); return e; }
}

int lmp_net_tcp_listen(const char *host, int port, int backlog, int flags,
                       char *err, size_t errlen) {
  struct addrinfo *res, *ai;
  int fd = -EADDRNOTAVAIL;
  int rc = resolve(host, port, 1, &res, err, errlen);
  if (rc < 0) return rc;
  for (ai = res; ai; ai = ai->ai_next)
    if ((fd = tcp_listen_one(ai, backlog, flags)) >= 0) break;
  freeaddrinfo(res);
  if (fd < 0)
    set_err(err, errlen, "cannot listen on %s: %s", host ? host : "*",
            strerror(-fd));
  return fd;
}

static int fill_sun(struct sockaddr_un *sa, const char *path, char *err,
                    size_t errlen) {
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sa->sun_path) {
    set_err(err, errlen, "unix socket path too long: %s%s", path, "");
    return -ENAMETOOLONG;
  }
  strcpy(sa->sun_path, path);
  return 0;
}

int lmp_net_unix_listen(const char *path, int backlog, char *err,
                        size_t errlen) {
  struct sockaddr_un sa;
  struct stat st;
  int fd, e = fill_sun(&sa, path, err, errlen);
  if (e < 0) return e;
  if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -errno;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
      listen(fd, backlog > 0 ? backlog : 128) < 0) {
    e = -errno;
    set_err(err, errlen, "cannot listen on %s: %s", path, strerror(-e));
    lmp_fd_close(fd);
    return e;
  }
  return fd;
}

/* Non-blocking connect bounded by deadline. */
static int connect_one(int family, const struct sockaddr *sa, socklen_t len,
                       double deadline) {
  int fd, e = 0, w;
  socklen_t elen = sizeof e;
  fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -errno;
  if (connect(fd, sa, len) == 0) return fd;
  if (errno != EINPROGRESS && errno != EINTR) goto fail;
  w = lmp_fd_wait(fd, POLLOUT, deadline);
  if (w == 0) { errno = ETIMEDOUT; goto fail; }
  if (w < 0) { errno = -w; goto fail; }
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &elen) < 0) goto fail;
  if (e) { errno = e; goto fail; }
  return fd;
fail:
  e = -errno;
  lmp_fd_close(fd);
  return e;
}

int lmp_net_tcp_connect(const char *host, int port, double deadline,
                        char *err, size_t errlen) {
  struct addrinfo *res, *ai;
  int fd = -ECONNREFUSED;
  int rc = resolve(host, port, 0, &res, err, errlen);
  if (rc < 0) return rc;
  for (ai = res; ai; ai = ai->ai_next) {
    fd = connect_one(ai->ai_family, ai->ai_addr, ai->ai_addrlen, deadline);
    if (fd >= 0 || fd == -ETIMEDOUT) break;
  }
  freeaddrinfo(res);
  if (fd >= 0) lmp_net_set_nodelay(fd);
  else set_err(err, errlen, "cannot connect to %s: %s", host, strerror(-fd));
  return fd;
}

int lmp_net_unix_connect(const char *path, double deadline, char *err,
                         size_t errlen) {
  struct sockaddr_un sa;
  int fd, e = fill_sun(&sa, path, err, errlen);
  if (e < 0) return e;
  fd = connect_one(AF_UNIX, (struct sockaddr *)&sa, sizeof sa, deadline);
  if (fd < 0)
    set_err(err, errlen, "cannot connect to %s: %s", path, strerror(-fd));
  return fd;
}

static void format_addr(const struct sockaddr_storage *ss, char *out,
                        size_t outlen, int *port) {
  char host[INET6_ADDRSTRLEN] = "unix";
  int p = 0;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *s = (const void *)ss;
    inet_ntop(AF_INET, &s->sin_addr, host, sizeof host);
    p = ntohs(s->sin_port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *s = (const void *)ss;
    inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof host);
    p = ntohs(s->sin6_port);
  }
  if (out && outlen) snprintf(out, outlen, "%s", host);
  if (port) *port = p;
}

int lmp_net_accept(int lfd, char *peer, size_t peerlen) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int fd, port;
  char host[INET6_ADDRSTRLEN + 8];
  do fd = accept4(lfd, (struct sockaddr *)&ss, &len,
                  SOCK_CLOEXEC | SOCK_NONBLOCK);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  if (ss.ss_family != AF_UNIX) lmp_net_set_nodelay(fd);
  if (peer && peerlen) {
    format_addr(&ss, host, sizeof host, &port);
    if (ss.ss_family == AF_INET6) snprintf(peer, peerlen, "[%s]:%d", host, port);
    else if (ss.ss_family == AF_INET) snprintf(peer, peerlen, "%s:%d", host, port);
    else snprintf(peer, peerlen, "unix");
  }
  return fd;
}

int lmp_net_sockname(int fd, char *host, size_t hostlen, int *port) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) return -errno;
  format_addr(&ss, host, hostlen, port);
  return 0;
}

int lmp_net_is_loopback(const char *host) {
  struct in6_addr a6;
  struct in_addr a4;
  if (!host) return 0;
  if (strcmp(host, "localhost") == 0) return 1;
  if (inet_pton(AF_INET, host, &a4) == 1)
    return (ntohl(a4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, host, &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
  return 0;
}
