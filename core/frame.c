/* frame.c -- length-prefixed frames (see frame.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "clock.h"
#include "fd.h"
#include "frame.h"

#define MAGIC0 'L'
#define MAGIC1 'M'

void lmp_frame_hdr_encode(unsigned char out[LMP_FRAME_HDR_SIZE], size_t len,
                          int type, int flags) {
  out[0] = (unsigned char)(len & 0xff);
  out[1] = (unsigned char)((len >> 8) & 0xff);
  out[2] = (unsigned char)((len >> 16) & 0xff);
  out[3] = (unsigned char)((len >> 24) & 0xff);
  out[4] = (unsigned char)type;
  out[5] = (unsigned char)flags;
  out[6] = MAGIC0;
  out[7] = MAGIC1;
}

int lmp_frame_hdr_decode(const unsigned char in[LMP_FRAME_HDR_SIZE],
                         lmp_frame_hdr *h, size_t maxlen) {
  uint32_t len = (uint32_t)in[0] | (uint32_t)in[1] << 8 |
                 (uint32_t)in[2] << 16 | (uint32_t)in[3] << 24;
  if (in[6] != MAGIC0 || in[7] != MAGIC1) return -EPROTO;
  if (len > maxlen) return -EMSGSIZE;
  h->len = len;
  h->type = in[4];
  h->flags = in[5];
  return 0;
}

/* writev the header and payload; on a short write fall back to
 * lmp_fd_write_full for the rest. */
int lmp_frame_send(int fd, int type, int flags, const void *payload,
                   size_t len, double deadline) {
  unsigned char hdr[LMP_FRAME_HDR_SIZE];
  struct iovec iov[2];
  struct msghdr msg;
  ssize_t r;
  size_t total = LMP_FRAME_HDR_SIZE + len;
  if (len > 0xffffffffu) return -EMSGSIZE;
  lmp_frame_hdr_encode(hdr, len, type, flags);
  iov[0].iov_base = hdr;
  iov[0].iov_len = LMP_FRAME_HDR_SIZE;
  iov[1].iov_base = (void *)payload;
  iov[1].iov_len = len;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = len ? 2 : 1;
  do r = sendmsg(fd, &msg, MSG_NOSIGNAL); while (r < 0 && errno == EINTR);
  if (r < 0 && errno == ENOTSOCK && total <= PIPE_BUF) {
    /* A pipe: one write of at most PIPE_BUF bytes is atomic, so a reader
     * woken by the header never waits for the rest of a small frame. */
    char buf[PIPE_BUF];
    memcpy(buf, hdr, LMP_FRAME_HDR_SIZE);
    if (len) memcpy(buf + LMP_FRAME_HDR_SIZE, payload, len);
    return lmp_fd_write_full(fd, buf, total, deadline);
  }
  if (r < 0 && errno == ENOTSOCK) r = 0;           /* a pipe: write below */
  else if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    return errno == ECONNRESET ? -EPIPE : -errno;
  if (r < 0) r = 0;
  if ((size_t)r == total) return 0;
  if ((size_t)r < LMP_FRAME_HDR_SIZE) {
    int e = lmp_fd_write_full(fd, hdr + r, LMP_FRAME_HDR_SIZE - (size_t)r,
                              deadline);
    if (e < 0) return e;
    r = LMP_FRAME_HDR_SIZE;
  }
  return lmp_fd_write_full(fd, (const char *)payload +
                           ((size_t)r - LMP_FRAME_HDR_SIZE),
                           total - (size_t)r, deadline);
}

int lmp_frame_recv(int fd, lmp_frame_hdr *h, char **payload, size_t maxlen,
                   double deadline, int *partial) {
  unsigned char hdr[LMP_FRAME_HDR_SIZE];
  ssize_t got;
  int e;
  *payload = NULL;
  *partial = 0;
  double spin_until = lmp_clock_now() + LMP_FRAME_SPIN_SECS;
  if (deadline != LMP_FOREVER && deadline < spin_until) spin_until = deadline;
  /* The first byte decides whether a timeout leaves the channel intact. */
  for (;;) {
    got = lmp_fd_read_some(fd, hdr, LMP_FRAME_HDR_SIZE);
    if (got > 0) break;
    if (got == 0) return -EPIPE;
    if (got == -ECONNRESET) return -EPIPE;
    if (got != -EAGAIN) return (int)got;
    /* A reply often comes within microseconds: polling briefly first
     * saves sleeping and being woken, which costs most on a VM. */
    if (lmp_clock_now() < spin_until) {
      sched_yield();                 /* a busy machine runs the peer instead */
      continue;
    }
    e = lmp_fd_wait(fd, POLLIN, deadline);
    if (e == 0) return -ETIMEDOUT;
    if (e < 0) return e;
  }
  *partial = 1;
  if ((size_t)got < LMP_FRAME_HDR_SIZE) {
    e = lmp_fd_read_full(fd, hdr + got, LMP_FRAME_HDR_SIZE - (size_t)got,
                         deadline);
    if (e < 0) return e;
  }
  if ((e = lmp_frame_hdr_decode(hdr, h, maxlen)) < 0) return e;
  if (h->len == 0) { *partial = 0; return 0; }
  if (!(*payload = malloc((size_t)h->len + 1))) return -ENOMEM;
  e = lmp_fd_read_full(fd, *payload, h->len, deadline);
  if (e < 0) { free(*payload); *payload = NULL; return e; }
  (*payload)[h->len] = '\0';
  *partial = 0;
  return 0;
}

