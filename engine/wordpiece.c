/* wordpiece.c — BERT tokenization (see wordpiece.h for the behaviour contract).
 *
 * Owns the vocabulary: one blob of NUL-terminated tokens, an id -> offset array and
 * an open-addressing hash from token to id, all built at load and read-only after.
 * Encoding runs on HTTP threads before a request is queued; it mallocs its working
 * buffers per call (never in forward) and frees them before returning.
 *
 * The text is hostile: it is validated as UTF-8 before anything else, every buffer is
 * sized from the input length, and no word is examined past 100 characters.
 */
#include "engine/wordpiece.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

struct wordpiece {
    char *blob;            /* tokens, each NUL-terminated */
    size_t *offset;        /* (vocab) offset of each token in blob */
    int32_t n;
    int32_t *slots;        /* hash slots holding ids, -1 empty; capacity a power of 2 */
    uint32_t mask;
    bool lower;
    wordpiece_specials sp;
};

/* ---- vocabulary ---------------------------------------------------------------- */

static uint32_t hash_bytes(const char *s, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

int32_t wordpiece_id(const wordpiece *wp, const char *token, size_t len)
{
    for (uint32_t i = hash_bytes(token, len) & wp->mask;; i = (i + 1) & wp->mask) {
        int32_t id = wp->slots[i];
        if (id < 0)
            return -1;
        const char *t = wp->blob + wp->offset[id];
        if (strncmp(t, token, len) == 0 && t[len] == '\0')
            return id;
    }
}

static int32_t id_of(const wordpiece *wp, const char *token)
{
    return wordpiece_id(wp, token, strlen(token));
}

engine_status wordpiece_load(const char *vocab_path, bool do_lower_case, wordpiece **out,
                             engine_err *err)
{
    *out = NULL;
    FILE *f = fopen(vocab_path, "rb");
    if (!f)
        return engine_fail(err, ENGINE_ERR_IO, "%s: cannot open", vocab_path);
    wordpiece *wp = calloc(1, sizeof *wp);
    size_t cap = 1 << 16, used = 0, ocap = 1024;
    if (wp) {
        wp->blob = malloc(cap);
        wp->offset = malloc(ocap * sizeof *wp->offset);
    }
    engine_status s = ENGINE_OK;
    if (!wp || !wp->blob || !wp->offset)
        s = engine_fail(err, ENGINE_ERR_NOMEM, "out of memory reading %s", vocab_path);

    char line[1024];
    while (s == ENGINE_OK && fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            s = engine_fail(err, ENGINE_ERR_FORMAT, "%s:%d: token longer than %zu bytes",
                            vocab_path, wp->n + 1, sizeof line - 2);
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (wp->n >= WORDPIECE_MAX_VOCAB) {
            s = engine_fail(err, ENGINE_ERR_FORMAT, "%s: more than %d tokens", vocab_path,
                            WORDPIECE_MAX_VOCAB);
            break;
        }
        if ((size_t)wp->n == ocap) {
            size_t *o = realloc(wp->offset, ocap * 2 * sizeof *o);
            if (!o) {
                s = engine_fail(err, ENGINE_ERR_NOMEM, "out of memory reading %s", vocab_path);
                break;
            }
            wp->offset = o, ocap *= 2;
        }
        while (used + len + 1 > cap) {
            char *b = realloc(wp->blob, cap * 2);
            if (!b) {
                s = engine_fail(err, ENGINE_ERR_NOMEM, "out of memory reading %s", vocab_path);
                break;
            }
            wp->blob = b, cap *= 2;
        }
        if (s != ENGINE_OK)
            break;
        memcpy(wp->blob + used, line, len + 1);
        wp->offset[wp->n++] = used;
        used += len + 1;
    }
    if (s == ENGINE_OK && ferror(f))
        s = engine_fail(err, ENGINE_ERR_IO, "%s: read error", vocab_path);
    fclose(f);
    if (s == ENGINE_OK && wp->n == 0)
        s = engine_fail(err, ENGINE_ERR_FORMAT, "%s: empty vocabulary", vocab_path);

    if (s == ENGINE_OK) {
        uint32_t slots = 1;
        while (slots < (uint32_t)wp->n * 2)
            slots <<= 1;
        wp->mask = slots - 1;
        wp->slots = malloc(slots * sizeof *wp->slots);
        if (!wp->slots)
            s = engine_fail(err, ENGINE_ERR_NOMEM, "out of memory indexing %s", vocab_path);
        else
            memset(wp->slots, 0xff, slots * sizeof *wp->slots);
    }
    for (int32_t id = 0; s == ENGINE_OK && id < wp->n; id++) {
        const char *t = wp->blob + wp->offset[id];
        size_t len = strlen(t);
        if (wordpiece_id(wp, t, len) >= 0) {
            s = engine_fail(err, ENGINE_ERR_FORMAT, "%s:%d: duplicate token '%.64s'", vocab_path,
                            id + 1, t);
            break;
        }
        uint32_t i = hash_bytes(t, len) & wp->mask;
        while (wp->slots[i] >= 0)
            i = (i + 1) & wp->mask;
        wp->slots[i] = id;
    }
    if (s == ENGINE_OK) {
        wp->lower = do_lower_case;
        wp->sp = (wordpiece_specials){ id_of(wp, "[PAD]"), id_of(wp, "[UNK]"), id_of(wp, "[CLS]"),
                                       id_of(wp, "[SEP]"), id_of(wp, "[MASK]") };
        if (wp->sp.unk < 0)
            s = engine_fail(err, ENGINE_ERR_FORMAT, "%s: no [UNK] token", vocab_path);
    }
    if (s != ENGINE_OK) {
        wordpiece_free(wp);
        return s;
    }
    *out = wp;
    return ENGINE_OK;
}

void wordpiece_free(wordpiece *wp)
{
    if (!wp)
        return;
    free(wp->blob);
    free(wp->offset);
    free(wp->slots);
    free(wp);
}

int32_t wordpiece_vocab_size(const wordpiece *wp)
{
    return wp->n;
}

wordpiece_specials wordpiece_special_ids(const wordpiece *wp)
{
    return wp->sp;
}

const char *wordpiece_token(const wordpiece *wp, int32_t id)
{
    return id >= 0 && id < wp->n ? wp->blob + wp->offset[id] : NULL;
}

/* ---- character classes (the reference tokenizer's definitions) -------------- */

static bool is_whitespace(int32_t cp)
{
    return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r' ||
           utf8proc_category(cp) == UTF8PROC_CATEGORY_ZS;
}

static bool is_control(int32_t cp)
{
    if (cp == '\t' || cp == '\n' || cp == '\r')
        return false;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
        return true;
    default:
        return false;
    }
}

