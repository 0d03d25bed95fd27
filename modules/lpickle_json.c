/* lpickle_json.c -- plain JSON, written and read in C.
 *
 * Most values lmp moves are plain data: tables of numbers, strings and
 * booleans. Through cjson alone, each costs a walk of pickle's exact layer
 * (to tag the leaves cjson would lose), cjson's encode (snprintf("%.14g")
 * per number), cjson's decode (strtod per number) and a second walk (fix:
 * integers back, tags undone). These functions do each direction in one
 * pass and write exactly the text the layer and cjson would, so nothing
 * downstream can tell (Python's json.loads reads the obvious value); for
 * anything else they say "not mine" and the usual path (tagcopy, then
 * pickle.lua) takes the value:
 *   lmp_pickle_json_push (lpickle.h)   the text of a value, or of
 *                                      t[first..last] as a list (a pool's
 *                                      chunk)
 *   jsonload(s [, out, offset, n]) -> value | nil, or with out true | false
 * Plain, as the writer takes it: booleans, numbers, strings, and tables
 * that the caller's admit() lets through (no metatable, met once: no
 * shared reference, no cycle; not travelling by name) whose keys are
 * exactly 1..n or all plain strings (UTF-8, not starting with the tag
 * byte), at most LMP_PICKLE_MAX_DEPTH deep; nil only as the whole value.
 * Leaves cjson would lose go as the tagged strings of lpickle_tag.c:
 * "\u0001x<16 hex digits>" a float that 14 digits would round or an
 * integral float (5.3+), "\u0001i<digits>" an integer past 10^14 (5.3+),
 * "\u0001b<base64>" bytes that are not UTF-8, "\u0001'<s>" a string
 * starting with the tag byte. Numbers are written as cjson's "%.14g".
 * The reader takes only canonical text: no blanks, numbers of at most 15
 * digits (no leading zeros, no "-0", no integral value written as a
 * float), the escapes cjson writes (\" \\ \/ \b \f \n \r \t \u00XX below
 * 128), no NUL byte, no null inside a table. It builds what cjson.decode
 * and pickle's fix would: integers (5.3+) or numbers (5.1), floats,
 * strings, untagged leaves; with out, item i of a list goes to out[offset
 * + i], and it insists on exactly n items (it stops at n: out's other
 * keys are another chunk's). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lpickle.h"

#define STR_LIMIT (64 * 1024)            /* pickle.lua's ATTACH_MIN */
#define TAG_TEXT "\"\\u0001"               /* a tagged string's start, then its kind */
#define TAGGED_FLOAT TAG_TEXT "x"              /* then 16 hex digits */
#define TAG_TEXT_LEN (sizeof TAG_TEXT - 1)

enum { NO_MEMORY = -1, NOT_MINE = 0, DONE = 1 };

/* ---- writing ---- */

typedef struct {
  char *p;
  size_t n, cap;
} wbuf;

typedef struct {
  lua_State *L;
  wbuf b;
  lmp_pickle_admit admit;
  void *ud;
} wctx;

static int wbuf_room(wbuf *b, size_t more) {
  char *p;
  size_t cap = b->cap;
  if (b->cap - b->n >= more) return 1;
  while (cap - b->n < more) cap *= 2;
  if (!(p = realloc(b->p, cap))) return 0;
  b->p = p;
  b->cap = cap;
  return 1;
}

static int put_raw(wbuf *b, const char *s, size_t n) {
  if (!wbuf_room(b, n)) return 0;
  memcpy(b->p + b->n, s, n);
  b->n += n;
  return 1;
}

/* The integer at idx if cjson writes it exactly, in *v; else 0: the
 * integer half of lmp_pickle_number_is_plain, inline (a call per item
 * cost a pool's flat list 40% more). */
