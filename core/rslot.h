/* rslot.h -- Redis Cluster key slots.
 *
 * A key's slot is CRC16/XMODEM (polynomial 0x1021, initial value 0, no
 * reflection) of its hash tag, modulo 16384. The hash tag is the text
 * between the first '{' and the first '}' after it, when that text is not
 * empty; otherwise the whole key (the rule of Redis's cluster.c keyHashSlot).
 * No Lua here: lua/lmp/redis_cluster.lua reaches it through
 * modules/lredis_cluster.c. */
#ifndef LMP_RSLOT_H
#define LMP_RSLOT_H

#include <stddef.h>
#include <stdint.h>

#define LMP_RSLOT_COUNT 16384

/* CRC16/XMODEM of len bytes at buf ("123456789" gives 0x31C3). */
uint16_t lmp_rslot_crc16(const char *buf, size_t len);

/* The cluster slot (0..16383) of the key of len bytes at key. */
int lmp_rslot_of(const char *key, size_t len);

#endif
