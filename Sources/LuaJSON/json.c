// JSON codec for Lua 5.4: json.encode, json.decode, json.null, json.array, json.is_array.
//
// Strict RFC 8259 in both directions. Integers stay integers, arrays carry a shared metatable so
// that [] round-trips, floats are written with the fewest digits that read back exactly. All
// memory comes from the Lua state's allocator (tables, strings, and the encoder's buffer, which
// is a full userdata), so a state's memory cap applies and running out is an ordinary Lua memory
// error raised inside these functions, which Lua always calls in protected mode.

#include "lua_json.h"

#include <lauxlib.h>
#include <lua.h>

#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if LUA_MAXINTEGER != INT64_MAX
#error "json.c expects 64-bit Lua integers"
#endif

#if defined(__GNUC__) || defined(__clang__)
#define JSON_NOINLINE __attribute__((noinline))
#define JSON_NORETURN __attribute__((noreturn, cold))
#define JSON_LIKELY(x) __builtin_expect(!!(x), 1)
#define JSON_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define JSON_UNREACHABLE() __builtin_unreachable()
#else
#define JSON_NOINLINE
#define JSON_NORETURN
#define JSON_LIKELY(x) (x)
#define JSON_UNLIKELY(x) (x)
#define JSON_UNREACHABLE() ((void)0)
#endif

#define JSON_MAX_DEPTH 1000
#define JSON_ARRAY_KEY "moongate.json.array"

// ---------------------------------------------------------------------------------------------
// Shared: the array metatable, UTF-8, the byte scanner, numbers
// ---------------------------------------------------------------------------------------------

// Pushes the state's array metatable, creating it on first use.
static void push_array_mt(lua_State *L) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, JSON_ARRAY_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 1);
        // Hidden from scripts: one that could reach it could give every array a __gc.
        lua_pushliteral(L, "json.array");
        lua_setfield(L, -2, "__metatable");
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, JSON_ARRAY_KEY);
    }
}

// Length of the well-formed UTF-8 sequence starting at p (a byte >= 0x80), or 0 when it is not
// one: no overlong forms, no surrogates, nothing above U+10FFFF (Unicode Table 3-7).
static inline size_t utf8_sequence(const unsigned char *p, const unsigned char *end) {
    unsigned c = p[0];
    size_t avail = (size_t)(end - p);
    if (c < 0xC2) return 0;
    if (c < 0xE0) return avail >= 2 && (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (c < 0xF0) {
        if (avail < 3) return 0;
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
        return p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (c < 0xF5) {
        if (avail < 4) return 0;
        unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
        return p[1] >= lo && p[1] <= hi && (p[2] & 0xC0) == 0x80 && (p[3] & 0xC0) == 0x80 ? 4 : 0;
    }
    return 0;
}

#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

// High bit set in each byte of x that is '"', '\\', < 0x20 or >= 0x80. Bytes above the first
// flagged one may be flagged falsely (borrows), never the first itself, and never when none is.
static inline uint64_t special_bytes(uint64_t x) {
    uint64_t q = x ^ (ONES * '"');
    uint64_t s = x ^ (ONES * '\\');
    return (((q - ONES) & ~q) | ((s - ONES) & ~s) | ((x - ONES * 0x20) & ~x) | x) & HIGHS;
}

// First byte at or after p that is '"', '\\' or < 0x20, or end. Non-ASCII bytes are checked as
// UTF-8 on the way; at an ill-formed sequence it returns that position with *bad set.
static inline const unsigned char *scan_text(const unsigned char *p, const unsigned char *end, int *bad) {
    for (;;) {
        while (end - p >= 8) {
            uint64_t x;
            memcpy(&x, p, 8);
            uint64_t m = special_bytes(x);
            if (m != 0) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
                p += __builtin_ctzll(m) >> 3;
#endif
                break;
            }
            p += 8;
        }
        if (p == end) return p;
        unsigned c = *p;
        if (c < 0x80) {
            if (c == '"' || c == '\\' || c < 0x20) return p;
            p++;
            continue;
        }
        size_t n = utf8_sequence(p, end);
        if (n == 0) {
            *bad = 1;
            return p;
        }
        p += n;
    }
}

static const double powers_of_ten[] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

// strtod that does not depend on the C locale: the text uses '.', and if the C library wants
// another decimal point (a non-"C" LC_NUMERIC) the text is copied with that one instead. `s` is
// followed by a byte strtod cannot take as part of the number (checked by the caller's grammar).
static JSON_NOINLINE double read_double(lua_State *L, const char *s, size_t len) {
    char *stop;
    double value = strtod(s, &stop);
    if ((size_t)(stop - s) == len) return value;
    char small[64];
    int pushed = len >= sizeof small;
    char *copy = pushed ? (char *)lua_newuserdatauv(L, len + 1, 0) : small;
    memcpy(copy, s, len);
    copy[len] = '\0';
    char *dot = strchr(copy, '.');
    if (dot != NULL) *dot = localeconv()->decimal_point[0];
    value = strtod(copy, NULL);
    if (pushed) lua_pop(L, 1);
    return value;
}

// Decimal text of v into out (at least 21 bytes); returns the length.
static inline size_t format_integer(char *out, lua_Integer v) {
    char digits[24];
    char *q = digits + sizeof digits;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--q = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0) *--q = '-';
    size_t n = (size_t)(digits + sizeof digits - q);
    memcpy(out, q, n);
    return n;
}

