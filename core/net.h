/* net.h -- TCP and Unix stream sockets, in the manner of Redis's anet.c.
 *
 * Every socket is created close-on-exec and non-blocking; TCP sockets get
 * TCP_NODELAY (lmp's frames are small and latency matters more than
 * Nagle's batching). Functions return an fd or 0 on success, -errno on
 * failure; where name resolution fails they return -EHOSTUNREACH and,
 * when err is not NULL, leave a message in err. */
#ifndef LMP_NET_H
#define LMP_NET_H

#include <stddef.h>

#define LMP_NET_REUSEPORT 1

/* Listens on host:port (host NULL or "" = all addresses, "::" works);
 * port 0 picks a free port (see lmp_net_sockname). */
int lmp_net_tcp_listen(const char *host, int port, int backlog, int flags,
                       char *err, size_t errlen);
/* Listens on a Unix socket path (an existing socket file is replaced). */
int lmp_net_unix_listen(const char *path, int backlog, char *err,
                        size_t errlen);

int lmp_net_tcp_connect(const char *host, int port, double deadline,
                        char *err, size_t errlen);
int lmp_net_unix_connect(const char *path, double deadline, char *err,
                         size_t errlen);

/* accept4 with close-on-exec and non-blocking: fd, -EAGAIN or -errno.
 * peer (may be NULL) receives "host:port", "[v6]:port" or "unix". */
int lmp_net_accept(int lfd, char *peer, size_t peerlen);

/* The bound address of a socket: host text and port (0 for Unix). */
int lmp_net_sockname(int fd, char *host, size_t hostlen, int *port);

int lmp_net_set_nodelay(int fd);

/* 1 if host names a loopback address (127/8, ::1, "localhost"). */
int lmp_net_is_loopback(const char *host);

#endif