static int plain_int(lua_State *L, int idx, long long *v) {
#if LUA_VERSION_NUM >= 503
  lua_Integer i;
  if (!lua_isinteger(L, idx)) return 0;
  i = lua_tointeger(L, idx);
  if (!(i > -LMP_PICKLE_INT_LIMIT && i < LMP_PICKLE_INT_LIMIT)) return 0;
  *v = (long long)i;
#else
  lua_Number x = lua_tonumber(L, idx);
  if (!(x > -(lua_Number)LMP_PICKLE_INT_LIMIT && x < (lua_Number)LMP_PICKLE_INT_LIMIT)) return 0;
  *v = (long long)x;
  if ((lua_Number)*v != x || (x == 0 && signbit(x))) return 0;   /* fraction, -0 */
#endif
  return 1;
}

/* Writes the decimal digits of |v| at out, most significant first;
 * returns how many (at most 20). */
static int put_digits(char *out, long long v) {
  char tmp[24], *t = tmp + sizeof tmp;
  unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
  do { *--t = (char)('0' + u % 10); u /= 10; } while (u);
  memcpy(out, t, (size_t)(tmp + sizeof tmp - t));
  return (int)(tmp + sizeof tmp - t);
}

/* Writes v in decimal (room for 21 bytes given). */
static void put_decimal(wbuf *b, long long v) {
  if (v < 0) b->p[b->n++] = '-';
  b->n += (size_t)put_digits(b->p + b->n, v);
}

/* Writes cjson's "%.14g" text of m / 10^k (lmp_pickle_float_decimal's
 * parts of a non-integral float; room for 32 bytes given), as printf
 * would: its digits without trailing zeros, in fixed notation for a
 * decimal exponent from -4 to 13, else as d.ddde-XX. */
static void put_float(wbuf *b, long long m, int k) {
  char dig[24], *p = b->p + b->n;
  int d = put_digits(dig, m), i, x;
  while (d > 1 && dig[d - 1] == '0') { d--; k--; }
  x = d - 1 - k;                               /* the decimal exponent */
  if (m < 0) *p++ = '-';
  if (x < -4 || x >= 14) {
    *p++ = dig[0];
    if (d > 1) { *p++ = '.'; memcpy(p, dig + 1, (size_t)(d - 1)); p += d - 1; }
    *p++ = 'e';
    *p++ = x < 0 ? '-' : '+';
    if (x < 0) x = -x;
    if (x >= 100) *p++ = (char)('0' + x / 100);
    *p++ = (char)('0' + x / 10 % 10);
    *p++ = (char)('0' + x % 10);
  } else if (x >= 0) {
    memcpy(p, dig, (size_t)(x + 1)); p += x + 1;
    *p++ = '.';
    memcpy(p, dig + x + 1, (size_t)(d - x - 1)); p += d - x - 1;
  } else {
    *p++ = '0'; *p++ = '.';
    for (i = 0; i < -x - 1; i++) *p++ = '0';
    memcpy(p, dig, (size_t)d); p += d;
  }
  b->n = (size_t)(p - b->p);
}

/* Writes the start of a tagged string of the given kind ("\u0001<kind>;
 * room for 8 bytes given). */
static void put_tag(wbuf *b, char kind) {
  memcpy(b->p + b->n, TAG_TEXT, TAG_TEXT_LEN);
  b->n += TAG_TEXT_LEN;
  b->p[b->n++] = kind;
}

/* Writes the number at idx: plain JSON when cjson keeps it (a small
 * integer, a float of at most 14 digits), else its tagged leaf. */
static int put_number(lua_State *L, int idx, wbuf *b) {
  long long v;
  int k;
  lua_Number x;
  if (!wbuf_room(b, 40)) return NO_MEMORY;
  if (plain_int(L, idx, &v)) { put_decimal(b, v); return DONE; }
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, idx)) {             /* past 10^14: "\1i<digits>" */
    put_tag(b, 'i');
    put_decimal(b, (long long)lua_tointeger(L, idx));
    b->p[b->n++] = '"';
    return DONE;
  }
#endif
  x = lua_tonumber(L, idx);
  if (x != floor(x) && lmp_pickle_float_decimal(x, &v, &k)) {
    put_float(b, v, k);
    return DONE;
  }
  put_tag(b, 'x');                         /* any other float: its bits */
  lmp_pickle_hexfloat(b->p + b->n, (double)x);
  b->n += 16;
  b->p[b->n++] = '"';
  return DONE;
}