// Fixed-point text of w / 10^k (w < 10^15) into out, as %g would print it, plus ".0" for k == 0.
static size_t format_fixed(char *out, int negative, uint64_t w, int k) {
    while (k > 0 && w % 10 == 0) {
        w /= 10;
        k--;
    }
    char digits[24];
    char *q = digits + sizeof digits;
    int count = 0;
    do {
        *--q = (char)('0' + w % 10);
        w /= 10;
        count++;
    } while (w != 0);
    char *o = out;
    if (negative) *o++ = '-';
    if (k == 0) {
        memcpy(o, q, (size_t)count);
        o += count;
        *o++ = '.';
        *o++ = '0';
    } else if (count <= k) {
        *o++ = '0';
        *o++ = '.';
        for (int i = count; i < k; i++) *o++ = '0';
        memcpy(o, q, (size_t)count);
        o += count;
    } else {
        memcpy(o, q, (size_t)(count - k));
        o += count - k;
        *o++ = '.';
        memcpy(o, q + count - k, (size_t)k);
        o += k;
    }
    return (size_t)(o - out);
}

// snprintf writes the locale's decimal point; put '.' back (dropping the rest of a multibyte one).
static void normalize_decimal_point(char *buf, size_t *len) {
    size_t r = 0, w = 0;
    int seen = 0;
    for (; r < *len; r++) {
        char c = buf[r];
        if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == 'e' || c == '.') {
            buf[w++] = c;
        } else if (!seen) {
            buf[w++] = '.';
            seen = 1;
        }
    }
    buf[w] = '\0';
    *len = w;
}

// The shortest of %.15g, %.16g, %.17g that reads back as x, with ".0" added when it would
// otherwise read back as an integer. out holds at least 32 bytes. Returns 0 for NaN and infinity.
static JSON_NOINLINE size_t format_float(lua_State *L, char *out, double x) {
    if (JSON_UNLIKELY(isnan(x) || isinf(x))) return 0;
    if (x == 0) {
        if (signbit(x)) {
            memcpy(out, "-0.0", 5);
            return 4;
        }
        memcpy(out, "0.0", 4);
        return 3;
    }
    // Fast path, same text as %.15g: a decimal w / 10^k with at most 15 digits that reads back
    // as x is the only such decimal (DBL_DIG is 15), so %.15g prints exactly it; in this range
    // %g uses fixed notation. Both w and 10^k are exact doubles, so the division is what strtod
    // computes for that text.
    double ax = fabs(x);
    if (ax >= 1e-4 && ax < 1e15) {
        for (int k = 0; k <= 15; k++) {
            double y = ax * powers_of_ten[k];
            if (y >= 1e15) break;
            uint64_t w = (uint64_t)(y + 0.5);
            if ((double)w / powers_of_ten[k] == ax) return format_fixed(out, x < 0, w, k);
        }
    }
    size_t len = 0;
    for (int precision = 15; precision <= 17; precision++) {
        int n = snprintf(out, 32, "%.*g", precision, x);
        len = n > 0 ? (size_t)n : 0;
        normalize_decimal_point(out, &len);
        if (precision == 17 || read_double(L, out, len) == x) break;
    }
    if (strpbrk(out, ".e") == NULL) {
        memcpy(out + len, ".0", 3);
        len += 2;
    }
    return len;
}

