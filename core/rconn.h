/* rconn.h -- a Redis connection: URL parsing, connect with a deadline,
 * AUTH/SELECT, commands with deadlines, reconnect with backoff.
 *
 * hiredis is used as a protocol library only (redisFormatCommandArgv to
 * write commands, redisReader to parse replies); the socket is lmp's own
 * (core/net.h: close-on-exec from birth, non-blocking, TCP_NODELAY), so
 * every wait has a deadline and sees interruptions (intr.h) like the rest
 * of core/. rediss:// URLs run TLS (core/tls.h) over the same socket,
 * polled with the same deadlines. No Lua here.
 *
 * Functions return 0 (or a count) or -errno:
 *   -EINVAL bad URL, -ECONNREFUSED / -EHOSTUNREACH / other connect errors,
 *   -ETIMEDOUT deadline passed, -EACCES authentication refused (or a TLS
 *   certificate refused, either way),
 *   -EPIPE the server closed the connection, -EPROTO protocol error,
 *   -ENOTCONN not connected, -EINTR interrupted (intr.h), -ENOMEM.
 * Where err is given it receives a message that names the server. After
 * any error other than -ETIMEDOUT from lmp_rconn_read the connection is
 * closed (replies still owed would desynchronise it); callers reconnect. */
#ifndef LMP_RCONN_H
#define LMP_RCONN_H

#include <stddef.h>
#include <hiredis/hiredis.h>

#include "tls.h"

typedef struct lmp_rconn_url {
  char host[256];        /* TCP host, or "" for a Unix socket */
  char path[256];        /* Unix socket path (unix:// URLs) */
  char user[128];        /* ACL user ("" = default) */
  char password[256];    /* "" = no AUTH */
  int port;              /* default 6379 */
  int db;                /* default 0 */
  int tls;               /* 1 for rediss:// */
} lmp_rconn_url;

/* Parses redis://[[user]:password@]host[:port][/db] (host may be [v6]),
 * the same with rediss:// (TLS), or unix:///path/to/sock[?db=n]; user and
 * password may be %-encoded.
 * 0 or -EINVAL with a message in err. */
int lmp_rconn_parse_url(const char *url, lmp_rconn_url *u, char *err,
                        size_t errlen);

typedef struct lmp_rconn lmp_rconn;

/* A new, unconnected connection to u (copied). NULL when out of memory. */
lmp_rconn *lmp_rconn_new(const lmp_rconn_url *u);
/* Closes and frees c (NULL is fine). */
void lmp_rconn_free(lmp_rconn *c);

/* TLS settings for a rediss:// connection (without them: verification
 * against the system CA store and the URL's host). Files are loaded now,
 * once; reconnects reuse them. 0, -EINVAL (a redis:// URL, or a file that
 * cannot be used: message in err) or -ENOMEM. */
int lmp_rconn_set_tls(lmp_rconn *c, const lmp_tls_opts *o, char *err,
                      size_t errlen);

/* Connects, authenticates, selects the db and pings, all before deadline. */
int lmp_rconn_connect(lmp_rconn *c, double deadline, char *err, size_t errlen);

/* Connects again after a failure, retrying with exponential backoff
 * (50 ms doubling to 1 s, with jitter) until deadline. -EACCES and
 * -EINVAL end the retries at once (they will not heal by waiting). */
int lmp_rconn_reconnect(lmp_rconn *c, double deadline, char *err,
                        size_t errlen);

/* Closes the socket; buffered commands and owed replies are dropped. */
void lmp_rconn_disconnect(lmp_rconn *c);

/* 1 if connected. */
int lmp_rconn_connected(const lmp_rconn *c);
/* The socket (for poll), or -1. Over TLS, lmp_rconn_read leaves no
 * decrypted bytes inside OpenSSL, so poll on it is as good as on plain
 * TCP (a reply already read may still wait in the reply parser: read with
 * a deadline of 0 before waiting when replies are pipelined). */
int lmp_rconn_fd(const lmp_rconn *c);
/* Replies owed by the server for commands sent or buffered. */
int lmp_rconn_owed(const lmp_rconn *c);

/* Buffers one command (nothing is sent yet). */
int lmp_rconn_append(lmp_rconn *c, int argc, const char **argv,
                     const size_t *lens);
/* Sends every buffered command before deadline. */
int lmp_rconn_flush(lmp_rconn *c, double deadline);
/* Reads the next reply (flushing first); the caller frees it with
 * freeReplyObject. -ETIMEDOUT leaves the connection open (the reply may
 * still come: a later read gets it); a deadline of 0 means "only what
 * has arrived". */
int lmp_rconn_read(lmp_rconn *c, redisReply **out, double deadline);

/* The last error message (server text for -EACCES and protocol errors). */
const char *lmp_rconn_errstr(const lmp_rconn *c);

/* "host:port" or the socket path, for messages. */
const char *lmp_rconn_name(const lmp_rconn *c);

#endif
