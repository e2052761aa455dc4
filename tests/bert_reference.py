"""Reference BERT in plain PyTorch, and BERT's reference WordPiece tokenizer.

Debian ships no `transformers`, so this file restates BERT from the
architecture (Devlin et al. 2018, as implemented by Hugging Face
transformers 4.x in modeling_bert.py / tokenization_bert.py).  Module and
parameter names follow Hugging Face exactly, so a checkpoint written by
`BertForPreTraining.save_pretrained(..., safe_serialization=True)` loads
with `load_bert_state_dict()` and no renaming.  It is the oracle for the
engine's golden tests (engine output vs this file) and the model that
tools/bert/train_bert.py trains.

    model, config = load_model_dir("models/bert")            # BertForPreTraining, eval mode
    tok = BertWordPiece.from_dir("models/bert")
    enc = tok.encode("the cat sat on the [MASK] .")
    mlm_logits, nsp_logits = model(enc["input_ids"][None], enc["token_type_ids"][None],
                                   enc["attention_mask"][None])

Tied weights: cls.predictions.decoder.weight *is* the word embedding matrix,
as in Hugging Face; a safetensors checkpoint does not store it (nor the
alias cls.predictions.decoder.bias of cls.predictions.bias).
`hf_state_dict()` produces exactly the keys Hugging Face saves.

Run `python3 tests/bert_reference.py` for a self-check of the tokenizer
against the real bert-base-uncased vocabulary (from ../shared, never copied
into this repository) and of the model's shapes and tying.
"""

import json
import math
import os
import sys
import unicodedata

import torch
import torch.nn as nn
import torch.nn.functional as F

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "tools"))
from safetensors_io import load_file  # noqa: E402

# Keys present in an HF state_dict that are aliases or non-persistent buffers.
_TIED_KEYS = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")
_IGNORED_KEYS = ("bert.embeddings.position_ids", "bert.embeddings.token_type_ids")


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

class BertConfig:
    """The fields of Hugging Face's BertConfig that the architecture uses."""

    def __init__(self, vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                 num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
                 hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                 max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02,
                 layer_norm_eps=1e-12, pad_token_id=0, **extra):
        if hidden_act != "gelu":
            raise ValueError(f"hidden_act {hidden_act!r}: only exact 'gelu' is implemented")
        if hidden_size % num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        pet = extra.get("position_embedding_type", "absolute")
        if pet != "absolute":
            raise ValueError(f"position_embedding_type {pet!r}: only 'absolute' is implemented")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.pad_token_id = pad_token_id
        self.extra = extra

    @classmethod
    def from_json_file(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls(**json.load(f))

    def to_hf_dict(self, architectures=("BertForPreTraining",)):
        """config.json as Hugging Face writes it for a BERT (the fields it reads)."""
        return {
            "architectures": list(architectures),
            "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
            "classifier_dropout": None,
            "hidden_act": self.hidden_act,
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "hidden_size": self.hidden_size,
            "initializer_range": self.initializer_range,
            "intermediate_size": self.intermediate_size,
            "layer_norm_eps": self.layer_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "model_type": "bert",
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "pad_token_id": self.pad_token_id,
            "position_embedding_type": "absolute",
            "torch_dtype": "float32",
            "type_vocab_size": self.type_vocab_size,
            "use_cache": True,
            "vocab_size": self.vocab_size,
        }


class BertEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)
        self.register_buffer("position_ids", torch.arange(c.max_position_embeddings)[None],
                             persistent=False)

    def forward(self, input_ids, token_type_ids):
        # input_ids, token_type_ids: (B,T) -> (B,T,D)
        T = input_ids.shape[1]
        x = (self.word_embeddings(input_ids)
             + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings(self.position_ids[:, :T]))
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.num_attention_heads = c.num_attention_heads
        self.attention_head_size = c.hidden_size // c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)
        self.dropout = nn.Dropout(c.attention_probs_dropout_prob)

    def _heads(self, x):
        # (B,T,D) -> (B,H,T,Dh)
        B, T, _ = x.shape
        return x.view(B, T, self.num_attention_heads, self.attention_head_size).permute(0, 2, 1, 3)

    def forward(self, x, ext_mask):
        # x: (B,T,D); ext_mask: (B,1,1,T) additive, 0 for keys kept, finfo.min for padding
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        probs = self.dropout(F.softmax(scores + ext_mask, dim=-1))       # (B,H,T,T)
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()     # (B,T,H,Dh)
        return ctx.view(x.shape)