// ---------------------------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------------------------

typedef struct {
    lua_State *L;
    const unsigned char *start;
    const unsigned char *end;  // *end is '\0' (Lua strings always have one), a safe sentinel
} Decoder;

static JSON_NORETURN void decode_fail(Decoder *d, const unsigned char *p, const char *what) {
    if (p >= d->end) {
        luaL_error(d->L, "json.decode: unexpected end of input at byte %I", (lua_Integer)(d->end - d->start) + 1);
    } else {
        luaL_error(d->L, "json.decode: %s at byte %I", what, (lua_Integer)(p - d->start) + 1);
    }
    JSON_UNREACHABLE();
}

static inline const unsigned char *skip_space(const unsigned char *p) {
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') p++;
    return p;
}

static const unsigned char *decode_value(Decoder *d, const unsigned char *p, int depth);

static int hex4(const unsigned char *p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i];
        int digit;
        if (c >= '0' && c <= '9') digit = (int)(c - '0');
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') digit = (int)((c | 0x20) - 'a' + 10);
        else return -1;
        v = v * 16 + digit;
    }
    return v;
}

// The rest of a string once a backslash shows up: `start` is just after the opening quote and p
// at the first backslash. Kept out of line so the luaL_Buffer is not in every recursive frame.
static JSON_NOINLINE const unsigned char *decode_escaped_string(Decoder *d, const unsigned char *start, const unsigned char *p) {
    lua_State *L = d->L;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, (const char *)start, (size_t)(p - start));
    for (;;) {
        if (*p == '"') break;
        // *p is a backslash
        unsigned char out[4];
        size_t n = 1;
        switch (p[1]) {
        case '"': out[0] = '"'; break;
        case '\\': out[0] = '\\'; break;
        case '/': out[0] = '/'; break;
        case 'b': out[0] = '\b'; break;
        case 'f': out[0] = '\f'; break;
        case 'n': out[0] = '\n'; break;
        case 'r': out[0] = '\r'; break;
        case 't': out[0] = '\t'; break;
        case 'u': {
            // hex4 stops at the first non-hex byte, so the '\0' after the text keeps it in bounds.
            int u = hex4(p + 2);
            if (u < 0) decode_fail(d, p, "invalid \\u escape");
            unsigned long cp = (unsigned long)u;
            if (cp >= 0xDC00 && cp <= 0xDFFF) decode_fail(d, p, "lone surrogate in \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                int low = p[6] == '\\' && p[7] == 'u' ? hex4(p + 8) : -1;
                if (low < 0xDC00 || low > 0xDFFF) decode_fail(d, p, "lone surrogate in \\u escape");
                cp = 0x10000 + ((cp - 0xD800) << 10) + ((unsigned long)low - 0xDC00);
                p += 6;
            }
            if (cp < 0x80) {
                out[0] = (unsigned char)cp;
            } else if (cp < 0x800) {
                out[0] = (unsigned char)(0xC0 | (cp >> 6));
                out[1] = (unsigned char)(0x80 | (cp & 0x3F));
                n = 2;
            } else if (cp < 0x10000) {
                out[0] = (unsigned char)(0xE0 | (cp >> 12));
                out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
                out[2] = (unsigned char)(0x80 | (cp & 0x3F));
                n = 3;
            } else {
                out[0] = (unsigned char)(0xF0 | (cp >> 18));
                out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
                out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
                out[3] = (unsigned char)(0x80 | (cp & 0x3F));
                n = 4;
            }
            p += 4;
            break;
        }
        default:
            decode_fail(d, p + 1 >= d->end ? d->end : p, "invalid escape");
        }
        luaL_addlstring(&b, (const char *)out, n);
        p += 2;
        int bad = 0;
        const unsigned char *run = p;
        p = scan_text(p, d->end, &bad);
        if (bad) decode_fail(d, p, "invalid UTF-8");
        if (p == d->end) decode_fail(d, p, "unterminated string");
        if (*p < 0x20) decode_fail(d, p, "control character in string");
        luaL_addlstring(&b, (const char *)run, (size_t)(p - run));
    }
    luaL_pushresult(&b);
    return p + 1;
}