/* cjson's escapes (lua_cjson.c's char2escape): control bytes, '"', '/',
 * '\\' and DEL; a byte of 128 or more goes as it is. */
#define NEEDS_ESCAPE(c) ((c) < 0x20 || (c) == '"' || (c) == '/' || (c) == '\\' || (c) == 0x7f)

static int escape_of(unsigned char c, char out[6]) {
  static const char hex[] = "0123456789abcdef";
  const char *named = c == '\b' ? "b" : c == '\t' ? "t" : c == '\n' ? "n" :
                      c == '\f' ? "f" : c == '\r' ? "r" : c == '"' ? "\"" :
                      c == '/' ? "/" : c == '\\' ? "\\" : NULL;
  out[0] = '\\';
  if (named) { out[1] = named[0]; return 2; }
  memcpy(out + 1, "u00", 3);
  out[4] = hex[c >> 4];
  out[5] = hex[c & 15];
  return 6;
}

/* Writes s escaped as cjson does, without quotes (leaves room for 2). */
static int put_escaped(wbuf *b, const char *s, size_t n) {
  size_t i, run = 0;
  char esc[6];
  if (!wbuf_room(b, n + 8)) return 0;
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    int k;
    if (!NEEDS_ESCAPE(c)) continue;
    k = escape_of(c, esc);
    if (!wbuf_room(b, (n - run) + 8)) return 0;   /* the rest, quotes, comma */
    memcpy(b->p + b->n, s + run, i - run);
    b->n += i - run;
    memcpy(b->p + b->n, esc, (size_t)k);
    b->n += (size_t)k;
    run = i + 1;
  }
  memcpy(b->p + b->n, s + run, n - run);
  b->n += n - run;
  return 1;
}

/* Writes "\u0001b" and the base64 of s, each '/' escaped as cjson does. */
static int put_bytes(wbuf *b, const char *s, size_t n) {
  size_t m = (n + 2) / 3 * 4;
  char *out, *in, *end, *slash;
  if (m < n || !wbuf_room(b, 2 * m + 16)) return 0;
  put_tag(b, 'b');
  out = b->p + b->n;
  in = out + m;               /* encoded in the upper half, then moved down */
  end = in + m;
  lmp_pickle_b64write((unsigned char *)in, s, n);
  while ((slash = (char *)memchr(in, '/', (size_t)(end - in))) != NULL) {
    memmove(out, in, (size_t)(slash - in));   /* out stays below in */
    out += slash - in;
    *out++ = '\\';
    *out++ = '/';
    in = slash + 1;
  }
  memmove(out, in, (size_t)(end - in));
  out += end - in;
  b->n = (size_t)(out - b->p);
  b->p[b->n++] = '"';
  return 1;
}

/* Writes the string at idx: as it is when plain, else its tagged leaf. */
static int put_string(lua_State *L, int idx, wbuf *b) {
  size_t n;
  const char *s = lua_tolstring(L, idx, &n);
  int ok;
  if (!wbuf_room(b, 16)) return NO_MEMORY;
  if (lmp_pickle_string_is_plain(L, idx)) {
    b->p[b->n++] = '"';
    ok = put_escaped(b, s, n);
  } else if (s[0] == LMP_PICKLE_TAG && lmp_pickle_utf8ok((const unsigned char *)s, n)) {
    put_tag(b, '\'');
    ok = put_escaped(b, s, n);
  } else {
    return put_bytes(b, s, n) ? DONE : NO_MEMORY;
  }
  if (!ok) return NO_MEMORY;
  b->p[b->n++] = '"';
  return DONE;
}

static int write_value(wctx *c, int idx, int depth);

/* Writes [t[first], ..., t[last]] (t the table at idx, first <= last),
 * the items at depth; a string item of str_limit bytes or more is not
 * mine (0: no limit). A nil item is not mine either (write_value). */
