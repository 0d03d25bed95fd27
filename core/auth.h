/* auth.h -- the authkey handshake of lmp's managers, before any frame.
 *
 * Both sides prove they hold the authkey K without sending it, each with
 * a fresh random nonce, HMAC-SHA256 (libsodium) and a constant-time
 * compare:
 *
 *   server -> client  "LMPAUTH1" Ns                     (40 bytes)
 *   client -> server  HMAC(K, "lmp-c" Ns Nc) Nc          (64 bytes)
 *   server -> client  HMAC(K, "lmp-s" Nc Ns)             (32 bytes)
 *                  or 32 zero bytes: "refused", then close
 *
 * The labels keep one side's proof from being replayed as the other's;
 * each proof covers both nonces. A server reads exactly 64 bytes before
 * the client has proved the key and answers only fixed-size bytes: no
 * error text, no version beyond the magic. A client refuses a challenge
 * that is short or carries another magic (no downgrade).
 *
 * The server side is a small state machine for non-blocking event loops
 * (lmp_auth_srv_*); the client side blocks up to a deadline. Functions
 * return 0 or -errno; none prints or aborts. */
#ifndef LMP_AUTH_H
#define LMP_AUTH_H

#include <stddef.h>

#include <openssl/sha.h>
#include <sodium.h>

#define LMP_AUTH_MAGIC "LMPAUTH1"
#define LMP_AUTH_MAGIC_LEN 8
#define LMP_AUTH_NONCE 32
#define LMP_AUTH_MAC 32
#define LMP_AUTH_CHALLENGE (LMP_AUTH_MAGIC_LEN + LMP_AUTH_NONCE)
#define LMP_AUTH_RESPONSE (LMP_AUTH_MAC + LMP_AUTH_NONCE)
#define LMP_AUTH_KEY_MAX 256

/* 0, or -ENOSYS when libsodium cannot start. Idempotent. */
int lmp_auth_init(void);

/* Client: runs the handshake on a connected fd. 0 when both sides proved
 * the key; -EACCES the server refused our proof; -EPERM the server's
 * proof is wrong (another key, or not an lmp manager); -EPROTO a short or
 * foreign challenge; -ETIMEDOUT, -EPIPE, -EINTR or -errno otherwise. */
int lmp_auth_client(int fd, const void *key, size_t keylen, double deadline);

/* Server side of one connection. */
typedef struct lmp_auth_srv {
  unsigned char ns[LMP_AUTH_NONCE];
  unsigned char in[LMP_AUTH_RESPONSE];
  size_t got;
} lmp_auth_srv;

/* Sends the challenge (fits any fresh socket buffer: -EAGAIN is a
 * failure). 0 or -errno. */
int lmp_auth_srv_start(lmp_auth_srv *a, int fd);

/* Reads what has arrived, never past the 64-byte response. 1 once the
 * client proved the key (the server's proof is sent), 0 for more bytes
 * to come, -EACCES for a wrong proof (the refusal is sent), -EPIPE at
 * EOF, -errno. */
int lmp_auth_srv_step(lmp_auth_srv *a, int fd, const void *key, size_t keylen);

/* Message authentication (signed Redis tasks and results).
 *
 * out = HMAC-SHA256(key, frame(part 1) ... frame(part n)), where a frame
 * is the part's length as 8 big-endian bytes, then its bytes: parts
 * cannot be re-cut (("ab", "c") and ("a", "bc") differ). Cannot fail:
 * OpenSSL's SHA-256 needs no start-up, unlike libsodium. */
typedef struct lmp_auth_part {
  const void *p;
  size_t len;
} lmp_auth_part;

void lmp_auth_mac(unsigned char out[LMP_AUTH_MAC], const void *key,
                  size_t keylen, const lmp_auth_part *parts, size_t n);

/* A key whose HMAC state is computed once: a MAC with it skips the two
 * hash blocks of the key pads (a third of a small message's cost). The
 * hashing is OpenSSL's SHA-256, which uses the CPU's SHA extensions where
 * there are some: 4x libsodium's portable code here (174 vs 709 ns for a
 * 120-byte message), and signed Redis tasks make four MACs each. */
typedef struct lmp_auth_key {
  SHA256_CTX in, out;    /* after the ipad / opad block */
} lmp_auth_key;

/* lmp_auth_key_clear wipes it. */
void lmp_auth_key_init(lmp_auth_key *k, const void *key, size_t keylen);
void lmp_auth_key_clear(lmp_auth_key *k);
void lmp_auth_key_mac(unsigned char out[LMP_AUTH_MAC], const lmp_auth_key *k,
                      const lmp_auth_part *parts, size_t n);

/* 1 when the two MACs are equal, in time independent of their bytes. */
int lmp_auth_mac_equal(const unsigned char a[LMP_AUTH_MAC],
                       const unsigned char b[LMP_AUTH_MAC]);

#endif
