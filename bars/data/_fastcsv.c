/* The native fast path of the raw-file reader (bars.data.native): delimited text -> int64 columns and interned
 * string ids in one pass, so a Criteo-size file is parsed and its string fields interned without building Arrow
 * strings first. It handles only the unambiguous subset of what pyarrow's CSV reader accepts (no quote, no \r,
 * ASCII text, integers as [-]digits, floats only in that integer form, pyarrow's null tokens in string
 * fields); on anything else a block is handed back
 * (return value < 0) and the caller parses that block with pyarrow, so both paths give the same values.
 *
 * Called through ctypes (which releases the GIL), so the reader thread parses while the main thread works. The
 * module init exists only so that setuptools builds and the import system finds this file. */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* A slot holds a value's first 8 bytes (zero-padded) or, for longer values, its hash, and (length << 32) | (id + 1):
 * values of up to 8 bytes (hashed CTR ids such as Criteo's) are found without touching the arena. */
typedef struct {
    uint64_t key;
    uint64_t meta;  /* 0 = empty */
} Slot;

/* Three modes, each left for the next at the first value it cannot hold:
 * - "hex": every value so far is 8 lowercase hex digits (Criteo's and most of Avazu's hashed ids). A slot is 8
 *   bytes, (the 32-bit number the digits spell << 32) | (id + 1), 0 = empty (hslots; slots is NULL).
 * - "compact": every value is at most 8 bytes long. The 16-byte slots hold the values themselves; no arena.
 * - "full": an arena of every value's bytes with offsets per id (to_full), as longer values need.
 * A value's hash (hash_key) is the same in every mode, so a mode's table is found by the same probe. */
typedef struct {
    uint64_t *hslots;   /* hex mode's table, NULL once left */
    Slot *slots;        /* open addressing, linear probing, load <= 3/4; NULL in hex mode */
    int64_t *offsets;   /* NULL while compact; else start of each id's bytes in arena; offsets[n] = arena_len */
    char *arena;
    int64_t arena_len, arena_cap;  /* arena_len: the bytes of all values (counted while compact too) */
    int64_t n, ids_cap;
    uint64_t mask;
} Interner;

/* Hash tables: those of 2 MiB or more are their own anonymous mappings, asked for transparent huge pages (a
 * Criteo field's 128 MiB table is probed at random, one row after another: with 4 KiB pages nearly every probe
 * misses the TLB as well as the cache), and given back to the system when freed. Smaller ones come from calloc. */
#define TABLE_MAPPED (2u << 20)

static void *table_alloc(size_t bytes) {
    if (bytes < TABLE_MAPPED) return calloc(1, bytes);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);  /* a hint: where THP is off, plain pages */
#endif
    return p;
}

static void table_free(void *p, size_t bytes) {
    if (!p) return;
    if (bytes < TABLE_MAPPED) free(p);
    else munmap(p, bytes);
}

void *bars_interner_new(void) {
    Interner *t = calloc(1, sizeof(Interner));
    if (!t) return NULL;
    t->mask = (1u << 12) - 1;
    t->hslots = table_alloc((t->mask + 1) * sizeof(uint64_t));
    if (!t->hslots) {
        free(t);
        return NULL;
    }
    return t;
}

void bars_interner_free(void *p) {
    Interner *t = p;
    if (!t) return;
    table_free(t->hslots, (t->mask + 1) * sizeof(uint64_t));
    table_free(t->slots, (t->mask + 1) * sizeof(Slot));
    free(t->offsets); free(t->arena); free(t);
}

int64_t bars_interner_size(void *p) { return ((Interner *)p)->n; }
/* The bytes the interner holds (its table, and offsets and arena once a value is longer than 8 bytes). */
int64_t bars_interner_footprint(void *p) {
    Interner *t = p;
    int64_t b = (int64_t)((t->mask + 1) * (t->hslots ? sizeof(uint64_t) : sizeof(Slot)));
    if (t->offsets) b += (t->ids_cap + 1) * (int64_t)sizeof(int64_t) + t->arena_cap;
    return b;
}

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* The value's first byte in the key's highest byte (the key holds the bytes in memory order). */
static inline uint64_t first_byte_high(uint64_t x) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap64(x);
#else
    return x;
#endif
}

