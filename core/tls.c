/* tls.c -- TLS over lmp's own non-blocking sockets with OpenSSL (tls.h). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "fd.h"
#include "tls.h"

struct lmp_tls_ctx {
  SSL_CTX *ctx;
  BIO_METHOD *bm;        /* reads and writes through core/fd.h */
  int verify;
  char server_name[256]; /* "" = the host connected to */
  char ca_file[256];     /* for messages; "" = the system store */
};

struct lmp_tls {
  SSL *ssl;              /* owns the BIO */
  int fd;
  int io_err;            /* -errno of the last failed read or write */
  int eof;               /* the peer closed the TCP stream */
  const lmp_tls_ctx *x;
  char name[256];        /* the name checked, for messages */
};

static int seterr(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int seterr(char *err, size_t errlen, int rc, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return rc;
}

/* OpenSSL's reason for the oldest queued error (the queue is cleared). */
static const char *ssl_reason(char *buf, size_t n) {
  unsigned long e = ERR_peek_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  if (r) snprintf(buf, n, "%s", r);
  else if (e) snprintf(buf, n, "OpenSSL error %lu", e);
  else snprintf(buf, n, "unknown TLS error");
  ERR_clear_error();
  return buf;
}

/* ---- the BIO: lmp_fd_read_some / lmp_fd_write_some on t->fd ----------- */

static int bio_read(BIO *b, char *buf, int n) {
  lmp_tls *t = BIO_get_data(b);
  ssize_t r;
  BIO_clear_retry_flags(b);
  if (n <= 0) return 0;
  r = lmp_fd_read_some(t->fd, buf, (size_t)n);
  if (r > 0) return (int)r;
  if (r == 0) { t->eof = 1; return 0; }
  if (r == -EAGAIN) { BIO_set_retry_read(b); return -1; }
  t->io_err = (int)r;
  return -1;
}

static int bio_write(BIO *b, const char *buf, int n) {
  lmp_tls *t = BIO_get_data(b);
  ssize_t r;
  BIO_clear_retry_flags(b);
  if (n <= 0) return 0;
  r = lmp_fd_write_some(t->fd, buf, (size_t)n);
  if (r >= 0) return (int)r;
  if (r == -EAGAIN) { BIO_set_retry_write(b); return -1; }
  t->io_err = (int)r;
  return -1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
  lmp_tls *t = BIO_get_data(b);
  (void)num;
  (void)ptr;
  if (cmd == BIO_CTRL_FLUSH) return 1;
  if (cmd == BIO_CTRL_EOF) return t ? t->eof : 0;
  return 0;
}

/* ---- context --------------------------------------------------------- */

void lmp_tls_ctx_free(lmp_tls_ctx *x) {
  if (!x) return;
  SSL_CTX_free(x->ctx);
  if (x->bm) BIO_meth_free(x->bm);
  free(x);
}

/* -EINVAL naming the file: its errno when unreadable, else OpenSSL's. */
static int file_err(char *err, size_t errlen, const char *what,
                    const char *path) {
  char why[256];
  if (access(path, R_OK) < 0) snprintf(why, sizeof why, "%s", strerror(errno));
  else ssl_reason(why, sizeof why);
  ERR_clear_error();
  return seterr(err, errlen, -EINVAL, "TLS: cannot use %s '%s': %s", what,
                path, why);
}

static int load_files(lmp_tls_ctx *x, const lmp_tls_opts *o, char *err,
                      size_t errlen) {
  const char *key = o->key_file ? o->key_file : o->cert_file;
  if (o->ca_file) {
    if (SSL_CTX_load_verify_locations(x->ctx, o->ca_file, NULL) != 1)
      return file_err(err, errlen, "ca_file", o->ca_file);
  } else if (SSL_CTX_set_default_verify_paths(x->ctx) != 1) {
    char why[256];
    return seterr(err, errlen, -EINVAL, "TLS: cannot load the system CA "
                  "store: %s", ssl_reason(why, sizeof why));
  }
  if (!o->cert_file) {
    if (o->key_file)
      return seterr(err, errlen, -EINVAL, "%s", "TLS: key_file given "
                    "without cert_file");
    return 0;
  }
  if (SSL_CTX_use_certificate_chain_file(x->ctx, o->cert_file) != 1)
    return file_err(err, errlen, "cert_file", o->cert_file);
  if (SSL_CTX_use_PrivateKey_file(x->ctx, key, SSL_FILETYPE_PEM) != 1)
    return file_err(err, errlen, "key_file", key);
  if (SSL_CTX_check_private_key(x->ctx) != 1) {
    ERR_clear_error();
    return seterr(err, errlen, -EINVAL, "TLS: key_file '%s' does not match "
                  "cert_file '%s'", key, o->cert_file);
  }
  return 0;
}

int lmp_tls_ctx_new(const lmp_tls_opts *o, lmp_tls_ctx **out, char *err,
                    size_t errlen) {
  lmp_tls_ctx *x = calloc(1, sizeof *x);
  int rc;
  *out = NULL;
  if (!x) return -ENOMEM;
  ERR_clear_error();
  x->verify = o->verify;
  if (o->server_name) snprintf(x->server_name, sizeof x->server_name, "%s",
                               o->server_name);
  if (o->ca_file) snprintf(x->ca_file, sizeof x->ca_file, "%s", o->ca_file);
  x->ctx = SSL_CTX_new(TLS_client_method());
  x->bm = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "lmp fd");
  if (!x->ctx || !x->bm || !BIO_meth_set_read(x->bm, bio_read) ||
      !BIO_meth_set_write(x->bm, bio_write) ||
      !BIO_meth_set_ctrl(x->bm, bio_ctrl)) {
    lmp_tls_ctx_free(x);
    ERR_clear_error();
    return -ENOMEM;
  }
  SSL_CTX_set_min_proto_version(x->ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(x->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                   SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
  /* RESP is framed: a close without close_notify is an ordinary EOF */
  SSL_CTX_set_options(x->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
  SSL_CTX_set_verify(x->ctx, o->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                     NULL);
  if ((rc = load_files(x, o, err, errlen)) < 0) {
    lmp_tls_ctx_free(x);
    return rc;
  }
  *out = x;
  return 0;
}

/* ---- errors ---------------------------------------------------------- */

/* The server's alerts that mean "your certificate is not accepted". */
static int cert_alert(unsigned long e) {
  int r = ERR_GET_REASON(e) - SSL_AD_REASON_OFFSET;
  return ERR_GET_LIB(e) == ERR_LIB_SSL &&
         (r == SSL_AD_BAD_CERTIFICATE || r == SSL_AD_UNSUPPORTED_CERTIFICATE ||
          r == SSL_AD_CERTIFICATE_REVOKED || r == SSL_AD_CERTIFICATE_EXPIRED ||
          r == SSL_AD_CERTIFICATE_UNKNOWN || r == SSL_AD_UNKNOWN_CA ||
          r == SSL_AD_ACCESS_DENIED
#ifdef SSL_AD_CERTIFICATE_REQUIRED
          || r == SSL_AD_CERTIFICATE_REQUIRED
#endif
          );
}

/* Why our check of the server's certificate failed. */
static int verify_err(lmp_tls *t, long v, char *err, size_t errlen) {
  const char *why = X509_verify_cert_error_string(v);
  ERR_clear_error();
  if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH)
    return seterr(err, errlen, -EACCES, "TLS certificate verify failed: %s "
                  "(the server's certificate does not name '%s')", why,
                  t->name);
  if (v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
      v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT ||
      v == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
      v == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
      v == X509_V_ERR_CERT_UNTRUSTED)
    return seterr(err, errlen, -EACCES, "TLS certificate verify failed: %s "
                  "(the server's certificate does not chain to %s%s%s)", why,
                  t->x->ca_file[0] ? "ca_file '" : "the system CA store",
                  t->x->ca_file, t->x->ca_file[0] ? "'" : "");
  return seterr(err, errlen, -EACCES, "TLS certificate verify failed: %s",
                why);
}

/* Maps SSL_get_error's answer for a call that returned r. */
static int io_error(lmp_tls *t, int r, short *want, char *err, size_t errlen) {
  int e = SSL_get_error(t->ssl, r);
  unsigned long q;
  char why[256];
  switch (e) {
  case SSL_ERROR_WANT_READ: *want = POLLIN; ERR_clear_error(); return -EAGAIN;
  case SSL_ERROR_WANT_WRITE: *want = POLLOUT; ERR_clear_error(); return -EAGAIN;
  case SSL_ERROR_ZERO_RETURN: ERR_clear_error(); return 0;
  case SSL_ERROR_SYSCALL:
    ERR_clear_error();
    if (t->io_err) return t->io_err == -ECONNRESET ? -EPIPE : t->io_err;
    return 0;                                  /* EOF */
  default: break;
  }
  if (t->x->verify && SSL_get_verify_result(t->ssl) != X509_V_OK)
    return verify_err(t, SSL_get_verify_result(t->ssl), err, errlen);
  q = ERR_peek_error();
  if (cert_alert(q))
    return seterr(err, errlen, -EACCES, "TLS: the server refused the "
                  "connection: %s (it may require a client certificate: "
                  "cert_file and key_file)", ssl_reason(why, sizeof why));
  if (!q && t->io_err) return t->io_err;
  return seterr(err, errlen, -EPROTO, "TLS error: %s",
                ssl_reason(why, sizeof why));
}

/* ---- sessions -------------------------------------------------------- */

static int is_ip(const char *s) {
  unsigned char buf[16];
  return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/* What the server's certificate must name, and the SNI. */
static int set_name(lmp_tls *t) {
  X509_VERIFY_PARAM *p = SSL_get0_param(t->ssl);
  int ip = is_ip(t->name);
  if (!ip && t->name[0] && !SSL_set_tlsext_host_name(t->ssl, t->name))
    return -1;
  if (!t->x->verify) return 0;
  if (ip) return X509_VERIFY_PARAM_set1_ip_asc(p, t->name) == 1 ? 0 : -1;
  X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  return SSL_set1_host(t->ssl, t->name) == 1 ? 0 : -1;
}

void lmp_tls_free(lmp_tls *t) {
  if (!t) return;
  SSL_free(t->ssl);                  /* frees the BIO; writes nothing */
  free(t);
}

static int new_session(lmp_tls_ctx *x, int fd, const char *host,
                       lmp_tls **out) {
  lmp_tls *t = calloc(1, sizeof *t);
  BIO *b;
  if (!t) return -ENOMEM;
  t->fd = fd;
  t->x = x;
  snprintf(t->name, sizeof t->name, "%s", x->server_name[0] ? x->server_name
           : host ? host : "");
  t->ssl = SSL_new(x->ctx);
  b = BIO_new(x->bm);
  if (!t->ssl || !b) {
    BIO_free(b);
    lmp_tls_free(t);
    ERR_clear_error();
    return -ENOMEM;
  }
  BIO_set_data(b, t);
  BIO_set_init(b, 1);
  SSL_set_bio(t->ssl, b, b);
  SSL_set_connect_state(t->ssl);
  *out = t;
  return 0;
}

int lmp_tls_connect(lmp_tls_ctx *x, int fd, const char *host, double deadline,
                    lmp_tls **out, char *err, size_t errlen) {
  lmp_tls *t = NULL;
  int rc;
  *out = NULL;
  ERR_clear_error();
  if ((rc = new_session(x, fd, host, &t)) < 0) return rc;
  if (set_name(t) < 0) {
    ERR_clear_error();
    rc = seterr(err, errlen, -EINVAL, "TLS: cannot check the name '%s'",
                t->name);
    goto fail;
  }
  for (;;) {
    short want = 0;
    int r = SSL_connect(t->ssl), w;
    if (r == 1) break;
    rc = io_error(t, r, &want, err, errlen);
    if (rc == 0) rc = seterr(err, errlen, -EPIPE, "%s", "the server closed "
                             "the connection during the TLS handshake (is "
                             "it a TLS port?)");
    if (rc != -EAGAIN) goto fail;
    w = lmp_fd_wait(fd, want, deadline);
    if (w == 0) rc = seterr(err, errlen, -ETIMEDOUT, "%s", "no TLS handshake "
                            "in time (is it a TLS port?)");
    if (w <= 0) { rc = w < 0 ? w : rc; goto fail; }
  }
  *out = t;
  return 0;
fail:
  lmp_tls_free(t);
  return rc;
}

ssize_t lmp_tls_read(lmp_tls *t, void *buf, size_t n, short *want, char *err,
                     size_t errlen) {
  int r;
  ERR_clear_error();
  t->io_err = 0;
  r = SSL_read(t->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
  if (r > 0) return r;
  return io_error(t, r, want, err, errlen);
}

ssize_t lmp_tls_write(lmp_tls *t, const void *buf, size_t n, short *want,
                      char *err, size_t errlen) {
  int r;
  ERR_clear_error();
  t->io_err = 0;
  r = SSL_write(t->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
  if (r > 0) return r;
  r = io_error(t, r, want, err, errlen);
  if (r == 0 || r == -EPIPE) {
    /* the server may have said why it closed (TLS 1.3 checks a client
     * certificate after our side of the handshake ends): read its alert */
    char alert[512];
    short w;
    int rr;
    ERR_clear_error();
    t->io_err = 0;
    rr = SSL_read(t->ssl, alert, sizeof alert);
    if (rr <= 0) {
      rr = io_error(t, rr, &w, err, errlen);
      if (rr == -EACCES || rr == -EPROTO) return rr;
    }
    ERR_clear_error();
    return -EPIPE;
  }
  return r;
}

size_t lmp_tls_pending(const lmp_tls *t) {
  int n = SSL_pending(t->ssl);
  return n > 0 ? (size_t)n : 0;
}