// p is just after the opening quote; pushes the string.
static inline const unsigned char *decode_string(Decoder *d, const unsigned char *p) {
    int bad = 0;
    const unsigned char *start = p;
    p = scan_text(p, d->end, &bad);
    if (JSON_LIKELY(*p == '"')) {
        lua_pushlstring(d->L, (const char *)start, (size_t)(p - start));
        return p + 1;
    }
    if (bad) decode_fail(d, p, "invalid UTF-8");
    if (p == d->end) decode_fail(d, p, "unterminated string");
    if (*p < 0x20) decode_fail(d, p, "control character in string");
    return decode_escaped_string(d, start, p);
}

#define IS_DIGIT(c) ((unsigned)(c) - '0' < 10u)

// Integers without fraction or exponent that fit in 64 bits become Lua integers; the rest are
// floats, computed exactly when the digits and the power of ten are exact doubles (Clinger's
// fast path), otherwise by strtod.
static const unsigned char *decode_number(Decoder *d, const unsigned char *p) {
    const unsigned char *s = p;
    int negative = *p == '-';
    p += negative;
    uint64_t m = 0;
    int digits = 0;  // digits seen; only the first 19 go into m, which then cannot overflow
    if (*p == '0') {
        p++;
        if (IS_DIGIT(*p)) decode_fail(d, s, "invalid number (leading zero)");
    } else if (IS_DIGIT(*p)) {
        do {
            if (digits < 19) m = m * 10 + (uint64_t)(*p - '0');
            digits++;
            p++;
        } while (IS_DIGIT(*p));
    } else {
        decode_fail(d, s, "invalid number");
    }
    if (JSON_LIKELY(*p != '.' && *p != 'e' && *p != 'E')) {
        if (digits <= 19) {
            if (!negative && m <= (uint64_t)LUA_MAXINTEGER) {
                lua_pushinteger(d->L, (lua_Integer)m);
                return p;
            }
            if (negative && m <= (uint64_t)LUA_MAXINTEGER + 1) {
                lua_pushinteger(d->L, m == 0 ? 0 : -(lua_Integer)(m - 1) - 1);
                return p;
            }
        }
        lua_pushnumber(d->L, read_double(d->L, (const char *)s, (size_t)(p - s)));
        return p;
    }
    int exponent = 0;
    if (*p == '.') {
        p++;
        if (!IS_DIGIT(*p)) decode_fail(d, s, "invalid number");
        do {
            if (digits < 19) {
                m = m * 10 + (uint64_t)(*p - '0');
                exponent--;
            }
            digits++;
            p++;
        } while (IS_DIGIT(*p));
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        int exponent_negative = 0;
        if (*p == '+' || *p == '-') exponent_negative = *p++ == '-';
        if (!IS_DIGIT(*p)) decode_fail(d, s, "invalid number");
        int e = 0;
        do {
            if (e < 100000) e = e * 10 + (*p - '0');
            p++;
        } while (IS_DIGIT(*p));
        exponent += exponent_negative ? -e : e;
    }
    double value;
#if FLT_EVAL_METHOD == 0
    if (digits <= 19 && m <= (UINT64_C(1) << 53) && exponent >= -22 && exponent <= 22) {
        value = (double)m;
        value = exponent < 0 ? value / powers_of_ten[-exponent] : value * powers_of_ten[exponent];
        lua_pushnumber(d->L, negative ? -value : value);
        return p;
    }
#endif
    value = read_double(d->L, (const char *)s, (size_t)(p - s));
    lua_pushnumber(d->L, value);
    return p;
}

// Values of an array and key/value pairs of an object wait on the stack, in batches, and go into
// a table created with the right size: filling an empty table one key at a time would rehash it
// at every power of two.
#define DECODE_BATCH 64

static void enter_container(Decoder *d, int depth) {
    if (JSON_UNLIKELY(depth > JSON_MAX_DEPTH)) luaL_error(d->L, "json.decode: nesting deeper than %d", JSON_MAX_DEPTH);
    // The table's slot and a batch, plus a few for a string buffer.
    luaL_checkstack(d->L, DECODE_BATCH + 8, "json.decode");
}