/* Hex mode's 32-bit number of a value's key (hash_key's: its 8 bytes) when they are 8 lowercase hex digits
 * (1, in *out), else 0: the number they spell, first digit highest, so numbers order as the values' bytes do.
 * hex8_key is the inverse. Eight bytes at a time: a byte b (< 0x80) is in [lo, hi] when b + 0x80 - lo has its
 * high bit and b + 0x7F - hi has not (no carry leaves a byte). */
static inline int hex8_pack(uint64_t x, uint32_t *out) {
    if (x & HIGHS) return 0;
    x = first_byte_high(x);
    uint64_t dig = (x + ONES * (0x80 - '0')) & ~(x + ONES * (0x7F - '9')) & HIGHS;
    uint64_t af = (x + ONES * (0x80 - 'a')) & ~(x + ONES * (0x7F - 'f')) & HIGHS;
    if ((dig | af) != HIGHS) return 0;
    uint64_t v = (x & (ONES * 0x0F)) + (af >> 7) * 9;  /* each byte's digit, 0-15 */
    v = (v | (v >> 4)) & 0x00FF00FF00FF00FFull;          /* byte k's digit -> bits 4k of the result */
    v = (v | (v >> 8)) & 0x0000FFFF0000FFFFull;
    v = (v | (v >> 16)) & 0xFFFFFFFFull;
    *out = (uint32_t)v;
    return 1;
}

static inline uint64_t hex8_key(uint32_t packed) {
    uint64_t v = packed;
    v = (v | (v << 16)) & 0x0000FFFF0000FFFFull;
    v = (v | (v << 8)) & 0x00FF00FF00FF00FFull;
    v = (v | (v << 4)) & 0x0F0F0F0F0F0F0F0Full;
    uint64_t letter = ((v + ONES * 0x76) & HIGHS) >> 7;  /* digit >= 10 */
    return first_byte_high(v + ONES * '0' + letter * ('a' - '0' - 10));
}

/* Hex or compact mode: the length (in lens, when not NULL) and the value's bytes as a little-endian key (in keys)
 * of every id, from the table. */
static void compact_values(const Interner *t, uint64_t *keys, uint8_t *lens) {
    if (t->hslots) {
        for (uint64_t j = 0; j <= t->mask; j++) {
            uint64_t e = t->hslots[j];
            if (!e) continue;
            int64_t id = (int64_t)(e & 0xFFFFFFFFull) - 1;
            keys[id] = hex8_key((uint32_t)(e >> 32));
            if (lens) lens[id] = 8;
        }
        return;
    }
    for (uint64_t j = 0; j <= t->mask; j++) {
        Slot e = t->slots[j];
        if (!e.meta) continue;
        int64_t id = (int64_t)(e.meta & 0xFFFFFFFFull) - 1;
        keys[id] = e.key;
        if (lens) lens[id] = (uint8_t)(e.meta >> 32);
    }
}

/* In hex mode, the number of every id's value (out[id], n of them: bars_interner_size): its values order as
 * these numbers do, so the vocabulary can be sorted on them. 0, or -3 when the interner is not in hex mode. */
int64_t bars_interner_hex_numbers(void *p, uint32_t *out) {
    Interner *t = p;
    if (!t->hslots) return -3;
    for (uint64_t j = 0; j <= t->mask; j++) {
        uint64_t e = t->hslots[j];
        if (e) out[(e & 0xFFFFFFFFull) - 1] = (uint32_t)(e >> 32);
    }
    return 0;
}

/* Arrow string_view layout of the values of ids[0:k] in that order, while every value is at most 8 bytes (hex and
 * compact modes): 16 bytes each in views, the length (int32) then the bytes inline, zero-padded; no data buffer.
 * Returns 0, -1 when out of memory, -2 for an id not interned, -3 in full mode (bars_interner_export_ids then). */