static int write_items(wctx *c, int idx, lua_Integer first, lua_Integer last,
                       int depth, size_t str_limit) {
  lua_State *L = c->L;
  lua_Integer i;
  int r;
  c->b.p[c->b.n++] = '[';
  for (i = first; i <= last; i++) {
    lua_rawgeti(L, idx, i);
    if (str_limit && lua_type(L, -1) == LUA_TSTRING && lua_rawlen(L, -1) >= str_limit) r = NOT_MINE;
    else r = write_value(c, lua_gettop(L), depth);
    lua_pop(L, 1);
    if (r != DONE) return r;
    if (!wbuf_room(&c->b, 1)) return NO_MEMORY;
    c->b.p[c->b.n++] = ',';
  }
  c->b.p[c->b.n - 1] = ']';
  return DONE;
}

/* Writes the items 1..n of the table at idx, then makes sure it has no
 * other key. */
static int write_array(wctx *c, int idx, size_t n, int depth) {
  lua_State *L = c->L;
  size_t k = 0;
  int r = write_items(c, idx, 1, (lua_Integer)n, depth + 1, 0);
  if (r != DONE) return r;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (++k > n) { lua_pop(L, 1); return NOT_MINE; }
  }
  return DONE;
}

/* Writes the table at idx, whose keys must all be plain strings, as an
 * object (cjson writes an empty table as {}). */
static int write_object(wctx *c, int idx, int depth) {
  lua_State *L = c->L;
  int r;
  c->b.p[c->b.n++] = '{';
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t n;
    const char *k;
    if (lua_type(L, -2) != LUA_TSTRING || !lmp_pickle_string_is_plain(L, -2)) {
      lua_pop(L, 2);
      return NOT_MINE;
    }
    k = lua_tolstring(L, -2, &n);
    c->b.p[c->b.n++] = '"';
    if (!put_escaped(&c->b, k, n)) { lua_pop(L, 2); return NO_MEMORY; }
    c->b.p[c->b.n++] = '"';
    c->b.p[c->b.n++] = ':';
    r = write_value(c, lua_gettop(L), depth + 1);
    lua_pop(L, 1);
    if (r != DONE || !wbuf_room(&c->b, 16)) { lua_pop(L, 1); return r != DONE ? r : NO_MEMORY; }
    c->b.p[c->b.n++] = ',';
  }
  if (c->b.p[c->b.n - 1] == ',') c->b.n--;
  c->b.p[c->b.n++] = '}';
  return DONE;
}

static int write_table(wctx *c, int idx, int depth) {
  size_t n;
  int r;
  if (depth > LMP_PICKLE_MAX_DEPTH || !lua_checkstack(c->L, 6)) return NOT_MINE;
  if ((r = c->admit(c->ud, c->L, idx)) != DONE) return r;
  if (!wbuf_room(&c->b, 16)) return NO_MEMORY;
  n = lua_rawlen(c->L, idx);
  return n > 0 ? write_array(c, idx, n, depth) : write_object(c, idx, depth);
}

static int write_value(wctx *c, int idx, int depth) {
  lua_State *L = c->L;
  switch (lua_type(L, idx)) {
    case LUA_TNIL:
      if (depth > 0) return NOT_MINE;      /* a hole: the tagged form's */
      return put_raw(&c->b, "null", 4) ? DONE : NO_MEMORY;
    case LUA_TBOOLEAN:
      return (lua_toboolean(L, idx) ? put_raw(&c->b, "true", 4)
                                    : put_raw(&c->b, "false", 5)) ? DONE : NO_MEMORY;
    case LUA_TNUMBER: return put_number(L, idx, &c->b);
    case LUA_TSTRING: return put_string(L, idx, &c->b);
    case LUA_TTABLE: return write_table(c, idx, depth);
    default: return NOT_MINE;
  }
}

/* t[first..last] as a list: every item there (no hole), strings under
 * STR_LIMIT (bigger ones travel out of band: pickle.lua). */
static int write_slice(wctx *c, int idx, lua_Integer first, lua_Integer last) {
  int r;
  if (!lua_checkstack(c->L, 6)) return NOT_MINE;
  if ((r = c->admit(c->ud, c->L, idx)) != DONE) return r;
  return write_items(c, idx, first, last, 1, STR_LIMIT);
}

