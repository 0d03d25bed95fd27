/* tls.h -- TLS (OpenSSL) on one of lmp's own non-blocking sockets.
 *
 * The fd stays the caller's: it is created, polled and closed by core/net.h
 * and core/fd.h. TLS runs over a BIO whose reads and writes are
 * lmp_fd_read_some / lmp_fd_write_some (no SIGPIPE, EINTR retried), and
 * every wait is the caller's poll on the fd with its own deadline, so a
 * handshake or a record has the same deadlines and interruptions (intr.h)
 * as plain I/O. Used by core/rconn.c. No Lua here.
 *
 * Functions return 0 (or a count) or -errno:
 *   -EINVAL a file or option that cannot be used (message in err),
 *   -EACCES the peer's certificate was refused (not signed by a trusted CA,
 *           wrong name, expired...) or the peer refused ours,
 *   -EPROTO any other TLS failure, -EPIPE the peer closed the connection,
 *   -ETIMEDOUT the deadline passed, -EINTR interrupted, -ENOMEM,
 *   -EAGAIN (read/write only) would block: poll the fd for *want.
 * Nothing here sends close_notify, so a session is freed without writing
 * (a forked child's copy is dropped without disturbing the parent's). */
#ifndef LMP_TLS_H
#define LMP_TLS_H

#include <stddef.h>
#include <sys/types.h>

typedef struct lmp_tls_opts {
  const char *ca_file;      /* PEM CAs to trust; NULL: the system store */
  const char *cert_file;    /* PEM client certificate (chain); NULL: none */
  const char *key_file;     /* its private key; NULL: in cert_file */
  const char *server_name;  /* name to check (and SNI); NULL: the host */
  int verify;               /* 0: no certificate or name check at all */
} lmp_tls_opts;

/* Settings shared by the connections of one client: trusted CAs, client
 * certificate, what to check. Loaded once (files are read here). */
typedef struct lmp_tls_ctx lmp_tls_ctx;

/* A new context from o (copied). 0, -EINVAL with a message naming the
 * file and OpenSSL's reason, or -ENOMEM. */
int lmp_tls_ctx_new(const lmp_tls_opts *o, lmp_tls_ctx **out, char *err,
                    size_t errlen);
void lmp_tls_ctx_free(lmp_tls_ctx *x);

/* One TLS session on a connected fd. */
typedef struct lmp_tls lmp_tls;

/* Runs the handshake on fd (non-blocking, connected) before deadline,
 * checking the server's certificate against x's CAs and its name against
 * x's server_name or else host (an IP address is checked as an address).
 * On failure err says which check failed. fd is not closed either way. */
int lmp_tls_connect(lmp_tls_ctx *x, int fd, const char *host, double deadline,
                    lmp_tls **out, char *err, size_t errlen);

/* One read of what is there: bytes (> 0), 0 when the peer closed, -EAGAIN
 * with *want = POLLIN or POLLOUT, or -errno with a message in err. */
ssize_t lmp_tls_read(lmp_tls *t, void *buf, size_t n, short *want, char *err,
                     size_t errlen);
/* One write of as much as goes now (n > 0): bytes, -EAGAIN with *want,
 * or -errno. After -EAGAIN, retry with the same bytes. */
ssize_t lmp_tls_write(lmp_tls *t, const void *buf, size_t n, short *want,
                      char *err, size_t errlen);

/* Bytes already decrypted and held inside OpenSSL (poll on the fd cannot
 * see them). */
size_t lmp_tls_pending(const lmp_tls *t);

/* Frees the session without writing to the fd (the fd stays open). */
void lmp_tls_free(lmp_tls *t);

#endif