// Pops the `pending` values above `base` into the array at base (created when nothing was flushed
// yet) as its elements flushed + 1 to flushed + pending.
static void flush_array(lua_State *L, int base, lua_Integer flushed, int pending) {
    if (flushed == 0) {
        lua_createtable(L, pending, 0);
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_setmetatable(L, -2);
        lua_replace(L, base);
    }
    for (int i = pending; i > 0; i--) lua_rawseti(L, base, flushed + i);
}

static const unsigned char *decode_array(Decoder *d, const unsigned char *p, int depth) {
    lua_State *L = d->L;
    enter_container(d, depth);
    lua_pushnil(L);
    int base = lua_gettop(L);
    lua_Integer flushed = 0;
    int pending = 0;
    p = skip_space(p + 1);
    if (*p != ']') {
        for (;;) {
            p = skip_space(decode_value(d, p, depth));
            pending++;
            if (*p == ',') {
                p = skip_space(p + 1);
                if (pending == DECODE_BATCH) {
                    flush_array(L, base, flushed, pending);
                    flushed += pending;
                    pending = 0;
                }
            } else if (*p == ']') {
                break;
            } else {
                decode_fail(d, p, "expected ',' or ']'");
            }
        }
    }
    flush_array(L, base, flushed, pending);
    return p + 1;
}

// Sets the `pending` key/value pairs above `base` in the table at base (created when `created`
// is 0), in document order so that the last of duplicate keys wins, and pops them.
static void flush_object(lua_State *L, int base, int created, int pending) {
    if (!created) {
        lua_createtable(L, 0, pending);
        lua_replace(L, base);
    }
    for (int pair = base + 1; pair < base + 1 + 2 * pending; pair += 2) {
        lua_pushvalue(L, pair);
        lua_pushvalue(L, pair + 1);
        lua_rawset(L, base);
    }
    lua_settop(L, base);
}

static const unsigned char *decode_object(Decoder *d, const unsigned char *p, int depth) {
    lua_State *L = d->L;
    enter_container(d, depth);
    lua_pushnil(L);
    int base = lua_gettop(L);
    int created = 0, pending = 0;
    p = skip_space(p + 1);
    if (*p != '}') {
        for (int first = 1;; first = 0) {
            if (*p != '"') decode_fail(d, p, first ? "expected a string key or '}'" : "expected a string key");
            p = skip_space(decode_string(d, p + 1));
            if (*p != ':') decode_fail(d, p, "expected ':'");
            p = skip_space(decode_value(d, skip_space(p + 1), depth));
            pending++;
            if (*p == ',') {
                p = skip_space(p + 1);
                if (pending == DECODE_BATCH / 2) {
                    flush_object(L, base, created, pending);
                    created = 1;
                    pending = 0;
                }
            } else if (*p == '}') {
                break;
            } else {
                decode_fail(d, p, "expected ',' or '}'");
            }
        }
    }
    flush_object(L, base, created, pending);
    return p + 1;
}

// p is at the value's first byte (whitespace skipped); pushes the value.
static const unsigned char *decode_value(Decoder *d, const unsigned char *p, int depth) {
    switch (*p) {
    case '"': return decode_string(d, p + 1);
    case '{': return decode_object(d, p, depth + 1);
    case '[': return decode_array(d, p, depth + 1);
    case 't':
        if (d->end - p >= 4 && memcmp(p, "true", 4) == 0) {
            lua_pushboolean(d->L, 1);
            return p + 4;
        }
        break;
    case 'f':
        if (d->end - p >= 5 && memcmp(p, "false", 5) == 0) {
            lua_pushboolean(d->L, 0);
            return p + 5;
        }
        break;
    case 'n':
        if (d->end - p >= 4 && memcmp(p, "null", 4) == 0) {
            lua_pushlightuserdata(d->L, NULL);
            return p + 4;
        }
        break;
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        return decode_number(d, p);
    default:
        break;
    }
    decode_fail(d, p, "expected a value");
}

static int json_decode(lua_State *L) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    Decoder d = { L, (const unsigned char *)text, (const unsigned char *)text + len };
    const unsigned char *p = decode_value(&d, skip_space(d.start), 0);
    p = skip_space(p);
    if (p != d.end) decode_fail(&d, p, "unexpected data after the value");
    return 1;
}

// ---------------------------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------------------------

// The output starts in a buffer on the C stack and moves to a full userdata, kept in a fixed
// stack slot, when it outgrows it. A luaL_Buffer cannot be used here: it needs its box at the
// top of the stack whenever it grows, and the table walk keeps keys and values above it.
#define ENCODER_INITIAL 2048

