#!/usr/bin/python3
"""Make the benchmark's inputs: model directories and their ONNX exports.

    prepare.py resnet DIR ARCH        torchvision ARCH with random weights -> DIR
    prepare.py dcgan DIR              the PyTorch examples DCGAN generator (nz 100,
                                      ngf 64, 3x64x64) with random weights -> DIR
    prepare.py onnx MODEL_DIR BATCH OUT.onnx
                                      MODEL_DIR, a CNN or a GAN generator, as ONNX
                                      (opset 14, fixed batch) for ONNX Runtime, plus
                                      OUT.json: name, input shape(s), FLOPs per sample
    prepare.py bert DIR               BERT-base (BertForMaskedLM) with random weights
                                      -> DIR, as save_pretrained writes it
    prepare.py onnx-bert MODEL_DIR BATCH SEQ OUT.onnx
                                      the BERT workload below as ONNX (opset 14, fixed
                                      shapes), plus OUT.json: inputs, FLOPs per sequence

Every peer runs the very same weights: the ResNets go through
tools/export_model.py and the ONNX graph is exported from the module that
load_model_dir() rebuilds from the directory modeld reads.  Random weights are
enough for timing: nothing is data-dependent in a dense CNN, and the seed keeps
the files identical between runs.

The ONNX batch dimension is fixed, one file per batch size: that lets ONNX
Runtime fold shapes at session creation, its best configuration, and costs a
few seconds of export per row.

count_flops() and gan_flops() are also bench_torch.py's, so both Python
peers count what engine_model_flops() counts: 2 per multiply-add of
convolutions, transposed convolutions and linears.

The GAN rows (dcgan:BATCH, fashion-gan:BATCH) time a generator's forward
pass (gan_workload()): BATCH latents z of N(0,1) and, for a conditional
generator, class i % num_classes for sample i; the output is the raw
(N, C, H, W) image batch (tanh or sigmoid range), no mapping to pixels.  The
ONNX graph's inputs are z (B, latent_dim) float32 and, when conditional,
classes (B,) int64.  The dcgan directory is the pytorch/examples Generator
with PyTorch's default initialisation and BatchNorm running statistics
measured on random latents (make_dcgan()), so every layer sees and makes
activations of a trained network's scale: nothing saturates or vanishes.

The BERT rows (bert-base@SEQ:BATCH) time masked-token prediction, the
daemon's fill-mask work, identically on every peer (bert_workload()):
BATCH sequences of exactly SEQ tokens, no padding, one [MASK] each at SEQ/2,
segment 0 throughout, and the MLM head (dense, GELU, LayerNorm, decoder)
run only on the mask rows, because a server computes only the logits it
returns: run over every token, the decoder (2*D*V FLOPs a token) would add a
quarter to the encoder's work at seq 128.  The NSP head is not computed.
bert_flops() is the one count of that work that every peer reports against.
The weights are BERT's initialisation (normal, std 0.02); random weights
time the same as trained ones.
"""

import json
import os
import shutil
import sys

import torch
import torch.nn as nn