int64_t bars_interner_export_views(void *p, const uint32_t *ids, int64_t k, uint8_t *views) {
    Interner *t = p;
    if (t->offsets) return -3;
    for (int64_t j = 0; j < k; j++)
        if ((int64_t)ids[j] >= t->n) return -2;
    size_t n = (size_t)(t->n > 0 ? t->n : 1);
    uint32_t *numbers = NULL;
    uint64_t *keys = NULL;
    uint8_t *lens = NULL;
    if (t->hslots) {  /* 4 bytes per id, not the 9 of compact_values */
        numbers = malloc(n * sizeof(uint32_t));
        if (!numbers) return -1;
        bars_interner_hex_numbers(t, numbers);
    } else {
        keys = malloc(n * sizeof(uint64_t));
        lens = malloc(n);
        if (!keys || !lens) {
            free(keys); free(lens);
            return -1;
        }
        compact_values(t, keys, lens);
    }
    for (int64_t j = 0; j < k; j++) {
        uint32_t id = ids[j];
        int32_t len = numbers ? 8 : (int32_t)lens[id];
        uint64_t key = numbers ? hex8_key(numbers[id]) : keys[id];
        uint8_t *v = views + 16 * j;
        memset(v, 0, 16);
        memcpy(v, &len, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        memcpy(v + 4, &key, (size_t)len);
#else
        for (int b = 0; b < len; b++) v[4 + b] = (uint8_t)(key >> (8 * b));
#endif
    }
    free(numbers); free(keys); free(lens);
    return 0;
}

/* Arrow large_string layout of the values of ids[0:k] in that order (ids NULL: every id, in id order): offsets
 * (k + 1 int64, offsets[0] = 0) and, when data is not NULL, their bytes in data. Returns the bytes (data's size),
 * -1 when out of memory, -2 for an id not interned. */
int64_t bars_interner_export_ids(void *p, const uint32_t *ids, int64_t k, int64_t *offsets, char *data) {
    Interner *t = p;
    if (ids == NULL) k = t->n;
    for (int64_t j = 0; ids && j < k; j++)
        if ((int64_t)ids[j] >= t->n) return -2;
    offsets[0] = 0;
    if (t->offsets) {
        for (int64_t j = 0; j < k; j++) {
            int64_t id = ids ? (int64_t)ids[j] : j;
            int64_t len = t->offsets[id + 1] - t->offsets[id];
            if (data) memcpy(data + offsets[j], t->arena + t->offsets[id], (size_t)len);
            offsets[j + 1] = offsets[j] + len;
        }
        return offsets[k];
    }
    uint64_t *keys = malloc((size_t)(t->n > 0 ? t->n : 1) * sizeof(uint64_t));
    uint8_t *lens = malloc((size_t)(t->n > 0 ? t->n : 1));
    if (!keys || !lens) {
        free(keys); free(lens);
        return -1;
    }
    compact_values(t, keys, lens);
    for (int64_t j = 0; j < k; j++) {
        int64_t id = ids ? (int64_t)ids[j] : j;
        if (data) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            memcpy(data + offsets[j], &keys[id], lens[id]);
#else
            for (int b = 0; b < lens[id]; b++) data[offsets[j] + b] = (char)(keys[id] >> (8 * b));
#endif
        }
        offsets[j + 1] = offsets[j] + lens[id];
    }
    free(keys); free(lens);
    return offsets[k];
}

/* Leave compact mode: an arena of every value's bytes so far, in id order, with their offsets. 0, or -1 when out
 * of memory (the interner is then unchanged). */
static int to_full(Interner *t) {
    int64_t cap = t->n < 512 ? 1024 : 2 * t->n;
    int64_t *offsets = malloc((cap + 1) * sizeof(int64_t));
    int64_t arena_cap = t->arena_len < (1 << 15) ? (1 << 16) : 2 * t->arena_len;
    char *arena = malloc((size_t)arena_cap);
    if (!offsets || !arena) {
        free(offsets); free(arena);
        return -1;
    }
    if (bars_interner_export_ids(t, NULL, 0, offsets, arena) < 0) {
        free(offsets); free(arena);
        return -1;
    }
    t->offsets = offsets;
    t->arena = arena;
    t->ids_cap = cap;
    t->arena_cap = arena_cap;
    return 0;
}