static bool is_punctuation(int32_t cp)
{
    if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
        (cp >= 123 && cp <= 126))
        return true;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
        return true;
    default:
        return false;
    }
}

/* The CJK Unified Ideographs blocks: not Hangul, Hiragana or Katakana, which are
 * written with spaces. */
static bool is_cjk(int32_t cp)
{
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* ---- encoding ------------------------------------------------------------------ */

/* Where encode writes: ids up to cap, and a count of everything. */
typedef struct sink {
    int32_t *ids;
    int cap, n;
} sink;

static void emit(sink *s, int32_t id)
{
    if (s->n < s->cap)
        s->ids[s->n] = id;
    s->n++;
}

/* Greedy longest-match-first over one word of nchar code points (utf8 holds it,
 * starts[i] the byte offset of code point i, starts[nchar] its length). */
static void wordpiece_word(const wordpiece *wp, const char *utf8, const size_t *starts, int nchar,
                           char *probe, sink *out)
{
    if (nchar > WORDPIECE_MAX_WORD_CHARS) {
        emit(out, wp->sp.unk);
        return;
    }
    int32_t pieces[WORDPIECE_MAX_WORD_CHARS];
    int n_pieces = 0;
    for (int start = 0; start < nchar;) {
        int32_t found = -1;
        int end = nchar;
        for (; end > start; end--) {
            size_t len = starts[end] - starts[start];
            size_t plen = 0;
            if (start > 0)
                probe[plen++] = '#', probe[plen++] = '#';
            memcpy(probe + plen, utf8 + starts[start], len);
            found = wordpiece_id(wp, probe, plen + len);
            if (found >= 0)
                break;
        }
        if (found < 0) {
            emit(out, wp->sp.unk);
            return;
        }
        pieces[n_pieces++] = found;
        start = end;
    }
    for (int i = 0; i < n_pieces; i++)
        emit(out, pieces[i]);
}

/* Unicode's case-ignorable characters, as far as the Final_Sigma rule needs them. */
static bool case_ignorable(int32_t cp)
{
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK:
        return true;
    default:
        return cp == '\'' || cp == 0x2019 || cp == '.' || cp == ':' || cp == 0xB7;
    }
}

