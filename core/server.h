/* server.h -- a framed server loop for managers: accept, authenticate,
 * read requests, queue replies; one epoll set, never blocked by a peer.
 *
 * Each accepted connection first runs the authkey handshake (auth.h)
 * under a deadline; until it succeeds nothing it sends is read past the
 * 64-byte response, let alone decoded. Authenticated connections carry
 * frames (frame.h) of at most maxlen bytes: a bad header or an oversized
 * length closes that connection only. Replies are queued per connection
 * and written as the peer reads; a peer that lets more than max_out bytes
 * pile up is dropped, so a client that never reads cannot grow the
 * server without bound or stall the others.
 *
 * Connections are named by a cid (the fd plus a serial, below 2^53 so a
 * Lua number holds it exactly): a reply for a connection that has gone
 * meanwhile is dropped, never delivered to a newcomer on the same fd. */
#ifndef LMP_SERVER_H
#define LMP_SERVER_H

#include <stddef.h>
#include <stdint.h>

typedef struct lmp_srv lmp_srv;

typedef struct lmp_srv_opts {
  size_t maxlen;             /* largest request payload */
  size_t max_out;            /* reply bytes queued per peer before dropping it */
  double handshake_timeout;  /* seconds a new peer has to prove the key */
  int max_clients;           /* connections kept at once (more are closed) */
  double spin;               /* seconds to poll for work before sleeping */
} lmp_srv_opts;

enum {
  LMP_SRV_REQUEST = 1,  /* a frame from an authenticated peer */
  LMP_SRV_CLOSED = 2,   /* an authenticated peer went away (or was dropped) */
  LMP_SRV_DENIED = 3    /* a peer failed the handshake (wrong key) */
};

typedef struct lmp_srv_event {
  int kind;
  uint64_t cid;
  int type, flags;          /* REQUEST: the frame's type and flags */
  const char *data;         /* REQUEST: payload; DENIED: the peer's address */
  size_t len;
} lmp_srv_event;

typedef void (*lmp_srv_cb)(void *ud, const lmp_srv_event *ev);

/* Takes ownership of listen_fd (a non-blocking listening socket). NULL
 * with *err = -errno on failure. The key is copied (at most
 * LMP_AUTH_KEY_MAX bytes). */
lmp_srv *lmp_srv_new(int listen_fd, const void *key, size_t keylen,
                     const lmp_srv_opts *opts, int *err);
/* Closes every connection and the listening socket. */
void lmp_srv_free(lmp_srv *s);

/* The epoll fd: readable when lmp_srv_step has something to do. */
int lmp_srv_fileno(const lmp_srv *s);

/* Waits up to deadline (clock.h; LMP_FOREVER allowed, capped by pending
 * handshake deadlines), then accepts, authenticates, reads and flushes,
 * calling cb for each event (payloads are valid during the call only).
 * Returns the number of events, -EINTR when interrupted, or -errno. */
int lmp_srv_step(lmp_srv *s, double deadline, lmp_srv_cb cb, void *ud);

/* Queues one frame to cid and writes what the socket takes now. 0; 1 when
 * cid is gone (the reply is dropped); -ENOBUFS when the peer was dropped
 * for not reading (a CLOSED event follows at the next step); -EMSGSIZE. */
int lmp_srv_send(lmp_srv *s, uint64_t cid, int type, const void *payload,
                 size_t len);

/* 1 if cid is an authenticated connection still served, else 0. */
int lmp_srv_alive(const lmp_srv *s, uint64_t cid);

/* Closes cid (no event follows). 0, or 1 when it was already gone. */
int lmp_srv_close(lmp_srv *s, uint64_t cid);

/* Authenticated connections open now, and peers still in the handshake. */
int lmp_srv_clients(const lmp_srv *s, int *handshaking);

#endif