static inline uint64_t mix(uint64_t h) {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static inline uint64_t hash_long(const char *s, int64_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    while (n >= 8) {
        uint64_t k;
        memcpy(&k, s, 8);
        h = mix(h ^ k);
        s += 8;
        n -= 8;
    }
    uint64_t k = 0;
    memcpy(&k, s, (size_t)n);
    return mix(h ^ k);
}

static inline uint64_t hex_hash(uint32_t packed) { return mix(hex8_key(packed) ^ (8ull << 59)); }

/* Hex mode's table twice as large. */
static int grow_hex(Interner *t) {
    uint64_t mask = (t->mask << 1) | 1;
    uint64_t *slots = table_alloc((mask + 1) * sizeof(uint64_t));
    if (!slots) return -1;
    for (uint64_t j = 0; j <= t->mask; j++) {
        uint64_t e = t->hslots[j];
        if (!e) continue;
        uint64_t i = hex_hash((uint32_t)(e >> 32)) & mask;
        while (slots[i]) i = (i + 1) & mask;
        slots[i] = e;
    }
    table_free(t->hslots, (t->mask + 1) * sizeof(uint64_t));
    t->hslots = slots;
    t->mask = mask;
    return 0;
}

/* Leave hex mode for compact mode: the same values and ids in 16-byte slots. 0, or -1 when out of memory (the
 * interner is then unchanged). */
static int leave_hex(Interner *t) {
    Slot *slots = table_alloc((t->mask + 1) * sizeof(Slot));
    if (!slots) return -1;
    for (uint64_t j = 0; j <= t->mask; j++) {
        uint64_t e = t->hslots[j];
        if (!e) continue;
        uint64_t key = hex8_key((uint32_t)(e >> 32));
        uint64_t i = mix(key ^ (8ull << 59)) & t->mask;
        while (slots[i].meta) i = (i + 1) & t->mask;
        slots[i].key = key;
        slots[i].meta = (8ull << 32) | (e & 0xFFFFFFFFull);
    }
    table_free(t->hslots, (t->mask + 1) * sizeof(uint64_t));
    t->hslots = NULL;
    t->slots = slots;
    return 0;
}

static int grow_table(Interner *t) {
    uint64_t mask = (t->mask << 1) | 1;
    Slot *slots = table_alloc((mask + 1) * sizeof(Slot));
    if (!slots) return -1;
    for (uint64_t j = 0; j <= t->mask; j++) {
        Slot e = t->slots[j];
        if (!e.meta) continue;
        int64_t len = (int64_t)(e.meta >> 32);
        uint64_t h = len <= 8 ? mix(e.key ^ ((uint64_t)len << 59)) : e.key;
        uint64_t i = h & mask;
        while (slots[i].meta) i = (i + 1) & mask;
        slots[i] = e;
    }
    table_free(t->slots, (t->mask + 1) * sizeof(Slot));
    t->slots = slots;
    t->mask = mask;
    return 0;
}

static inline void hash_key(const char *s, int64_t n, uint64_t *key, uint64_t *h) {
    if (n <= 8) {
        uint64_t k = 0;
        memcpy(&k, s, (size_t)n);
        *key = k;
        *h = mix(k ^ ((uint64_t)n << 59));
    } else {
        *key = *h = hash_long(s, n);
    }
}

/* hash_key's key of s[0:n] where 8 bytes from s may be read (the reader's blocks are followed by 8 bytes of
 * padding): one load and a mask instead of a copy of n bytes. */
static inline uint64_t key_padded(const char *s, int64_t n) {
    if (n > 8) return hash_long(s, n);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint64_t k;
    memcpy(&k, s, 8);
    return n == 8 ? k : k & ((1ull << (8 * n)) - 1);
#else
    uint64_t key, h;
    hash_key(s, n, &key, &h);
    return key;
#endif
}

/* Hex mode: the id of the value whose number is packed (h: its hash_key hash), added if new; -1 as below. */
static inline int64_t intern_hex(Interner *t, uint32_t packed, uint64_t h) {
    uint64_t i = h & t->mask;
    for (;;) {
        uint64_t e = t->hslots[i];
        if (!e) break;
        if ((uint32_t)(e >> 32) == packed) return (int64_t)(e & 0xFFFFFFFFull) - 1;
        i = (i + 1) & t->mask;
    }
    if (t->n >= 0xFFFFFFFEll) return -1;
    int64_t id = t->n++;
    t->arena_len += 8;
    t->hslots[i] = ((uint64_t)packed << 32) | (uint64_t)(id + 1);
    if ((uint64_t)t->n * 4 > (t->mask + 1) * 3 && grow_hex(t) != 0) return -1;
    return id;
}

/* The id of s[0:n] (key and hash from hash_key), added if new; -1 when out of memory or past 2^32 - 2 ids. */
static inline int64_t intern_hashed(Interner *t, const char *s, int64_t n, uint64_t key, uint64_t h) {
    if (t->hslots) {
        uint32_t packed;
        if (n == 8 && hex8_pack(key, &packed)) return intern_hex(t, packed, h);
        if (leave_hex(t) != 0) return -1;
    }
    uint64_t want = (uint64_t)n << 32;
    uint64_t i = h & t->mask;
    for (;;) {
        Slot e = t->slots[i];
        if (!e.meta) break;
        if (e.key == key && (e.meta & 0xFFFFFFFF00000000ull) == want) {
            int64_t id = (int64_t)(e.meta & 0xFFFFFFFFull) - 1;
            /* a value longer than 8 bytes exists, so the arena does */
            if (n <= 8 || memcmp(t->arena + t->offsets[id], s, (size_t)n) == 0) return id;
        }
        i = (i + 1) & t->mask;
    }
    if (t->n >= 0xFFFFFFFEll || n >= 0xFFFFFFFFll) return -1;
    if (!t->offsets && n > 8 && to_full(t) != 0) return -1;
    if (t->offsets) {
        if (t->n + 1 > t->ids_cap) {
            int64_t cap = t->ids_cap * 2;
            int64_t *os = realloc(t->offsets, (cap + 1) * sizeof(int64_t));
            if (!os) return -1;
            t->offsets = os;
            t->ids_cap = cap;
        }
        if (t->arena_len + n > t->arena_cap) {
            int64_t cap = t->arena_cap * 2;
            while (cap < t->arena_len + n) cap *= 2;
            char *a = realloc(t->arena, cap);
            if (!a) return -1;
            t->arena = a;
            t->arena_cap = cap;
        }
        memcpy(t->arena + t->arena_len, s, (size_t)n);
        t->offsets[t->n + 1] = t->arena_len + n;
    }
    int64_t id = t->n++;
    t->arena_len += n;
    t->slots[i].key = key;
    t->slots[i].meta = want | (uint64_t)(id + 1);
    if ((uint64_t)t->n * 4 > (t->mask + 1) * 3 && grow_table(t) != 0) return -1;
    return id;
}

static inline int64_t intern(Interner *t, const char *s, int64_t n) {
    uint64_t key, h;
    hash_key(s, n, &key, &h);
    return intern_hashed(t, s, n, key, h);
}

/* pyarrow's default null tokens: such a string field is missing (ConvertOptions.strings_can_be_null). */
static const char *NULLS[] = {"#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                              "1.#QNAN", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"};

static const uint8_t NULL_LENS[] = {4, 8, 3, 7, 8, 4, 4, 6, 7, 3, 2, 4, 3, 3, 3, 4};  /* strlen of each */

static inline int is_null_token(const char *s, int64_t n) {
    if (n == 0) return 1;
    if (n > 8) return 0;
    if (s[0] != '#' && s[0] != '-' && s[0] != '1' && s[0] != 'N' && s[0] != 'n') return 0;
    for (size_t k = 0; k < sizeof(NULLS) / sizeof(NULLS[0]); k++)
        if (NULL_LENS[k] == n && memcmp(NULLS[k], s, (size_t)n) == 0) return 1;
    return 0;
}

/* Integer in the fast path's form, [-]digits within int64; 0 = not that form (pyarrow decides). */
static inline int parse_int(const char *s, int64_t n, int64_t *out) {
    int neg = 0;
    if (n && s[0] == '-') { neg = 1; s++; n--; }
    if (n <= 0 || n > 19) return 0;
    uint64_t v = 0;
    for (int64_t k = 0; k < n; k++) {
        unsigned d = (unsigned char)s[k] - '0';
        if (d > 9) return 0;
        v = v * 10 + d;
    }
    if (neg) {
        if (v > 9223372036854775808ull) return 0;
        *out = (int64_t)(0 - v);
    } else {
        if (v > 9223372036854775807ull) return 0;
        *out = (int64_t)v;
    }
    return 1;
}

enum { KIND_INT = 1, KIND_INTERN = 2, KIND_FLOAT = 3, KIND_STR = 4 };

/* A plain string column of one block (kind 4): the bytes (room for the whole block) and how many are used; the
 * column's int32 Arrow offsets go to outs[c] (offsets[0] = 0 set by the caller). */
typedef struct {
    char *data;
    int64_t used;
} StrOut;

/* Parse the lines of buf[0:len] (whole lines; the last may lack its newline; empty lines are skipped, as
 * pyarrow does) into columns: kind 1 -> int64 values (outs[c]), kind 2 -> located for interning (see Defer
 * below), kind 3 -> float64 (written as integers, e.g. a 0/1 label), kind 4 -> plain strings (StrOut in
 * strouts[c]); validity
 * bitmaps (Arrow layout, LSB first, zeroed by the caller) in valid[c]. At most max_rows rows.
 * Returns the rows parsed, or -1 when the block holds something the fast path leaves to pyarrow (a quote, a
 * \r, a line with another number of fields, an integer in another form), -2 when out of memory. consumed[0]
 * gets the bytes used (less than len when max_rows stopped it). */
/* The first byte at or after p that is sep or '\n' (end when none): eight bytes at a time. The lowest flagged
 * byte of the zero-byte test is exact (false flags only follow a true one). */
static inline const char *next_delim(const char *p, const char *end, uint64_t seps) {
    const uint64_t nls = ONES * (uint64_t)'\n';
    while (p + 8 <= end) {
        uint64_t w;
        memcpy(&w, p, 8);
        uint64_t x = w ^ seps, y = w ^ nls;
        uint64_t t = (((x - ONES) & ~x) | ((y - ONES) & ~y)) & HIGHS;
        if (t) return p + (__builtin_ctzll(t) >> 3);
        p += 8;
    }
    while (p < end && *p != (char)(seps & 0xFF) && *p != '\n') p++;
    return p;
}

/* One field's value (not an interned one: see field()) into column c, row r; 0 = done, -1 = leave the block to
 * pyarrow. ``strout``: the column's StrOut (kind 4). */
static inline __attribute__((always_inline)) int put_field(const char *s, int64_t n, int8_t kind, void *strout,
                                                            void *out, uint8_t *valid, int64_t r) {
    if (kind == KIND_INT) {
        int64_t v = 0;
        if (n == 0) {
            ((int64_t *)out)[r] = 0;
            return 0;
        }
        if (!parse_int(s, n, &v)) return -1;
        ((int64_t *)out)[r] = v;
    } else if (kind == KIND_FLOAT) {  /* [-]digits only, up to 15: exact as a double */
        int64_t v = 0;
        if (n == 0) {
            ((double *)out)[r] = 0.0;
            return 0;
        }
        if (n > 15 || !parse_int(s, n, &v) || (v == 0 && s[0] == '-')) return -1;
        ((double *)out)[r] = (double)v;
    } else if (kind == KIND_STR) {
        StrOut *o = strout;
        if (!is_null_token(s, n)) {
            memcpy(o->data + o->used, s, (size_t)n);
            o->used += n;
            valid[r >> 3] |= (uint8_t)(1u << (r & 7));
        }
        ((int32_t *)out)[r + 1] = (int32_t)o->used;
        return 0;
    } else {
        return 0;
    }
    valid[r >> 3] |= (uint8_t)(1u << (r & 7));
    return 0;
}

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Deferred interning (bars_tokenize): an interned field's value is only located and keyed: its offset in the block
 * and length go to spans[c] ((offset << 32) | length; NULL_LEN: missing) and hash_key's key to keys[c];
 * bars_intern_deferred interns the column later, on another thread, in row order (so the ids are the ones
 * a single pass would give), reading the block's bytes only to compare values longer than 8 bytes and to store new ones. */
#define NULL_LEN 0xFFFFFFFFu

typedef struct {
    const char *buf;
    uint64_t **spans;
    uint64_t **keys;
} Defer;

static inline __attribute__((always_inline)) int field(const char *s, int64_t n, int32_t c, const int8_t *kinds,
                                                        void **strouts, void **outs, uint8_t **valid, int64_t r,
                                                        const Defer *d) {
    if (kinds[c] != KIND_INTERN) return put_field(s, n, kinds[c], strouts[c], outs[c], valid[c], r);
    if (is_null_token(s, n)) {
        d->spans[c][r] = NULL_LEN;
        return 0;
    }
    d->spans[c][r] = ((uint64_t)(s - d->buf) << 32) | (uint32_t)n;
    d->keys[c][r] = key_padded(s, n);
    return 0;
}

static int64_t parse(const char *buf, int64_t len, char sep, int32_t ncols, const int8_t *kinds, void **strouts,
                     void **outs, uint8_t **valid, int64_t max_rows, int64_t *consumed, const Defer *d) {
    int64_t r = 0, start = 0;  /* row, start of the current field */
    int32_t c = 0;             /* its column */
    int64_t i = 0;
    uint32_t bad = 0;          /* a quote, a \r or a byte >= 0x80 seen: the block is pyarrow's (checked on return) */
#if defined(__SSE2__)
    __m128i vsep = _mm_set1_epi8(sep), vnl = _mm_set1_epi8('\n'), vq = _mm_set1_epi8('"'), vcr = _mm_set1_epi8('\r');
#endif
    /* every delimiter in order: a field ends at each; a row at each newline */
    while (i < len && r < max_rows) {
        uint32_t m;
        int64_t base = i;
#if defined(__SSE2__)
        if (i + 16 <= len) {
            __m128i w = _mm_loadu_si128((const __m128i *)(buf + i));
            m = (uint32_t)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(w, vsep), _mm_cmpeq_epi8(w, vnl)));
            bad |= (uint32_t)_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(w, vq), _mm_cmpeq_epi8(w, vcr)), w));
            i += 16;
        } else
