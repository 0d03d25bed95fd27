/* rconn.c -- a Redis connection over lmp's own socket (see rconn.h). */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "fd.h"
#include "intr.h"
#include "net.h"
#include "rconn.h"
#include "tls.h"

struct lmp_rconn {
  lmp_rconn_url url;
  int fd;
  lmp_tls_ctx *tlsx;     /* rediss://: settings, loaded once */
  lmp_tls *tls;          /* rediss://: the session while connected */
  redisReader *reader;
  char *out;             /* buffered commands not yet written */
  size_t outlen, outcap, outpos;
  int owed;              /* replies still to read */
  unsigned seed;         /* backoff jitter */
  char name[300];
  char errstr[1024];
};

/* ---- URL ------------------------------------------------------------- */

static int seterr(char *err, size_t errlen, int rc, const char *fmt,
                  const char *arg) {
  if (err && errlen) snprintf(err, errlen, fmt, arg);
  return rc;
}

/* Copies [s, s+n) into out, %-decoding; -1 if it does not fit or is bad. */
static int copy_decoded(char *out, size_t cap, const char *s, size_t n) {
  size_t i, j = 0;
  for (i = 0; i < n; i++) {
    int c = (unsigned char)s[i];
    if (c == '%') {
      char hex[3] = {0, 0, 0};
      if (i + 2 >= n) return -1;
      hex[0] = s[i + 1];
      hex[1] = s[i + 2];
      if (!isxdigit((unsigned char)hex[0]) || !isxdigit((unsigned char)hex[1]))
        return -1;
      c = (int)strtol(hex, NULL, 16);
      i += 2;
    }
    if (j + 1 >= cap) return -1;
    out[j++] = (char)c;
  }
  out[j] = '\0';
  return 0;
}

static int parse_int(const char *s, size_t n, int lo, int hi, int *out) {
  long v = 0;
  size_t i;
  if (n == 0 || n > 9) return -1;
  for (i = 0; i < n; i++) {
    if (!isdigit((unsigned char)s[i])) return -1;
    v = v * 10 + (s[i] - '0');
  }
  if (v < lo || v > hi) return -1;
  *out = (int)v;
  return 0;
}

static int parse_unix(const char *rest, lmp_rconn_url *u, char *err,
                      size_t errlen, const char *url) {
  const char *q = strchr(rest, '?');
  size_t n = q ? (size_t)(q - rest) : strlen(rest);
  if (n == 0 || rest[0] != '/' || copy_decoded(u->path, sizeof u->path, rest, n))
    return seterr(err, errlen, -EINVAL, "bad Redis URL '%s': expected "
                  "unix:///path/to/socket[?db=n]", url);
  if (q) {
    if (strncmp(q, "?db=", 4) ||
        parse_int(q + 4, strlen(q + 4), 0, 1 << 20, &u->db))
      return seterr(err, errlen, -EINVAL, "bad Redis URL '%s': the only "
                    "query is ?db=<number>", url);
  }
  return 0;
}

static int parse_hostport(const char *s, size_t n, lmp_rconn_url *u) {
  const char *colon;
  size_t hn;
  if (n > 0 && s[0] == '[') {                 /* [v6]:port */
    const char *close = memchr(s, ']', n);
    if (!close) return -1;
    hn = (size_t)(close - s - 1);
    if (hn == 0 || hn >= sizeof u->host) return -1;
    memcpy(u->host, s + 1, hn);
    u->host[hn] = '\0';
    colon = close + 1 < s + n ? close + 1 : NULL;
    if (colon && *colon != ':') return -1;
  } else {
    colon = memchr(s, ':', n);
    hn = colon ? (size_t)(colon - s) : n;
    if (hn == 0 || hn >= sizeof u->host) return -1;
    memcpy(u->host, s, hn);
    u->host[hn] = '\0';
  }
  if (colon && parse_int(colon + 1, (size_t)(s + n - colon - 1), 1, 65535,
                         &u->port))
    return -1;
  return 0;
}