int lmp_pickle_json_push(lua_State *L, int idx, int slice, lua_Integer first,
                         lua_Integer last, lmp_pickle_admit admit, void *ud) {
  wctx c;
  int r;
  idx = lua_absindex(L, idx);
  if (slice && (last < first || lua_type(L, idx) != LUA_TTABLE ||
                (size_t)(last - first) >= ((size_t)-1 - 64) / 8)) return 0;
  c.L = L;
  c.admit = admit;
  c.ud = ud;
  c.b.n = 0;
  c.b.cap = slice ? (size_t)(last - first + 1) * 8 + 64 : 256;
  if (!(c.b.p = malloc(c.b.cap))) return luaL_error(L, "not enough memory");
  r = slice ? write_slice(&c, idx, first, last) : write_value(&c, idx, 0);
  if (r != DONE) {
    free(c.b.p);
    return r == NO_MEMORY ? luaL_error(L, "not enough memory") : 0;
  }
  if (slice && c.b.n >= LMP_BYTES_MIN) {
    lmp_bytes_push(L, c.b.p, c.b.n);       /* sent, then freed by the pool */
  } else {
    lua_pushlstring(L, c.b.p, c.b.n);
    free(c.b.p);
  }
  return 1;
}

/* ---- reading ---- */

typedef struct {
  lua_State *L;
  const char *end;     /* one past the text */
  char *scratch;       /* unescaped strings (a userdata at scratch_idx) */
  size_t scratch_cap;
  int scratch_idx;
} rctx;

/* Reads at *pp (before end) an integer of at most 15 digits, or a number
 * with a fraction or an exponent whose value is m / 10^k for at most 15
 * significant digits m and 1 <= k <= 22, as strtod reads it (m and 10^k
 * are exact doubles, and IEEE division rounds as strtod does). Canonical
 * only: no leading zeros, no "-0", no integral value written as a float
 * (cjson and fix would make it an integer). Sets *isint; 0 if refused. */
static int read_number(const char **pp, const char *end, long long *v, double *x, int *isint) {
  const char *p = *pp, *d;
  int neg = 0, sig = 0, frac = 0, ex = 0, exneg = 0, k;
  long long m = 0;
  if (p < end && *p == '-') { neg = 1; p++; }
  d = p;
  while (p < end && *p >= '0' && *p <= '9' && p - d < 16) {
    m = m * 10 + (*p - '0');
    if (m) sig++;
    p++;
  }
  if (p == d || p - d > 15 || (*d == '0' && p - d > 1)) return 0;
  *isint = p == end || (*p != '.' && *p != 'e');
  if (*isint) {
    if (neg && m == 0) return 0;
    *v = neg ? -m : m;
    *pp = p;
    return 1;
  }
  if (*p == '.') {
    for (p++; p < end && *p >= '0' && *p <= '9' && sig <= 15; p++, frac++) {
      m = m * 10 + (*p - '0');
      if (m) sig++;
    }
    if (frac == 0 || sig > 15) return 0;
  }
  if (p < end && *p == 'e') {
    const char *e;
    p++;
    if (p < end && (*p == '-' || *p == '+')) exneg = *p++ == '-';
    for (e = p; p < end && *p >= '0' && *p <= '9' && p - e < 3; p++) ex = ex * 10 + (*p - '0');
    if (p == e || (p < end && *p >= '0' && *p <= '9')) return 0;
  }
  k = frac + (exneg ? ex : -ex);
  if (k < 1 || k > LMP_PICKLE_POW10_MAX) return 0;
  *x = (double)m / lmp_pickle_pow10[k];
  if (*x == floor(*x)) return 0;
  if (neg) *x = -*x;
  *pp = p;
  return 1;
}