#endif
        {
            m = 0;
            int64_t k = 0;
            for (; k < 16 && i + k < len; k++) {
                unsigned char ch = (unsigned char)buf[i + k];
                if (ch == (unsigned char)sep || ch == '\n') m |= 1u << k;
                if (ch == '"' || ch == '\r' || ch >= 0x80) bad = 1;
            }
            i += k;
        }
        while (m) {
            int64_t pos = base + __builtin_ctz(m);
            m &= m - 1;
            if (buf[pos] == '\n') {
                if (c == 0 && pos == start) {  /* empty line: skipped, as pyarrow does */
                    start = pos + 1;
                    continue;
                }
                if (c != ncols - 1) return -1;
                int rc = field(buf + start, pos - start, c, kinds, strouts, outs, valid, r, d);
                if (rc) return rc;
                c = 0;
                start = pos + 1;
                if (++r == max_rows) {
                    *consumed = start;
                    return bad ? -1 : r;
                }
            } else {
                if (c == ncols - 1) return -1;
                int rc = field(buf + start, pos - start, c, kinds, strouts, outs, valid, r, d);
                if (rc) return rc;
                c++;
                start = pos + 1;
            }
        }
    }
    if (start < len && r < max_rows) {  /* the last line, without its newline */
        if (c != ncols - 1) return -1;
        int rc = field(buf + start, len - start, c, kinds, strouts, outs, valid, r, d);
        if (rc) return rc;
        r++;
        start = len;
    } else if (c != 0) {
        return -1;
    }
    *consumed = start;
    return bad ? -1 : r;
}

