#!/usr/bin/python3
"""Train a WordPiece vocabulary (vocab.txt) for models/bert.

Debian ships no WordPiece trainer: there is no python3-tokenizers, and
python3-sentencepiece / sentencepiece train unigram or BPE models in their
own format (with the U+2581 word marker), not BERT's "##" continuation
vocabulary.  So this is a small trainer of its own, the procedure Hugging
Face tokenizers' WordPieceTrainer uses:

 1. Pre-tokenise every line with BERT's BasicTokenizer (tests/bert_reference.py:
    clean, lower-case, strip accents, split on whitespace and punctuation) and
    count words.
 2. Spell each word as characters, the first bare and the rest with the "##"
    continuation prefix ("the" -> t ##h ##e).  The alphabet is the
    --limit-alphabet most frequent characters, each in both forms.
 3. Repeatedly merge the most frequent adjacent pair of pieces (frequency
    weighted by word count; ties broken by the pair's text so the result is
    deterministic), "t" + "##h" -> "th", "##h" + "##e" -> "##he", until the
    vocabulary reaches --vocab-size.
 4. vocab.txt = [PAD] [UNK] [CLS] [SEP] [MASK], then the alphabet, then the
    merged pieces in merge order.  [PAD] is id 0 (config pad_token_id 0).

The BERT tokenizer then segments with greedy longest-match-first, which
reuses these pieces without needing the merge list.

    /usr/bin/python3 tools/bert/train_wordpiece.py --corpus /work/bert-train/corpus/train.txt \\
        --vocab-size 12000 --out models/bert/vocab.txt
"""

import argparse
import collections
import heapq
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
from bert_reference import SPECIAL_TOKENS, basic_tokenize  # noqa: E402

_UNSAFE_ASCII = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\[]")
_ASCII_WORDS = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def fast_basic_tokenize(line):
    """basic_tokenize(line) for do_lower_case=True, with a regex fast path.

    For printable ASCII text the reference reduces to: lower-case, then runs of
    [a-z0-9] and single other characters (every other printable ASCII character
    is punctuation to BERT).  Anything else (non-ASCII, control characters,
    '[' that might open a special token) goes through the reference."""
    if line.isascii() and not _UNSAFE_ASCII.search(line):
        return _ASCII_WORDS.findall(line.lower())
    return basic_tokenize(line)


def count_words(path):
    counts = collections.Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            counts.update(fast_basic_tokenize(line))
    return counts


def train(counts, vocab_size, limit_alphabet=1000, min_frequency=2):
    chars = collections.Counter()
    for w, c in counts.items():
        for ch in w:
            chars[ch] += c
    alphabet = sorted(sorted(chars, key=lambda ch: (-chars[ch], ch))[:limit_alphabet])
    allowed = set(alphabet)
    vocab = list(SPECIAL_TOKENS) + alphabet + ["##" + ch for ch in alphabet]
    known = set(vocab)

    words, freqs = [], []
    for w, c in sorted(counts.items()):
        if c < min_frequency or any(ch not in allowed for ch in w):
            continue
        words.append([w[0]] + ["##" + ch for ch in w[1:]])
        freqs.append(c)

    pair_count = collections.defaultdict(int)
    pair_where = collections.defaultdict(set)
    for i, syms in enumerate(words):
        for a, b in zip(syms, syms[1:]):
            pair_count[(a, b)] += freqs[i]
            pair_where[(a, b)].add(i)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)

    merges = 0
    while len(vocab) < vocab_size and heap:
        negc, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negc or negc == 0:
            continue                                   # stale heap entry
        a, b = pair
        new = a + b[2:]
        touched = collections.defaultdict(int)
        for i in sorted(pair_where.pop(pair, ())):
            syms, f = words[i], freqs[i]
            for x, y in zip(syms, syms[1:]):
                pair_count[(x, y)] -= f
                touched[(x, y)] += 0
            out, k = [], 0
            while k < len(syms):
                if k + 1 < len(syms) and syms[k] == a and syms[k + 1] == b:
                    out.append(new)
                    k += 2
                else:
                    out.append(syms[k])
                    k += 1
            words[i] = out
            for x, y in zip(out, out[1:]):
                pair_count[(x, y)] += f
                pair_where[(x, y)].add(i)
                touched[(x, y)] += 0
        pair_count.pop(pair, None)
        for p in touched:
            c = pair_count.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                pair_count.pop(p, None)
        if new not in known:
            vocab.append(new)
            known.add(new)
        merges += 1
    return vocab, merges


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default="/work/bert-train/corpus/train.txt")
    ap.add_argument("--vocab-size", type=int, default=12000)
    ap.add_argument("--limit-alphabet", type=int, default=1000)
    ap.add_argument("--min-frequency", type=int, default=2)
    ap.add_argument("--out", default="models/bert/vocab.txt")
    args = ap.parse_args()

    t0 = time.time()
    counts = count_words(args.corpus)
    print(f"{len(counts)} distinct words, {sum(counts.values())} words "
          f"({time.time() - t0:.0f}s)", flush=True)
    vocab, merges = train(counts, args.vocab_size, args.limit_alphabet, args.min_frequency)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for t in vocab:
            f.write(t + "\n")
    print(f"{len(vocab)} tokens after {merges} merges -> {args.out} ({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
