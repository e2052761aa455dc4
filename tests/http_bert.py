#!/usr/bin/python3
"""BERT over HTTP end to end: fill-mask and next-sentence against the reference model.

Runs the built daemon on a BERT directory: models/bert when it holds a trained
checkpoint, else a tiny random-weight one written here with tests/bert_reference.py
(BertForPreTraining, and a BertForMaskedLM copy without the next-sentence head),
using the real bert-base-uncased vocabulary from ../shared when present and a small
one otherwise.  The daemon's answers are compared with the reference model run on
the same directory by PyTorch: the same top-k token ids and scores within 1e-4,
next-sentence probabilities within 1e-4.  Batching: 16 concurrent requests of
different lengths, on a model whose queue waits for a batch to fill, get the answers
they get alone.  Then every error status of the two routes.

Exit codes follow automake: 0 pass, 77 skip (no PyTorch), 1 failure.
"""

import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import testlib  # noqa: E402

SCORE_TOL = 1e-4
BATCH_TOL = 1e-5

# Texts of different lengths for the batching check; each has at least one [MASK].
TEXTS = [
    "the [MASK] sat on the mat.",
    "paris is the [MASK] of france.",
    "she went to the [MASK] to buy some bread and milk.",
    "[MASK]",
    "the quick brown fox jumps over the lazy [MASK].",
    "he said that the [MASK] was too [MASK] to carry.",
    "in the morning the children walked to [MASK] together, laughing.",
    "a [MASK] a day keeps the doctor away.",
    "the meeting was moved to [MASK] because of the storm that hit the city last night.",
    "i [MASK] you.",
    "water boils at one hundred degrees [MASK].",
    "the book on the table is [MASK].",
    "they built a small house near the [MASK] and lived there for many years.",
    "[MASK] is the best.",
    "the program crashed when the [MASK] ran out of memory.",
    "my favourite colour is [MASK], and my favourite food is [MASK].",
]

SMALL_VOCAB_WORDS = """the a an of to in on at for with and or but is was are were be been
it he she they we i you this that there here what which who when where why how not no
man woman child children dog cat house city country world day night time year morning
went go goes going came come buy bought sell milk bread water food book table mat sat
store shop school work home paris france capital king queen good bad best big small
red blue green colour favourite said say says like love hate keep keeps doctor away
apple apples program programs memory crash crashed ran run storm hit last quick brown
fox jumps over lazy one hundred degrees boils walked together laughing meeting moved
because built near lived many years some too heavy carry""".split()


# ---- model directories -------------------------------------------------------------


def small_vocab():
    toks = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    toks += list(".,!?'-:;()\"")
    toks += sorted(set(SMALL_VOCAB_WORDS))
    toks += ["##s", "##ed", "##ing", "##ly", "##er"]
    toks += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    toks += ["##" + chr(c) for c in range(ord("a"), ord("z") + 1)]
    seen, out = set(), []
    for t in toks:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def write_tiny_bert(br, torch, path, vocab_lines, mlm_only=False):
    """A save_pretrained-style directory with random weights from a fixed seed.

    initializer_range 0.3 instead of BERT's 0.02 makes the MLM distribution peaked,
    so the top-k order is decided by clear margins rather than rounding."""
    from safetensors_io import save_file
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in vocab_lines))
    config = br.BertConfig(vocab_size=len(vocab_lines), hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64,
                           max_position_embeddings=64, initializer_range=0.3)
    torch.manual_seed(1234)
    cls = br.BertForMaskedLM if mlm_only else br.BertForPreTraining
    model = cls(config).eval()
    arch = "BertForMaskedLM" if mlm_only else "BertForPreTraining"
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config.to_hf_dict(architectures=(arch,)), f, indent=2)
    tensors = {k: v.detach().float().contiguous() for k, v in br.hf_state_dict(model).items()}
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "model_max_length": 64,
                   "tokenizer_class": "BertTokenizer"}, f)


