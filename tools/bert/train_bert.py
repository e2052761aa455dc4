#!/usr/bin/python3
"""Pre-train the small BERT in models/bert (MLM + NSP) on CPU, resumably.

The model is tests/bert_reference.py's BertForPreTraining (Hugging Face
module names), trained from scratch on the corpus of tools/bert/corpus.py
with the vocabulary of tools/bert/train_wordpiece.py:

  * examples as in google-research/bert create_pretraining_data: segment A is
    one or more consecutive sentences of a document, segment B is either what
    follows in the same document (IsNext) or sentences from a random other
    document (NotNext), 50/50; [CLS] A [SEP] B [SEP], at most --max-len tokens;
  * masked LM: 15% of the non-special tokens (at most --max-predictions), of
    which 80% -> [MASK], 10% -> a random token, 10% unchanged; the LM head is
    only evaluated at those positions;
  * loss = MLM cross-entropy + NSP cross-entropy; AdamW (weight decay 0.01, not
    on biases and LayerNorm), linear warmup then linear decay to 0, gradient
    clipping at 1.0; batches of similar length (8 batches drawn, sorted by
    length) to waste little on padding.

Everything random comes from --seed.  A checkpoint (model, optimizer,
scheduler, torch and numpy RNG states, step, accumulated wall time) is
written atomically to WORK/ckpt.pt every --ckpt-minutes and at exit; running
the same command again resumes from it.  --max-minutes bounds one run (the
session running it may be killed); when --total-steps is reached the model
is exported to --out and evaluated.  --export-only exports the latest
checkpoint (an interim model, said so in its README) and evaluates it.

    nice -n 19 /usr/bin/python3 tools/bert/train_bert.py --total-steps 6000 --max-minutes 100
    /usr/bin/python3 tools/bert/train_bert.py --export-only
"""

import argparse
import hashlib
import json
import math
import os
import shlex
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, HERE)
import bert_reference as br  # noqa: E402
from safetensors_io import save_file  # noqa: E402
from train_wordpiece import fast_basic_tokenize  # noqa: E402

FILL_MASK_EXAMPLES = [
    "The cat sat on the [MASK].",
    "He opened the [MASK] and walked into the room.",
    "The sun rises in the [MASK] and sets in the west.",
    "A dog is a domestic [MASK].",
    "She drank a cup of [MASK] with her breakfast.",
    "Debian is a free operating [MASK].",
    "Python is a popular programming [MASK].",
    "To install a package, run apt-get [MASK] followed by its name.",
]


# ---------------------------------------------------------------- data

class Corpus:
    """Token ids of a one-sentence-per-line, blank-line-between-documents file."""

    def __init__(self, ids, sent_off, sent_doc):
        self.ids = ids              # (N,) int32, all sentences back to back
        self.sent_off = sent_off    # (S+1,) int64, sentence s is ids[off[s]:off[s+1]]
        self.sent_doc = sent_doc    # (S,) int32, document of each sentence
        self.has_next = np.nonzero(sent_doc[:-1] == sent_doc[1:])[0]   # sentences followed in-doc

    def sentence(self, s):
        return self.ids[self.sent_off[s]:self.sent_off[s + 1]]


def tokenize_file(path, tok, cache):
    if os.path.exists(cache):
        z = np.load(cache)
        return Corpus(z["ids"], z["sent_off"], z["sent_doc"])
    wcache = {}
    ids, off, doc = [], [0], []
    d = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                if doc and doc[-1] == d:
                    d += 1
                continue
            sent = []
            for w in fast_basic_tokenize(line):
                p = wcache.get(w)
                if p is None:
                    p = wcache[w] = tok.convert_tokens_to_ids(br.wordpiece_tokenize(w, tok.vocab))
                sent.extend(p)
            if not sent:
                continue
            ids.extend(sent)
            off.append(len(ids))
            doc.append(d)
    c = Corpus(np.array(ids, dtype=np.int32), np.array(off, dtype=np.int64),
               np.array(doc, dtype=np.int32))
    tmp = cache + ".tmp.npz"
    np.savez(tmp, ids=c.ids, sent_off=c.sent_off, sent_doc=c.sent_doc)
    os.replace(tmp, cache)
    return c


