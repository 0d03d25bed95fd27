/* rslot.c -- Redis Cluster key slots (see rslot.h). */
#include "rslot.h"

#include <string.h>

/* CRC16/XMODEM, bit by bit: keys are short and a 512-byte table would buy
 * little next to a network round trip. */
uint16_t lmp_rslot_crc16(const char *buf, size_t len) {
  uint16_t crc = 0;
  size_t i;
  int b;
  for (i = 0; i < len; i++) {
    crc ^= (uint16_t)((uint16_t)(unsigned char)buf[i] << 8);
    for (b = 0; b < 8; b++)
      crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
  }
  return crc;
}

int lmp_rslot_of(const char *key, size_t len) {
  const char *open = memchr(key, '{', len), *close;
  if (open) {
    size_t rest = len - (size_t)(open - key) - 1;
    close = memchr(open + 1, '}', rest);
    /* "{}" or no '}': the whole key is hashed */
    if (close && close > open + 1)
      return lmp_rslot_crc16(open + 1, (size_t)(close - open - 1)) & (LMP_RSLOT_COUNT - 1);
  }
  return lmp_rslot_crc16(key, len) & (LMP_RSLOT_COUNT - 1);
}
