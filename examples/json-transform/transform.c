/*
 * transform.c - the "realistic" function of wisp's cold-start benchmark.
 *
 * Reads a JSON document of orders on stdin,
 *
 *   {"orders":[{"id":123,"customer":"name",
 *               "items":[{"sku":"ABC-1","qty":2,"price":9.99},...],
 *               "note":"..."},...]}
 *
 * parses it with the small recursive-descent parser below, and writes one
 * line of compact JSON on stdout:
 *
 *   {"orders":[{"id":123,"customer":"NAME","items":1,"units":2,
 *               "total":19.98,"note_bytes":3},...],
 *    "summary":{"orders":N,"items":I,"units":U,"grand_total":T,"customers":C,
 *               "top_customers":[{"customer":"NAME","orders":K,"total":T},...]}}
 *
 * where, per order, total = sum(qty * price), the customer name is upper-
 * cased (ASCII letters only) and note_bytes is the decoded length of the
 * optional note; the summary counts the distinct customers and ranks the 5
 * with the largest totals (ties by name).
 *
 * Malformed JSON, or a document that does not have this shape, is rejected
 * with a one-line message on stderr and exit status 1.
 *
 * The same source is built natively (gcc -static) and for wasm32-wasi, and
 * the benchmark checks that both produce byte-identical output, so the code
 * is plain C11 using stdio, stdlib and string only (plus the freestanding
 * float.h, limits.h and stdint.h for constants), and the output does not
 * depend on the C library's float formatting: money is converted to integer
 * cents once, summed exactly, and printed with integer arithmetic.
 */
#include <float.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deep enough for any sane document, shallow enough that the recursion fits
 * comfortably in wasm32's default 64 KiB shadow stack. */
#define MAX_DEPTH 128

/* Bounds that keep every cent amount exact in a long long:
 * |price| <= 1e9 -> |cents| <= 1e11; |qty| <= 1e6 -> |line| <= 1e17. */
#define MAX_PRICE 1e9
#define MAX_QTY 1e6

