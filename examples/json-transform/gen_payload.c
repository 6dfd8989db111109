/*
 * gen_payload.c - writes the benchmark's input document for transform.c.
 *
 *   gen_payload SIZE [SEED]
 *
 * prints a JSON document of orders, at most SIZE bytes (and as close to it
 * as whole orders allow), on stdout. The same SIZE and SEED give the same
 * bytes on every platform: the generator uses its own PRNG and only integer
 * formatting.
 *
 * The data exercises what the parser must handle: escaped quotes, \n and \t,
 * \/, \u escapes (including a surrogate pair), raw UTF-8, prices written as
 * "9.99", "12", "1999e-2", optional or null notes, and customers that recur
 * with a skewed distribution so that the top-5 ranking is meaningful.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* splitmix64: tiny, good enough, and identical everywhere. */
static unsigned long long rng_state;

static unsigned long long next_u64(void)
{
    unsigned long long z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n); the modulo bias is irrelevant here. */
static unsigned rnd(unsigned n)
{
    return (unsigned)(next_u64() % n);
}

/* Customer names as they appear inside the JSON quotes (already escaped). */
static const char *const customers[] = {
    "Alice Martin", "Bob Nguyen", "Carla Rossi", "Dmitri Volkov", "Eve Tanaka",
    "Farid Haddad", "Grace O'Neil", "Hiro Sato", "Ines Costa", "Jamal Carter",
    "Jos\\u00e9 Garc\\u00eda",             /* \u escapes: "José García" */
    "Zo\xc3\xab \xc3\x85ngstr\xc3\xb6m",   /* raw UTF-8: "Zoë Ångström" */
    "Dana \\\"DJ\\\" Lee",                 /* escaped quotes */
    "Kofi Mensah", "Lena Schmidt", "Marek Nowak", "Nadia Petrova", "Omar Aziz",
    "Priya Raman", "Quentin Blake", "Rosa Delgado", "Sven Larsen", "Tariq Khan",
    "Uma Iyer", "Victor Hugo", "Wen Li", "Ximena Ruiz", "Yusuf Demir",
    "acme corp", "globex GmbH", "Initech Ltd", "umbrella \\/ partners",
    "\\u5c71\\u7530 \\u592a\\u90ce",       /* \u escapes: CJK */
};
#define N_CUSTOMERS (sizeof customers / sizeof customers[0])

static const char *const sku_prefixes[] = {"ABC", "KLM", "XYZ", "QRS", "TUV", "DEF"};
#define N_SKU_PREFIXES (sizeof sku_prefixes / sizeof sku_prefixes[0])

/* Words for notes; some carry escapes the parser must decode. */
static const char *const words[] = {
    "please", "deliver", "before", "noon", "leave", "at", "the", "door", "gift",
    "wrap", "fragile", "call", "on", "arrival", "\\\"urgent\\\"", "line\\nbreak",
    "tab\\there", "caf\\u00e9", "\\ud83d\\ude80", "a\\/b", "back\\\\slash",
    "na\xc3\xafve", "r\xc3\xa9sum\xc3\xa9", "invoice", "attached", "thanks",
};
#define N_WORDS (sizeof words / sizeof words[0])

/* Appends formatted text to a fixed buffer; the buffer is sized so that one
 * order always fits (checked, to be safe). */
typedef struct {
    char data[4096];
    size_t len;
} buf;

static void put(buf *b, const char *s)
{
    size_t n = strlen(s);
    if (b->len + n >= sizeof b->data) {
        fputs("gen_payload: internal error: order too large\n", stderr);
        exit(1);
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

static void put_uint(buf *b, unsigned long long v)
{
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%llu", v);
    put(b, tmp);
}

/* A price of `cents`, written in one of the forms JSON allows. */
static void put_price(buf *b, unsigned cents)
{
    char tmp[32];
    unsigned form = rnd(20);
    if (form == 0)
        snprintf(tmp, sizeof tmp, "%ue-2", cents);          /* 1999e-2 */
    else if (form == 1 && cents % 100 == 0)
        snprintf(tmp, sizeof tmp, "%u", cents / 100);       /* 12 */
    else if (form == 2 && cents % 10 == 0)
        snprintf(tmp, sizeof tmp, "%u.%u", cents / 100, cents / 10 % 10); /* 12.5 */
    else
        snprintf(tmp, sizeof tmp, "%u.%02u", cents / 100, cents % 100);   /* 12.34 */
    put(b, tmp);
}

static void gen_order(buf *b, unsigned long long id)
{
    unsigned n_items = 1 + rnd(6), i;
    /* The smaller of two draws skews towards the first customers. */
    unsigned c1 = rnd(N_CUSTOMERS), c2 = rnd(N_CUSTOMERS);

    b->len = 0;
    put(b, "{\"id\":");
    put_uint(b, id);
    put(b, ",\"customer\":\"");
    put(b, customers[c1 < c2 ? c1 : c2]);
    put(b, "\",\"items\":[");
    for (i = 0; i < n_items; i++) {
        /* Separate statements: the order in which function arguments are
         * evaluated is unspecified (gcc and clang differ), and it must not
         * change which random number goes where. */
        char sku[32];
        const char *prefix = sku_prefixes[rnd(N_SKU_PREFIXES)];
        unsigned number = 1 + rnd(999);
        snprintf(sku, sizeof sku, "%s-%u", prefix, number);
        if (i > 0)
            put(b, ",");
        put(b, "{\"sku\":\"");
        put(b, sku);
        put(b, "\",\"qty\":");
        put_uint(b, 1 + rnd(10));
        put(b, ",\"price\":");
        put_price(b, 50 + rnd(19950));
        put(b, "}");
    }
    put(b, "]");

    switch (rnd(8)) {
    case 0: /* no note */
        break;
    case 1:
        put(b, ",\"note\":null");
        break;
    default: {
        unsigned n_words = 3 + rnd(25);
        put(b, ",\"note\":\"");
        for (i = 0; i < n_words; i++) {
            if (i > 0)
                put(b, " ");
            put(b, words[rnd(N_WORDS)]);
        }
        put(b, "\"");
    }
    }
    put(b, "}");
}

int main(int argc, char **argv)
{
    static const char head[] = "{\"orders\":[\n", tail[] = "\n]}\n";
    unsigned long long size, id = 100000, written, n = 0;
    char *end;
    buf order;

    if (argc < 2 || argc > 3) {
        fputs("usage: gen_payload SIZE [SEED]\n", stderr);
        return 2;
    }
    size = strtoull(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || size < 1024) {
        fputs("gen_payload: SIZE must be an integer >= 1024\n", stderr);
        return 2;
    }
    rng_state = 42;
    if (argc == 3) {
        rng_state = strtoull(argv[2], &end, 10);
        if (*argv[2] == '\0' || *end != '\0') {
            fputs("gen_payload: SEED must be an unsigned integer\n", stderr);
            return 2;
        }
    }

    fputs(head, stdout);
    written = sizeof head - 1 + sizeof tail - 1;
    for (;;) {
        id += 1 + rnd(7);
        gen_order(&order, id);
        /* ",\n" before every order but the first. */
        if (written + order.len + (n ? 2 : 0) > size)
            break;
        if (n)
            fputs(",\n", stdout);
        fwrite(order.data, 1, order.len, stdout);
        written += order.len + (n ? 2 : 0);
        n++;
    }
    fputs(tail, stdout);

    if (fflush(stdout) != 0 || ferror(stdout)) {
        fputs("gen_payload: error writing stdout\n", stderr);
        return 1;
    }
    return 0;
}
