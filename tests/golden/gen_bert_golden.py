#!/usr/bin/python3
"""Generate golden BERT cases: Hugging Face model directories with PyTorch's answers.

usage: gen_bert_golden.py OUT_DIR [CASE ...]

Each OUT_DIR/<case>/ is a complete BERT model directory as save_pretrained
writes it (config.json with "model_type": "bert", model.safetensors, vocab.txt,
tokenizer_config.json) plus
  seqs.txt           the batch: first the number of sequences, then per sequence
                     "len n_mask", the len token ids, the len segment ids and the
                     n_mask mask positions (whitespace-separated integers)
  expected_mlm.f32   (sum of n_mask, vocab_size) float32 little-endian: MLM logits
                     at the mask positions, sequence by sequence, in order
  expected_nsp.f32   (n, 2) NSP logits; only when the checkpoint has the NSP head
  expected_top5.txt  one line per mask position: PyTorch's 5 best token ids, best
                     first
  tolerance.txt      "rtol atol_fraction": a value passes if
                     |got - exp| <= rtol*|exp| + atol_fraction * max|exp| (the max
                     taken over that output: MLM or NSP)

The references run each sequence alone (batch 1, no padding): the engine packs
the batch and must give every sequence the answer it would get alone.

Cases (random seeded weights, none of HF's tiny initial values: every Linear
has weights of scale 1/sqrt(fan_in), LayerNorms random gains and shifts,
biases non-zero, so attention is far from uniform and each term matters):
  l2_h64_pretraining  BertForPreTraining, L=2 D=64 A=4 I=128 V=300, decoder tied
                      to the word embeddings and not stored, NSP head; expected
                      values computed from the written files reloaded through
                      bert_reference.load_model_dir()
  l3_h96_mlm_untied   BertForMaskedLM, L=3 D=96 A=6 I=192 V=311, its own decoder
                      matrix stored (tie_word_embeddings false), no pooler/NSP
  l1_h32_f16          BertForPreTraining, L=1 D=32 A=2 I=48 V=120, weights stored
                      as F16 (the engine converts at load, fusing Q/K/V from F16),
                      a stray I64 position_ids buffer as old checkpoints carry,
                      three token types, layer_norm_eps 1e-3 (not the default)

Mask positions are chosen where PyTorch's top 6 logits are separated by more
than 10x the tolerance, so the top-5 order check cannot flip on rounding.
"""

import json
import math
import os
import sys

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.join(REPO, "tools"))
import bert_reference as ref  # noqa: E402
from safetensors_io import load_file, save_file  # noqa: E402

# The engine sums in its own order (packed GEMMs, fused QKV, its own LayerNorm
# and softmax), so float32 rounding differs from PyTorch's by a few ulps per op,
# growing with depth; the measured worst error on these cases is ~6e-7 of
# max|expected|, 1/20 of the tolerance.  A logit near zero is the difference of
# large partial sums, so the absolute floor scales with the output's largest
# value.  Tighter than the CNN cases' 1e-4 on purpose: a LayerNorm eps of 1e-12
# read as 1e-5 moves logits by ~1e-5 relative, and must not pass.
RTOL = 1e-5
ATOL_FRACTION = 1e-5
# Minimum gap between consecutive top-6 logits, as a multiple of the tolerance.
GAP_FACTOR = 10

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PAD, UNK, CLS, SEP, MASK = range(5)


def randomise(model, gen):
    """Scale-aware random weights (see the module docstring)."""
    tied = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear) and id(m.weight) in tied:
                continue    # the tied MLM decoder: an embedding matrix, set as one
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / math.sqrt(m.in_features))
                if m.bias is not None:
                    m.bias.copy_((torch.rand(m.bias.shape, generator=gen) - 0.5) * 0.2)
            elif isinstance(m, nn.Embedding):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 0.7)
            elif isinstance(m, nn.LayerNorm):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_((torch.rand(m.bias.shape, generator=gen) - 0.5) * 0.4)
        for name, p in model.named_parameters():
            if name == "cls.predictions.bias":
                p.copy_((torch.rand(p.shape, generator=gen) - 0.5))