/* Parse the lines of buf[0:len] as described above (8 more bytes readable after it: key_padded), the interned
 * columns located (offsets in buf and lengths in spans[c], NULL_LEN for a missing value, hash_key's
 * keys in keys[c]) but not interned: bars_intern_deferred does that. It touches no interner, so one thread
 * tokenizes a block while another interns the block before. */
int64_t bars_tokenize(const char *buf, int64_t len, char sep, int32_t ncols, const int8_t *kinds,
                      void **strouts, void **outs, uint8_t **valid, int64_t max_rows, int64_t *consumed,
                      uint64_t **spans, uint64_t **keys) {
    if (ncols <= 0 || len >= 0x7FFFFFFF) return -1;
    Defer d = {buf, spans, keys};
    return parse(buf, len, sep, ncols, kinds, strouts, outs, valid, max_rows, consumed, &d);
}

/* Intern one column that bars_tokenize located: spans[r] holds the offset in buf (high 32 bits) and length of row
 * r's value (NULL_LEN: missing, id 0, validity bit left 0), keys[r] its hash_key key; ids[r] gets its id. The slot
 * of the row AHEAD rows on is prefetched while a row is looked up. Returns 0, or -2 when out of memory. */
#define AHEAD 16
static inline uint64_t key_hash(uint64_t key, uint32_t n) {
    return n <= 8 ? mix(key ^ ((uint64_t)n << 59)) : key;
}

