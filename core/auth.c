/* auth.c -- the authkey handshake (see auth.h). */
/* SHA256_Init/Update/Final: deprecated in OpenSSL 3 in favour of EVP,
 * whose per-call overhead would cost more than the hashing of a small
 * message. Should a later OpenSSL drop them, EVP_MD_CTX_copy_ex of two
 * prepared contexts does the same job. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sodium.h>

#include "auth.h"
#include "fd.h"

int lmp_auth_init(void) {
  return sodium_init() < 0 ? -ENOSYS : 0;
}

/* out = HMAC-SHA256(key, label a b): a proof covering both nonces. */
static void proof(unsigned char out[LMP_AUTH_MAC], const void *key,
                  size_t keylen, const char *label, const unsigned char *a,
                  const unsigned char *b) {
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, key, keylen);
  crypto_auth_hmacsha256_update(&st, (const unsigned char *)label,
                                strlen(label));
  crypto_auth_hmacsha256_update(&st, a, LMP_AUTH_NONCE);
  crypto_auth_hmacsha256_update(&st, b, LMP_AUTH_NONCE);
  crypto_auth_hmacsha256_final(&st, out);
  sodium_memzero(&st, sizeof st);
}

int lmp_auth_client(int fd, const void *key, size_t keylen, double deadline) {
  unsigned char ch[LMP_AUTH_CHALLENGE], out[LMP_AUTH_RESPONSE];
  unsigned char want[LMP_AUTH_MAC], got[LMP_AUTH_MAC];
  const unsigned char *ns = ch + LMP_AUTH_MAGIC_LEN;
  int rc;
  if ((rc = lmp_auth_init()) < 0) return rc;
  rc = lmp_fd_read_full(fd, ch, sizeof ch, deadline);
  if (rc == -EPIPE) return -EPROTO;        /* a short challenge */
  if (rc < 0) return rc;
  if (memcmp(ch, LMP_AUTH_MAGIC, LMP_AUTH_MAGIC_LEN) != 0) return -EPROTO;
  randombytes_buf(out + LMP_AUTH_MAC, LMP_AUTH_NONCE);
  proof(out, key, keylen, "lmp-c", ns, out + LMP_AUTH_MAC);
  if ((rc = lmp_fd_write_full(fd, out, sizeof out, deadline)) < 0) return rc;
  rc = lmp_fd_read_full(fd, got, sizeof got, deadline);
  if (rc == -EPIPE) return -EACCES;        /* closed on us: refused */
  if (rc < 0) return rc;
  if (sodium_is_zero(got, sizeof got)) return -EACCES;
  proof(want, key, keylen, "lmp-s", out + LMP_AUTH_MAC, ns);
  return sodium_memcmp(want, got, sizeof want) == 0 ? 0 : -EPERM;
}

int lmp_auth_srv_start(lmp_auth_srv *a, int fd) {
  unsigned char ch[LMP_AUTH_CHALLENGE];
  ssize_t n;
  int rc;
  if ((rc = lmp_auth_init()) < 0) return rc;
  a->got = 0;
  randombytes_buf(a->ns, sizeof a->ns);
  memcpy(ch, LMP_AUTH_MAGIC, LMP_AUTH_MAGIC_LEN);
  memcpy(ch + LMP_AUTH_MAGIC_LEN, a->ns, LMP_AUTH_NONCE);
  n = lmp_fd_write_some(fd, ch, sizeof ch);
  if (n < 0) return (int)n;
  return n == (ssize_t)sizeof ch ? 0 : -EAGAIN;
}

/* Sends the 32-byte answer in one write: it fits a socket buffer that
 * has only carried the challenge. */
static int answer(int fd, const unsigned char *buf) {
  ssize_t n = lmp_fd_write_some(fd, buf, LMP_AUTH_MAC);
  if (n < 0) return (int)n;
  return n == LMP_AUTH_MAC ? 0 : -EAGAIN;
}