/* ---- buffers shared by reader and writer ------------------------------ */

/* Makes room for n more bytes after end, compacting or growing. */
static int buf_reserve(char **buf, size_t *cap, size_t *start, size_t *end,
                       size_t n) {
  size_t used = *end - *start, want;
  char *nb;
  if (*cap - *end >= n) return 0;
  if (*start > 0) {
    memmove(*buf, *buf + *start, used);
    *start = 0;
    *end = used;
    if (*cap - *end >= n) return 0;
  }
  want = *cap ? *cap : 4096;
  while (want - used < n) {
    if (want > ((size_t)-1) / 2) return -ENOMEM;
    want *= 2;
  }
  if (!(nb = realloc(*buf, want))) return -ENOMEM;
  *buf = nb;
  *cap = want;
  return 0;
}

/* ---- reader ------------------------------------------------------------ */

void lmp_frame_reader_init(lmp_frame_reader *r, size_t maxlen) {
  memset(r, 0, sizeof *r);
  r->maxlen = maxlen ? maxlen : LMP_FRAME_MAX_DEFAULT;
}

void lmp_frame_reader_free(lmp_frame_reader *r) {
  free(r->buf);
  memset(r, 0, sizeof *r);
}

long lmp_frame_reader_fill(lmp_frame_reader *r, int fd) {
  ssize_t got;
  int e = buf_reserve(&r->buf, &r->cap, &r->start, &r->end, 65536);
  if (e < 0) return e;
  got = lmp_fd_read_some(fd, r->buf + r->end, r->cap - r->end);
  if (got > 0) r->end += (size_t)got;
  return (long)got;
}

int lmp_frame_reader_next(lmp_frame_reader *r, lmp_frame_hdr *h,
                          const char **payload) {
  size_t avail = r->end - r->start;
  int e;
  if (avail < LMP_FRAME_HDR_SIZE) return 0;
  e = lmp_frame_hdr_decode((unsigned char *)r->buf + r->start, h, r->maxlen);
  if (e < 0) return e;
  if (avail - LMP_FRAME_HDR_SIZE < h->len) {
    /* Grow once for the whole frame so fill() reads it in few calls. */
    size_t need = LMP_FRAME_HDR_SIZE + h->len - avail;
    return buf_reserve(&r->buf, &r->cap, &r->start, &r->end, need);
  }
  *payload = r->buf + r->start + LMP_FRAME_HDR_SIZE;
  r->start += LMP_FRAME_HDR_SIZE + h->len;
  if (r->start == r->end) r->start = r->end = 0;  /* payload stays valid */
  return 1;
}

size_t lmp_frame_reader_pending(const lmp_frame_reader *r) {
  return r->end - r->start;
}

/* ---- writer ------------------------------------------------------------ */

void lmp_frame_writer_init(lmp_frame_writer *w) { memset(w, 0, sizeof *w); }

void lmp_frame_writer_free(lmp_frame_writer *w) {
  free(w->buf);
  memset(w, 0, sizeof *w);
}

int lmp_frame_writer_push(lmp_frame_writer *w, int type, int flags,
                          const void *payload, size_t len) {
  int e;
  if (len > 0xffffffffu) return -EMSGSIZE;
  e = buf_reserve(&w->buf, &w->cap, &w->start, &w->end,
                  LMP_FRAME_HDR_SIZE + len);
  if (e < 0) return e;
  lmp_frame_hdr_encode((unsigned char *)w->buf + w->end, len, type, flags);
  if (len) memcpy(w->buf + w->end + LMP_FRAME_HDR_SIZE, payload, len);
  w->end += LMP_FRAME_HDR_SIZE + len;
  return 0;
}

long lmp_frame_writer_flush(lmp_frame_writer *w, int fd) {
  while (w->start < w->end) {
    ssize_t r = lmp_fd_write_some(fd, w->buf + w->start, w->end - w->start);
    if (r == -EAGAIN) break;
    if (r < 0) return (long)r;
    w->start += (size_t)r;
  }
  if (w->start == w->end) w->start = w->end = 0;
  return (long)(w->end - w->start);
}

size_t lmp_frame_writer_pending(const lmp_frame_writer *w) {
  return w->end - w->start;
}