class BertSelfOutput(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, h, x):
        return self.LayerNorm(self.dropout(self.dense(h)) + x)


class BertAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = BertSelfOutput(c)

    def forward(self, x, ext_mask):
        return self.output(self.self(x, ext_mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x):
        return F.gelu(self.dense(x))        # exact erf GELU, as HF's "gelu"


class BertOutput(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.intermediate_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, h, x):
        return self.LayerNorm(self.dropout(self.dense(h)) + x)


class BertLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertOutput(c)

    def forward(self, x, ext_mask):
        a = self.attention(x, ext_mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(c) for _ in range(c.num_hidden_layers)])

    def forward(self, x, ext_mask):
        for layer in self.layer:
            x = layer(x, ext_mask)
        return x


class BertPooler(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))     # (B,T,D) -> (B,D), the [CLS] position


def extended_attention_mask(attention_mask, dtype):
    """(B,T) of 1 keep / 0 pad -> (B,1,1,T) additive mask, as HF 4.x builds it."""
    m = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - m) * torch.finfo(dtype).min


class BertModel(nn.Module):
    def __init__(self, c, add_pooling_layer=True):
        super().__init__()
        self.config = c
        self.embeddings = BertEmbeddings(c)
        self.encoder = BertEncoder(c)
        self.pooler = BertPooler(c) if add_pooling_layer else None

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        """input_ids (B,T) -> (sequence_output (B,T,D), pooled_output (B,D) or None)."""
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        x = self.encoder(x, extended_attention_mask(attention_mask, x.dtype))
        return x, (self.pooler(x) if self.pooler is not None else None)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(F.gelu(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    def __init__(self, c, word_embeddings):
        super().__init__()
        self.transform = BertPredictionHeadTransform(c)
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight          # tied, as in HF
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))

    def forward(self, x):
        # (..., D) -> (..., V)
        return self.decoder(self.transform(x)) + self.bias


class BertPreTrainingHeads(nn.Module):
    def __init__(self, c, word_embeddings):
        super().__init__()
        self.predictions = BertLMPredictionHead(c, word_embeddings)
        self.seq_relationship = nn.Linear(c.hidden_size, 2)

    def forward(self, seq, pooled):
        return self.predictions(seq), self.seq_relationship(pooled)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, c, word_embeddings):
        super().__init__()
        self.predictions = BertLMPredictionHead(c, word_embeddings)

    def forward(self, seq):
        return self.predictions(seq)


def _init_weights(module, std):
    """HF's BertPreTrainedModel._init_weights."""
    if isinstance(module, nn.Linear):
        module.weight.data.normal_(0.0, std)
        if module.bias is not None:
            module.bias.data.zero_()
    elif isinstance(module, nn.Embedding):
        module.weight.data.normal_(0.0, std)
        if module.padding_idx is not None:
            module.weight.data[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)


class BertForPreTraining(nn.Module):
    """bert (with pooler) + cls.predictions (MLM) + cls.seq_relationship (NSP)."""

    def __init__(self, c):
        super().__init__()
        self.config = c
        self.bert = BertModel(c, add_pooling_layer=True)
        self.cls = BertPreTrainingHeads(c, self.bert.embeddings.word_embeddings)
        self.apply(lambda m: _init_weights(m, c.initializer_range))
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        """-> (prediction_logits (B,T,V), seq_relationship_logits (B,2))."""
        seq, pooled = self.bert(input_ids, token_type_ids, attention_mask)
        return self.cls(seq, pooled)