def model_dirs(br, torch, tmp):
    """(pretraining dir, MLM-only dir or None, description)."""
    trained = os.path.join(testlib.top_srcdir(), "models", "bert")
    if os.path.isfile(os.path.join(trained, "model.safetensors")):
        return trained, None, f"{trained} (trained)"
    vocab_file = os.path.normpath(os.path.join(testlib.top_srcdir(), "..", "shared", "models",
                                               "bert-base-uncased-vocab", "vocab.txt"))
    if os.path.isfile(vocab_file):
        with open(vocab_file, encoding="utf-8") as f:
            vocab = [line.rstrip("\n") for line in f]
        where = f"tiny random BERT, vocabulary {vocab_file}"
    else:
        vocab = small_vocab()
        where = f"tiny random BERT, {len(vocab)}-token vocabulary"
    pre = os.path.join(tmp, "bert")
    mlm = os.path.join(tmp, "bert-mlm")
    write_tiny_bert(br, torch, pre, vocab)
    write_tiny_bert(br, torch, mlm, vocab, mlm_only=True)
    return pre, mlm, where


# ---- the reference ------------------------------------------------------------------


class Reference:
    """The PyTorch model and tokenizer of a directory, answering as the daemon should."""

    def __init__(self, br, torch, path):
        self.torch = torch
        self.model, self.config = br.load_model_dir(path)
        self.tok = br.BertWordPiece.from_dir(path)

    def fill_mask(self, text, top_k=5, targets=None):
        """[[{"token", "score"}, ...] per mask]: softmax over the whole vocabulary."""
        torch = self.torch
        enc = self.tok.encode(text)
        ids = enc["input_ids"]
        with torch.no_grad():
            logits, _ = self.model(ids[None], enc["token_type_ids"][None],
                                   enc["attention_mask"][None])
        probs = torch.softmax(logits[0].double(), dim=-1)
        out = []
        for pos in (ids == self.tok.mask_id).nonzero().flatten().tolist():
            p = probs[pos]
            if targets is None:
                cand = list(range(len(self.tok.vocab)))
            else:
                cand = targets
            scored = sorted(((float(p[i]), i) for i in cand), key=lambda t: (-t[0], t[1]))
            out.append([{"token": i, "score": s} for s, i in scored[:top_k]])
        return out

    def is_next(self, a, b):
        torch = self.torch
        enc = self.tok.encode(a, b)
        with torch.no_grad():
            _, nsp = self.model(enc["input_ids"][None], enc["token_type_ids"][None],
                                enc["attention_mask"][None])
        return float(torch.softmax(nsp[0].double(), dim=-1)[0])

    def decode(self, ids, skip_special):
        """Hugging Face's decode(): tokens joined, ## glued, spaces before punctuation out."""
        inv = self.tok.inv_vocab
        special = {self.tok.pad_id, self.tok.unk_id, self.tok.cls_id, self.tok.sep_id,
                   self.tok.mask_id}
        toks = [inv[i] for i in ids if not (skip_special and i in special)]
        text = " ".join(toks).replace(" ##", "").strip()
        for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                     (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"),
                     (" 're", "'re")):
            text = text.replace(a, b)
        return text


# ---- checking helpers (tests/testlib.py) ----------------------------------------------

Failure, expect = testlib.Failure, testlib.expect


def call(d, method, path, body=None, headers=None):
    status, _, doc = testlib.call_json(d, method, path, body, headers)
    return status, doc


def refused(d, status, path, body, contains, headers=None):
    got, doc = call(d, "POST", path, body, headers)
    expect(got == status, f"POST {path} {str(body)[:120]}: status {got}, expected {status}: {doc}")
    for c in contains if isinstance(contains, (list, tuple)) else [contains]:
        expect(c.lower() in doc["error"].lower(), f"error {doc['error']!r} lacks {c!r}")
    return doc


def fill_mask(d, model, body):
    status, doc = call(d, "POST", f"/v1/models/{model}/fill-mask", body)
    expect(status == 200, f"fill-mask {body}: {status} {doc}")
    expect(set(doc) == {"model", "masks"} and doc["model"] == model, f"keys: {doc}")
    for answers in doc["masks"]:
        for a in answers:
            expect(set(a) == {"score", "token", "token_str", "sequence"}, f"answer keys: {a}")
    return doc


