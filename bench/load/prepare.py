#!/usr/bin/python3
"""Request bodies for the load tests (bench/load/sweep.sh, overload.py).

    /usr/bin/python3 bench/load/prepare.py [OUT_DIR]      # default /tmp/modeld-load

Writes into OUT_DIR, one JSON request body per line (what body.lua sends):

  classify.jsonl   256 real Fashion-MNIST *test* images, PNG-encoded by PIL,
                   {"image": "<base64 PNG>", "top_k": 3}
  fill-mask.jsonl  64 plain English sentences of 6-30 words, one [MASK] each,
                   {"text": "...", "top_k": 5}
  generate.jsonl   200 {"count": 1, "seed": N, "class": "<label>"} over the ten
                   Fashion-MNIST classes
  meta.json        counts, and the BERT token counts of the fill-mask bodies
                   ([CLS] and [SEP] included): sweep.sh runs the engine-only
                   BERT benchmark at their median, so that the two numbers it
                   compares describe the same sequence length

Everything is deterministic (fixed indices and seeds), so two runs write the
same files and results from different days compare.  Needs numpy and PIL
(Debian's /usr/bin/python3 has both) and the Fashion-MNIST files
(tools/fashion_mnist.py says where they are looked for).
"""

import base64
import io
import json
import os
import random
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True   # leave no __pycache__ in the source tree (bench/ is shipped)
sys.path.insert(0, os.path.join(TOP, "tools"))
import fashion_mnist  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

N_IMAGES = 256
N_GENERATE = 200

# Everyday sentences, one [MASK] each, 6 to 30 words (checked below).  Varied
# lengths matter: BERT's cost grows with the sequence, and a batch packs
# sequences of different lengths.
SENTENCES = [
    "I drink a cup of [MASK] every morning.",
    "The cat is sleeping on the [MASK].",
    "Please close the [MASK] when you leave.",
    "She bought fresh bread at the [MASK].",
    "It is very cold outside, so wear a [MASK].",
    "He forgot his keys at [MASK] again.",
    "The children are playing in the [MASK] after school.",
    "My brother works as a [MASK] in the city hospital.",
    "We had pizza for [MASK] last night.",
    "The train to London leaves at eight o'clock in the [MASK].",
    "Turn left at the next [MASK] and keep going straight.",
    "Can you pass me the [MASK], please?",
    "The baby started to [MASK] when the dog barked.",
    "They went to the beach and swam in the [MASK] all afternoon.",
    "I need to buy some milk, eggs and [MASK] on the way home.",
    "The meeting has been moved to [MASK] because the manager is ill.",
    "Our neighbours have a big garden with apple [MASK] and a small pond.",
    "Don't forget to [MASK] your teeth before you go to bed.",
    "The weather forecast says it will [MASK] tomorrow.",
    "He reads the [MASK] every day on the bus to work.",
    "After dinner we usually watch a film on [MASK].",
    "She plays the [MASK] in a small band on weekends.",
    "The library is closed on Sundays, but it opens early on [MASK].",
    "My phone battery is almost empty, so I need to [MASK] it.",
    "We planted tomatoes and beans in the garden this [MASK].",
    "The doctor told him to drink more water and get more [MASK].",
    "There was a long queue at the post [MASK] this morning.",
    "I left my umbrella on the [MASK] and got wet walking home.",
    "The restaurant on the corner serves the best [MASK] in town.",
    "Could you tell me how to get to the train [MASK]?",
    "She has lived in the same small [MASK] near the river for thirty years.",
    "The shop sells shoes, shirts, jackets and other [MASK] for men and women.",
    "Every summer my family rents a house by the [MASK] for two weeks.",
    "The teacher asked the students to open their [MASK] to page twelve.",
    "He was late for work because his car would not [MASK].",
    "We walked along the river and watched the [MASK] go down behind the hills.",
    "If you are hungry, there is some soup in the [MASK].",
    "The old man feeds the birds in the park every [MASK].",
    "My sister is learning to [MASK] a car, and her test is next month.",
    "The football match was cancelled because of the heavy [MASK].",
    "I always make a shopping [MASK] before I go to the supermarket.",
    "The museum has a large collection of old paintings and [MASK] from all over the world.",
    "When the lights went out, we sat in the kitchen and lit a few [MASK].",
    "The bus was so full that we had to [MASK] all the way to the station.",
    "He washed the dishes while she put the children to [MASK].",
    "On rainy days the dog refuses to go outside and sleeps by the [MASK].",
    "The farmer gets up before sunrise to milk the [MASK] and feed the chickens.",
    "You can pay with cash or by [MASK] at the front desk.",
    "The new bridge over the river will be [MASK] to traffic next spring, the city council said on Tuesday.",
    "Before the guests arrived, we cleaned the whole house, set the table and put fresh [MASK] in a vase.",
    "My grandmother still writes letters by [MASK] and sends them to all her grandchildren at Christmas.",
    "The plane was delayed for two hours, so we had a coffee and read our [MASK] at the airport.",
    "When I was a child, we spent every holiday at my uncle's [MASK] in the mountains, far from any town.",
    "The hotel room was small but clean, and from the window we could see the [MASK] and the boats in the harbour.",
    "She took the wrong bus, got off at the last stop and had to call a [MASK] to take her home.",
    "Most people in the village know each other, and on market day everyone meets in the [MASK] to buy food and talk.",
    "The water in the lake was too [MASK] for swimming.",
    "He put on his running shoes and went for a [MASK] around the park.",
    "The kettle is on, so the [MASK] will be ready in a minute.",
    "We ran out of sugar, so I borrowed a cup from the [MASK] next door.",
    "My favourite season is autumn, when the [MASK] turn red and yellow and the air smells of rain.",
    "The price of fruit and vegetables has gone up a lot this [MASK].",
    "Good morning, how did you [MASK] last night?",
    "The boy climbed the tree to get his [MASK] back.",
]