static bool is_cased(int32_t cp)
{
    return utf8proc_islower(cp) || utf8proc_isupper(cp) ||
           utf8proc_category(cp) == UTF8PROC_CATEGORY_LT;
}

/* Python's str.lower() (which the reference uses) applies the context-sensitive
 * Final_Sigma rule: a capital sigma that ends a word becomes U+03C2, not U+03C3.
 * utf8proc_tolower is context-free, so that one case is decided here. */
static int32_t lower_at(const int32_t *word, int n, int i)
{
    if (word[i] != 0x03A3)
        return utf8proc_tolower(word[i]);
    int before = i - 1, after = i + 1;
    while (before >= 0 && case_ignorable(word[before]))
        before--;
    while (after < n && case_ignorable(word[after]))
        after++;
    bool final = before >= 0 && is_cased(word[before]) && !(after < n && is_cased(word[after]));
    return final ? 0x03C2 : 0x03C3;
}

/* Lower-cases and strips accents of word[0..n) into dst (NFD, Mn dropped); returns the
 * new length.  dst must hold n * UTF8PROC_DECOMPOSE_MAX code points. */
/* The longest canonical decomposition in Unicode is 4 code points; a longer answer
 * from utf8proc keeps the character as it is. */
#define DECOMPOSE_MAX 4
static int normalise_word(const int32_t *word, int n, int32_t *dst)
{
    int m = 0;
    for (int i = 0; i < n; i++) {
        int32_t buf[DECOMPOSE_MAX];
        int bound = 0;
        utf8proc_ssize_t k = utf8proc_decompose_char(lower_at(word, n, i), buf, DECOMPOSE_MAX,
                                                     UTF8PROC_DECOMPOSE, &bound);
        if (k < 0 || k > DECOMPOSE_MAX) {
            dst[m++] = word[i];
            continue;
        }
        for (utf8proc_ssize_t j = 0; j < k; j++)
            if (utf8proc_category(buf[j]) != UTF8PROC_CATEGORY_MN)
                dst[m++] = buf[j];
    }
    return m;
}

/* Splits one whitespace-delimited word on punctuation and WordPiece-encodes each part.
 * Work buffers come from the caller, sized for the whole text. */
typedef struct work {
    int32_t *norm;   /* normalised code points */
    char *utf8;      /* a part re-encoded */
    size_t *starts;  /* code point offsets in utf8 */
    char *probe;     /* "##" + candidate piece */
} work;

static void encode_part(const wordpiece *wp, const int32_t *cps, int n, work *w, sink *out)
{
    size_t len = 0;
    int limit = n > WORDPIECE_MAX_WORD_CHARS ? WORDPIECE_MAX_WORD_CHARS + 1 : n;
    for (int i = 0; i < limit; i++) {
        w->starts[i] = len;
        len += (size_t)utf8proc_encode_char(cps[i], (utf8proc_uint8_t *)w->utf8 + len);
    }
    w->starts[limit] = len;
    wordpiece_word(wp, w->utf8, w->starts, n > limit ? n : limit, w->probe, out);
}