static int hexval(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
         c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Room for n bytes in r's scratch. */
static int scratch_room(rctx *r, size_t n) {
  if (n <= r->scratch_cap) return 1;
  if (n < 256) n = 256;
  if (n < r->scratch_cap * 2) n = r->scratch_cap * 2;
  r->scratch = (char *)lua_newuserdata(r->L, n);
  r->scratch_cap = n;
  lua_replace(r->L, r->scratch_idx);
  return 1;
}

/* The closing quote of the string whose text starts at s (before end):
 * the first '"' after an even run of backslashes; NULL if none. */
static const char *string_end(const char *s, const char *end) {
  const char *q = s, *b;
  while ((q = (const char *)memchr(q, '"', (size_t)(end - q))) != NULL) {
    for (b = q; b > s && b[-1] == '\\'; b--) {}
    if ((q - b) % 2 == 0) return q;
    q++;
  }
  return NULL;
}

/* Reads the string at *pp (its opening quote) into *s, *n: the text
 * itself when it has no escape (then s[n] is the closing quote), else its
 * bytes unescaped in the scratch with a NUL after them (valid until the
 * next string). 0 when refused: an escape cjson does not write, or a NUL
 * byte (where cjson's text ends; other control bytes it takes as they
 * are, and so does this). Runs are found with memchr: base64 of a big
 * byte string escapes every '/', 1 byte in 64. */
static int read_string(rctx *r, const char **pp, const char **s, size_t *n) {
  const char *start = *pp + 1, *q = string_end(start, r->end), *p, *bs;
  size_t len;
  char *o;
  if (!q) return 0;
  len = (size_t)(q - start);
  if (memchr(start, '\0', len)) return 0;
  if (!(bs = (const char *)memchr(start, '\\', len))) {
    *s = start;
    *n = len;
    *pp = q + 1;
    return 1;
  }
  scratch_room(r, len + 1);        /* unescaped: at most as long */
  o = r->scratch;
  p = start;
  while (bs) {                     /* bs + 1 < q: q ends an even run */
    memcpy(o, p, (size_t)(bs - p));
    o += bs - p;
    switch (bs[1]) {
      case '"': case '\\': case '/': *o++ = bs[1]; break;
      case 'b': *o++ = '\b'; break;
      case 'f': *o++ = '\f'; break;
      case 'n': *o++ = '\n'; break;
      case 'r': *o++ = '\r'; break;
      case 't': *o++ = '\t'; break;
      case 'u': {                   /* \u00XX below 128: one byte */
        int hi, lo;
        if (q - bs < 6 || bs[2] != '0' || bs[3] != '0' ||
            (hi = hexval(bs[4])) < 0 || hi > 7 || (lo = hexval(bs[5])) < 0) return 0;
        *o++ = (char)(hi * 16 + lo);
        bs += 4;
        break;
      }
      default: return 0;
    }
    p = bs + 2;
    bs = (const char *)memchr(p, '\\', (size_t)(q - p));
  }
  memcpy(o, p, (size_t)(q - p));
  o += q - p;
  *o = '\0';                        /* untag_leaf's strtod stops there */
  *s = r->scratch;
  *n = (size_t)(o - r->scratch);
  *pp = q + 1;
  return 1;
}

/* Pushes the string value at *pp, its tag undone. */
static int read_string_value(rctx *r, const char **pp) {
  lua_State *L = r->L;
  const char *s;
  size_t n, tl = sizeof TAGGED_FLOAT - 1;
  double x;
  if ((size_t)(r->end - *pp) > tl + 16 && memcmp(*pp, TAGGED_FLOAT, tl) == 0) {
    if ((*pp)[tl + 16] != '"' || !lmp_pickle_parse_hexfloat(*pp + tl, &x)) return 0;
    lua_pushnumber(L, (lua_Number)x);
    *pp += tl + 17;
    return 1;
  }
  if (!read_string(r, pp, &s, &n)) return 0;
  if (n == 0 || s[0] != LMP_PICKLE_TAG) {
    lua_pushlstring(L, s, n);
    return 1;
  }
  {
    int top = lua_gettop(L);
    if (lmp_pickle_untag_leaf(L, s, n)) return 1;
    lua_settop(L, top);             /* no leaf tag: the tagged form's */
    return 0;
  }
}

static int read_number_value(rctx *r, const char **pp) {
  long long v;
  double x;
  int isint;
  if (!read_number(pp, r->end, &v, &x, &isint)) return 0;
#if LUA_VERSION_NUM >= 503
  if (isint) lua_pushinteger(r->L, (lua_Integer)v);
  else lua_pushnumber(r->L, (lua_Number)x);
#else
  lua_pushnumber(r->L, isint ? (lua_Number)v : (lua_Number)x);
#endif
  return 1;
}

static int read_value(rctx *r, const char **pp, int depth);

/* Reads the items of a list into the table at t, item i at key offset +
 * i; *pp at the '['. Returns the item count, or -1 when refused or past
 * max items. */
static lua_Integer read_items(rctx *r, const char **pp, int t, lua_Integer offset,
                              lua_Integer max, int depth) {
  const char *p = *pp + 1;
  lua_Integer k = 0;
  if (p < r->end && *p == ']') { *pp = p + 1; return 0; }
  for (;;) {
    if (k == max || !read_value(r, &p, depth + 1)) return -1;
    lua_rawseti(r->L, t, offset + ++k);
    if (p == r->end) return -1;
    if (*p == ']') { *pp = p + 1; return k; }
    if (*p++ != ',') return -1;
  }
}

static int read_array(rctx *r, const char **pp, int depth) {
  lua_newtable(r->L);
  return read_items(r, pp, lua_gettop(r->L), 0, (lua_Integer)1 << 40, depth) >= 0;
}

static int read_object(rctx *r, const char **pp, int depth) {
  lua_State *L = r->L;
  const char *p = *pp + 1, *k;
  size_t n;
  int t;
  lua_newtable(L);
  t = lua_gettop(L);
  if (p < r->end && *p == '}') { *pp = p + 1; return 1; }
  for (;;) {
    if (p == r->end || *p != '"' || !read_string(r, &p, &k, &n)) return 0;
    lua_pushlstring(L, k, n);
    if (p == r->end || *p++ != ':' || p == r->end || !read_value(r, &p, depth + 1)) return 0;
    lua_rawset(L, t);
    if (p == r->end) return 0;
    if (*p == '}') { *pp = p + 1; return 1; }
    if (*p++ != ',') return 0;
  }
}

/* Pushes the value at *pp (before end) and moves past it; 0 when
 * refused (the stack may then hold junk above where it was). */
static int read_value(rctx *r, const char **pp, int depth) {
  const char *p = *pp;
  if (p >= r->end) return 0;
  if (depth > LMP_PICKLE_MAX_DEPTH + 5 || !lua_checkstack(r->L, 6)) return 0;
  switch (*p) {
    case '[': return read_array(r, pp, depth);
    case '{': return read_object(r, pp, depth);
    case '"': return read_string_value(r, pp);
    case 't':
      if (r->end - p < 4 || memcmp(p, "true", 4) != 0) return 0;
      lua_pushboolean(r->L, 1);
      *pp = p + 4;
      return 1;
    case 'f':
      if (r->end - p < 5 || memcmp(p, "false", 5) != 0) return 0;
      lua_pushboolean(r->L, 0);
      *pp = p + 5;
      return 1;
    default:
      return read_number_value(r, pp);
  }
}

/* jsonload(s) -> the value of the text s, or nil when it is not
 * canonical plain JSON. jsonload(s, out, offset, n) -> true when s is
 * such a list of exactly n items, stored at out[offset + 1..n]. */
static int l_jsonload(lua_State *L) {
  rctx r;
  size_t n;
  const char *s = lmp_bytes_check(L, 1, &n), *p = s;
  int into = !lua_isnoneornil(L, 2), ok;
  lua_Integer offset = 0, max = 0;
  if (into) {
    luaL_checktype(L, 2, LUA_TTABLE);
    offset = luaL_checkinteger(L, 3);
    max = luaL_checkinteger(L, 4);
  }
  lua_settop(L, 4);
  lua_pushnil(L);                           /* 5: the scratch, once needed */
  r.L = L;
  r.end = s + n;
  r.scratch = NULL;
  r.scratch_cap = 0;
  r.scratch_idx = 5;
  if (n == 0) {
    ok = 0;
  } else if (into) {
    ok = *p == '[' && read_items(&r, &p, 2, offset, max, 0) == max && p == r.end;
    lua_pushboolean(L, ok);
    return 1;
  } else {
    ok = read_value(&r, &p, 0) && p == r.end;
  }
  if (!ok) lua_pushnil(L);
  return 1;
}

void lmp_pickle_json_open(lua_State *L) {
  lua_pushcfunction(L, l_jsonload);
  lua_setfield(L, -2, "jsonload");
}