typedef struct {
    lua_State *L;
    char *b;
    size_t n, size;
    int slot;  // stack index for the userdata that holds the output once it outgrows `initial`
    char initial[ENCODER_INITIAL];
} Encoder;

static JSON_NOINLINE void encoder_grow(Encoder *e, size_t extra) {
    if (extra > (size_t)-1 / 2 - e->n) luaL_error(e->L, "json.encode: output too large");
    size_t size = e->size * 2;
    if (size < e->n + extra) size = e->n + extra;
    char *grown = (char *)lua_newuserdatauv(e->L, size, 0);
    memcpy(grown, e->b, e->n);
    lua_replace(e->L, e->slot);  // the old userdata, if any, becomes garbage
    e->b = grown;
    e->size = size;
}

static inline char *encoder_reserve(Encoder *e, size_t extra) {
    if (JSON_UNLIKELY(e->size - e->n < extra)) encoder_grow(e, extra);
    return e->b + e->n;
}

static inline void encoder_put(Encoder *e, const char *s, size_t len) {
    memcpy(encoder_reserve(e, len), s, len);
    e->n += len;
}

static inline void encoder_char(Encoder *e, char c) {
    *encoder_reserve(e, 1) = c;
    e->n++;
}

static void encode_string(Encoder *e, const char *text, size_t len) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)text, *end = p + len;
    // Room for the quotes and the text unescaped; each escape reserves for itself and the rest.
    encoder_reserve(e, len + 2);
    e->b[e->n++] = '"';
    for (;;) {
        int bad = 0;
        const unsigned char *run = p;
        p = scan_text(p, end, &bad);
        if (bad) luaL_error(e->L, "json.encode: string is not valid UTF-8");
        memcpy(e->b + e->n, run, (size_t)(p - run));
        e->n += (size_t)(p - run);
        if (p == end) break;
        unsigned c = *p++;
        char *o = encoder_reserve(e, 6 + (size_t)(end - p) + 1);
        o[0] = '\\';
        switch (c) {
        case '"': o[1] = '"'; e->n += 2; break;
        case '\\': o[1] = '\\'; e->n += 2; break;
        case '\b': o[1] = 'b'; e->n += 2; break;
        case '\f': o[1] = 'f'; e->n += 2; break;
        case '\n': o[1] = 'n'; e->n += 2; break;
        case '\r': o[1] = 'r'; e->n += 2; break;
        case '\t': o[1] = 't'; e->n += 2; break;
        default:
            memcpy(o + 1, "u00", 3);
            o[4] = hex[c >> 4];
            o[5] = hex[c & 15];
            e->n += 6;
        }
    }
    e->b[e->n++] = '"';
}

static void encode_number(Encoder *e, int index, int quoted) {
    lua_State *L = e->L;
    char *o = encoder_reserve(e, 40);
    size_t n;
    if (quoted) *o++ = '"';
    if (lua_isinteger(L, index)) {
        n = format_integer(o, lua_tointeger(L, index));
    } else {
        n = format_float(L, o, lua_tonumber(L, index));
        if (n == 0) luaL_error(L, "json.encode: cannot encode NaN or infinity");
    }
    if (quoted) o[n++] = '"';
    e->n += n + (quoted ? 1 : 0);
}

static void encode_value(Encoder *e, int index, int depth);

static int is_marked_array(lua_State *L, int index) {
    if (!lua_getmetatable(L, index)) return 0;
    int marked = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
    return marked;
}