def same_answers(got, want, tol, what):
    """got: the daemon's masks; want: the reference's (or another answer's) masks."""
    expect(len(got) == len(want), f"{what}: {len(got)} masks, expected {len(want)}")
    for m, (g, w) in enumerate(zip(got, want)):
        expect([a["token"] for a in g] == [a["token"] for a in w],
               f"{what}: mask {m}: ids {[a['token'] for a in g]}, expected "
               f"{[a['token'] for a in w]} (scores {[round(a['score'], 6) for a in w]})")
        worst = max(abs(a["score"] - b["score"]) for a, b in zip(g, w))
        expect(worst <= tol, f"{what}: mask {m}: scores differ by {worst:.2e} > {tol}: "
               f"{[a['score'] for a in g]} vs {[a['score'] for a in w]}")


# ---- the checks ----------------------------------------------------------------------


def check_models(d, ref, has_mlm_only):
    status, doc = call(d, "GET", "/v1/models")
    expect(status == 200, f"models: {status}")
    entry = next(m for m in doc["models"] if m["name"] == "bert")
    c = ref.config
    want = {"name": "bert", "kind": "bert", "ready": True, "max_tokens": c.max_position_embeddings,
            "vocab_size": c.vocab_size, "next_sentence": True, "max_batch_size": 16,
            "max_batch_tokens": 16 * c.max_position_embeddings}
    expect(entry == want, f"bert entry: {entry}, expected {want}")
    status, one = call(d, "GET", "/v1/models/bert")
    expect(status == 200 and one == entry, f"/v1/models/bert: {one}")
    small = next(m for m in doc["models"] if m["name"] == "small")
    expect(small["max_batch_tokens"] == c.max_position_embeddings and small["max_batch_size"] == 4,
           f"small entry: {small}")
    if has_mlm_only:
        mlm = next(m for m in doc["models"] if m["name"] == "mlm")
        expect(mlm["next_sentence"] is False, f"mlm entry: {mlm}")


def check_fill_mask_reference(d, ref):
    for text in TEXTS[:6]:
        for top_k in (1, 5):
            doc = fill_mask(d, "bert", {"text": text, "top_k": top_k})
            same_answers(doc["masks"], ref.fill_mask(text, top_k), SCORE_TOL, repr(text))


def check_sequences(d, ref):
    text = "the [MASK] sat on the mat."
    doc = fill_mask(d, "bert", {"text": text, "top_k": 3})
    ids = ref.tok.encode(text)["input_ids"].tolist()
    pos = ids.index(ref.tok.mask_id)
    for a in doc["masks"][0]:
        filled = list(ids)
        filled[pos] = a["token"]
        want = ref.decode(filled, skip_special=True)
        expect(a["sequence"] == want, f"sequence {a['sequence']!r}, expected {want!r}")
        expect(a["token_str"] == ref.tok.inv_vocab[a["token"]],
               f"token_str {a['token_str']!r} for id {a['token']}")
    # Two masks: the other stays [MASK]; [CLS]/[SEP] are not shown.
    text = "the [MASK] was too [MASK] to carry."
    doc = fill_mask(d, "bert", {"text": text, "top_k": 2})
    ids = ref.tok.encode(text)["input_ids"].tolist()
    positions = [i for i, t in enumerate(ids) if t == ref.tok.mask_id]
    for m, answers in enumerate(doc["masks"]):
        for a in answers:
            filled = list(ids)
            filled[positions[m]] = a["token"]
            want = ref.decode(filled[1:-1], skip_special=False)
            expect(a["sequence"] == want, f"mask {m}: sequence {a['sequence']!r}, expected {want!r}")
            expect("[MASK]" in a["sequence"], f"the other mask is gone: {a['sequence']!r}")