# no __pycache__ in the source tree (it is shipped whole in the tarball)
sys.dont_write_bytecode = True
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(BENCH), "tools"))
import export_model  # noqa: E402
from safetensors_io import save_file  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(BENCH), "tests"))
import bert_reference  # noqa: E402

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _count_flops(model, *inputs):
    """FLOPs of model(*inputs), inputs of batch 1: 2 per multiply-add of
    Conv2d (per output element: in_channels/groups * kh*kw), ConvTranspose2d
    (per input element: out_channels/groups * kh*kw) and Linear, as
    engine/graph.c's graph_flops()."""
    total = [0]

    def conv_hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total[0] += 2 * out[0].numel() * k

    def conv_t_hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.out_channels // m.groups)
        total[0] += 2 * inp[0][0].numel() * k

    def linear_hook(m, inp, out):
        total[0] += 2 * m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.ConvTranspose2d):
            hooks.append(m.register_forward_hook(conv_t_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def count_flops(model, shape):
    """FLOPs of one sample of shape (C, H, W): 2 per multiply-add, conv + linear."""
    return _count_flops(model, torch.zeros(1, *shape))


def gan_flops(model, config):
    """FLOPs of one generated image: 2 per multiply-add of the generator's
    convolutions, transposed convolutions and linears (the condition's
    embedding lookup or one-hot is a copy, not counted)."""
    return _count_flops(model, *gan_workload(config, 1))


def is_gan_config(config):
    return config.get("kind") == "gan"


def gan_workload(config, batch):
    """-> the generator's inputs: (z (batch, latent_dim) float32, N(0,1) from
    a fixed seed,) plus classes (batch,) int64 = i % num_classes when the
    generator is conditional.  bench_engine and bench_ort.mjs draw their own
    N(0,1) (the values do not change the work) and the same classes."""
    z = torch.randn(batch, int(config["latent_dim"]), generator=torch.Generator().manual_seed(0))
    n_classes = int(config.get("num_classes", 0))
    if not n_classes:
        return (z,)
    return z, torch.arange(batch, dtype=torch.int64) % n_classes


DCGAN_NZ, DCGAN_NGF, DCGAN_NC = 100, 64, 3


def make_dcgan(out_dir):
    """The pytorch/examples DCGAN generator (nz 100, ngf 64, nc 3, 64x64):
    PyTorch's default initialisation, then BatchNorm running statistics
    measured on 256 random latents and the affine parameters drawn around
    (1, 0), so the eval-mode network is neither degenerate nor saturated."""
    if os.path.exists(os.path.join(out_dir, "model.safetensors")):
        return
    torch.manual_seed(0)
    gen = export_model.dcgan_generator(DCGAN_NZ, DCGAN_NGF, DCGAN_NC)
    bns = [m for m in gen.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.75, 1.25)
            bn.bias.normal_(0.0, 0.1)
            bn.momentum = None      # a cumulative average over the batches below
            bn.reset_running_stats()
        gen.train()
        for _ in range(4):
            gen(torch.randn(64, DCGAN_NZ, 1, 1))
    gen.eval()
    # written beside, then renamed: an interrupted run leaves no half directory
    tmp = os.path.normpath(out_dir) + ".tmp"
    export_model.export_dcgan(gen, tmp, DCGAN_NZ, DCGAN_NGF, DCGAN_NC)
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def input_shape(config):
    inp = config["input"]
    return (inp["channels"], inp["height"], inp["width"])


def make_resnet(out_dir, arch):
    torch.manual_seed(0)
    import torchvision
    model = getattr(torchvision.models, arch)(num_classes=1000).eval()
    export_model.export_torchvision(arch, model, out_dir,
                                    labels=[f"class{i}" for i in range(1000)],
                                    input_shape=(3, 224, 224),
                                    mean=IMAGENET_MEAN, std=IMAGENET_STD)


def make_onnx(model_dir, batch, out_path):
    model, config, _ = export_model.load_model_dir(model_dir)
    if is_gan_config(config):
        make_onnx_gan(model, config, model_dir, batch, out_path)
        return
    shape = input_shape(config)
    x = torch.zeros(batch, *shape)
    with torch.no_grad():
        torch.onnx.export(model, x, out_path, opset_version=14,
                          input_names=["input"], output_names=["logits"])
    meta = {"name": os.path.basename(os.path.normpath(model_dir)), "batch": batch,
            "shape": [batch, *shape], "flops_per_sample": count_flops(model, shape)}
    with open(os.path.splitext(out_path)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(meta, f)


class _GeneratorZ(nn.Module):
    """An unconditional GeneratorModule with z as its only input."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, z):
        return self.model(z, None)


class _Unflatten(nn.Module):
    """nn.Unflatten as a reshape: torch 1.13 has no ONNX export of
    aten::unflatten (a generator's Linear -> (C, H, W) step uses it)."""

    def __init__(self, m):
        super().__init__()
        self.dim, self.sizes = m.dim, tuple(m.unflattened_size)

    def forward(self, x):
        d = self.dim % x.dim()
        return x.reshape(x.shape[:d] + self.sizes + x.shape[d + 1:])


def _onnx_exportable(module):
    """module, with every nn.Unflatten replaced by _Unflatten (in place)."""
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Unflatten:
                setattr(parent, name, _Unflatten(child))
    return module


def make_onnx_gan(model, config, model_dir, batch, out_path):
    """Inputs z (B, latent_dim) float32 and, for a conditional generator,
    classes (B,) int64; output images (B, C, H, W)."""
    inputs = gan_workload(config, batch)
    names = ["z", "classes"][:len(inputs)]
    flops = gan_flops(model, config)
    model = _onnx_exportable(model)
    module = model if len(inputs) == 2 else _GeneratorZ(model)
    with torch.no_grad():
        torch.onnx.export(module, inputs, out_path, opset_version=14,
                          input_names=names, output_names=["images"])
    dtypes = {torch.float32: "float32", torch.int64: "int64"}
    meta = {"name": os.path.basename(os.path.normpath(model_dir)), "kind": "gan",
            "batch": batch, "num_classes": int(config.get("num_classes", 0)),
            "inputs": [{"name": n, "dtype": dtypes[t.dtype], "shape": list(t.shape)}
                       for n, t in zip(names, inputs)],
            "flops_per_sample": flops}
    with open(os.path.splitext(out_path)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(meta, f)


# token ids the workload uses; the placeholder vocab.txt puts the specials where
# bert-base-uncased has them
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103


def is_bert_dir(model_dir):
    path = os.path.join(model_dir, "config.json")
    if not os.path.exists(path):
        return False
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("model_type") == "bert"


def bert_flops(config, seq, n_mask=1):
    """FLOPs of one sequence of seq tokens with n_mask masked: 2 per multiply-add.

    Per layer and token: Q, K, V and attention output projections 4 * 2*D*D,
    the feed-forward 2 * 2*D*I; per layer, scores Q.K^T and probabilities.V
    2 * 2*T*T*D.  Then on each mask row only: the head's dense 2*D*D and the
    decoder 2*D*V.  Embeddings, LayerNorms, softmax, GELU and biases are
    element-wise and left out, as count_flops() leaves out the CNNs' own:
        L*(T*(8*D*D + 4*D*I) + 4*T*T*D) + n_mask*(2*D*D + 2*D*V)
    """
    L, D = config.num_hidden_layers, config.hidden_size
    I, V, T = config.intermediate_size, config.vocab_size, seq
    return L * (T * (8 * D * D + 4 * D * I) + 4 * T * T * D) + n_mask * (2 * D * D + 2 * D * V)


def check_seq(config, seq):
    # [CLS], [MASK] at seq/2 and [SEP] need three distinct positions
    if not 3 <= seq <= config.max_position_embeddings:
        raise ValueError(f"SEQ {seq}: must be 3..{config.max_position_embeddings}")


def bert_workload(batch, seq):
    """-> input_ids (batch, seq) int64, mask_positions (batch,) int64.

    Every peer builds these same ids (bench_ort.mjs restates this):
    [CLS], then 1000 + (i*7919 + b*31) % 20000 at position i of sequence b,
    [SEP] last, [MASK] at seq // 2."""
    i = torch.arange(seq)[None, :]
    b = torch.arange(batch)[:, None]
    ids = 1000 + (i * 7919 + b * 31) % 20000
    ids[:, 0], ids[:, -1], ids[:, seq // 2] = CLS_ID, SEP_ID, MASK_ID
    return ids, torch.full((batch,), seq // 2, dtype=torch.int64)


def mlm_at_positions(model, input_ids, mask_positions):
    """BertForMaskedLM -> MLM logits (B, V) at one position per sequence.

    No attention mask or token types are passed: with no padding the mask
    is all ones and segment 0 throughout, which is what BertModel assumes
    when they are absent.  The head runs on the gathered rows only."""
    seq, _ = model.bert(input_ids)                                    # (B,T,D)
    B, T, D = seq.shape
    rows = seq.reshape(B * T, D).index_select(0, torch.arange(B) * T + mask_positions)
    return model.cls(rows)                                            # (B,V)


def make_bert(out_dir):
    if os.path.exists(os.path.join(out_dir, "model.safetensors")):
        return
    torch.manual_seed(0)
    config = bert_reference.BertConfig()    # its defaults are bert-base's
    # the constructor applies HF's _init_weights: normal(0, 0.02) weights and
    # embeddings, zero biases and padding row, LayerNorm 1 and 0
    model = bert_reference.BertForMaskedLM(config).eval()
    # ... except that there the tied decoder is initialised after the embedding,
    # overwriting the zeroed [PAD] row; HF ties after initialising
    with torch.no_grad():
        model.bert.embeddings.word_embeddings.weight[PAD_ID].zero_()
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config.to_hf_dict(architectures=("BertForMaskedLM",)), f, indent=2,
                  sort_keys=True)
        f.write("\n")
    specials = {PAD_ID: "[PAD]", UNK_ID: "[UNK]", CLS_ID: "[CLS]", SEP_ID: "[SEP]",
                MASK_ID: "[MASK]"}
    with open(os.path.join(out_dir, "vocab.txt"), "w", encoding="utf-8") as f:
        for i in range(config.vocab_size):
            f.write(specials.get(i, f"tok{i}") + "\n")
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"do_lower_case": True, "model_max_length": 512,
                   "tokenizer_class": "BertTokenizer"}, f, indent=2)
    # the weights last, so an interrupted run is redone rather than half-used
    tmp = os.path.join(out_dir, "model.safetensors.tmp")
    save_file(bert_reference.hf_state_dict(model), tmp, metadata={"format": "pt"})
    os.replace(tmp, os.path.join(out_dir, "model.safetensors"))


def load_bert(model_dir):
    return bert_reference.load_model_dir(model_dir, cls=bert_reference.BertForMaskedLM)


class _MaskedLMAtPositions(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, mask_positions):
        return mlm_at_positions(self.model, input_ids, mask_positions)


def make_onnx_bert(model_dir, batch, seq, out_path):
    """Inputs input_ids (B,T) and mask_positions (B,), both int64; output (B,V).

    There is no attention_mask or token_type_ids input: the workload has no
    padding and one segment, so the additive mask is a constant zero (one
    small Add per layer remains) and the token-type and position embeddings
    fold into one constant at session creation.  ONNX Runtime's own
    optimizer (level 'all') fuses the LayerNorms, residual adds, GELUs and
    bias-GEMMs of this graph; its Attention fusion does not fire, with or
    without a mask input, because it matches only the mask pattern of older
    Hugging Face exports (and the onnxruntime Python package, whose offline
    optimizer fuses more, is not in Debian), so the graph is the plain
    export, as for the CNNs."""
    model, config = load_bert(model_dir)
    check_seq(config, seq)
    ids, pos = bert_workload(batch, seq)
    with torch.no_grad():
        torch.onnx.export(_MaskedLMAtPositions(model), (ids, pos), out_path, opset_version=14,
                          input_names=["input_ids", "mask_positions"], output_names=["logits"])
    meta = {"name": os.path.basename(os.path.normpath(model_dir)), "kind": "bert",
            "batch": batch, "seq": seq,
            "inputs": [{"name": "input_ids", "dtype": "int64", "shape": [batch, seq]},
                       {"name": "mask_positions", "dtype": "int64", "shape": [batch]}],
            "flops_per_sample": bert_flops(config, seq)}
    with open(os.path.splitext(out_path)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(meta, f)


def main(argv):
    if len(argv) == 3 and argv[0] == "resnet":
        make_resnet(argv[1], argv[2])
    elif len(argv) == 4 and argv[0] == "onnx":
        make_onnx(argv[1], int(argv[2]), argv[3])
    elif len(argv) == 2 and argv[0] == "dcgan":
        make_dcgan(argv[1])
    elif len(argv) == 2 and argv[0] == "bert":
        make_bert(argv[1])
    elif len(argv) == 5 and argv[0] == "onnx-bert":
        make_onnx_bert(argv[1], int(argv[2]), int(argv[3]), argv[4])
    else:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