class ExampleMaker:
    """NSP pairs + MLM masking, drawn from a numpy Generator (state checkpointed)."""

    def __init__(self, corpus, tok, max_len, max_pred, mask_prob=0.15):
        self.c, self.tok = corpus, tok
        self.max_len, self.max_pred, self.mask_prob = max_len, max_pred, mask_prob
        self.vocab_size = len(tok.vocab)
        self.first_normal = len(br.SPECIAL_TOKENS)

    def pair(self, rng):
        c = self.c
        target = self.max_len - 3
        s = int(c.has_next[rng.integers(len(c.has_next))])
        doc = c.sent_doc[s]
        chunk, n = [], 0
        while s < len(c.sent_doc) and c.sent_doc[s] == doc and (n < target or len(chunk) < 2):
            chunk.append(c.sentence(s))
            n += len(chunk[-1])
            s += 1
        a_end = int(rng.integers(1, len(chunk)))
        a = np.concatenate(chunk[:a_end])
        if rng.random() < 0.5:
            is_next = 1
            b = np.concatenate(chunk[a_end:])
        else:
            is_next = 0
            for _ in range(10):
                k = int(rng.integers(len(c.sent_doc)))
                if c.sent_doc[k] != doc:
                    break
            kdoc, parts, m = c.sent_doc[k], [], 0
            while k < len(c.sent_doc) and c.sent_doc[k] == kdoc and (m < target - len(a) or not parts):
                parts.append(c.sentence(k))
                m += len(parts[-1])
                k += 1
            b = np.concatenate(parts)
        # truncate the longer side, from the front or back at random (as google-research/bert)
        a, b = a.tolist(), b.tolist()
        while len(a) + len(b) > target:
            t = a if len(a) > len(b) else b
            if rng.random() < 0.5:
                del t[0]
            else:
                t.pop()
        return a, b, is_next

    def example(self, rng, all_mask=False):
        a, b, is_next = self.pair(rng)
        tok = self.tok
        ids = [tok.cls_id] + a + [tok.sep_id] + b + [tok.sep_id]
        types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
        cand = [i for i, t in enumerate(ids) if t >= self.first_normal]
        n = min(self.max_pred, max(1, int(round(len(cand) * self.mask_prob))))
        pos = np.sort(rng.choice(cand, size=min(n, len(cand)), replace=False))
        labels = [ids[p] for p in pos]
        for p in pos:
            r = rng.random()
            if all_mask or r < 0.8:
                ids[p] = tok.mask_id
            elif r < 0.9:
                ids[p] = int(rng.integers(self.first_normal, self.vocab_size))
        return ids, types, pos.tolist(), labels, is_next


def collate(examples, pad_id):
    T = max(len(e[0]) for e in examples)
    B = len(examples)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    types = torch.zeros((B, T), dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    rows, cols, labels = [], [], []
    for i, (x, t, pos, lab, _) in enumerate(examples):
        ids[i, :len(x)] = torch.tensor(x)
        types[i, :len(t)] = torch.tensor(t)
        mask[i, :len(x)] = 1
        rows += [i] * len(pos)
        cols += pos
        labels += lab
    nsp = torch.tensor([e[4] for e in examples])
    return ids, types, mask, torch.tensor(rows), torch.tensor(cols), torch.tensor(labels), nsp


def pretraining_loss(model, batch):
    ids, types, mask, rows, cols, labels, nsp = batch
    seq, pooled = model.bert(ids, types, mask)
    logits = model.cls.predictions(seq[rows, cols])               # (M,V), masked positions only
    mlm = F.cross_entropy(logits, labels)
    nsp_logits = model.cls.seq_relationship(pooled)               # (B,2)
    nsp_loss = F.cross_entropy(nsp_logits, nsp)
    mlm_acc = (logits.argmax(-1) == labels).float().mean().item()
    return mlm + nsp_loss, mlm.item(), nsp_loss.item(), mlm_acc


# ---------------------------------------------------------------- model, optimizer

def make_config(args, vocab_size):
    return br.BertConfig(vocab_size=vocab_size, hidden_size=args.hidden, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, intermediate_size=args.intermediate,
                         max_position_embeddings=args.max_len, hidden_dropout_prob=0.1,
                         attention_probs_dropout_prob=0.1, pad_token_id=0)


def make_optimizer(model, args):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.999), eps=1e-6)
    warm = max(1, int(args.warmup * args.total_steps))

    def lr_lambda(step):
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (args.total_steps - step) / max(1, args.total_steps - warm))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)


def save_ckpt(path, model, opt, sched, rng, step, state):
    tmp = path + ".tmp"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "torch_rng": torch.get_rng_state(),
                "numpy_rng": rng.bit_generator.state, "step": step, "state": state}, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------- export + evaluation