int lmp_auth_srv_step(lmp_auth_srv *a, int fd, const void *key,
                      size_t keylen) {
  unsigned char want[LMP_AUTH_MAC];
  const unsigned char *nc = a->in + LMP_AUTH_MAC;
  int ok, rc;
  while (a->got < sizeof a->in) {
    ssize_t n = lmp_fd_read_some(fd, a->in + a->got, sizeof a->in - a->got);
    if (n == -EAGAIN) return 0;
    if (n == 0) return -EPIPE;
    if (n < 0) return (int)n;
    a->got += (size_t)n;
  }
  proof(want, key, keylen, "lmp-c", a->ns, nc);
  ok = sodium_memcmp(want, a->in, sizeof want) == 0;
  if (!ok) {
    memset(want, 0, sizeof want);
    answer(fd, want);
    return -EACCES;
  }
  proof(want, key, keylen, "lmp-s", nc, a->ns);
  if ((rc = answer(fd, want)) < 0) return rc;
  return 1;
}

/* Feeds the parts, each framed by its length (8 bytes, big-endian); a
 * small message is gathered first, for one update instead of 2n. */
static void feed_parts(SHA256_CTX *c, const lmp_auth_part *parts, size_t n) {
  unsigned char buf[512];
  size_t i, used = 0;
  for (i = 0; i < n; i++) {
    unsigned char len[8];
    unsigned long long l = parts[i].len;
    int b;
    for (b = 7; b >= 0; b--) { len[b] = (unsigned char)(l & 0xff); l >>= 8; }
    if (used + 8 + parts[i].len <= sizeof buf) {
      memcpy(buf + used, len, 8);
      memcpy(buf + used + 8, parts[i].p, parts[i].len);
      used += 8 + parts[i].len;
      continue;
    }
    if (used) SHA256_Update(c, buf, used);
    used = 0;
    SHA256_Update(c, len, sizeof len);
    SHA256_Update(c, parts[i].p, parts[i].len);
  }
  if (used) SHA256_Update(c, buf, used);
  OPENSSL_cleanse(buf, sizeof buf);
}

void lmp_auth_mac(unsigned char out[LMP_AUTH_MAC], const void *key,
                  size_t keylen, const lmp_auth_part *parts, size_t n) {
  lmp_auth_key k;
  lmp_auth_key_init(&k, key, keylen);
  lmp_auth_key_mac(out, &k, parts, n);
  lmp_auth_key_clear(&k);
}

/* HMAC's key schedule (RFC 2104): a key longer than a block is hashed
 * first; the inner and outer hashes start from key ^ ipad and key ^ opad. */
void lmp_auth_key_init(lmp_auth_key *k, const void *key, size_t keylen) {
  unsigned char kb[SHA256_CBLOCK], pad[SHA256_CBLOCK];
  size_t i;
  memset(kb, 0, sizeof kb);
  if (keylen > sizeof kb) SHA256(key, keylen, kb);
  else if (keylen) memcpy(kb, key, keylen);
  for (i = 0; i < sizeof pad; i++) pad[i] = kb[i] ^ 0x36;
  SHA256_Init(&k->in);
  SHA256_Update(&k->in, pad, sizeof pad);
  for (i = 0; i < sizeof pad; i++) pad[i] = kb[i] ^ 0x5c;
  SHA256_Init(&k->out);
  SHA256_Update(&k->out, pad, sizeof pad);
  OPENSSL_cleanse(kb, sizeof kb);
  OPENSSL_cleanse(pad, sizeof pad);
}

void lmp_auth_key_clear(lmp_auth_key *k) {
  OPENSSL_cleanse(k, sizeof *k);
}

void lmp_auth_key_mac(unsigned char out[LMP_AUTH_MAC], const lmp_auth_key *k,
                      const lmp_auth_part *parts, size_t n) {
  SHA256_CTX c = k->in;
  unsigned char inner[SHA256_DIGEST_LENGTH];
  feed_parts(&c, parts, n);
  SHA256_Final(inner, &c);
  c = k->out;
  SHA256_Update(&c, inner, sizeof inner);
  SHA256_Final(out, &c);
  OPENSSL_cleanse(&c, sizeof c);
  OPENSSL_cleanse(inner, sizeof inner);
}

int lmp_auth_mac_equal(const unsigned char a[LMP_AUTH_MAC],
                       const unsigned char b[LMP_AUTH_MAC]) {
  return crypto_verify_32(a, b) == 0;
}