int lmp_rconn_parse_url(const char *url, lmp_rconn_url *u, char *err,
                        size_t errlen) {
  const char *p, *at, *slash, *end;
  memset(u, 0, sizeof *u);
  u->port = 6379;
  if (!url) return seterr(err, errlen, -EINVAL, "%s", "no Redis URL");
  if (strncmp(url, "unix://", 7) == 0)
    return parse_unix(url + 7, u, err, errlen, url);
  if (strncmp(url, "rediss://", 9) == 0) u->tls = 1;
  else if (strncmp(url, "redis://", 8) != 0)
    return seterr(err, errlen, -EINVAL, "bad Redis URL '%s': expected "
                  "redis[s]://[:password@]host[:port][/db]", url);
  p = url + (u->tls ? 9 : 8);
  end = p + strlen(p);
  at = strrchr(p, '@');
  if (at) {
    const char *colon = memchr(p, ':', (size_t)(at - p));
    if (!colon ||
        copy_decoded(u->user, sizeof u->user, p, (size_t)(colon - p)) ||
        copy_decoded(u->password, sizeof u->password, colon + 1,
                     (size_t)(at - colon - 1)))
      return seterr(err, errlen, -EINVAL, "bad Redis URL '%s': credentials "
                    "must be [user]:password@", url);
    p = at + 1;
  }
  slash = strchr(p, '/');
  if (parse_hostport(p, slash ? (size_t)(slash - p) : (size_t)(end - p), u))
    return seterr(err, errlen, -EINVAL, "bad Redis URL '%s': bad host or "
                  "port", url);
  if (slash && slash[1] &&
      parse_int(slash + 1, strlen(slash + 1), 0, 1 << 20, &u->db))
    return seterr(err, errlen, -EINVAL, "bad Redis URL '%s': the path must "
                  "be a database number", url);
  return 0;
}

/* ---- life cycle ------------------------------------------------------ */

lmp_rconn *lmp_rconn_new(const lmp_rconn_url *u) {
  lmp_rconn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->url = *u;
  c->fd = -1;
  c->seed = (unsigned)getpid() ^ (unsigned)(lmp_clock_now() * 1e6);
  if (u->host[0])
    snprintf(c->name, sizeof c->name, strchr(u->host, ':') ? "[%s]:%d"
             : "%s:%d", u->host, u->port);
  else
    snprintf(c->name, sizeof c->name, "%s", u->path);
  return c;
}

void lmp_rconn_disconnect(lmp_rconn *c) {
  if (!c) return;
  lmp_tls_free(c->tls);          /* sends nothing: safe in a fork child */
  c->tls = NULL;
  lmp_fd_close(c->fd);
  c->fd = -1;
  if (c->reader) redisReaderFree(c->reader);
  c->reader = NULL;
  c->outlen = c->outpos = 0;
  c->owed = 0;
}

void lmp_rconn_free(lmp_rconn *c) {
  if (!c) return;
  lmp_rconn_disconnect(c);
  lmp_tls_ctx_free(c->tlsx);
  free(c->out);
  free(c);
}

int lmp_rconn_set_tls(lmp_rconn *c, const lmp_tls_opts *o, char *err,
                      size_t errlen) {
  lmp_tls_ctx *x = NULL;
  int rc;
  if (!c->url.tls)
    return seterr(err, errlen, -EINVAL, "TLS options given for Redis at %s,"
                  " whose URL is redis://: use rediss:// for TLS", c->name);
  if ((rc = lmp_tls_ctx_new(o, &x, err, errlen)) < 0) return rc;
  lmp_tls_ctx_free(c->tlsx);
  c->tlsx = x;
  return 0;
}

int lmp_rconn_connected(const lmp_rconn *c) { return c->fd >= 0; }
int lmp_rconn_fd(const lmp_rconn *c) { return c->fd; }
int lmp_rconn_owed(const lmp_rconn *c) { return c->owed; }
const char *lmp_rconn_errstr(const lmp_rconn *c) { return c->errstr; }
const char *lmp_rconn_name(const lmp_rconn *c) { return c->name; }

/* ---- I/O: plain or TLS ------------------------------------------------ */

/* A TLS failure's message, naming the server. */
static ssize_t tls_failed(lmp_rconn *c, ssize_t r, const char *msg) {
  if (r == -EACCES || r == -EPROTO)
    snprintf(c->errstr, sizeof c->errstr, "Redis at %s: %s", c->name, msg);
  return r;
}

/* One write: bytes, -EAGAIN (poll for *want), -EPIPE or -errno. */
static ssize_t io_write(lmp_rconn *c, const char *p, size_t n, short *want) {
  char msg[512];
  *want = POLLOUT;
  if (!c->tls) return lmp_fd_write_some(c->fd, p, n);
  return tls_failed(c, lmp_tls_write(c->tls, p, n, want, msg, sizeof msg),
                    msg);
}

/* One read: bytes, 0 at EOF, -EAGAIN (poll for *want) or -errno. */
static ssize_t io_read(lmp_rconn *c, char *p, size_t n, short *want) {
  char msg[512];
  *want = POLLIN;
  if (!c->tls) return lmp_fd_read_some(c->fd, p, n);
  return tls_failed(c, lmp_tls_read(c->tls, p, n, want, msg, sizeof msg),
                    msg);
}

/* Moves what OpenSSL has decrypted but not handed over into the reader,
 * so that nothing readable hides from a poll on the fd. */