def export(model, config, args, out, state, interim):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config.to_hf_dict(), f, indent=2, sort_keys=True)
        f.write("\n")
    tensors = {k: v.detach().float().contiguous() for k, v in br.hf_state_dict(model).items()}
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    if os.path.abspath(args.vocab) != os.path.abspath(os.path.join(out, "vocab.txt")):
        shutil.copyfile(args.vocab, os.path.join(out, "vocab.txt"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "model_max_length": args.max_len,
                   "tokenizer_class": "BertTokenizer", "pad_token": "[PAD]", "unk_token": "[UNK]",
                   "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]",
                   "strip_accents": None, "tokenize_chinese_chars": True}, f, indent=2)
        f.write("\n")


@torch.no_grad()
def evaluate(out, heldout, args):
    """Reload the exported dir through tests/bert_reference.py and measure it."""
    model, config = br.load_model_dir(out)
    tok = br.BertWordPiece.from_dir(out)
    maker = ExampleMaker(heldout, tok, args.max_len, args.max_predictions)
    rng = np.random.default_rng(12345)
    n1 = n5 = total = nsp_ok = n_ex = 0
    for _ in range(args.eval_examples // 32):
        exs = [maker.example(rng, all_mask=True) for _ in range(32)]
        ids, types, mask, rows, cols, labels, nsp = collate(exs, tok.pad_id)
        # the same as model(ids, types, mask), with the LM head run at the masked positions only
        seq, pooled = model.bert(ids, types, mask)
        nsp_logits = model.cls.seq_relationship(pooled)
        top5 = model.cls.predictions(seq[rows, cols]).topk(5, dim=-1).indices
        n1 += (top5[:, 0] == labels).sum().item()
        n5 += (top5 == labels[:, None]).any(-1).sum().item()
        total += len(labels)
        nsp_ok += (nsp_logits.argmax(-1) == nsp).sum().item()
        n_ex += len(exs)
    examples = []
    for text in FILL_MASK_EXAMPLES:
        enc = tok.encode(text)
        logits, _ = model(enc["input_ids"][None], enc["token_type_ids"][None],
                          enc["attention_mask"][None])
        p = (enc["input_ids"] == tok.mask_id).nonzero()[0, 0]
        probs = logits[0, p].softmax(-1)
        top = probs.topk(5)
        examples.append((text, [(tok.inv_vocab[i.item()], round(v.item(), 3))
                                for v, i in zip(top.values, top.indices)]))
    return {"masked_tokens": total, "mlm_top1": n1 / total, "mlm_top5": n5 / total,
            "nsp_pairs": n_ex, "nsp_accuracy": nsp_ok / n_ex, "examples": examples}


def write_readme(out, config, args, state, metrics, interim):
    manifest = {}
    mp = os.path.join(args.corpus, "manifest.json")
    if os.path.exists(mp):
        with open(mp) as f:
            manifest = json.load(f)
    n_params = state.get("n_params", 0)
    rows = []
    for src, st in sorted(manifest.get("sources", {}).items()):
        tr = st["train"]
        rows.append(f"| {src} | {tr['documents']} | {tr['sentences']} | {tr['bytes'] / 1e6:.1f} MB |")
    pk = ", ".join(f"{p} {v}" for p, v in sorted(manifest.get("packages", {}).items()))
    status = (f"**Interim model**: exported from the checkpoint at step {state['step']} of "
              f"{args.total_steps} planned; training continues (see tools/bert/README.md) and a "
              f"later export replaces these files and numbers.\n\n" if interim else "")
    ex = "\n".join(f"| `{t}` | " + ", ".join(f"{w} ({p:.2f})" for w, p in top) + " |"
                   for t, top in metrics["examples"])
    hours = state["train_seconds"] / 3600
    text = f"""# models/bert — a small BERT trained here (not bert-base)

No pretrained English BERT can be downloaded in this project's environment, so
this is a **small BERT pre-trained from scratch on this machine's CPU** on
English text that Debian packages ship. It is far weaker than Google's
bert-base-uncased: use it to exercise the serving path (fill-mask,
next-sentence), not for its linguistic quality.

{status}## Files

Exactly what Hugging Face `BertForPreTraining.save_pretrained(dir, safe_serialization=True)`
writes, plus the tokenizer files:

- `config.json` — model_type "bert", architectures ["BertForPreTraining"]
- `model.safetensors` — F32, Hugging Face key names; `cls.predictions.decoder.weight` is tied
  to `bert.embeddings.word_embeddings.weight` and not stored
- `vocab.txt` — WordPiece vocabulary trained here, {config.vocab_size} tokens:
  `[PAD]`=0 `[UNK]`=1 `[CLS]`=2 `[SEP]`=3 `[MASK]`=4 (config `pad_token_id` 0)
- `tokenizer_config.json` — lower-cased BertTokenizer, model_max_length {args.max_len}

`tests/bert_reference.py` loads the directory in plain PyTorch (`load_model_dir`,
`BertWordPiece.from_dir`).

## Model

| | |
|---|---|
| layers / hidden / heads / intermediate | {config.num_hidden_layers} / {config.hidden_size} / {config.num_attention_heads} / {config.intermediate_size} |
| max positions / type vocab / vocab | {config.max_position_embeddings} / {config.type_vocab_size} / {config.vocab_size} |
| activation / LayerNorm eps | exact (erf) GELU / 1e-12 |
| parameters | {n_params / 1e6:.2f} M |

## Training

- Objective: masked LM (15% of tokens, at most {args.max_predictions} per sequence, 80% [MASK] / 10% random /
  10% unchanged) + next-sentence prediction (50% the following sentences of the same
  document, 50% sentences of a random other document), sequences of at most {args.max_len} tokens.
- AdamW, peak learning rate {args.lr}, {args.warmup:.0%} warmup then linear decay, weight decay 0.01,
  gradient clipping 1.0, batch {args.batch} sequences, dropout 0.1, seed {args.seed}.
- Steps: {state['step']} of {args.total_steps}; {state['tokens'] / 1e6:.1f} M non-padding tokens seen;
  training wall time {hours:.2f} h on a 2-core machine shared with other work (run at nice 19),
  {state.get('cpu_seconds', 0) / 3600:.2f} CPU core-hours (torch {torch.__version__}, {args.threads} threads);
  {state['tokens'] / max(1.0, state['train_seconds']):.0f} tokens/s of wall time,
  {state['tokens'] / max(1.0, state.get('cpu_seconds', 0)):.0f} tokens per CPU core-second.
- Commands, in order (each resumes the checkpoint of the one before; a changed
  `--total-steps` reshapes the linear decay from that step on; see tools/bert/README.md):

{chr(10).join("      " + c for c in state.get('history', [state.get('command', '')]))}

## Corpus

Built by `tools/bert/corpus.py` from Debian packages ({pk}): one sentence per line,
documents separated by blank lines, sentences deduplicated; 1% of documents held out by a
hash of their text. {manifest.get('train_bytes', 0) / 1e6:.1f} MB of training text,
{manifest.get('heldout_bytes', 0) / 1e6:.2f} MB held out.

| source | documents | sentences | text |
|---|---|---|---|
{chr(10).join(rows)}

The text is mostly dictionary definitions (GCIDE, WordNet glosses and examples), fortune
cookies, and Debian / GNU / Python manuals, so the model knows dictionary and
technical English best.

## Measured on held-out text

{metrics['masked_tokens']} masked tokens in {metrics['nsp_pairs']} held-out sequence pairs
(15% of tokens replaced by [MASK], evaluated from the exported files reloaded with
`tests/bert_reference.py`):

| metric | value |
|---|---|
| masked-token top-1 accuracy | {metrics['mlm_top1']:.1%} |
| masked-token top-5 accuracy | {metrics['mlm_top5']:.1%} |
| next-sentence accuracy (50/50 pairs) | {metrics['nsp_accuracy']:.1%} |

## Example fill-mask predictions (top 5, probability)

| input | predictions |
|---|---|
{ex}
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default="/work/bert-train/corpus")
    ap.add_argument("--vocab", default=os.path.join(REPO, "models/bert/vocab.txt"))
    ap.add_argument("--work", default="/work/bert-train")
    ap.add_argument("--out", default=os.path.join(REPO, "models/bert"))
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--intermediate", type=int, default=1024)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--max-predictions", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=float, default=0.05)
    ap.add_argument("--total-steps", type=int, default=6000)
    ap.add_argument("--max-minutes", type=float, default=100.0)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-examples", type=int, default=2048)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    tok = br.BertWordPiece(args.vocab)
    vhash = hashlib.sha1(open(args.vocab, "rb").read()).hexdigest()[:10]
    t0 = time.time()
    train = tokenize_file(os.path.join(args.corpus, "train.txt"), tok,
                          os.path.join(args.work, f"train-{vhash}.npz"))
    heldout = tokenize_file(os.path.join(args.corpus, "heldout.txt"), tok,
                            os.path.join(args.work, f"heldout-{vhash}.npz"))
    print(f"corpus: {len(train.ids)} train tokens in {len(train.sent_doc)} sentences, "
          f"{len(heldout.ids)} held-out tokens ({time.time() - t0:.0f}s)", flush=True)

    torch.manual_seed(args.seed)
    config = make_config(args, len(tok.vocab))
    model = br.BertForPreTraining(config)
    opt, sched = make_optimizer(model, args)
    rng = np.random.default_rng(args.seed)
    ckpt_path = os.path.join(args.work, "ckpt.pt")
    state = {"step": 0, "train_seconds": 0.0, "cpu_seconds": 0.0, "tokens": 0,
             "n_params": sum(p.numel() for p in model.parameters()),
             "command": "nice -n 19 /usr/bin/python3 tools/bert/train_bert.py "
                        + " ".join(shlex.quote(a) for a in sys.argv[1:] if a != "--export-only")}
    if os.path.exists(ckpt_path) and not args.no_resume:
        ck = torch.load(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        torch.set_rng_state(ck["torch_rng"])
        rng.bit_generator.state = ck["numpy_rng"]
        state.update({k: v for k, v in ck["state"].items() if k != "command"})
        # every run that trained is recorded: a resume may change the schedule
        state["history"] = ck["state"].get("history", [ck["state"].get("command", "")])
        print(f"resumed from {ckpt_path} at step {state['step']}", flush=True)
    step = state["step"]
    if not args.export_only and step < args.total_steps:
        state.setdefault("history", []).append(f"{state['command']}  # from step {step}")

    if not args.export_only and step < args.total_steps:
        maker = ExampleMaker(train, tok, args.max_len, args.max_predictions)
        model.train()
        run_begin = run_start = last_ckpt = time.time()
        cpu_start = time.process_time()
        seg_start, seg_tokens = time.time(), 0
        avg = None
        stop = False
        while step < args.total_steps and not stop:
            # 8 batches of similar length per draw; checkpoints fall between draws
            exs = [maker.example(rng) for _ in range(8 * args.batch)]
            exs.sort(key=lambda e: len(e[0]))
            order = rng.permutation(8)
            for j in order:
                if step >= args.total_steps:
                    break
                batch = collate(exs[j * args.batch:(j + 1) * args.batch], tok.pad_id)
                loss, mlm, nsp, acc = pretraining_loss(model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                step += 1
                ntok = int(batch[2].sum())
                state["tokens"] += ntok
                seg_tokens += ntok
                cur = np.array([mlm, nsp, acc])
                avg = cur if avg is None else 0.98 * avg + 0.02 * cur
                if step % args.log_every == 0:
                    now = time.time()
                    print(f"step {step}/{args.total_steps} mlm {avg[0]:.3f} nsp {avg[1]:.3f} "
                          f"mlm_acc {avg[2]:.3f} lr {sched.get_last_lr()[0]:.2e} "
                          f"tok/s {seg_tokens / (now - seg_start):.0f} "
                          f"T {batch[0].shape[1]} elapsed {(state['train_seconds'] + now - run_start) / 60:.1f}m",
                          flush=True)
                    seg_start, seg_tokens = now, 0
            now = time.time()
            # this run's whole length: run_start restarts at every checkpoint
            out_of_time = (now - run_begin) / 60 >= args.max_minutes
            if out_of_time or step >= args.total_steps or (now - last_ckpt) / 60 >= args.ckpt_minutes:
                state["train_seconds"] += now - run_start
                cpu_now = time.process_time()
                state["cpu_seconds"] = state.get("cpu_seconds", 0.0) + cpu_now - cpu_start
                run_start = last_ckpt = now
                cpu_start = cpu_now
                state["step"] = step
                save_ckpt(ckpt_path, model, opt, sched, rng, step, state)
                print(f"checkpoint step {step} -> {ckpt_path} (wall {state['train_seconds'] / 60:.1f}m, "
                      f"cpu {state['cpu_seconds'] / 60:.1f} core-min)", flush=True)
                stop = out_of_time
        if step < args.total_steps:
            print(f"stopped at step {step} (--max-minutes); run the same command to resume",
                  flush=True)
            return

    interim = step < args.total_steps
    model.eval()
    export(model, config, args, args.out, state, interim)
    metrics = evaluate(args.out, heldout, args)
    write_readme(args.out, config, args, state, metrics, interim)
    print(json.dumps({k: v for k, v in metrics.items() if k != "examples"}), flush=True)
    for text, top in metrics["examples"]:
        print(f"  {text} -> {top}", flush=True)
    print(f"exported {'interim ' if interim else ''}model at step {step} -> {args.out}", flush=True)


if __name__ == "__main__":
    main()
