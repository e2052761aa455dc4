/* check_wordpiece — the tokenizer on a small vocabulary written here: greedy
 * matching, [UNK] rules, specials, limits, hostile input, vocabulary errors and
 * decoding.  Agreement with the reference tokenizer on the real bert-base vocabulary
 * is tests/wordpiece_golden.py's job. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/wordpiece.h"

static char dir[64];

static const char *write_vocab(const char *name, const char *text)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static const char VOCAB[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nun\n##aff\n##able\n,\n.\n!\n"
                            "hello\n##s\ncafe\n北\n";
enum { PAD, UNK, CLS, SEP, MASK, THE, UN, AFF, ABLE, COMMA, DOT, BANG, HELLO, S, CAFE, BEI };

static wordpiece *load(bool lower)
{
    wordpiece *wp;
    engine_err err;
    ck_assert_msg(wordpiece_load(write_vocab("vocab.txt", VOCAB), lower, &wp, &err) == ENGINE_OK,
                  "%s", err.msg);
    return wp;
}

static int encode(wordpiece *wp, const char *text, int32_t *ids, int cap)
{
    int n;
    engine_err err;
    ck_assert_msg(wordpiece_encode(wp, text, strlen(text), ids, cap, &n, &err) == ENGINE_OK, "%s",
                  err.msg);
    return n;
}

static void setup(void)
{
    strcpy(dir, "/tmp/check_wordpiece.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    unlink(path);
    rmdir(dir);
}

START_TEST(test_greedy_and_unknown)
{
    wordpiece *wp = load(true);
    int32_t ids[16];
    ck_assert_int_eq(encode(wp, "Unaffable", ids, 16), 3);
    ck_assert_int_eq(ids[0], UN);
    ck_assert_int_eq(ids[1], AFF);
    ck_assert_int_eq(ids[2], ABLE);
    /* an unmatched piece turns the whole word into [UNK] */
    ck_assert_int_eq(encode(wp, "unaffablez the", ids, 16), 2);
    ck_assert_int_eq(ids[0], UNK);
    ck_assert_int_eq(ids[1], THE);
    /* accents stripped only when lower-casing */
    ck_assert_int_eq(encode(wp, "Café", ids, 16), 1);
    ck_assert_int_eq(ids[0], CAFE);
    wordpiece_free(wp);
    wp = load(false);
    ck_assert_int_eq(encode(wp, "café", ids, 16), 1);
    ck_assert_int_eq(ids[0], UNK);
    wordpiece_free(wp);
}
END_TEST

START_TEST(test_specials_and_punctuation)
{
    wordpiece *wp = load(true);
    int32_t ids[16];
    ck_assert_int_eq(encode(wp, "hello,[MASK]!", ids, 16), 4);
    ck_assert_int_eq(ids[0], HELLO);
    ck_assert_int_eq(ids[1], COMMA);
    ck_assert_int_eq(ids[2], MASK);
    ck_assert_int_eq(ids[3], BANG);
    /* lower-case [mask] is text, split on its brackets */
    ck_assert_int_eq(encode(wp, "[mask]", ids, 16), 3);
    ck_assert_int_eq(ids[1], UNK);
    /* CJK ideographs stand alone even without spaces */
    ck_assert_int_eq(encode(wp, "北北", ids, 16), 2);
    ck_assert_int_eq(ids[0], BEI);
    ck_assert_int_eq(ids[1], BEI);
    wordpiece_free(wp);
}
END_TEST

START_TEST(test_limits)
{
    wordpiece *wp = load(true);
    int32_t ids[2];
    /* the count covers the whole text even past the buffer */
    ck_assert_int_eq(encode(wp, "the the the the the", ids, 2), 5);
    char word[102];
    memset(word, 'a', 101);
    word[101] = '\0';
    ck_assert_int_eq(encode(wp, word, ids, 2), 1);
    ck_assert_int_eq(ids[0], UNK);
    int n;
    engine_err err;
    ck_assert_int_eq(wordpiece_encode(wp, "ok\xff\xfe", 4, ids, 2, &n, &err), ENGINE_ERR_INVALID);
    ck_assert_ptr_nonnull(strstr(err.msg, "byte 2"));
    size_t big = WORDPIECE_MAX_TEXT_BYTES + 1;
    char *text = malloc(big);
    memset(text, ' ', big);
    ck_assert_int_eq(wordpiece_encode(wp, text, big, ids, 2, &n, &err), ENGINE_ERR_INVALID);
    free(text);
    /* NUL and control characters are dropped, not word breaks */
    ck_assert_int_eq(wordpiece_encode(wp, "th\0e\x07", 5, ids, 2, &n, &err), ENGINE_OK);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(ids[0], THE);
    wordpiece_free(wp);
}
END_TEST

START_TEST(test_vocab_errors)
{
    wordpiece *wp;
    engine_err err;
    ck_assert_int_eq(wordpiece_load(write_vocab("vocab.txt", "[UNK]\na\nb\na\n"), true, &wp, &err),
                     ENGINE_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, ":4: duplicate token 'a'"));
    ck_assert_int_eq(wordpiece_load(write_vocab("vocab.txt", "a\nb\n"), true, &wp, &err),
                     ENGINE_ERR_FORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "no [UNK]"));
    ck_assert_int_eq(wordpiece_load("/nonexistent/vocab.txt", true, &wp, &err), ENGINE_ERR_IO);
}
END_TEST

START_TEST(test_decode)
{
    wordpiece *wp = load(true);
    int32_t ids[] = { CLS, HELLO, S, COMMA, MASK, THE, DOT, SEP };
    char *text = wordpiece_decode(wp, ids, 8, true);
    ck_assert_str_eq(text, "hellos, the.");
    free(text);
    text = wordpiece_decode(wp, ids, 8, false);
    ck_assert_str_eq(text, "[CLS] hellos, [MASK] the. [SEP]");
    free(text);
    ck_assert_int_eq(wordpiece_id(wp, "##aff", 5), AFF);
    ck_assert_str_eq(wordpiece_token(wp, ABLE), "##able");
    ck_assert_ptr_null(wordpiece_token(wp, 999));
    ck_assert_int_eq(wordpiece_special_ids(wp).mask, MASK);
    wordpiece_free(wp);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("wordpiece");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_greedy_and_unknown);
    tcase_add_test(tc, test_specials_and_punctuation);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_vocab_errors);
    tcase_add_test(tc, test_decode);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