def make_batch(gen, vocab, type_vocab, shapes):
    """shapes: list of (len_a, len_b or None).  -> list of (ids, types) lists."""
    seqs = []
    for la, lb in shapes:
        a = torch.randint(len(SPECIALS), vocab, (la,), generator=gen).tolist()
        ids = [CLS] + a + [SEP]
        types = [0] * len(ids)
        if lb is not None:
            b = torch.randint(len(SPECIALS), vocab, (lb,), generator=gen).tolist()
            ids += b + [SEP]
            types += [min(1, type_vocab - 1)] * (lb + 1)
        if lb is not None and type_vocab > 2:
            types[-1] = type_vocab - 1    # exercise every row of a bigger type table
        seqs.append((ids, types))
    return seqs


def run_alone(model, ids, types):
    with torch.inference_mode():
        out = model(torch.tensor([ids]), torch.tensor([types]))
    if isinstance(out, tuple):
        return out[0][0], out[1][0]
    return out[0], None


def separated(row):
    top = torch.topk(row, 6).values
    scale = row.abs().max().item()
    need = GAP_FACTOR * (RTOL * top.abs().max().item() + ATOL_FRACTION * scale)
    return bool(((top[:-1] - top[1:]) > need).all())


def choose_masks(model, seqs, n_masks, gen):
    """Puts [MASK] at n_masks[i] interior positions of sequence i, retrying other
    positions where PyTorch's top 6 are too close to order reliably."""
    out = []
    for (ids, types), want in zip(seqs, n_masks):
        ids = list(ids)
        interior = [t for t in range(1, len(ids)) if ids[t] != SEP]
        order = torch.randperm(len(interior), generator=gen).tolist()
        chosen = []
        for j in order:
            if len(chosen) == want:
                break
            pos = interior[j]
            trial = list(ids)
            trial[pos] = MASK
            mlm, _ = run_alone(model, trial, types)
            # a new [MASK] changes every position's logits: recheck those chosen
            if all(separated(mlm[p]) for p in chosen + [pos]):
                ids = trial
                chosen.append(pos)
        if len(chosen) != want:
            raise RuntimeError(f"no {want} well-separated mask positions in a sequence of {len(ids)}")
        out.append((ids, types, sorted(chosen)))
    return out


def write_tokenizer(case_dir, vocab):
    with open(os.path.join(case_dir, "vocab.txt"), "w", encoding="utf-8") as f:
        for i in range(vocab):
            f.write((SPECIALS[i] if i < len(SPECIALS) else f"tok{i}") + "\n")
    with open(os.path.join(case_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"do_lower_case": True, "model_max_length": 512,
                   "tokenizer_class": "BertTokenizer"}, f, indent=2)