static void drain_tls(lmp_rconn *c, char *buf, size_t cap) {
  short want;
  while (c->tls && lmp_tls_pending(c->tls) > 0) {
    ssize_t r = io_read(c, buf, cap, &want);
    if (r <= 0 || redisReaderFeed(c->reader, buf, (size_t)r) != REDIS_OK)
      return;
  }
}

/* ---- commands -------------------------------------------------------- */

static int fail(lmp_rconn *c, int rc, const char *what) {
  if (rc == -ETIMEDOUT)
    snprintf(c->errstr, sizeof c->errstr, "%s: no answer from Redis at %s "
             "in time", what, c->name);
  else if (rc == -EPIPE || rc == -ECONNRESET)
    snprintf(c->errstr, sizeof c->errstr, "%s: Redis at %s closed the "
             "connection", what, c->name);
  else if (rc != -EPROTO && rc != -EACCES)
    snprintf(c->errstr, sizeof c->errstr, "%s: %s (Redis at %s)", what,
             strerror(-rc), c->name);
  lmp_rconn_disconnect(c);
  return rc == -ECONNRESET ? -EPIPE : rc;
}

int lmp_rconn_append(lmp_rconn *c, int argc, const char **argv,
                     const size_t *lens) {
  char *cmd = NULL;
  int n;
  if (c->fd < 0) return -ENOTCONN;
  n = redisFormatCommandArgv(&cmd, argc, argv, lens);
  if (n < 0 || !cmd) return -ENOMEM;
  if (c->outlen + (size_t)n > c->outcap) {
    size_t cap = c->outcap ? c->outcap : 4096;
    char *p;
    while (cap < c->outlen + (size_t)n) cap *= 2;
    p = realloc(c->out, cap);
    if (!p) { redisFreeCommand(cmd); return -ENOMEM; }
    c->out = p;
    c->outcap = cap;
  }
  memcpy(c->out + c->outlen, cmd, (size_t)n);
  c->outlen += (size_t)n;
  c->owed++;
  redisFreeCommand(cmd);
  return 0;
}

int lmp_rconn_flush(lmp_rconn *c, double deadline) {
  if (c->fd < 0) return -ENOTCONN;
  while (c->outpos < c->outlen) {
    short want;
    ssize_t r = io_write(c, c->out + c->outpos, c->outlen - c->outpos, &want);
    if (r == -EAGAIN) {
      int w = lmp_fd_wait(c->fd, want, deadline);
      if (w == 0) return fail(c, -ETIMEDOUT, "send");
      if (w < 0) return fail(c, w, "send");
      continue;
    }
    if (r < 0) return fail(c, (int)r, "send");
    c->outpos += (size_t)r;
  }
  c->outlen = c->outpos = 0;
  return 0;
}

static int take_reply(lmp_rconn *c, redisReply **out) {
  void *reply = NULL;
  if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
    snprintf(c->errstr, sizeof c->errstr, "protocol error from Redis at %s: "
             "%s", c->name, c->reader->errstr);
    return fail(c, -EPROTO, "read");
  }
  if (!reply) return 0;
  c->owed--;
  *out = reply;
  return 1;
}

int lmp_rconn_read(lmp_rconn *c, redisReply **out, double deadline) {
  char buf[16384];
  int rc;
  *out = NULL;
  if (c->fd < 0) return -ENOTCONN;
  if ((rc = lmp_rconn_flush(c, deadline)) < 0) return rc;
  for (;;) {
    ssize_t r;
    short want;
    if ((rc = take_reply(c, out)) > 0) drain_tls(c, buf, sizeof buf);
    if (rc != 0) return rc < 0 ? rc : 0;
    r = io_read(c, buf, sizeof buf, &want);
    if (r == -EAGAIN) {
      int w = deadline == 0 ? 0 : lmp_fd_wait(c->fd, want, deadline);
      if (w == 0) {
        snprintf(c->errstr, sizeof c->errstr, "no answer from Redis at %s "
                 "in time", c->name);
        return -ETIMEDOUT;
      }
      if (w < 0) return fail(c, w, "read");
      continue;
    }
    if (r == 0) return fail(c, -EPIPE, "read");
    if (r < 0) return fail(c, (int)r, "read");
    if (redisReaderFeed(c->reader, buf, (size_t)r) != REDIS_OK)
      return fail(c, -ENOMEM, "read");
  }
}

/* ---- connect --------------------------------------------------------- */

/* Runs one command during the handshake; an error reply is -EACCES for
 * AUTH/NOAUTH/WRONGPASS and -EPROTO otherwise, with the server's text. */
