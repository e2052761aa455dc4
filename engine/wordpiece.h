/* wordpiece.h — BERT's tokenizer: the basic tokenizer, then greedy WordPiece.
 *
 * Use:
 *   wordpiece *wp;
 *   wordpiece_load("dir/vocab.txt", true, &wp, &err);             // do_lower_case
 *   int32_t ids[512]; int n;
 *   wordpiece_encode(wp, "The [MASK] sat.", len, ids, 512, &n, &err); // no [CLS]/[SEP]
 *   if (n > 512) ... the text needs n tokens: refuse, never truncate
 *   wordpiece_free(wp);
 * Ownership: wordpiece_load() returns a table the caller frees with wordpiece_free();
 * strings from wordpiece_token() live as long as the table.  A loaded table is
 * read-only: any number of threads may encode with it at once.
 *
 * Behaviour is that of the reference BERT tokenizer (google-research tokenization.py,
 * as Hugging Face's BertTokenizer runs it): special tokens ([MASK], [CLS], [SEP],
 * [PAD], [UNK]) written exactly are split out first and never touched; the rest is
 * cleaned (NUL, U+FFFD and control characters dropped, whitespace folded), CJK
 * ideographs become words of their own, words are lower-cased and stripped of
 * accents (NFD, combining marks dropped) when do_lower_case, punctuation (ASCII
 * symbols and Unicode P*) splits off, then each word is matched greedily longest-
 * first against the vocabulary with "##" continuations; a word longer than 100
 * characters or with an unmatched piece becomes [UNK].  Unicode tables and
 * normalisation come from utf8proc (Debian libutf8proc-dev).
 */
#ifndef MODELD_ENGINE_WORDPIECE_H
#define MODELD_ENGINE_WORDPIECE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

#define WORDPIECE_MAX_WORD_CHARS 100
#define WORDPIECE_MAX_VOCAB 1000000
/* Longer texts are refused: work buffers are a few dozen bytes per input byte. */
#define WORDPIECE_MAX_TEXT_BYTES (256 * 1024)

typedef struct wordpiece wordpiece;

typedef struct wordpiece_specials {
    int32_t pad, unk, cls, sep, mask; /* -1 when the vocabulary lacks one */
} wordpiece_specials;

/* Reads vocab.txt (one token per line, id = line number).  ENGINE_ERR_FORMAT names the
 * line of a duplicate or invalid token, or a missing [UNK]. */
engine_status wordpiece_load(const char *vocab_path, bool do_lower_case, wordpiece **out,
                             engine_err *err);
void wordpiece_free(wordpiece *wp);

int32_t wordpiece_vocab_size(const wordpiece *wp);
wordpiece_specials wordpiece_special_ids(const wordpiece *wp);
/* id of a token, -1 if absent */
int32_t wordpiece_id(const wordpiece *wp, const char *token, size_t len);
/* token text of an id, NULL if out of range */
const char *wordpiece_token(const wordpiece *wp, int32_t id);

/* Tokenizes UTF-8 text into ids (without [CLS]/[SEP]).  Writes at most cap ids and sets
 * *n to the number the whole text needs, which may exceed cap.  Invalid UTF-8 is
 * ENGINE_ERR_INVALID naming the byte offset. */
engine_status wordpiece_encode(const wordpiece *wp, const char *text, size_t len, int32_t *ids,
                               int cap, int *n, engine_err *err);

/* Ids back to text as Hugging Face's decode() does: tokens joined by spaces, "##"
 * continuations glued, spaces before . , ! ? and in English contractions removed;
 * with skip_special, the special tokens (including [UNK] and [MASK]) are left out.
 * Returns a malloc'd string the caller frees, NULL on OOM. */
char *wordpiece_decode(const wordpiece *wp, const int32_t *ids, int n, bool skip_special);

#endif