static void encode_word(const wordpiece *wp, const int32_t *word, int n, work *w, sink *out)
{
    if (wp->lower) {
        n = normalise_word(word, n, w->norm);
        word = w->norm;
    }
    int begin = 0;
    for (int i = 0; i < n; i++) {
        if (!is_punctuation(word[i]))
            continue;
        if (i > begin)
            encode_part(wp, word + begin, i - begin, w, out);
        encode_part(wp, word + i, 1, w, out);
        begin = i + 1;
    }
    if (n > begin)
        encode_part(wp, word + begin, n - begin, w, out);
}

/* Canonical composition (NFC) of cps[0..n) into dst, which holds n * DECOMPOSE_MAX
 * code points; returns the new length.  Hugging Face's BasicTokenizer (4.29+) composes
 * after cleaning, so "e" + U+0301 and "é" become the same word in cased models. */
static int compose(const int32_t *cps, int n, int32_t *dst)
{
    utf8proc_ssize_t m = 0;
    for (int i = 0; i < n; i++) {
        int bound = 0;
        utf8proc_ssize_t k = utf8proc_decompose_char(cps[i], dst + m, DECOMPOSE_MAX,
                                                     UTF8PROC_DECOMPOSE | UTF8PROC_STABLE, &bound);
        if (k < 0 || k > DECOMPOSE_MAX) {
            dst[m] = cps[i];
            k = 1;
        }
        m += k;
    }
    utf8proc_ssize_t r = utf8proc_normalize_utf32(dst, m, UTF8PROC_COMPOSE | UTF8PROC_STABLE);
    return r < 0 ? (int)m : (int)r;
}

/* Cleans, CJK-splits and composes cps[0..n), then encodes its words. */
static void encode_span(const wordpiece *wp, const int32_t *cps, int n, int32_t *clean,
                        int32_t *composed, work *w, sink *out)
{
    int m = 0;
    for (int i = 0; i < n; i++) {
        int32_t cp = cps[i];
        if (cp == 0 || cp == 0xFFFD || is_control(cp))
            continue;
        if (is_whitespace(cp)) {
            clean[m++] = ' ';
        } else if (is_cjk(cp)) {
            clean[m++] = ' ', clean[m++] = cp, clean[m++] = ' ';
        } else {
            clean[m++] = cp;
        }
    }
    m = compose(clean, m, composed);
    for (int i = 0; i < m;) {
        while (i < m && composed[i] == ' ')
            i++;
        int start = i;
        while (i < m && composed[i] != ' ')
            i++;
        if (i > start)
            encode_word(wp, composed + start, i - start, w, out);
    }
}

/* Length in code points of a special token written exactly at cps[i], or 0. */
static int special_at(const wordpiece *wp, const int32_t *cps, int n, int i, int32_t *id)
{
    static const char *const names[] = { "[MASK]", "[CLS]", "[SEP]", "[PAD]", "[UNK]" };
    if (cps[i] != '[')
        return 0;
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        int len = (int)strlen(names[k]);
        if (i + len > n)
            continue;
        int j = 0;
        while (j < len && cps[i + j] == (unsigned char)names[k][j])
            j++;
        if (j == len && (*id = id_of(wp, names[k])) >= 0)
            return len;
    }
    return 0;
}