static inline void prefetch_slot(const Interner *t, uint64_t h) {
    if (t->hslots) __builtin_prefetch(&t->hslots[h & t->mask]);
    else __builtin_prefetch(&t->slots[h & t->mask]);
}

int64_t bars_intern_deferred(void *p, const char *buf, uint32_t *ids, const uint64_t *spans, const uint64_t *keys,
                             int64_t n, uint8_t *valid) {
    Interner *t = p;
    for (int64_t r = 0; r < n && r < AHEAD; r++)
        if (spans[r] != NULL_LEN) prefetch_slot(t, key_hash(keys[r], (uint32_t)spans[r]));
    for (int64_t r = 0; r < n; r++) {
        int64_t ahead = r + AHEAD;
        if (ahead < n && spans[ahead] != NULL_LEN) prefetch_slot(t, key_hash(keys[ahead], (uint32_t)spans[ahead]));
        uint64_t sp = spans[r];
        if (sp == NULL_LEN) {
            ids[r] = 0;
            continue;
        }
        uint32_t len = (uint32_t)sp;
        int64_t id = intern_hashed(t, buf + (sp >> 32), len, keys[r], key_hash(keys[r], len));
        if (id < 0) return -2;
        ids[r] = (uint32_t)id;
        valid[r >> 3] |= (uint8_t)(1u << (r & 7));
    }
    return 0;
}