def check_targets(d, ref):
    text = "the [MASK] sat on the mat."
    words = [w for w in ("dog", "cat", "house", "man", "the") if w in ref.tok.vocab]
    ids = [ref.tok.vocab[w] for w in words]
    doc = fill_mask(d, "bert", {"text": text, "targets": words})
    want = ref.fill_mask(text, top_k=len(ids), targets=ids)
    same_answers(doc["masks"], want, SCORE_TOL, "targets")
    # top_k ranks among the targets only.
    doc = fill_mask(d, "bert", {"text": text, "targets": words, "top_k": 2})
    same_answers(doc["masks"], [want[0][:2]], SCORE_TOL, "targets top_k 2")


def check_hf_shape(d, ref):
    text = TEXTS[2]
    native = fill_mask(d, "bert", {"text": text, "top_k": 3, "targets": ["store", "the"]})
    hf = fill_mask(d, "bert", {"inputs": text, "parameters": {"top_k": 3,
                                                             "targets": ["store", "the"]},
                               "options": {"wait_for_model": True}})
    expect(native == hf, f"the two request shapes differ:\n  {native}\n  {hf}")


def check_next_sentence(d, ref, mlm_only):
    pairs = [("the man went to the store.", "he bought a gallon of milk."),
             ("the man went to the store.", "penguins are flightless birds."),
             ("", "")]
    for a, b in pairs:
        status, doc = call(d, "POST", "/v1/models/bert/next-sentence", {"text_a": a, "text_b": b})
        expect(status == 200, f"next-sentence: {status} {doc}")
        expect(set(doc) == {"model", "is_next", "not_next"}, f"keys: {doc}")
        want = ref.is_next(a, b)
        expect(abs(doc["is_next"] - want) <= SCORE_TOL, f"is_next {doc['is_next']} vs {want}")
        expect(abs(doc["is_next"] + doc["not_next"] - 1.0) <= 1e-5, f"not 1 in all: {doc}")
    if mlm_only:
        refused(d, 422, "/v1/models/mlm/next-sentence", {"text_a": "a", "text_b": "b"},
                "model mlm has no next-sentence head")
        # Its fill-mask works.
        fill_mask(d, "mlm", {"text": "the [MASK] sat."})


def ask_all(d, model, bodies, workers=16):
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(call, d, "POST", f"/v1/models/{model}/fill-mask", b)
                   for b in bodies]
        return [f.result(timeout=120) for f in futures]


def check_batching(d, ref, model):
    bodies = [{"text": t, "top_k": 3} for t in TEXTS]
    alone = []
    for b in bodies:
        alone.append(fill_mask(d, model, b))
    for rnd in range(2):
        together = ask_all(d, model, bodies)
        for i, (status, doc) in enumerate(together):
            expect(status == 200, f"{model} request {i}: {status} {doc}")
            same_answers(doc["masks"], alone[i]["masks"], BATCH_TOL,
                         f"{model} round {rnd}: {TEXTS[i]!r} in a batch vs alone")
    # And alone agrees with the reference.
    for i, t in enumerate(TEXTS):
        same_answers(alone[i]["masks"], ref.fill_mask(t, 3), SCORE_TOL, f"reference {t!r}")


def check_errors(d, ref):
    fm = "/v1/models/bert/fill-mask"
    ns = "/v1/models/bert/next-sentence"
    limit = ref.config.max_position_embeddings
    refused(d, 422, fm, {"text": "no mask in here."}, "has no [MASK] token")
    refused(d, 400, fm, b'{"text": "caf\xe9 [MASK]"}', "UTF-8",
            {"Content-Type": "application/json"})
    long_text = " ".join(["the"] * limit) + " [MASK]"
    refused(d, 413, fm, {"text": long_text}, [f"{limit + 3} tokens", f"at most {limit}"])
    refused(d, 413, ns, {"text_a": " ".join(["the"] * limit), "text_b": "a"},
            [f"{limit + 4} tokens", f"at most {limit}"])
    refused(d, 400, fm, {"text": "[MASK]", "top_k": 0}, "top_k")
    refused(d, 400, fm, {"text": "[MASK]", "top_k": "3"}, "top_k")
    refused(d, 400, fm, {"text": 3}, "text must be a string")
    refused(d, 400, fm, {"inputs": ["a [MASK]"]}, "one text per request")
    refused(d, 400, fm, {"text": "[MASK]", "extra": 1}, 'unknown field "extra"')
    refused(d, 400, fm, {"text": "[MASK]", "targets": []}, "targets is empty")
    refused(d, 422, fm, {"text": "[MASK]", "targets": ["\U0001F9A9"]}, "has no token")
    refused(d, 400, ns, {"text_a": "a"}, "text_b")
    refused(d, 400, fm, b"", "empty body", {"Content-Type": "application/json"})
    refused(d, 415, fm, "{}", "Content-Type", {"Content-Type": "text/plain"})
    # Routes of the other kind name this one's kind and routes.
    refused(d, 404, "/v1/models/bert/classify", {"image": "x"},
            ["model bert is a bert model", "/v1/models/bert/fill-mask"])
    status, doc = call(d, "GET", "/v1/models/bert/fill-mask")
    expect(status == 405, f"GET fill-mask: {status}")
    refused(d, 404, "/v1/models/nope/fill-mask", {"text": "[MASK]"}, "unknown model 'nope'")