static void encode_table(Encoder *e, int index, int depth) {
    lua_State *L = e->L;
    if (JSON_UNLIKELY(depth > JSON_MAX_DEPTH)) {
        luaL_error(L, "json.encode: nesting deeper than %d (a table that contains itself?)", JSON_MAX_DEPTH);
    }
    luaL_checkstack(L, 4, "json.encode");
    lua_Integer length;
    if (is_marked_array(L, index)) {
        length = (lua_Integer)lua_rawlen(L, index);
    } else {
        // An array when the keys are exactly 1..n: all positive integers, as many as the largest.
        lua_Integer count = 0, largest = 0;
        lua_pushnil(L);
        while (lua_next(L, index)) {
            lua_pop(L, 1);
            lua_Integer key;
            if (!lua_isinteger(L, -1) || (key = lua_tointeger(L, -1)) < 1) {
                lua_pop(L, 1);
                goto object;
            }
            count++;
            if (key > largest) largest = key;
        }
        if (count == 0) {
            encoder_put(e, "{}", 2);
            return;
        }
        if (largest != count) goto object;
        length = count;
    }
    encoder_char(e, '[');
    for (lua_Integer i = 1; i <= length; i++) {
        if (i > 1) encoder_char(e, ',');
        lua_rawgeti(L, index, i);
        encode_value(e, lua_gettop(L), depth);
        lua_pop(L, 1);
    }
    encoder_char(e, ']');
    return;

object:
    encoder_char(e, '{');
    lua_pushnil(L);
    for (int first = 1; lua_next(L, index); first = 0) {
        if (!first) encoder_char(e, ',');
        int key = lua_gettop(L) - 1;
        switch (lua_type(L, key)) {
        case LUA_TSTRING: {
            size_t len;
            const char *s = lua_tolstring(L, key, &len);
            encode_string(e, s, len);
            break;
        }
        case LUA_TNUMBER:
            encode_number(e, key, 1);
            break;
        default:
            luaL_error(L, "json.encode: a table key must be a string or a number, got %s", luaL_typename(L, key));
        }
        encoder_char(e, ':');
        encode_value(e, key + 1, depth);
        lua_pop(L, 1);
    }
    encoder_char(e, '}');
}

static void encode_value(Encoder *e, int index, int depth) {
    lua_State *L = e->L;
    switch (lua_type(L, index)) {
    case LUA_TNIL:
        encoder_put(e, "null", 4);
        return;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, index)) encoder_put(e, "true", 4);
        else encoder_put(e, "false", 5);
        return;
    case LUA_TNUMBER:
        encode_number(e, index, 0);
        return;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, index, &len);
        encode_string(e, s, len);
        return;
    }
    case LUA_TTABLE:
        encode_table(e, index, depth + 1);
        return;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, index) == NULL) {
            encoder_put(e, "null", 4);
            return;
        }
        break;
    default:
        break;
    }
    luaL_error(L, "json.encode: cannot encode a %s", luaL_typename(L, index));
}

static int json_encode(lua_State *L) {
    lua_settop(L, 1);
    lua_pushnil(L);  // the slot for the output's userdata
    Encoder e;
    e.L = L;
    e.b = e.initial;
    e.n = 0;
    e.size = sizeof e.initial;
    e.slot = 2;
    encode_value(&e, 1, 0);
    lua_pushlstring(L, e.b, e.n);
    return 1;
}

// ---------------------------------------------------------------------------------------------
// Module
// ---------------------------------------------------------------------------------------------

// json.array([t]): marks t, or a new table, as an array and returns it.
static int json_array(lua_State *L) {
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_createtable(L, 0, 0);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
        // lua_setmetatable would replace any metatable, a protected one included (a conn's).
        if (lua_getmetatable(L, 1)) {
            int same = lua_rawequal(L, -1, lua_upvalueindex(1));
            lua_pop(L, 1);
            if (!same) return luaL_error(L, "json.array: the table has a metatable of its own");
        }
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_setmetatable(L, 1);
    return 1;
}

static int json_is_array(lua_State *L) {
    lua_pushboolean(L, lua_type(L, 1) == LUA_TTABLE && is_marked_array(L, 1));
    return 1;
}

int moongate_json_open(lua_State *L) {
    static const luaL_Reg functions[] = {
        { "encode", json_encode },
        { "decode", json_decode },
        { "array", json_array },
        { "is_array", json_is_array },
        { NULL, NULL },
    };
    luaL_checkstack(L, 4, "json");
    lua_createtable(L, 0, 5);
    push_array_mt(L);
    luaL_setfuncs(L, functions, 1);  // every function gets the array metatable as upvalue 1
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}

int luaopen_moongate_json(lua_State *L) {
    return moongate_json_open(L);
}

void moongate_json_mark_array(lua_State *L, int index) {
    index = lua_absindex(L, index);
    if (lua_type(L, index) != LUA_TTABLE) return;
    push_array_mt(L);
    lua_setmetatable(L, index);
}

void moongate_json_push_null(lua_State *L) {
    lua_pushlightuserdata(L, NULL);
}