/* A Criteo integer field bucketed (bars.data.transforms.criteo_bucket): out[k] = table[x] for x in [0, tsize);
 * above the table, base + the number of bounds[0:nb] (sorted: the first value of each later bucket) at or below x;
 * a negative x as it is; a missing value (validity bit 0 at bit offset ``off``; validity NULL: none missing) as 0,
 * whose bucket table[0] is 0. */
void bars_criteo_bucket(const int64_t *x, const uint8_t *validity, int64_t off, int64_t n, const int64_t *table,
                        int64_t tsize, const int64_t *bounds, int64_t nb, int64_t base, int64_t *out) {
    for (int64_t k = 0; k < n; k++) {
        int64_t j = off + k;
        int64_t v = x[k];
        if (validity) v &= -(int64_t)((validity[j >> 3] >> (j & 7)) & 1);  /* missing: 0, bucket 0 (table[0]) */
        if ((uint64_t)v < (uint64_t)tsize) {
            out[k] = table[v];
        } else if (v < 0) {
            out[k] = v;
        } else {
            int64_t lo = 0, hi = nb;  /* bounds[0:lo] <= v < bounds[hi:] */
            while (lo < hi) {
                int64_t mid = lo + (hi - lo) / 2;
                if (bounds[mid] <= v) lo = mid + 1; else hi = mid;
            }
            out[k] = base + lo;
        }
    }
}

/* Train counts of one batch of ids: counts[ids[k]] += 1 for k < n (the caller sized counts beyond the largest id).
 * Work in proportion to the batch, where np.bincount(ids, minlength=len(counts)) also zeroes and adds a whole
 * vocabulary-long array per batch (Criteo's 45M rows: ~33M distinct values in all). */
void bars_count_ids(int64_t *counts, const uint32_t *ids, int64_t n) {
    for (int64_t k = 0; k < n; k++) counts[ids[k]]++;
}

/* The same into 32-bit counts (the caller widens them before any could pass 2^32 - 1). */
void bars_count_ids32(uint32_t *counts, const uint32_t *ids, int64_t n) {
    for (int64_t k = 0; k < n; k++) counts[ids[k]]++;
}

/* Lines in buf[0:len] that hold a byte (an upper bound of the rows), and the length up to the last newline. */
int64_t bars_count_lines(const char *buf, int64_t len) {
    int64_t n = 0;
    const char *p = buf, *end = buf + len;
    while (p < end) {
        const char *q = memchr(p, '\n', (size_t)(end - p));
        n++;
        if (!q) break;
        p = q + 1;
    }
    return n;
}

int64_t bars_last_newline(const char *buf, int64_t len) {
    const char *q = memrchr(buf, '\n', (size_t)len);
    return q ? q - buf + 1 : 0;
}

/* Intern an Arrow string array (int32 offsets, data, optional validity bitmap, array offset ``off``) of n values
 * into ids and a validity bitmap (zeroed by the caller): the blocks pyarrow parsed go into the same ids.
 * Returns 0, or -2 when out of memory. */
int64_t bars_intern_arrow(void *p, const int32_t *offsets, const char *data, const uint8_t *validity, int64_t off,
                          int64_t n, uint32_t *out, uint8_t *out_valid) {
    Interner *t = p;
    for (int64_t k = 0; k < n; k++) {
        int64_t j = off + k;
        if (validity && !((validity[j >> 3] >> (j & 7)) & 1)) {
            out[k] = 0;
            continue;
        }
        int64_t id = intern(t, data + offsets[j], offsets[j + 1] - offsets[j]);
        if (id < 0) return -2;
        out[k] = (uint32_t)id;
        out_valid[k >> 3] |= (uint8_t)(1u << (k & 7));
    }
    return 0;
}

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastcsv", "native fast path of bars.data.native", -1,
                                    NULL};

PyMODINIT_FUNC PyInit__fastcsv(void) { return PyModule_Create(&module); }