class BertForMaskedLM(nn.Module):
    """bert (no pooler) + cls.predictions; loads a BertForPreTraining checkpoint too."""

    def __init__(self, c):
        super().__init__()
        self.config = c
        self.bert = BertModel(c, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(c, self.bert.embeddings.word_embeddings)
        self.apply(lambda m: _init_weights(m, c.initializer_range))
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        """-> prediction_logits (B,T,V)."""
        seq, _ = self.bert(input_ids, token_type_ids, attention_mask)
        return self.cls(seq)


def hf_state_dict(model):
    """The tensors Hugging Face's save_pretrained writes: tied aliases dropped."""
    return {k: v for k, v in model.state_dict().items()
            if k not in _TIED_KEYS and k not in _IGNORED_KEYS}


def load_bert_state_dict(model, tensors):
    """Load HF-named tensors (any float dtype) into model; strict apart from ties.

    Accepts what save_pretrained writes (no decoder.weight) and also a full
    torch state_dict (decoder.weight / decoder.bias / position_ids present).
    Keys of heads the model lacks (cls.seq_relationship, bert.pooler for
    BertForMaskedLM) are skipped; any other mismatch raises.
    """
    own = model.state_dict()
    optional_extra = ("cls.seq_relationship.", "bert.pooler.")
    sd = {}
    for k, v in tensors.items():
        if k in _TIED_KEYS or k in _IGNORED_KEYS:
            continue
        if k not in own:
            if k.startswith(optional_extra):
                continue
            raise KeyError(f"unexpected tensor {k}")
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"{k}: shape {tuple(v.shape)} != {tuple(own[k].shape)}")
        sd[k] = v.to(own[k].dtype)
    missing = [k for k in own if k not in sd and k not in _TIED_KEYS]
    if missing:
        raise KeyError(f"missing tensors: {missing}")
    model.load_state_dict(sd, strict=False)
    # re-tie (load_state_dict copies in place, so the tie survives; assert it)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    return model


def load_model_dir(path, cls=BertForPreTraining):
    """config.json + model.safetensors of a save_pretrained dir -> (model in eval mode, config)."""
    config = BertConfig.from_json_file(os.path.join(path, "config.json"))
    model = cls(config)
    tensors, _ = load_file(os.path.join(path, "model.safetensors"))
    load_bert_state_dict(model, tensors)
    return model.eval(), config


# --------------------------------------------------------------------------
# Tokenizer: BERT's BasicTokenizer + WordpieceTokenizer
# --------------------------------------------------------------------------

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _is_whitespace(ch):
    if ch in (" ", "\t", "\n", "\r"):
        return True
    return unicodedata.category(ch) == "Zs"


def _is_control(ch):
    if ch in ("\t", "\n", "\r"):
        return False
    return unicodedata.category(ch).startswith("C")