def check_debug_log_shows_batches(d):
    with open(d.log.name, errors="replace") as f:
        log = f.read()
    sizes = [int(line.split("batch of ")[1].split()[0]) for line in log.splitlines()
             if "batch of " in line and "model bert " in line]
    expect(any(n > 1 for n in sizes), f"no batch of more than one job in the log: {sizes}")
    small = [int(line.split("batch of ")[1].split()[0]) for line in log.splitlines()
             if "batch of " in line and "model small " in line]
    expect(small and max(small) <= 4, f"model small took batches of {small}, over 4")


def write_conf(tmp, pre, mlm, max_pos):
    # A delay long enough for 16 concurrent requests to queue together; "small"
    # allows one longest sequence per forward pass and 4 sequences at most.
    text = f"""[server]
log_level = debug
max_queue_delay_us = 50000

[model bert]
path = {pre}

[model small]
path = {pre}
max_batch_size = 4
max_batch_tokens = {max_pos}
"""
    if mlm:
        text += f"\n[model mlm]\npath = {mlm}\n"
    path = os.path.join(tmp, "bert.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def main():
    try:
        import torch
    except ImportError:
        testlib.skip(f"PyTorch is not importable by {sys.executable}: the reference model "
                     "(tests/bert_reference.py) needs it")
    testlib.tools_on_path()
    import bert_reference as br
    if not os.access(testlib.daemon_binary(), os.X_OK):
        print(f"FAIL: {testlib.daemon_binary()} not built")
        return 1
    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp(prefix="modeld-http-bert-")
    passed, failed = 0, 0

    def run(name, fn, *args):
        nonlocal passed, failed
        t0 = time.time()
        try:
            fn(*args)
        except (Failure, testlib.DaemonError, OSError, KeyError, StopIteration,
                concurrent.futures.TimeoutError) as e:
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            return
        passed += 1
        print(f"ok   {name} ({time.time() - t0:.1f} s)", flush=True)

    try:
        pre, mlm, where = model_dirs(br, torch, tmp)
        print(f"model: {where}", flush=True)
        ref = Reference(br, torch, pre)
        conf = write_conf(tmp, pre, mlm, ref.config.max_position_embeddings)
        try:
            with testlib.Daemon({}, extra_args=["--config", conf]) as d:
                run("models", check_models, d, ref, mlm is not None)
                run("fill_mask_vs_reference", check_fill_mask_reference, d, ref)
                run("sequences", check_sequences, d, ref)
                run("targets", check_targets, d, ref)
                run("hf_request_shape", check_hf_shape, d, ref)
                run("next_sentence", check_next_sentence, d, ref, mlm is not None)
                run("batching", check_batching, d, ref, "bert")
                run("batching_token_budget", check_batching, d, ref, "small")
                run("errors", check_errors, d, ref)
                run("log_shows_batches", check_debug_log_shows_batches, d)
            passed += 1
            print("ok   sigterm_exit_0", flush=True)
        except testlib.DaemonError as e:
            failed += 1
            print(f"FAIL daemon: {e}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
