/* lpickle.h -- shared between the parts of lmp.pickle's C side:
 * lpickle.c (JSON helpers), lpickle_tag.c (the tagged JSON form),
 * lpickle_json.c (plain JSON without cjson) and lpickle_bin.c (the binary
 * format). */
#ifndef LMP_LPICKLE_H
#define LMP_LPICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "lmp_aux.h"

/* First byte of every tagged string in the JSON form (a control byte,
 * escaped by cjson as \u0001); user strings that start with it are
 * escaped, so plain strings never do. */
#define LMP_PICKLE_TAG '\001'
#define LMP_PICKLE_TAG_STR "\001"

/* Nesting limit of both formats, in both directions. */
#define LMP_PICKLE_MAX_DEPTH 1000

/* 1 if s[0..n) is valid UTF-8 (no overlongs, no surrogates). */
int lmp_pickle_utf8ok(const unsigned char *s, size_t n);
/* Exact text of x (shortest %.15g..%.17g that reads back, nan, inf);
 * returns the length written to buf (sz >= 32). */
int lmp_pickle_fmtfloat(char *buf, size_t sz, double x);
/* The bits of x as 16 hex digits (most significant first; buf gets no
 * terminator), and back: 1, or 0 when s is not 16 hex digits. A float
 * that cjson's 14 digits would round travels as "\1x<hex>": exact, and
 * about 50 times cheaper than the shortest decimal text both ways. */
void lmp_pickle_hexfloat(char buf[16], double x);
int lmp_pickle_parse_hexfloat(const char *s, double *x);
/* cjson writes numbers with 14 digits: integers below this in magnitude
 * travel as plain JSON numbers. */
#define LMP_PICKLE_INT_LIMIT 100000000000000LL
/* 10^0 .. 10^22: the powers of ten a double holds exactly. */
#define LMP_PICKLE_POW10_MAX 22
extern const double lmp_pickle_pow10[LMP_PICKLE_POW10_MAX + 1];
/* 1 if the non-integral x is m / 10^k exactly as strtod reads it, for an
 * integer |m| < 1e14 and 1 <= k <= 22 (then cjson's "%.14g" text of x is
 * that decimal, and it reads back as x): m and k in *m, *k. */
int lmp_pickle_float_decimal(double x, long long *m, int *k);
/* 1 if the number / string at idx is written by cjson as is. */
int lmp_pickle_number_is_plain(lua_State *L, int idx);
int lmp_pickle_string_is_plain(lua_State *L, int idx);
/* Pushes the base64 text of s / the bytes of base64 s (returns 0 and
 * pushes nothing useful when s is not canonical base64). */
void lmp_pickle_b64enc(lua_State *L, const char *s, size_t n);
int lmp_pickle_b64dec(lua_State *L, const char *s, size_t n);
/* Leaf tags of the JSON form (lpickle_tag.c): untag_leaf pushes the value
 * of a tagged string ("\1i..", "\1f..", "\1x..", "\1b<base64>", "\1'..")
 * and returns 1, or returns 0 when s is no leaf tag (the stack may then
 * hold one junk value). */
int lmp_pickle_untag_leaf(lua_State *L, const char *s, size_t n);
/* Adds tagcopy / untag (lpickle_tag.c) to the table on top. */
void lmp_pickle_tag_open(lua_State *L);
/* Whether the writer of plain JSON (lpickle_json.c) may write the table
 * at idx: 1 yes (first met, no metatable, not travelling by name), 0 no,
 * -1 out of memory. The stack is left as it was. */
typedef int (*lmp_pickle_admit)(void *ud, lua_State *L, int idx);
/* Pushes the JSON text of the value at idx (slice 0), or of t[first..last]
 * as a list (slice 1; t the table at idx), and returns 1, when it is plain
 * data as pickle's exact layer and cjson would write it: the very same
 * text, leaves cjson would lose tagged. A slice's text is an lmp.Bytes
 * from LMP_BYTES_MIN bytes on. Returns 0, pushing nothing, otherwise;
 * raises only when out of memory. */
int lmp_pickle_json_push(lua_State *L, int idx, int slice, lua_Integer first,
                         lua_Integer last, lmp_pickle_admit admit, void *ud);
/* Adds jsonload (lpickle_json.c) to the table on top. */
void lmp_pickle_json_open(lua_State *L);
/* Writes the base64 of s[0..n) at out: (n + 2) / 3 * 4 characters and a
 * NUL. */
void lmp_pickle_b64write(unsigned char *out, const char *s, size_t n);
/* A number that changes whenever what travels by name (modules, classes,
 * the globals) may have changed, or 0 when no cache of names can be
 * trusted in this state; ps is the userdata lmp_pickle_bin_open is given,
 * classes the stack index of the class table (or 0). See lpickle.c. */
uint64_t lmp_pickle_names_gen(lua_State *L, void *ps, int classes);
/* Adds the binary codec's functions to the table on top of the stack;
 * ps_idx: the stack index of the names state (see above). */
void lmp_pickle_bin_open(lua_State *L, int ps_idx);

#endif