engine_status wordpiece_encode(const wordpiece *wp, const char *text, size_t len, int32_t *ids,
                               int cap, int *n, engine_err *err)
{
    *n = 0;
    if (len > WORDPIECE_MAX_TEXT_BYTES)
        return engine_fail(err, ENGINE_ERR_INVALID, "text of %zu bytes is longer than %d bytes",
                           len, WORDPIECE_MAX_TEXT_BYTES);
    int32_t *cps = malloc((len + 1) * sizeof *cps);
    int ncp = 0;
    for (size_t off = 0; cps && off < len;) {
        int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)text + off,
                                              (utf8proc_ssize_t)(len - off), &cp);
        if (k <= 0) {
            free(cps);
            return engine_fail(err, ENGINE_ERR_INVALID, "text is not valid UTF-8 at byte %zu", off);
        }
        cps[ncp++] = cp;
        off += (size_t)k;
    }
    /* Sizes: cleaning triples CJK at most; a part is at most 101 code points of up to 4
     * bytes; normalising multiplies by DECOMPOSE_MAX. */
    int32_t *clean = malloc(((size_t)ncp * 3 + 1) * sizeof *clean);
    int32_t *composed = malloc(((size_t)ncp * 3 * DECOMPOSE_MAX + 1) * sizeof *composed);
    work w = {
        .norm = malloc(((size_t)ncp * 3 * DECOMPOSE_MAX + 1) * sizeof *w.norm),
        .utf8 = malloc(4 * (WORDPIECE_MAX_WORD_CHARS + 2)),
        .starts = malloc((WORDPIECE_MAX_WORD_CHARS + 2) * sizeof *w.starts),
        .probe = malloc(4 * (WORDPIECE_MAX_WORD_CHARS + 2) + 2),
    };
    engine_status s = ENGINE_OK;
    if (!cps || !clean || !composed || !w.norm || !w.utf8 || !w.starts || !w.probe) {
        s = engine_fail(err, ENGINE_ERR_NOMEM, "out of memory tokenizing %zu bytes", len);
    } else {
        sink out = { ids, cap, 0 };
        int begin = 0;
        for (int i = 0; i < ncp; i++) {
            int32_t id;
            int sl = special_at(wp, cps, ncp, i, &id);
            if (!sl)
                continue;
            encode_span(wp, cps + begin, i - begin, clean, composed, &w, &out);
            emit(&out, id);
            i += sl - 1;
            begin = i + 1;
        }
        encode_span(wp, cps + begin, ncp - begin, clean, composed, &w, &out);
        *n = out.n;
    }
    free(cps);
    free(clean);
    free(composed);
    free(w.norm);
    free(w.utf8);
    free(w.starts);
    free(w.probe);
    return s;
}

/* ---- decoding ------------------------------------------------------------------ */

static bool is_special(const wordpiece *wp, int32_t id)
{
    const wordpiece_specials *sp = &wp->sp;
    return id == sp->pad || id == sp->unk || id == sp->cls || id == sp->sep || id == sp->mask;
}

/* Hugging Face's clean_up_tokenization: each pattern replaced everywhere, in this
 * order (sequential passes, so the result matches its chained str.replace calls). */
static const char *const cleanup[][2] = {
    { " .", "." }, { " ?", "?" }, { " !", "!" }, { " ,", "," }, { " ' ", "'" },
    { " n't", "n't" }, { " 'm", "'m" }, { " 's", "'s" }, { " 've", "'ve" }, { " 're", "'re" },
};

/* Replaces every from with the shorter to, in place. */
static size_t replace_all(char *s, size_t len, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), r = 0, o = 0;
    while (r < len) {
        if (r + fl <= len && memcmp(s + r, from, fl) == 0) {
            memmove(s + o, to, tl);
            o += tl, r += fl;
        } else {
            s[o++] = s[r++];
        }
    }
    s[o] = '\0';
    return o;
}

char *wordpiece_decode(const wordpiece *wp, const int32_t *ids, int n, bool skip_special)
{
    size_t total = 1;
    for (int i = 0; i < n; i++) {
        const char *t = wordpiece_token(wp, ids[i]);
        total += (t ? strlen(t) : 0) + 1;
    }
    char *joined = malloc(total);
    if (!joined)
        return NULL;
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        const char *t = wordpiece_token(wp, ids[i]);
        if (!t || (skip_special && is_special(wp, ids[i])))
            continue;
        if (strncmp(t, "##", 2) == 0 && len > 0) {
            t += 2; /* " ##" glues onto the previous piece */
        } else if (len > 0) {
            joined[len++] = ' ';
        }
        size_t tl = strlen(t);
        memcpy(joined + len, t, tl);
        len += tl;
    }
    joined[len] = '\0';
    for (size_t k = 0; k < sizeof cleanup / sizeof cleanup[0]; k++)
        len = replace_all(joined, len, cleanup[k][0], cleanup[k][1]);
    return joined;
}