static int handshake_cmd(lmp_rconn *c, int argc, const char **argv,
                         double deadline) {
  redisReply *r = NULL;
  int rc = lmp_rconn_append(c, argc, argv, NULL);
  if (rc == 0) rc = lmp_rconn_read(c, &r, deadline);
  if (rc == -ETIMEDOUT) return fail(c, rc, "connect");
  if (rc < 0) return rc;
  if (r->type == REDIS_REPLY_ERROR) {
    int auth = strncmp(r->str, "NOAUTH", 6) == 0 ||
               strncmp(r->str, "WRONGPASS", 9) == 0 ||
               strstr(r->str, "password") != NULL || strcmp(argv[0], "AUTH") == 0;
    snprintf(c->errstr, sizeof c->errstr, "Redis at %s refused %s: %s",
             c->name, auth ? "the credentials" : argv[0], r->str);
    freeReplyObject(r);
    return fail(c, auth ? -EACCES : -EPROTO, argv[0]);
  }
  freeReplyObject(r);
  return 0;
}

/* The TLS handshake on the connected socket (a new one at each connect). */
static int start_tls(lmp_rconn *c, double deadline) {
  char msg[600] = "";
  int rc = 0;
  if (!c->tlsx) {                      /* rediss:// without options */
    lmp_tls_opts o;
    memset(&o, 0, sizeof o);
    o.verify = 1;
    rc = lmp_tls_ctx_new(&o, &c->tlsx, msg, sizeof msg);
  }
  if (rc == 0)
    rc = lmp_tls_connect(c->tlsx, c->fd, c->url.host, deadline, &c->tls, msg,
                         sizeof msg);
  if (rc == 0) return 0;
  snprintf(c->errstr, sizeof c->errstr, "cannot connect to Redis at %s over "
           "TLS: %s", c->name, msg[0] ? msg : strerror(-rc));
  lmp_rconn_disconnect(c);
  return rc == -ECONNRESET ? -EPIPE : rc;
}

int lmp_rconn_connect(lmp_rconn *c, double deadline, char *err,
                      size_t errlen) {
  char dbtext[16];
  const char *argv[3];
  int fd, rc = 0;
  lmp_rconn_disconnect(c);
  c->errstr[0] = '\0';
  if (c->url.host[0])
    fd = lmp_net_tcp_connect(c->url.host, c->url.port, deadline, NULL, 0);
  else
    fd = lmp_net_unix_connect(c->url.path, deadline, NULL, 0);
  if (fd < 0) {
    snprintf(c->errstr, sizeof c->errstr, "cannot connect to Redis at %s: %s",
             c->name, fd == -ETIMEDOUT ? "timed out" : strerror(-fd));
    rc = fd;
    goto done;
  }
  c->fd = fd;
  if (c->url.tls && (rc = start_tls(c, deadline)) < 0) goto done;
  c->reader = redisReaderCreate();
  if (!c->reader) { rc = fail(c, -ENOMEM, "connect"); goto done; }
  c->reader->maxbuf = 0;      /* keep the buffer allocated: fewer reallocs */
  if (c->url.password[0]) {
    argv[0] = "AUTH";
    argv[1] = c->url.user[0] ? c->url.user : c->url.password;
    argv[2] = c->url.password;
    if ((rc = handshake_cmd(c, c->url.user[0] ? 3 : 2, argv, deadline)) < 0)
      goto done;
  }
  if (c->url.db != 0) {
    snprintf(dbtext, sizeof dbtext, "%d", c->url.db);
    argv[0] = "SELECT";
    argv[1] = dbtext;
    if ((rc = handshake_cmd(c, 2, argv, deadline)) < 0) goto done;
  }
  argv[0] = "PING";
  rc = handshake_cmd(c, 1, argv, deadline);
done:
  if (rc < 0 && err && errlen) snprintf(err, errlen, "%s", c->errstr);
  return rc;
}

int lmp_rconn_reconnect(lmp_rconn *c, double deadline, char *err,
                        size_t errlen) {
  double delay = 0.05;
  for (;;) {
    int rc = lmp_rconn_connect(c, deadline, err, errlen);
    double left, jitter;
    if (rc == 0 || rc == -EACCES || rc == -EINVAL || rc == -EINTR) return rc;
    left = deadline < 0 ? delay : deadline - lmp_clock_now();
    if (left <= 0) return rc;
    jitter = delay * (0.5 + (rand_r(&c->seed) % 1000) / 2000.0);
    if (lmp_clock_sleep(jitter < left ? jitter : left) == -EINTR)
      return -EINTR;
    if (deadline >= 0 && lmp_deadline_passed(deadline)) return rc;
    delay = delay * 2 > 1.0 ? 1.0 : delay * 2;
  }
}