def classify_bodies(n):
    imgs, _labels = fashion_mnist.load("test")
    # a fixed spread over the whole test set, not its first n (which would be
    # whatever order the file happens to have)
    idx = np.random.default_rng(20240601).choice(len(imgs), size=n, replace=False)
    out = []
    for i in sorted(idx.tolist()):
        buf = io.BytesIO()
        Image.fromarray(imgs[i], mode="L").save(buf, format="PNG")
        b64 = base64.b64encode(buf.getvalue()).decode("ascii")
        out.append({"image": b64, "top_k": 3})
    return out


def fill_mask_bodies():
    out = []
    for s in SENTENCES:
        words = len(s.split())
        if s.count("[MASK]") != 1 or not 6 <= words <= 30:
            raise SystemExit(f"prepare.py: bad sentence ({words} words): {s}")
        out.append({"text": s, "top_k": 5})
    return out


def generate_bodies(n):
    rng = random.Random(7)
    out = []
    for _ in range(n):
        out.append({"count": 1, "seed": rng.randrange(1 << 32),
                    "class": rng.choice(fashion_mnist.CLASSES)})
    return out


def bert_token_counts(bodies):
    """Token counts with [CLS] and [SEP], as the daemon's tokenizer makes them.

    Uses the reference tokenizer of the golden tests (tests/bert_reference.py,
    Hugging Face BertTokenizer semantics) on models/bert's vocabulary; it
    imports torch, so a machine without it falls back to an estimate."""
    model_dir = os.environ.get("MODELS", os.path.join(TOP, "models"))
    model_dir = os.path.join(model_dir, "bert")
    try:
        sys.path.insert(0, os.path.join(TOP, "tests"))
        from bert_reference import BertWordPiece
        tok = BertWordPiece.from_dir(model_dir)
        return [len(tok.tokenize(b["text"])) + 2 for b in bodies], "tokenizer"
    except Exception as e:  # noqa: BLE001 - any failure: estimate instead
        print(f"prepare.py: no tokenizer ({e}); estimating token counts", file=sys.stderr)
        # punctuation is a token of its own; ~1.15 pieces per word otherwise
        return [round(len(b["text"].split()) * 1.15) + 2 + 1 for b in bodies], "estimate"


def write_jsonl(path, bodies):
    with open(path, "w", encoding="utf-8") as f:
        for b in bodies:
            f.write(json.dumps(b, separators=(",", ":")) + "\n")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "/tmp/modeld-load"
    os.makedirs(out_dir, exist_ok=True)
    classify = classify_bodies(N_IMAGES)
    fill = fill_mask_bodies()
    gen = generate_bodies(N_GENERATE)
    write_jsonl(os.path.join(out_dir, "classify.jsonl"), classify)
    write_jsonl(os.path.join(out_dir, "fill-mask.jsonl"), fill)
    write_jsonl(os.path.join(out_dir, "generate.jsonl"), gen)
    counts, how = bert_token_counts(fill)
    meta = {
        "classify": len(classify), "fill-mask": len(fill), "generate": len(gen),
        "fill_mask_tokens": {"median": int(statistics.median_low(counts)),
                             "min": min(counts), "max": max(counts), "source": how},
    }
    with open(os.path.join(out_dir, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    t = meta["fill_mask_tokens"]
    print(f"prepare.py: {out_dir}: {len(classify)} classify, {len(fill)} fill-mask "
          f"({t['min']}-{t['max']} tokens, median {t['median']}, {how}), {len(gen)} generate")


if __name__ == "__main__":
    main()
