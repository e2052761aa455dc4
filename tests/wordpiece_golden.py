#!/usr/bin/python3
"""Tokenizer golden test: engine/wordpiece (through tests/wordpiece_cli) against the
reference BERT tokenizer in tests/bert_reference.py, on the real bert-base-uncased
vocabulary from ../shared/models (never copied into the repo).  The sentences are
chosen to hit every rule; the expected ids are computed by the reference, never typed.
Skips (77) where the vocabulary is not beside the checkout."""
import os
import subprocess
import sys

SRC = os.environ.get("top_srcdir", os.path.join(os.path.dirname(__file__), ".."))
BUILD = os.environ.get("top_builddir", SRC)
sys.path.insert(0, os.path.join(SRC, "tests"))
import bert_reference  # noqa: E402

VOCAB = os.path.join(SRC, "..", "shared", "models", "bert-base-uncased-vocab", "vocab.txt")

CASES = [
    "The man went to the [MASK] to buy some milk.",
    "unaffable unbelievably antidisestablishmentarianism",           # ## splits
    "Héllo, Wörld! Ça va? naïve café résumé Ångström",                # accents stripped
    "北京欢迎你 and 東京 mixed with English",                          # CJK one per char
    "こんにちは 안녕하세요",                                             # not CJK ideographs
    "[MASK], [MASK]. ([MASK]) \"[MASK]\" [MASK]'s",                   # masks by punctuation
    "[mask] is not special; [MASK][MASK] are two",                    # case-sensitive specials
    "[CLS] a [SEP] b [PAD] [UNK]",                                    # every special
    "tabs\tand\nnewlines\r\nand  spaces   ",
    "control\x00chars\x07removed\ufffdhere\u200bzero-width",         # cleaned
    "e\u0301 vs \u00e9 composed",                                     # NFC
    "x" * 101 + " " + "y" * 100,                                      # 100-char rule
    "qqqzzxxjjkk ⊗ ☃ 🙂 emoji and symbols",                           # unknown pieces
    "don't won't it's we've they're I'm",                              # contractions
    "$3.50 + 20% = ~4.20 #hashtag @user a_b c-d e/f",                  # ASCII punctuation
    "«guillemets» „quotes“ — dashes – …",                              # Unicode punctuation
    "",
    "   ",
    "İstanbul ΣΊΣΥΦΟΣ Straße",                                        # non-ASCII case
]


def random_cases(count=400, seed=7):
    """Seeded random strings over a pool of characters that stress every rule."""
    import random
    rng = random.Random(seed)
    pool = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
            + list(" \t.,;:!?'\"()[]{}<>-_/#@$%^&*+=~`|\\") + ["[MASK]", "[SEP]", "[mask]"]
            + list("éÉèàâçñøÅßİıΣσςΩ北京東京人こア한\u0301\u0308\u200b\u00a0\u3000\x00\x07\ufffd🙂…—«»")
            + ["the", "ing", "un", "able", "##", "straße"])
    return ["".join(rng.choice(pool) for _ in range(rng.randint(0, 40))) for _ in range(count)]


def main():
    if not os.path.exists(VOCAB):
        print(f"SKIP: {VOCAB} not found (the real bert-base-uncased vocabulary lives in "
              "../shared/models beside the checkout; a user's clone has none)")
        return 77
    ref = bert_reference.BertWordPiece(VOCAB, do_lower_case=True)
    cli = os.path.join(BUILD, "tests", "wordpiece_cli")
    text_in = "".join(c.replace("\n", " ").replace("\r", " ") + "\n" for c in CASES)
    # newlines inside a case would split it: the reference sees the same flattened text
    cases = [c.replace("\n", " ").replace("\r", " ") for c in CASES + random_cases()]
    text_in = "".join(c + "\n" for c in cases)
    out = subprocess.run([cli, VOCAB], input=text_in.encode("utf-8"), capture_output=True,
                         check=True).stdout.decode("utf-8").split("\n")
    failed = 0
    for i, case in enumerate(cases):
        want = ref.convert_tokens_to_ids(ref.tokenize(case))
        got_ids = out[i].split("\t")[0]
        got = [int(t) for t in got_ids.split()] if got_ids else []
        ok = got == want
        failed += not ok
        if i < len(CASES) or not ok:
            print(f"{'ok  ' if ok else 'FAIL'} {case[:60]!r}: {len(want)} tokens")
        if not ok:
            print(f"     want {want}\n     got  {got}")
    print(f"{len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