def write_config(case_dir, config, arch, extra=None):
    d = config.to_hf_dict(architectures=(arch,))
    d.update(extra or {})
    with open(os.path.join(case_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(d, f, indent=2, sort_keys=True)


def write_expected(case_dir, model, batch):
    mlm_rows, nsp_rows, top5 = [], [], []
    for ids, types, masks in batch:
        mlm, nsp = run_alone(model, ids, types)
        for p in masks:
            mlm_rows.append(mlm[p])
            top5.append(torch.topk(mlm[p], 5).indices.tolist())
        if nsp is not None:
            nsp_rows.append(nsp)
    with open(os.path.join(case_dir, "seqs.txt"), "w") as f:
        f.write(f"{len(batch)}\n")
        for ids, types, masks in batch:
            f.write(f"{len(ids)} {len(masks)}\n")
            f.write(" ".join(map(str, ids)) + "\n")
            f.write(" ".join(map(str, types)) + "\n")
            f.write(" ".join(map(str, masks)) + "\n")
    torch.stack(mlm_rows).float().numpy().astype("<f4").tofile(
        os.path.join(case_dir, "expected_mlm.f32"))
    if nsp_rows:
        torch.stack(nsp_rows).float().numpy().astype("<f4").tofile(
            os.path.join(case_dir, "expected_nsp.f32"))
    with open(os.path.join(case_dir, "expected_top5.txt"), "w") as f:
        for row in top5:
            f.write(" ".join(map(str, row)) + "\n")
    with open(os.path.join(case_dir, "tolerance.txt"), "w") as f:
        f.write(f"{RTOL} {ATOL_FRACTION}\n")


def check_round_trip(path, tensors):
    """The file holds exactly these tensors, bit for bit."""
    back, _ = load_file(path)
    if set(back) != set(tensors):
        raise RuntimeError(f"{path}: keys differ: {sorted(set(back) ^ set(tensors))}")
    for k, v in tensors.items():
        if back[k].dtype != v.dtype or not torch.equal(back[k], v):
            raise RuntimeError(f"{path}: {k} does not round-trip")


# ---- cases -------------------------------------------------------------------------

def case_l2_h64_pretraining(case_dir):
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    c = ref.BertConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, max_position_embeddings=64)
    model = ref.BertForPreTraining(c).eval()
    randomise(model, gen)
    sd = ref.hf_state_dict(model)
    assert "cls.predictions.decoder.weight" not in sd
    save_file(sd, os.path.join(case_dir, "model.safetensors"), metadata={"format": "pt"})
    write_config(case_dir, c, "BertForPreTraining")
    write_tokenizer(case_dir, c.vocab_size)
    # expected from the files as written
    model, _ = ref.load_model_dir(case_dir, ref.BertForPreTraining)
    seqs = make_batch(gen, c.vocab_size, c.type_vocab_size,
                      [(11, None), (0, None), (9, 14), (5, None), (20, 17), (1, None)])
    batch = choose_masks(model, seqs, [2, 0, 3, 1, 3, 1], gen)
    write_expected(case_dir, model, batch)


def case_l3_h96_mlm_untied(case_dir):
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    c = ref.BertConfig(vocab_size=311, hidden_size=96, num_hidden_layers=3, num_attention_heads=6,
                       intermediate_size=192, max_position_embeddings=80)
    model = ref.BertForMaskedLM(c).eval()
    randomise(model, gen)
    with torch.no_grad():
        model.cls.predictions.decoder.weight = nn.Parameter(
            torch.randn(c.vocab_size, c.hidden_size, generator=gen) * 0.7)
    assert model.cls.predictions.decoder.weight is not model.bert.embeddings.word_embeddings.weight
    sd = ref.hf_state_dict(model)
    sd["cls.predictions.decoder.weight"] = model.cls.predictions.decoder.weight.detach().clone()
    path = os.path.join(case_dir, "model.safetensors")
    save_file(sd, path, metadata={"format": "pt"})
    check_round_trip(path, sd)
    write_config(case_dir, c, "BertForMaskedLM", {"tie_word_embeddings": False})
    write_tokenizer(case_dir, c.vocab_size)
    seqs = make_batch(gen, c.vocab_size, c.type_vocab_size,
                      [(30, None), (6, 8), (2, None), (44, 31), (13, None)])
    batch = choose_masks(model, seqs, [3, 2, 1, 4, 2], gen)
    write_expected(case_dir, model, batch)


def case_l1_h32_f16(case_dir):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    c = ref.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=48, max_position_embeddings=40, type_vocab_size=3,
                       layer_norm_eps=1e-3)
    model = ref.BertForPreTraining(c).eval()
    randomise(model, gen)
    with torch.no_grad():     # the model computes with exactly what F16 stores
        for p in model.parameters():
            p.copy_(p.half().float())
    sd = {k: v.half() for k, v in ref.hf_state_dict(model).items()}
    sd["bert.embeddings.position_ids"] = torch.arange(c.max_position_embeddings)[None]
    path = os.path.join(case_dir, "model.safetensors")
    save_file(sd, path, metadata={"format": "pt"})
    check_round_trip(path, sd)
    write_config(case_dir, c, "BertForPreTraining")
    write_tokenizer(case_dir, c.vocab_size)
    seqs = make_batch(gen, c.vocab_size, c.type_vocab_size, [(7, 5), (12, None), (3, 4)])
    batch = choose_masks(model, seqs, [2, 3, 1], gen)
    write_expected(case_dir, model, batch)


CASES = {
    "l2_h64_pretraining": case_l2_h64_pretraining,
    "l3_h96_mlm_untied": case_l3_h96_mlm_untied,
    "l1_h32_f16": case_l1_h32_f16,
}


def main(argv):
    if len(argv) < 2:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    out = argv[1]
    names = argv[2:] or list(CASES)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    for name in names:
        if name not in CASES:
            print(f"unknown case {name}; known: {', '.join(CASES)}", file=sys.stderr)
            return 2
        case_dir = os.path.join(out, name)
        os.makedirs(case_dir, exist_ok=True)
        CASES[name](case_dir)
        print(f"{name}: written to {case_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