#define TOP_N 5

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static void die(const char *msg)
{
    fprintf(stderr, "transform: %s\n", msg);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

/* Reads all of stdin. The buffer gets one spare byte past the data, which
 * the number parser uses as a temporary terminator (see parse_number). */
static char *read_all(FILE *in, size_t *len_out)
{
    size_t cap = 128 * 1024, len = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (cap - len < 2) {
            if (cap > SIZE_MAX / 2)
                die("input too large");
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        size_t n = fread(buf + len, 1, cap - len - 1, in);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(in))
        die("error reading stdin");
    buf[len] = '\0';
    *len_out = len;
    return buf;
}

/* ------------------------------------------------------------------------ */
/* JSON values                                                              */
/* ------------------------------------------------------------------------ */

typedef enum { J_NULL, J_FALSE, J_TRUE, J_NUMBER, J_STRING, J_ARRAY, J_OBJECT } jtype;

/* Strings carry their length: "\u0000" is a valid JSON string. */
typedef struct {
    char *ptr;
    size_t len;
} jstr;

typedef struct jvalue jvalue;
typedef struct jmember jmember;

struct jvalue {
    jtype type;
    union {
        double num;
        jstr str;
        struct {
            jvalue *items;
            size_t len;
        } arr;
        struct {
            jmember *items;
            size_t len;
        } obj;
    } u;
};

struct jmember {
    jstr key;
    jvalue val;
};

static void json_free(jvalue *v)
{
    size_t i;
    switch (v->type) {
    case J_STRING:
        free(v->u.str.ptr);
        break;
    case J_ARRAY:
        for (i = 0; i < v->u.arr.len; i++)
            json_free(&v->u.arr.items[i]);
        free(v->u.arr.items);
        break;
    case J_OBJECT:
        for (i = 0; i < v->u.obj.len; i++) {
            free(v->u.obj.items[i].key.ptr);
            json_free(&v->u.obj.items[i].val);
        }
        free(v->u.obj.items);
        break;
    default:
        break;
    }
}

/* The member named `key`, or NULL. With duplicate keys the last one wins,
 * as in JavaScript's JSON.parse. */
static const jvalue *json_get(const jvalue *obj, const char *key)
{
    size_t klen = strlen(key), i = obj->u.obj.len;
    while (i-- > 0) {
        const jstr *k = &obj->u.obj.items[i].key;
        if (k->len == klen && memcmp(k->ptr, key, klen) == 0)
            return &obj->u.obj.items[i].val;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Parser (RFC 8259, strict: no trailing commas, comments, NaN, leading     */
/* zeros, raw control characters in strings, invalid UTF-8 or lone          */
/* surrogates)                                                              */
/* ------------------------------------------------------------------------ */

typedef struct {
    char *s; /* the input; s[len] is writable (read_all's spare byte) */
    size_t len;
    size_t pos;
    int depth;
    const char *err; /* first error, or NULL */
    size_t err_pos;
} parser;

/* Records the first error; returns 0 so callers can `return fail(...)`. */
static int fail(parser *p, const char *msg)
{
    if (!p->err) {
        p->err = msg;
        p->err_pos = p->pos;
    }
    return 0;
}

static int peek(const parser *p)
{
    return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

static void skip_ws(parser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Length of the well-formed UTF-8 sequence at s (at most `avail` bytes), or
 * 0 if it is malformed, overlong, a surrogate or beyond U+10FFFF. */
static size_t utf8_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xBF;
    size_t n, i;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* U+D800..U+DFFF */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* > U+10FFFF */
    } else
        return 0;
    if (avail < n || s[1] < lo || s[1] > hi)
        return 0;
    for (i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

static size_t utf8_encode(unsigned long cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Reads the 4 hex digits of a \u escape at p->pos. */
static int parse_hex4(parser *p, unsigned long *out)
{
    unsigned long v = 0;
    int i;
    for (i = 0; i < 4; i++) {
        int d = p->pos < p->len ? hex_value((unsigned char)p->s[p->pos]) : -1;
        if (d < 0)
            return fail(p, "invalid \\u escape");
        v = v * 16 + (unsigned long)d;
        p->pos++;
    }
    *out = v;
    return 1;
}

/* Parses a string starting at its opening quote. */
static int parse_string(parser *p, jstr *out)
{
    size_t end;
    char *buf, *w;

    p->pos++; /* '"' */

    /* Find the closing quote first: the decoded string is never longer than
     * its source (every escape shrinks or keeps its size), so one exact
     * allocation suffices. */
    for (end = p->pos; end < p->len && p->s[end] != '"'; end++)
        if (p->s[end] == '\\')
            end++;
    if (end >= p->len) {
        p->pos = p->len;
        return fail(p, "unterminated string");
    }

    buf = w = xmalloc(end - p->pos + 1);
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) {
            free(buf);
            return fail(p, "control character in string");
        }
        if (c >= 0x80) {
            size_t n = utf8_len((const unsigned char *)p->s + p->pos, end - p->pos);
            if (n == 0) {
                free(buf);
                return fail(p, "invalid UTF-8 in string");
            }
            memcpy(w, p->s + p->pos, n);
            w += n;
            p->pos += n;
            continue;
        }
        if (c != '\\') {
            *w++ = (char)c;
            p->pos++;
            continue;
        }
        p->pos++; /* '\\' */
        c = (unsigned char)p->s[p->pos++];
        switch (c) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; break;
        case '/': *w++ = '/'; break;
        case 'b': *w++ = '\b'; break;
        case 'f': *w++ = '\f'; break;
        case 'n': *w++ = '\n'; break;
        case 'r': *w++ = '\r'; break;
        case 't': *w++ = '\t'; break;
        case 'u': {
            unsigned long cp, lo;
            if (!parse_hex4(p, &cp))
                goto bad;
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                fail(p, "unpaired low surrogate in \\u escape");
                goto bad;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                /* UTF-16 surrogate pair: must be followed by \uDC00-\uDFFF. */
                if (p->pos + 1 >= end || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                    fail(p, "unpaired high surrogate in \\u escape");
                    goto bad;
                }
                p->pos += 2;
                if (!parse_hex4(p, &lo))
                    goto bad;
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    fail(p, "unpaired high surrogate in \\u escape");
                    goto bad;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            w += utf8_encode(cp, w);
            break;
        }
        default:
            p->pos--;
            fail(p, "invalid escape in string");
            goto bad;
        }
        /* A \u escape's hex digits may not run past the closing quote. */
        if (p->pos > end) {
            fail(p, "invalid \\u escape");
            goto bad;
        }
    }
    p->pos = end + 1; /* '"' */
    out->ptr = buf;
    out->len = (size_t)(w - buf);
    return 1;
bad:
    free(buf);
    return 0;
}

static int parse_number(parser *p, jvalue *out)
{
    size_t start = p->pos;
    char saved, *end;
    double v;

    /* Check the JSON grammar first: strtod alone would also accept "0x1F",
     * "inf", "1.", ".5", "+1" and leading zeros. */
    if (peek(p) == '-')
        p->pos++;
    if (peek(p) == '0')
        p->pos++;
    else if (is_digit(peek(p)))
        while (is_digit(peek(p)))
            p->pos++;
    else
        return fail(p, "invalid number");
    if (peek(p) == '.') {
        p->pos++;
        if (!is_digit(peek(p)))
            return fail(p, "invalid number: digit expected after '.'");
        while (is_digit(peek(p)))
            p->pos++;
    }
    if (peek(p) == 'e' || peek(p) == 'E') {
        p->pos++;
        if (peek(p) == '+' || peek(p) == '-')
            p->pos++;
        if (!is_digit(peek(p)))
            return fail(p, "invalid number: digit expected in exponent");
        while (is_digit(peek(p)))
            p->pos++;
    }

    /* Terminate the token in place for strtod (s[len] is a spare byte, so
     * this is in bounds even at the end of the input), then restore it. */
    saved = p->s[p->pos];
    p->s[p->pos] = '\0';
    v = strtod(p->s + start, &end);
    p->s[p->pos] = saved;
    if (end != p->s + p->pos)
        return fail(p, "invalid number");
    if (v > DBL_MAX || v < -DBL_MAX)
        return fail(p, "number out of range");
    out->type = J_NUMBER;
    out->u.num = v;
    return 1;
}

static int parse_literal(parser *p, const char *word, jtype type, jvalue *out)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return fail(p, "invalid literal");
    p->pos += n;
    out->type = type;
    return 1;
}

static int parse_value(parser *p, jvalue *out);

static int parse_array(parser *p, jvalue *out)
{
    size_t cap = 0;
    out->type = J_ARRAY;
    out->u.arr.items = NULL;
    out->u.arr.len = 0;

    p->pos++; /* '[' */
    skip_ws(p);
    if (peek(p) == ']') {
        p->pos++;
        return 1;
    }
    for (;;) {
        jvalue item;
        if (!parse_value(p, &item)) {
            json_free(&item);
            return 0;
        }
        if (out->u.arr.len == cap) {
            cap = cap ? cap * 2 : 4;
            out->u.arr.items = xrealloc(out->u.arr.items, cap * sizeof(jvalue));
        }
        out->u.arr.items[out->u.arr.len++] = item;
        skip_ws(p);
        if (peek(p) == ',') {
            p->pos++;
            skip_ws(p);
            continue;
        }
        if (peek(p) == ']') {
            p->pos++;
            return 1;
        }
        return fail(p, "expected ',' or ']' in array");
    }
}

static int parse_object(parser *p, jvalue *out)
{
    size_t cap = 0;
    out->type = J_OBJECT;
    out->u.obj.items = NULL;
    out->u.obj.len = 0;

    p->pos++; /* '{' */
    skip_ws(p);
    if (peek(p) == '}') {
        p->pos++;
        return 1;
    }
    for (;;) {
        jmember m;
        if (peek(p) != '"')
            return fail(p, "expected string key in object");
        if (!parse_string(p, &m.key))
            return 0;
        skip_ws(p);
        if (peek(p) != ':') {
            free(m.key.ptr);
            return fail(p, "expected ':' after object key");
        }
        p->pos++;
        skip_ws(p);
        if (!parse_value(p, &m.val)) {
            free(m.key.ptr);
            json_free(&m.val);
            return 0;
        }
        if (out->u.obj.len == cap) {
            cap = cap ? cap * 2 : 4;
            out->u.obj.items = xrealloc(out->u.obj.items, cap * sizeof(jmember));
        }
        out->u.obj.items[out->u.obj.len++] = m;
        skip_ws(p);
        if (peek(p) == ',') {
            p->pos++;
            skip_ws(p);
            continue;
        }
        if (peek(p) == '}') {
            p->pos++;
            return 1;
        }
        return fail(p, "expected ',' or '}' in object");
    }
}

/* Parses one value at p->pos (whitespace before it already skipped). On
 * failure *out holds whatever was built so far and is safe to json_free. */
static int parse_value(parser *p, jvalue *out)
{
    int ok;
    out->type = J_NULL;
    switch (peek(p)) {
    case '{':
    case '[':
        if (p->depth >= MAX_DEPTH)
            return fail(p, "nesting too deep");
        p->depth++;
        ok = peek(p) == '{' ? parse_object(p, out) : parse_array(p, out);
        p->depth--;
        return ok;
    case '"':
        out->type = J_STRING;
        out->u.str.ptr = NULL; /* so a failed string is safe to free */
        ok = parse_string(p, &out->u.str);
        if (!ok)
            out->type = J_NULL;
        return ok;
    case 't':
        return parse_literal(p, "true", J_TRUE, out);
    case 'f':
        return parse_literal(p, "false", J_FALSE, out);
    case 'n':
        return parse_literal(p, "null", J_NULL, out);
    case -1:
        return fail(p, "unexpected end of input");
    default:
        if (peek(p) == '-' || is_digit(peek(p)))
            return parse_number(p, out);
        return fail(p, "unexpected character");
    }
}

/* Parses a whole document; on error prints where and exits 1. */
static void parse_document(char *s, size_t len, jvalue *out)
{
    parser p = {s, len, 0, 0, NULL, 0};
    skip_ws(&p);
    if (parse_value(&p, out)) {
        skip_ws(&p);
        if (p.pos != p.len)
            fail(&p, "trailing data after JSON value");
    }
    if (p.err) {
        size_t line = 1, col = 1, i;
        for (i = 0; i < p.err_pos && i < len; i++) {
            if (s[i] == '\n') {
                line++;
                col = 1;
            } else
                col++;
        }
        fprintf(stderr, "transform: invalid JSON: %s at line %lu, column %lu (byte %lu)\n",
                p.err, (unsigned long)line, (unsigned long)col, (unsigned long)p.err_pos);
        json_free(out);
        exit(1);
    }
}

/* ------------------------------------------------------------------------ */
/* Output                                                                   */
/* ------------------------------------------------------------------------ */

/* Writes a JSON string literal; optionally upper-cases ASCII letters (bytes
 * >= 0x80 are parts of UTF-8 sequences and pass through unchanged). */
static void put_string(const jstr *s, int upper)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;
    putchar('"');
    for (i = 0; i < s->len; i++) {
        unsigned char c = (unsigned char)s->ptr[i];
        if (upper && c >= 'a' && c <= 'z')
            c = (unsigned char)(c - 'a' + 'A');
        switch (c) {
        case '"': fputs("\\\"", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        case '\b': fputs("\\b", stdout); break;
        case '\f': fputs("\\f", stdout); break;
        case '\n': fputs("\\n", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        default:
            if (c < 0x20) {
                fputs("\\u00", stdout);
                putchar(hex[c >> 4]);
                putchar(hex[c & 15]);
            } else
                putchar(c);
        }
    }
    putchar('"');
}

/* Writes an amount of cents as a JSON number with exactly two decimals. */
static void put_cents(long long cents)
{
    if (cents < 0) {
        putchar('-');
        cents = -cents; /* cannot overflow: amounts are bounded, see MAX_* */
    }
    printf("%lld.%02lld", cents / 100, cents % 100);
}

/* ------------------------------------------------------------------------ */
/* Per-customer totals: an open-addressing hash table keyed by the name     */
/* (pointing into the parsed document, not copied)                          */
/* ------------------------------------------------------------------------ */

typedef struct {
    const jstr *name; /* NULL: empty slot */
    long long total_cents;
    long long orders;
} customer;

typedef struct {
    customer *slots;
    size_t cap; /* a power of two */
    size_t len;
} customer_table;

static unsigned long hash_bytes(const char *s, size_t n)
{
    unsigned long h = 2166136261u; /* FNV-1a, 32-bit */
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h = (h * 16777619u) & 0xFFFFFFFFu;
    }
    return h;
}

static customer *customer_slot(customer *slots, size_t cap, const jstr *name)
{
    size_t i = hash_bytes(name->ptr, name->len) & (cap - 1);
    while (slots[i].name &&
           !(slots[i].name->len == name->len && memcmp(slots[i].name->ptr, name->ptr, name->len) == 0))
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

static customer *customer_find(customer_table *t, const jstr *name)
{
    customer *c;
    if (2 * (t->len + 1) > t->cap) { /* keep the load factor <= 1/2 */
        size_t new_cap = t->cap ? t->cap * 2 : 64, i;
        customer *slots = xmalloc(new_cap * sizeof(customer));
        memset(slots, 0, new_cap * sizeof(customer));
        for (i = 0; i < t->cap; i++)
            if (t->slots[i].name)
                *customer_slot(slots, new_cap, t->slots[i].name) = t->slots[i];
        free(t->slots);
        t->slots = slots;
        t->cap = new_cap;
    }
    c = customer_slot(t->slots, t->cap, name);
    if (!c->name) {
        c->name = name;
        t->len++;
    }
    return c;
}

/* Largest total first; ties broken by name so the ranking is deterministic
 * (qsort is not stable, and the table's order depends on hashing). */
static int customer_cmp(const void *a, const void *b)
{
    const customer *x = a, *y = b;
    size_t n;
    int r;
    if (x->total_cents != y->total_cents)
        return x->total_cents > y->total_cents ? -1 : 1;
    n = x->name->len < y->name->len ? x->name->len : y->name->len;
    r = memcmp(x->name->ptr, y->name->ptr, n);
    if (r != 0)
        return r;
    return x->name->len < y->name->len ? -1 : x->name->len > y->name->len;
}

/* ------------------------------------------------------------------------ */
/* The transformation                                                       */
/* ------------------------------------------------------------------------ */

static void bad_order(size_t index, const char *what)
{
    fprintf(stderr, "transform: invalid order #%lu: %s\n", (unsigned long)index, what);
    exit(1);
}

/* A number that must be an integer with |v| <= limit. */
static long long get_integer(const jvalue *v, double limit, size_t index, const char *what)
{
    if (!v || v->type != J_NUMBER || v->u.num < -limit || v->u.num > limit ||
        v->u.num != (double)(long long)v->u.num)
        bad_order(index, what);
    return (long long)v->u.num;
}

/* A price in cents, rounded to the nearest cent (9.99 is 9.9899999... as a
 * double; rounding, not truncating, makes that 999). */
static long long get_cents(const jvalue *v, size_t index)
{
    double x;
    if (!v || v->type != J_NUMBER || v->u.num < -MAX_PRICE || v->u.num > MAX_PRICE)
        bad_order(index, "item \"price\" must be a number with |price| <= 1e9");
    x = v->u.num * 100.0;
    return (long long)(x < 0 ? x - 0.5 : x + 0.5);
}

static long long add_checked(long long a, long long b, size_t index)
{
    if ((b > 0 && a > LLONG_MAX - b) || (b < 0 && a < LLONG_MIN + b))
        bad_order(index, "totals overflow");
    return a + b;
}

static void transform(const jvalue *doc)
{
    const jvalue *orders;
    customer_table customers = {NULL, 0, 0};
    customer *ranked;
    long long grand_total = 0, all_units = 0;
    size_t all_items = 0, i, j, n_top;

    if (doc->type != J_OBJECT)
        die("invalid document: top level must be an object");
    orders = json_get(doc, "orders");
    if (!orders || orders->type != J_ARRAY)
        die("invalid document: \"orders\" must be an array");

    fputs("{\"orders\":[", stdout);
    for (i = 0; i < orders->u.arr.len; i++) {
        const jvalue *order = &orders->u.arr.items[i], *customer_v, *items, *note;
        long long id, total = 0, units = 0;
        customer *c;

        if (order->type != J_OBJECT)
            bad_order(i, "must be an object");
        /* Ids are integers that a double represents exactly (< 2^53). */
        id = get_integer(json_get(order, "id"), 9007199254740991.0, i,
                         "\"id\" must be an integer with |id| < 2^53");
        customer_v = json_get(order, "customer");
        if (!customer_v || customer_v->type != J_STRING)
            bad_order(i, "\"customer\" must be a string");
        items = json_get(order, "items");
        if (!items || items->type != J_ARRAY)
            bad_order(i, "\"items\" must be an array");
        note = json_get(order, "note");
        if (note && note->type != J_STRING && note->type != J_NULL)
            bad_order(i, "\"note\" must be a string or null");

        for (j = 0; j < items->u.arr.len; j++) {
            const jvalue *item = &items->u.arr.items[j], *sku;
            long long qty, cents;
            if (item->type != J_OBJECT)
                bad_order(i, "each item must be an object");
            sku = json_get(item, "sku");
            if (!sku || sku->type != J_STRING)
                bad_order(i, "item \"sku\" must be a string");
            qty = get_integer(json_get(item, "qty"), MAX_QTY, i,
                              "item \"qty\" must be an integer with |qty| <= 1e6");
            cents = get_cents(json_get(item, "price"), i);
            total = add_checked(total, qty * cents, i);
            units = add_checked(units, qty, i);
        }

        c = customer_find(&customers, &customer_v->u.str);
        c->total_cents = add_checked(c->total_cents, total, i);
        c->orders++;
        grand_total = add_checked(grand_total, total, i);
        all_units = add_checked(all_units, units, i);
        all_items += items->u.arr.len;

        if (i > 0)
            putchar(',');
        printf("{\"id\":%lld,\"customer\":", id);
        put_string(&customer_v->u.str, 1);
        printf(",\"items\":%lu,\"units\":%lld,\"total\":", (unsigned long)items->u.arr.len, units);
        put_cents(total);
        printf(",\"note_bytes\":%lu}",
               (unsigned long)(note && note->type == J_STRING ? note->u.str.len : 0));
    }

    /* Rank the customers: pack the occupied slots, sort, keep the first 5. */
    ranked = xmalloc(customers.len * sizeof(customer));
    for (i = 0, j = 0; i < customers.cap; i++)
        if (customers.slots[i].name)
            ranked[j++] = customers.slots[i];
    qsort(ranked, customers.len, sizeof(customer), customer_cmp);
    n_top = customers.len < TOP_N ? customers.len : TOP_N;

    printf("],\"summary\":{\"orders\":%lu,\"items\":%lu,\"units\":%lld,\"grand_total\":",
           (unsigned long)orders->u.arr.len, (unsigned long)all_items, all_units);
    put_cents(grand_total);
    printf(",\"customers\":%lu,\"top_customers\":[", (unsigned long)customers.len);
    for (i = 0; i < n_top; i++) {
        if (i > 0)
            putchar(',');
        fputs("{\"customer\":", stdout);
        put_string(ranked[i].name, 1);
        printf(",\"orders\":%lld,\"total\":", ranked[i].orders);
        put_cents(ranked[i].total_cents);
        putchar('}');
    }
    fputs("]}}\n", stdout);

    free(ranked);
    free(customers.slots);
}

int main(void)
{
    size_t len;
    char *input;
    jvalue doc;

    /* One large buffer: the whole result is written in a few writes. */
    setvbuf(stdout, NULL, _IOFBF, 64 * 1024);

    input = read_all(stdin, &len);
    parse_document(input, len, &doc);
    transform(&doc);
    json_free(&doc);
    free(input);

    if (fflush(stdout) != 0 || ferror(stdout))
        die("error writing stdout");
    return 0;
}