def _is_punctuation(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_chinese_char(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def clean_text(text):
    """Drop NUL, U+FFFD and control characters; every whitespace character -> ' '."""
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        out.append(" " if _is_whitespace(ch) else ch)
    return "".join(out)


def strip_accents(text):
    return "".join(ch for ch in unicodedata.normalize("NFD", text)
                   if unicodedata.category(ch) != "Mn")


def split_on_punctuation(token):
    out, cur = [], []
    for ch in token:
        if _is_punctuation(ch):
            if cur:
                out.append("".join(cur))
                cur = []
            out.append(ch)
        else:
            cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def basic_tokenize(text, do_lower_case=True, never_split=SPECIAL_TOKENS):
    """BERT's BasicTokenizer.tokenize (HF 4.x, tokenize_chinese_chars=True)."""
    text = clean_text(text)
    text = "".join(f" {ch} " if _is_chinese_char(ord(ch)) else ch for ch in text)
    text = unicodedata.normalize("NFC", text)     # HF >= 4.29 does this; NFD below subsumes it
    out = []
    for token in text.split():
        if token in never_split:
            out.append(token)
            continue
        if do_lower_case:
            token = strip_accents(token.lower())
        out.extend(split_on_punctuation(token))
    return " ".join(out).split()


def wordpiece_tokenize(word, vocab, unk="[UNK]", max_chars=100):
    """Greedy longest-match-first WordPiece of one basic token."""
    if len(word) > max_chars:
        return [unk]
    pieces, start = [], 0
    while start < len(word):
        end, cur = len(word), None
        while start < end:
            sub = word[start:end]
            if start > 0:
                sub = "##" + sub
            if sub in vocab:
                cur = sub
                break
            end -= 1
        if cur is None:
            return [unk]
        pieces.append(cur)
        start = end
    return pieces


class BertWordPiece:
    """BertTokenizer (slow, HF 4.x) semantics: special tokens found in the text first
    (exact, case-sensitive), then BasicTokenizer, then WordPiece on each piece."""

    def __init__(self, vocab_file, do_lower_case=True, model_max_length=512):
        self.vocab = {}
        with open(vocab_file, encoding="utf-8") as f:
            for i, line in enumerate(f):
                self.vocab[line.rstrip("\n")] = i
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        self.do_lower_case = do_lower_case
        self.model_max_length = model_max_length
        self.specials = [t for t in SPECIAL_TOKENS if t in self.vocab]
        for t in SPECIAL_TOKENS:
            setattr(self, t.strip("[]").lower() + "_id", self.vocab.get(t))

    @classmethod
    def from_dir(cls, path):
        cfg = {}
        p = os.path.join(path, "tokenizer_config.json")
        if os.path.exists(p):
            with open(p, encoding="utf-8") as f:
                cfg = json.load(f)
        return cls(os.path.join(path, "vocab.txt"), cfg.get("do_lower_case", True),
                   cfg.get("model_max_length", 512))

    def _split_specials(self, text):
        chunks, i, start = [], 0, 0
        while i < len(text):
            for s in self.specials:
                if text.startswith(s, i):
                    chunks.append((text[start:i], False))
                    chunks.append((s, True))
                    i += len(s)
                    start = i
                    break
            else:
                i += 1
        chunks.append((text[start:], False))
        return [(c, sp) for c, sp in chunks if c]

    def tokenize(self, text):
        out = []
        for chunk, special in self._split_specials(text):
            if special:
                out.append(chunk)
                continue
            for word in basic_tokenize(chunk, self.do_lower_case, self.specials):
                out.extend(wordpiece_tokenize(word, self.vocab))
        return out

    def convert_tokens_to_ids(self, tokens):
        unk = self.vocab["[UNK]"]
        return [self.vocab.get(t, unk) for t in tokens]

    def encode(self, text_a, text_b=None, max_length=None):
        """[CLS] a [SEP] (b [SEP]) -> dict of 1-D LongTensors (no padding).
        Over max_length, one token at a time comes off the end of the longer side,
        of b on a tie (HF 'longest_first')."""
        a = self.convert_tokens_to_ids(self.tokenize(text_a))
        b = self.convert_tokens_to_ids(self.tokenize(text_b)) if text_b is not None else None
        max_length = max_length or self.model_max_length
        budget = max_length - (3 if b is not None else 2)
        while len(a) + (len(b) if b else 0) > budget:
            if b is None or len(a) > len(b):
                a.pop()
            else:
                b.pop()
        ids = [self.cls_id] + a + [self.sep_id]
        types = [0] * len(ids)
        if b is not None:
            ids += b + [self.sep_id]
            types += [1] * (len(b) + 1)
        return {"input_ids": torch.tensor(ids), "token_type_ids": torch.tensor(types),
                "attention_mask": torch.ones(len(ids), dtype=torch.long)}


# --------------------------------------------------------------------------
# Self-check
# --------------------------------------------------------------------------

def _self_check():
    ok = True
    vocab = os.path.normpath(os.path.join(
        _HERE, "..", "..", "shared", "models", "bert-base-uncased-vocab", "vocab.txt"))
    if not os.path.exists(vocab):
        vocab = "/work/shared/models/bert-base-uncased-vocab/vocab.txt"
    # Expected outputs: BERT's documented behaviour (google-research/bert README,
    # HF tokenization tests) for bert-base-uncased.
    # Expected outputs: BERT's documented behaviour (google-research/bert README and
    # Hugging Face's tokenization_bert tests).  mode "basic" runs BasicTokenizer alone,
    # "toy" runs WordPiece with HF's test vocabulary, None the full tokenizer with the
    # real bert-base-uncased vocabulary.
    toy_vocab = {t: i for i, t in enumerate(
        ["[UNK]", "[CLS]", "[SEP]", "want", "##want", "##ed", "wa", "un", "runn", "##ing", ","])}
    cases = [
        ("unaffable", ["una", "##ffa", "##ble"], None),
        ("H\u00E9llo, [MASK]!", ["hello", ",", "[MASK]", "!"], None),
        ("The quick brown fox jumps over the lazy dog.",
         ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "."], None),
        ("UNwant\u00E9d,running", ["unwanted", ",", "running"], None),
        ("x" * 101, ["[UNK]"], None),
        ("  \tHeLLo!how  \n Are yoU?  ", ["hello", "!", "how", "are", "you", "?"], "basic"),
        ("H\u00E9llo", ["hello"], "basic"),
        ("ah\u535A\u63A8zz", ["ah", "\u535A", "\u63A8", "zz"], "basic"),
        ("a\u0000b\ufffdc\u200bd\u3000e", ["abcd", "e"], "basic"),
        ("unwanted running", ["un", "##want", "##ed", "runn", "##ing"], "toy"),
        ("unwantedX running", ["[UNK]", "runn", "##ing"], "toy"),
    ]
    if os.path.exists(vocab):
        tok = BertWordPiece(vocab)
        if (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) != (0, 100, 101, 102, 103):
            print("FAIL special ids", tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id)
            ok = False
        for text, want, mode in cases:
            if mode == "basic":
                got = basic_tokenize(text)
            elif mode == "toy":
                got = [p for w in basic_tokenize(text) for p in wordpiece_tokenize(w, toy_vocab)]
            else:
                got = tok.tokenize(text)
            status = "ok  " if got == want else "FAIL"
            ok &= got == want
            print(f"{status} {text!r:45} -> {got}")
        enc = tok.encode("Hello world", "How are you?")
        want_ids = [101, 7592, 2088, 102, 2129, 2024, 2017, 1029, 102]
        got_ids = enc["input_ids"].tolist()
        status = "ok  " if got_ids == want_ids else "FAIL"
        ok &= got_ids == want_ids
        print(f"{status} pair ids {got_ids} types {enc['token_type_ids'].tolist()}")
    else:
        print(f"skip tokenizer check: {vocab} not found")

    # Toy vocab from the google-research README: un ##aff ##able.
    toy = {"[UNK]": 0, "un": 1, "##aff": 2, "##able": 3, "aff": 4, "able": 5}
    got = wordpiece_tokenize("unaffable", toy)
    ok &= got == ["un", "##aff", "##able"]
    print(f"{'ok  ' if got == ['un', '##aff', '##able'] else 'FAIL'} toy wordpiece unaffable -> {got}")

    torch.manual_seed(0)
    c = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=32, max_position_embeddings=20)
    m = BertForPreTraining(c).eval()
    sd = hf_state_dict(m)
    m2 = load_bert_state_dict(BertForPreTraining(c).eval(), sd)
    mlm_model = load_bert_state_dict(BertForMaskedLM(c).eval(), sd)
    ids = torch.randint(5, 50, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    with torch.no_grad():
        a, n = m(ids, None, mask)
        b, n2 = m2(ids, None, mask)
        c3 = mlm_model(ids, None, mask)
        # Padding must not change the unpadded positions.
        a_short, _ = m(ids[1:, :5])
    checks = {
        "shapes": a.shape == (2, 7, 50) and n.shape == (2, 2),
        "reload": torch.equal(a, b) and torch.equal(n, n2) and torch.equal(a, c3),
        "padding": torch.allclose(a[1, :5], a_short[0], atol=1e-5),
        "tied": "cls.predictions.decoder.weight" not in sd and "cls.predictions.bias" in sd,
    }
    for name, good in checks.items():
        print(f"{'ok  ' if good else 'FAIL'} model {name}")
        ok &= good
    print("PASS" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_self_check())
