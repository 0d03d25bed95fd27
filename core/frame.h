/* frame.h -- length-prefixed frames, the unit every lmp channel carries.
 *
 * Wire format: an 8-byte header, then `len` payload bytes.
 *   bytes 0-3  payload length, unsigned 32-bit little-endian
 *   byte  4    type  (meaning chosen by the protocol on that channel)
 *   byte  5    flags (likewise)
 *   bytes 6-7  magic "LM": garbage on a channel is refused at once
 * A reader accepts a frame only when all of it has arrived, and refuses a
 * header announcing more than its limit before allocating anything.
 * One frame is written by one writer: callers that share an fd between
 * writers must serialise whole frames themselves.
 *
 * Common frame types; protocols number theirs from LMP_FRAME_USER up. */
#ifndef LMP_FRAME_H
#define LMP_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define LMP_FRAME_HDR_SIZE 8
#define LMP_FRAME_MAX_DEFAULT ((size_t)1 << 30)      /* 1 GiB */
#define LMP_FRAME_SPIN_SECS 50e-6  /* lmp_frame_recv polls this long first */

enum {
  LMP_FRAME_PICKLE = 1,   /* payload is an lmp.pickle string */
  LMP_FRAME_BYTES = 2,    /* raw bytes (send_bytes) */
  LMP_FRAME_STRING = 3,   /* a Lua string sent by value, not pickled */
  LMP_FRAME_USER = 16
};

typedef struct lmp_frame_hdr {
  uint32_t len;
  uint8_t type;
  uint8_t flags;
} lmp_frame_hdr;

void lmp_frame_hdr_encode(unsigned char out[LMP_FRAME_HDR_SIZE], size_t len,
                          int type, int flags);

/* 0, -EPROTO (bad magic) or -EMSGSIZE (len over maxlen). */
int lmp_frame_hdr_decode(const unsigned char in[LMP_FRAME_HDR_SIZE],
                         lmp_frame_hdr *h, size_t maxlen);

/* Blocking send of one whole frame (header and payload in one writev when
 * the fd takes it). 0, -EMSGSIZE, -ETIMEDOUT, -EPIPE or -errno. After a
 * timeout mid-frame the channel is unusable: callers must close it. */
int lmp_frame_send(int fd, int type, int flags, const void *payload,
                   size_t len, double deadline);

/* Blocking receive of one frame (trying for LMP_FRAME_SPIN_SECS before it
 * sleeps in poll, never past the deadline). On success *payload is malloc'd (NUL
 * terminated, caller frees; NULL when len is 0). Errors as above plus
 * -EPROTO/-EMSGSIZE from the header; -ETIMEDOUT before the first byte
 * leaves the channel usable, after it the channel must be closed
 * (*partial is set to 1 then). */
int lmp_frame_recv(int fd, lmp_frame_hdr *h, char **payload, size_t maxlen,
                   double deadline, int *partial);

/* Incremental reader for event loops: fill from a non-blocking fd, then
 * take whole frames. */
typedef struct lmp_frame_reader {
  char *buf;
  size_t cap, start, end;
  size_t maxlen;
} lmp_frame_reader;

void lmp_frame_reader_init(lmp_frame_reader *r, size_t maxlen);
void lmp_frame_reader_free(lmp_frame_reader *r);
/* Reads what the fd has: bytes read (>0), 0 at EOF, -EAGAIN, -errno. */
long lmp_frame_reader_fill(lmp_frame_reader *r, int fd);
/* 1 and a frame (payload valid until the next call), 0 if incomplete,
 * -EPROTO or -EMSGSIZE for a bad header. */
int lmp_frame_reader_next(lmp_frame_reader *r, lmp_frame_hdr *h,
                          const char **payload);
/* Bytes buffered but not yet returned as frames. */
size_t lmp_frame_reader_pending(const lmp_frame_reader *r);

/* Output queue for event loops: push whole frames, flush when writable. */
typedef struct lmp_frame_writer {
  char *buf;
  size_t cap, start, end;
} lmp_frame_writer;

void lmp_frame_writer_init(lmp_frame_writer *w);
void lmp_frame_writer_free(lmp_frame_writer *w);
/* Appends a frame: 0, -EMSGSIZE or -ENOMEM. */
int lmp_frame_writer_push(lmp_frame_writer *w, int type, int flags,
                          const void *payload, size_t len);
/* Writes what the fd takes now: bytes still queued (0: all sent), -errno. */
long lmp_frame_writer_flush(lmp_frame_writer *w, int fd);
size_t lmp_frame_writer_pending(const lmp_frame_writer *w);

#endif
