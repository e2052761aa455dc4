#!/usr/bin/python3
"""Train models/fashion-gan, a class-conditional DCGAN generator, on CPU, resumably.

The generator is what modeld serves: a label embedding (nn.Embedding(10, E),
weight "label_emb.weight") whose row for class y is appended to the latent
z ~ N(0, 1), then a plain nn.Sequential (exported as a layer list, see
docs/MODELS.md):

    cat[z, emb(y)] (N, nz+E)
    Linear(nz+E, C*7*7) - BatchNorm1d - ReLU - Unflatten(1, (C, 7, 7))
    ConvTranspose2d(C, 64, 4, 2, 1) - BatchNorm2d(64) - ReLU        -> (N, 64, 14, 14)
    ConvTranspose2d(64, 1, 4, 2, 1) - Tanh                         -> (N, 1, 28, 28) in [-1, 1]

The discriminator is used for training only and never exported: a DCGAN
discriminator (two stride-2 convolutions, BatchNorm, LeakyReLU(0.2)) with a
minibatch-standard-deviation channel, a projection head (Miyato & Koyama
2018: score = w.h + b + emb_D(y).h) trained with the non-saturating GAN loss,
plus an auxiliary 10-way classifier on the same features (AC-GAN; trained on
real images only, and the generator is rewarded, with a smaller weight, when
its images are classified as the class it was asked for).  The auxiliary term
is what makes the generated images recognisable as their class within two
epochs on CPU.  Adam(2e-4, betas (0.5, 0.999)) for both networks, batch 128,
training images scaled to [-1, 1].  (A spectrally normalised discriminator
with the hinge loss was tried first: it stayed too weak, hinge loss ~1.9, and
the generator collapsed to one image per class; see tools/gan/README.md.)

The generator's ConvTranspose2d layers are trained through a custom autograd
function (same forward, a backward built from conv2d and one matrix product)
because torch 1.13's CPU backward for them is ~10x slower than their forward;
check_fast_path() compares it with PyTorch's own in float64 at every start.

Data: Debian's dataset-fashion-mnist (tools/fashion_mnist.py), 60,000
training images.  Everything random comes from --seed.  A checkpoint (both
networks, both optimizers, RNG states, the epoch's image order and position,
accumulated wall and CPU time) is written atomically to WORK/ckpt.pt every
--ckpt-minutes and at exit; running the same command again resumes from it.
--max-minutes bounds one run.  When --epochs are done the generator is
exported to --out (config.json, model.safetensors, labels.txt), reloaded from
those files and measured: models/fashion (the project's classifier) labels
1000 generated images per class, and the share it labels as the requested
class is written, per class and overall, to README.md with samples.png.
--export-only does the same from the latest checkpoint (an interim model when
training is not finished; its README says so).

    nice -n 5 /usr/bin/python3 tools/gan/train_gan.py --epochs 2 --max-minutes 30
    /usr/bin/python3 tools/gan/train_gan.py --epochs 2 --export-only
"""

import argparse
import copy
import json
import os
import shlex
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools"))
import export_model  # noqa: E402
import fashion_mnist  # noqa: E402
import safetensors_io  # noqa: E402

NUM_CLASSES = 10
EMB_KEY = "label_emb.weight"
EVAL_SEED = 20240          # z for the agreement measurement
SAMPLE_SEED = 7            # z for samples.png


# ---------------------------------------------------------------- networks

class _ConvTranspose4x4s2(torch.autograd.Function):
    """conv_transpose2d(x, w, b, stride=2, padding=1) with a fast backward.

    torch 1.13's CPU backward of ConvTranspose2d (and F.unfold) go through a
    per-image im2col that is ~10x slower than the forward on this machine.
    Here the input gradient is a stride-2 Conv2d with the same weight and the
    weight gradient one matrix product over strided views of the padded
    output gradient.  Only used while training; eval and export run the plain
    nn.ConvTranspose2d, and check_fast_path() compares both at start-up.
    """

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return F.conv_transpose2d(x, w, b, stride=2, padding=1)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        n, ci, h, wd = x.shape
        co, k = w.shape[1], w.shape[2]
        gx = F.conv2d(g, w, None, stride=2, padding=1)
        gp = F.pad(g, (1, 1, 1, 1))
        # out[2i - 1 + kh] = sum x[i] w[kh]  =>  dw[kh] = sum_i x[i] gp[2i + kh]
        cols = torch.stack([gp[:, :, kh:kh + 2 * h:2, kw:kw + 2 * wd:2]
                            for kh in range(k) for kw in range(k)], 4)   # (n, co, h, wd, k*k)
        cols = cols.permute(0, 2, 3, 1, 4).reshape(n * h * wd, co * k * k)
        gw = torch.mm(x.permute(1, 0, 2, 3).reshape(ci, n * h * wd), cols)
        return gx, gw.view(ci, co, k, k), g.sum((0, 2, 3))


def _fast_ok(m):
    return (type(m) is nn.ConvTranspose2d and m.kernel_size == (4, 4) and m.stride == (2, 2)
            and m.padding == (1, 1) and m.output_padding == (0, 0) and m.dilation == (1, 1)
            and m.groups == 1 and m.bias is not None)


class Generator(nn.Module):
    """label_emb + net; only net's layer types appear, so net exports as a layer list."""

    def __init__(self, nz, emb_dim, ch):
        super().__init__()
        self.nz = nz
        self.label_emb = nn.Embedding(NUM_CLASSES, emb_dim)
        self.net = nn.Sequential(
            nn.Linear(nz + emb_dim, ch * 7 * 7), nn.BatchNorm1d(ch * 7 * 7), nn.ReLU(),
            nn.Unflatten(1, (ch, 7, 7)),
            nn.ConvTranspose2d(ch, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Tanh(),
        )
        for m in self.net.modules():       # DCGAN initialisation
            if isinstance(m, (nn.Linear, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, z, y, fast=True):
        x = torch.cat([z, self.label_emb(y)], 1)     # latent_first
        if not (fast and torch.is_grad_enabled()):
            return self.net(x)
        for m in self.net:
            x = _ConvTranspose4x4s2.apply(x, m.weight, m.bias) if _fast_ok(m) else m(x)
        return x


def check_fast_path(G):
    """The training forward/backward must match plain PyTorch's; raises if not.

    Compared in float64 on a copy, so that gradients which are zero up to
    rounding (a bias followed by BatchNorm) compare as zero."""
    G = copy.deepcopy(G).double()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, G.nz, generator=g, dtype=torch.float64)
    y = torch.arange(8) % NUM_CLASSES
    w = torch.randn(8, 1, 28, 28, generator=g, dtype=torch.float64)
    state = copy.deepcopy(G.state_dict())
    grads = []
    for fast in (False, True):
        G.load_state_dict(state)
        G.zero_grad(set_to_none=True)
        out = G(z, y, fast=fast)
        (out * w).sum().backward()
        grads.append([out.detach()] + [p.grad.clone() for p in G.parameters()])
    names = ["output"] + [f"grad {n}" for n, _ in G.named_parameters()]
    for name, a, b in zip(names, *grads):
        if (a - b).abs().max().item() > 1e-9 * a.abs().max().item() + 1e-12:
            raise RuntimeError(f"fast ConvTranspose2d path disagrees with PyTorch's ({name})")


class MinibatchStd(nn.Module):
    """Append one channel: the feature standard deviation across groups of `group`
    consecutive images (ProGAN), so that the discriminator can see a batch
    whose images are all alike.  Groups never mix the real and fake halves of
    a batch (both are multiples of the group size).  The classes within a
    group are random, so it sees collapse across classes better than within
    one."""

    def __init__(self, group=4):
        super().__init__()
        self.group = group

    def forward(self, x):
        n, c, h, w = x.shape
        g = self.group if n % self.group == 0 else 1
        if g == 1:
            return torch.cat([x, x.new_zeros(n, 1, h, w)], 1)
        y = x.view(n // g, g, c, h, w)
        std = (y.var(1, unbiased=False) + 1e-8).sqrt().mean((1, 2, 3))       # (n // g,)
        return torch.cat([x, std.repeat_interleave(g).view(n, 1, 1, 1).expand(n, 1, h, w)], 1)


class Discriminator(nn.Module):
    """DCGAN discriminator (convolutions, BatchNorm, LeakyReLU) + minibatch std ->
    features h; score w.h + b + emb(y).h (projection); class logits (auxiliary)."""

    def __init__(self, ch, mbstd_group=4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, ch, 4, 2, 1), nn.LeakyReLU(0.2),                          # 14x14
            MinibatchStd(mbstd_group),
            nn.Conv2d(ch + 1, 2 * ch, 4, 2, 1), nn.BatchNorm2d(2 * ch), nn.LeakyReLU(0.2),  # 7x7
            nn.Flatten(),
        )
        nf = 2 * ch * 7 * 7
        self.score = nn.Linear(nf, 1)
        self.embed = nn.Embedding(NUM_CLASSES, nf)
        self.classify = nn.Linear(nf, NUM_CLASSES)
        for m in self.modules():            # DCGAN initialisation
            if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x, y):
        h = self.features(x)
        score = self.score(h).squeeze(1) + (self.embed(y) * h).sum(1)
        return score, self.classify(h)


# ---------------------------------------------------------------- checkpoint

def save_ckpt(path, G, D, opt_g, opt_d, order_gen, perm, pos, state):
    tmp = path + ".tmp"
    torch.save({"G": G.state_dict(), "D": D.state_dict(),
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                "torch_rng": torch.get_rng_state(), "order_rng": order_gen.get_state(),
                "perm": perm, "pos": pos, "state": state}, tmp)
    os.replace(tmp, path)


# ---------------------------------------------------------------- export + evaluation

def generator_config(G):
    """The model directory's config.json (docs/MODELS.md, kind "gan") for G."""
    z = torch.zeros(2, G.nz + G.label_emb.embedding_dim)
    was = G.training
    G.eval()
    with torch.no_grad():
        layers, y = export_model._describe(G.net, z, ())
    G.train(was)
    if tuple(y.shape[1:]) != (1, 28, 28):
        raise export_model.ExportError(f"generator output {tuple(y.shape)}, expected (N, 1, 28, 28)")
    return {"kind": "gan", "architecture": "layers", "latent_dim": G.nz,
            "num_classes": NUM_CLASSES,
            "condition": {"type": "embedding", "key": EMB_KEY, "order": "latent_first"},
            "output": {"channels": 1, "height": 28, "width": 28, "range": "tanh"},
            "layers": layers}


COND = {"type": "embedding", "key": EMB_KEY, "order": "latent_first"}


def export(G, out):
    """Write out/{config.json, model.safetensors, labels.txt}; returns the config."""
    G.eval()
    if hasattr(export_model, "export_generator"):
        return export_model.export_generator(
            G.net, out, G.nz, (1, 28, 28), "tanh", labels=fashion_mnist.CLASSES,
            condition=dict(COND), cond_module=G.label_emb)
    # export_model.py without generator support: the same schema by hand
    config = generator_config(G)
    labels = export_model._check_labels(fashion_mnist.CLASSES, NUM_CLASSES)
    weights = export_model._weights(G.net.state_dict(), "F32")
    weights[EMB_KEY] = G.label_emb.weight.detach().float().contiguous()
    export_model._write_dir(out, config, weights, labels)
    return config


def load_generator_dir(path):
    """(gen(z, classes) -> (N, 1, 28, 28), config, labels) from the written files."""
    if hasattr(export_model, "GeneratorModule"):
        return export_model.load_model_dir(path)
    with open(os.path.join(path, export_model.CONFIG_FILE), encoding="utf-8") as f:
        config = json.load(f)
    if config.get("kind") != "gan" or config.get("condition") != COND:
        raise export_model.ExportError(f"{path}: not a generator conditioned as {COND}")
    labels = export_model.read_labels(os.path.join(path, export_model.LABELS_FILE))
    tensors, _ = safetensors_io.load_file(os.path.join(path, export_model.WEIGHTS_FILE))
    tensors = {k: v.float() for k, v in tensors.items()}
    emb = tensors.pop(EMB_KEY)
    net = export_model.build_module(config)
    export_model._load_strict(net, tensors, os.path.join(path, export_model.WEIGHTS_FILE))
    net.eval()
    return (lambda z, classes: net(torch.cat([z, emb[classes]], 1))), config, labels


def generate(gen_fn, nz, labels, seed, batch=1000):
    """uint8 pixels (N, 28, 28) for the given class labels, z from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(len(labels), nz, generator=gen)
    out = []
    with torch.no_grad():
        for i in range(0, len(labels), batch):
            x = gen_fn(z[i:i + batch], labels[i:i + batch])
            out.append(((x[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def classify(clf, clf_config, pixels, batch=1000):
    x = export_model.normalize_pixels(pixels, clf_config)
    with torch.no_grad():
        return torch.cat([clf(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def agreement(gen_fn, nz, clf, clf_config, per_class, seed):
    """Per-class share of generated images of class c that the classifier labels c."""
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    pred = classify(clf, clf_config, generate(gen_fn, nz, labels, seed))
    per = [(pred[labels == c] == c).double().mean().item() for c in range(NUM_CLASSES)]
    confused = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    for t, p in zip(labels.tolist(), pred.tolist()):
        confused[t, p] += 1
    return per, (pred == labels).double().mean().item(), confused


def diversity(px, labels):
    """Mean over classes of the per-pixel standard deviation across that class's images,
    in the [-1, 1] scale of the generator's output."""
    x = px.float() / 127.5 - 1
    return sum(x[labels == c].std(0).mean().item() for c in range(NUM_CLASSES)) / NUM_CLASSES


def real_diversity(per_class=100):
    px, y = fashion_mnist.load("train")
    y = torch.from_numpy(y).long()
    idx = torch.cat([(y == c).nonzero()[:per_class, 0] for c in range(NUM_CLASSES)])
    return diversity(torch.from_numpy(px)[idx], y[idx])


def quick_agreement(G, clf, clf_config, per_class=100):
    was = G.training
    G.eval()
    gen_fn = lambda z, y: G(z, y, fast=False)  # noqa: E731
    per, overall, _ = agreement(gen_fn, G.nz, clf, clf_config, per_class, EVAL_SEED)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    div = diversity(generate(gen_fn, G.nz, labels, EVAL_SEED), labels)
    G.train(was)
    return per, overall, div


def save_samples(gen_fn, nz, path):
    """10 x 10 grid, row c = class c, fixed z; white garments on black as in the data."""
    from PIL import Image
    labels = torch.arange(NUM_CLASSES).repeat_interleave(10)
    px = generate(gen_fn, nz, labels, SAMPLE_SEED)
    pad, cell = 2, 28
    size = 10 * (cell + pad) + pad
    grid = torch.full((size, size), 128, dtype=torch.uint8)
    for i in range(100):
        r, c = divmod(i, 10)
        y0, x0 = pad + r * (cell + pad), pad + c * (cell + pad)
        grid[y0:y0 + cell, x0:x0 + cell] = px[i]
    img = Image.fromarray(grid.numpy(), mode="L").resize((size * 2, size * 2), Image.NEAREST)
    img.save(path, optimize=True)


def real_accuracy(clf, clf_config):
    px, y = fashion_mnist.load("test")
    pred = classify(clf, clf_config, px)
    y = torch.from_numpy(y).long()
    return [(pred[y == c] == c).double().mean().item() for c in range(NUM_CLASSES)]


def write_readme(out, args, config, state, per, overall, confused, real_per, interim,
                 div, real_div):
    size = os.path.getsize(os.path.join(out, export_model.WEIGHTS_FILE))
    lin = config["layers"][0]
    ch = config["layers"][3]["unflattened_size"][0]
    nparams = state["g_params"]
    rows = []
    for c, name in enumerate(fashion_mnist.CLASSES):
        other = confused[c].clone()
        other[c] = -1
        o = int(other.argmax())
        share = 100 * other[o].item() / confused[c].sum().item()
        other_text = f"{fashion_mnist.CLASSES[o]} ({share:.1f}%)" if share > 0 else "—"
        rows.append(f"| {c} | {name} | **{100 * per[c]:.1f}** | {100 * real_per[c]:.1f} | "
                    f"{other_text} |")
    rows = "\n".join(rows)
    status = (f"**Interim model**: exported from the checkpoint after {state['step']} of "
              f"{state['total_steps']} steps; a finished run replaces these files and "
              "numbers.\n\n" if interim else "")
    hist = "\n".join(state["history"])
    collapse = ""
    if div < 0.5 * real_div:
        collapse = (f"**Limited variety**: within a class the images vary much less with z than real "
                    f"images do (per-pixel standard deviation {div:.3f} against {real_div:.3f} for "
                    "training images, see below): the generator draws a few variations of one "
                    "garment per class, a partial mode collapse.  The high class agreement "
                    "below partly reflects this: each class is drawn as one clear prototype.\n\n")
    ll = state["last_losses"]
    text = f"""# fashion-gan — a class-conditional generator of Fashion-MNIST images

A small DCGAN-style generator: given a class (0–9) and a 64-number latent vector it draws a
28×28 grayscale garment of that class, in Fashion-MNIST's style (white garment on black).
Trained by this repository, from scratch, on Debian's `dataset-fashion-mnist` package
(Zalando's Fashion-MNIST, MIT licence; the 60,000 training images), with
`tools/gan/train_gan.py`.  Nothing was downloaded.

{status}![samples: one row per class, T-shirt/top at the top, Ankle boot at the bottom](samples.png)

{collapse}`samples.png`: row *c* is class *c* (top to bottom: {", ".join(fashion_mnist.CLASSES)}),
10 latent vectors drawn with `torch.manual_seed({SAMPLE_SEED})`, from the files in this directory.

## Class agreement

The project's own classifier, [models/fashion](../fashion/README.md) (92.5% on the real test
set), labelled {args.eval_per_class} generated images per class (latent vectors from
`torch.Generator().manual_seed({EVAL_SEED})`, generator reloaded from the files in this directory,
output quantised to 8-bit pixels as a PNG would hold them).  "agreement" is the share it labels
as the class that was asked for; "real" is the classifier's accuracy on that class of the real
test set, for comparison.

| index | class | agreement % | real test % | most frequent other label |
|---|---|---|---|---|
{rows}
| | **overall** | **{100 * overall:.1f}** | {100 * sum(real_per) / NUM_CLASSES:.1f} | |

## Using it

`config.json` is `kind: "gan"`, `architecture: "layers"`:

1. draw `z` of `latent_dim` = {config["latent_dim"]} numbers from N(0, 1);
2. append row *y* of `label_emb.weight` ({NUM_CLASSES}×{lin["in_features"] - config["latent_dim"]}, in
   `model.safetensors`) after it (`condition.order: "latent_first"`);
3. run the layer list; the output (1, 28, 28) is in [-1, 1] (`output.range: "tanh"`):
   pixel = (x + 1) · 127.5.

`labels.txt` names the classes, as in models/fashion.

## Architecture

{nparams:,} parameters, {size / 1e6:.1f} MB of F32 weights:

```
cat[z (64), label_emb[y] ({lin["in_features"] - config["latent_dim"]})]                        (N, {lin["in_features"]})
Linear({lin["in_features"]}, {lin["out_features"]}) - BatchNorm1d - ReLU - Unflatten(1, ({ch}, 7, 7)) -> (N, {ch}, 7, 7)
ConvTranspose2d({ch}, 64, 4, stride 2, padding 1) - BatchNorm2d - ReLU   -> (N, 64, 14, 14)
ConvTranspose2d(64, 1, 4, stride 2, padding 1) - Tanh                  -> (N, 1, 28, 28)
```

Trained against a discriminator that is not shipped: a DCGAN discriminator (4×4 stride-2
convolutions with {args.d_ch} and {2 * args.d_ch} channels, BatchNorm on the second, LeakyReLU 0.2)
with a minibatch-standard-deviation channel between the convolutions (groups of 4 images), a
projection head (score = w·h + b + embed(y)·h) trained with the non-saturating GAN loss, and an
auxiliary 10-way classifier on the same features (cross-entropy on real images for the
discriminator, weight {args.aux_weight_d}; on generated images for the generator, weight
{args.aux_weight_g}).

How much the images of one class vary with z (a collapsed generator draws one image per class):
the per-pixel standard deviation across 100 images of a class, averaged over pixels and
classes, is {div:.3f} for generated images and {real_div:.3f} for training images (pixel scale
[-1, 1]).

## Training

```
{hist}
```

- seed {args.seed} (`torch.manual_seed`; a separate seeded generator fixes the order of the
  training images in every epoch)
- {state['step']} steps = {state['step'] / state['steps_per_epoch']:.2f} epochs of batch {args.batch_size}
  (the last partial batch of each epoch dropped), Adam lr {args.lr} betas (0.5, 0.999) for both
  networks, one discriminator step per generator step; training images scaled to [-1, 1],
  no augmentation
- final losses (mean over the last {ll['steps']} steps): discriminator GAN loss
  {ll['d_gan']:.3f}, discriminator classifier {ll['d_cls']:.3f},
  generator adversarial {ll['g_adv']:.3f}, generator classifier {ll['g_cls']:.3f}
- {args.threads} CPU threads (`torch.set_num_threads`), torch {torch.__version__};
  training took {state['cpu_seconds'] / 60:.1f} min of CPU time and {state['train_seconds'] / 60:.1f} min
  of wall time on {os.cpu_count()} cores shared with other work (1-minute load average
  {os.getloadavg()[0]:.1f} at export)

The same commands on another machine give the same training procedure; the weights may differ
in the last digits between CPU kernels and torch versions.
"""
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)


def export_and_measure(G, args, state, interim):
    config = export(G, args.out)
    gen_fn, config, labels = load_generator_dir(args.out)
    clf, clf_config, clf_labels = export_model.load_model_dir(args.classifier)
    if clf_labels != labels:
        raise SystemExit(f"labels of {args.out} and {args.classifier} differ")
    per, overall, confused = agreement(gen_fn, config["latent_dim"], clf, clf_config,
                                       args.eval_per_class, EVAL_SEED)
    save_samples(gen_fn, config["latent_dim"], os.path.join(args.out, "samples.png"))
    real_per = real_accuracy(clf, clf_config)
    labels100 = torch.arange(NUM_CLASSES).repeat_interleave(100)
    div = diversity(generate(gen_fn, config["latent_dim"], labels100, EVAL_SEED), labels100)
    real_div = real_diversity()
    write_readme(args.out, args, config, state, per, overall, confused, real_per, interim,
                 div, real_div)
    print(f"  diversity {div:.3f} (real {real_div:.3f})")
    for c, name in enumerate(labels):
        print(f"  {c} {name:12s} agreement {100 * per[c]:5.1f}%  (real test {100 * real_per[c]:.1f}%)")
    print(json.dumps({"step": state["step"], "overall_agreement": round(overall, 4),
                      "per_class": [round(p, 4) for p in per],
                      "train_minutes": round(state["train_seconds"] / 60, 2),
                      "cpu_minutes": round(state["cpu_seconds"] / 60, 2)}), flush=True)
    print(f"exported {'interim ' if interim else ''}generator at step {state['step']} -> {args.out}",
          flush=True)
    return overall


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/work/gan-train", help="checkpoint directory")
    ap.add_argument("--out", default=os.path.join(REPO, "models", "fashion-gan"))
    ap.add_argument("--classifier", default=os.path.join(REPO, "models", "fashion"))
    ap.add_argument("--epochs", type=float, default=2.0, help="total training length")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--nz", type=int, default=64, help="latent dimension")
    ap.add_argument("--emb-dim", type=int, default=50, help="label embedding size E")
    ap.add_argument("--g-ch", type=int, default=128, help="channels C after the Linear")
    ap.add_argument("--d-ch", type=int, default=64, help="discriminator's first conv channels")
    ap.add_argument("--aux-weight-d", type=float, default=1.0,
                    help="weight of the discriminator's classification loss (real images)")
    ap.add_argument("--aux-weight-g", type=float, default=0.2,
                    help="weight of the generator's classification loss (its images)")
    ap.add_argument("--subset", type=int, default=0, help="train on the first N images (tests)")
    ap.add_argument("--max-minutes", type=float, default=45.0, help="wall-time bound of one run")
    ap.add_argument("--ckpt-minutes", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-per-class", type=int, default=1000)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    os.makedirs(args.work, exist_ok=True)
    px, y = fashion_mnist.load("train")
    if args.subset:
        px, y = px[:args.subset], y[:args.subset]
    train_px = torch.from_numpy(px)                 # (N, 28, 28) uint8
    train_y = torch.from_numpy(y).long()
    steps_per_epoch = len(train_px) // args.batch_size
    total_steps = int(round(args.epochs * steps_per_epoch))

    # before seeding: building the classifier's modules draws random initial weights
    clf, clf_config, _ = export_model.load_model_dir(args.classifier)

    torch.manual_seed(args.seed)
    G = Generator(args.nz, args.emb_dim, args.g_ch)
    D = Discriminator(args.d_ch)
    opt_g = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.5, 0.999), foreach=True)
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(0.5, 0.999), foreach=True)
    order_gen = torch.Generator().manual_seed(args.seed)
    perm, pos = None, 0
    command = ("nice -n 5 /usr/bin/python3 tools/gan/train_gan.py "
               + " ".join(shlex.quote(a) for a in sys.argv[1:] if a != "--export-only")).rstrip()
    state = {"step": 0, "train_seconds": 0.0, "cpu_seconds": 0.0, "history": [],
             "steps_per_epoch": steps_per_epoch,
             "g_params": sum(p.numel() for p in G.parameters()),
             "last_losses": {}, "log": []}
    ckpt_path = os.path.join(args.work, "ckpt.pt")
    arch = {"nz": args.nz, "emb_dim": args.emb_dim, "g_ch": args.g_ch, "d_ch": args.d_ch,
            "d_mbstd": 4, "d": "bn-bce", "batch_size": args.batch_size, "subset": args.subset}
    state["arch"] = arch
    if os.path.exists(ckpt_path) and not args.no_resume:
        ck = torch.load(ckpt_path)
        if ck["state"]["arch"] != arch:
            raise SystemExit(f"{ckpt_path} was trained with {ck['state']['arch']}, this run asks "
                             f"for {arch}; pass the same options or --no-resume")
        G.load_state_dict(ck["G"])
        D.load_state_dict(ck["D"])
        opt_g.load_state_dict(ck["opt_g"])
        opt_d.load_state_dict(ck["opt_d"])
        torch.set_rng_state(ck["torch_rng"])
        order_gen.set_state(ck["order_rng"])
        perm, pos = ck["perm"], ck["pos"]
        state.update(ck["state"])
        print(f"resumed from {ckpt_path} at step {state['step']} "
              f"(epoch {state['step'] / steps_per_epoch:.2f})", flush=True)
    state["total_steps"] = total_steps
    step = state["step"]

    if not args.export_only and step < total_steps:
        check_fast_path(G)
        real_div = real_diversity()
        state["history"].append(f"{command}  # from step {step}")
        print(f"training steps {step}..{total_steps} ({steps_per_epoch} per epoch, "
              f"G {state['g_params']:,} parameters)", flush=True)
        G.train()
        D.train()
        run_begin = run_start = last_ckpt = last_log = time.time()
        cpu_start = time.process_time()
        sums = torch.zeros(6)
        n_sum = 0
        stop = False
        while step < total_steps and not stop:
            if perm is None or pos + args.batch_size > len(perm):
                perm, pos = torch.randperm(len(train_px), generator=order_gen), 0
            idx = perm[pos:pos + args.batch_size]
            pos += args.batch_size
            real = train_px[idx].unsqueeze(1).float() / 127.5 - 1.0
            y_real = train_y[idx]
            z = torch.randn(len(idx), args.nz)
            y_fake = torch.randint(0, NUM_CLASSES, (len(idx),))
            fake = G(z, y_fake)

            # discriminator (non-saturating GAN loss; real and fake batches apart, for
            # BatchNorm) + classify the real images
            s_real, c_real = D(real, y_real)
            s_fake, _ = D(fake.detach(), y_fake)
            d_gan = F.softplus(-s_real).mean() + F.softplus(s_fake).mean()
            d_cls = F.cross_entropy(c_real, y_real)
            opt_d.zero_grad(set_to_none=True)
            (d_gan + args.aux_weight_d * d_cls).backward()
            opt_d.step()

            # generator: raise the score, be classified as y_fake
            s_gen, c_gen = D(fake, y_fake)
            g_adv = F.softplus(-s_gen).mean()
            g_cls = F.cross_entropy(c_gen, y_fake)
            opt_g.zero_grad(set_to_none=True)
            (g_adv + args.aux_weight_g * g_cls).backward()
            opt_g.step()
            step += 1

            with torch.no_grad():
                sums += torch.tensor([d_gan.item(), d_cls.item(), g_adv.item(), g_cls.item(),
                                      (s_real > 0).float().mean().item(),
                                      (s_fake < 0).float().mean().item()])
            n_sum += 1
            m = (sums / n_sum).tolist()
            state["last_losses"] = {"d_gan": m[0], "d_cls": m[1], "g_adv": m[2], "g_cls": m[3],
                                    "steps": n_sum}
            if step % args.log_every == 0:
                now = time.time()
                elapsed = state["train_seconds"] + now - run_start
                print(f"step {step}/{total_steps} ep {step / steps_per_epoch:.2f} "
                      f"d_gan {m[0]:.3f} d_cls {m[1]:.3f} g_adv {m[2]:.3f} g_cls {m[3]:.3f} "
                      f"D(real)>0 {m[4]:.2f} D(fake)<0 {m[5]:.2f} "
                      f"{(now - last_log) / n_sum:.2f}s/step elapsed {elapsed / 60:.1f}m",
                      flush=True)
                last_log = now
                sums.zero_()
                n_sum = 0

            now = time.time()
            out_of_time = (now - run_begin) / 60 >= args.max_minutes
            if out_of_time or step >= total_steps or (now - last_ckpt) / 60 >= args.ckpt_minutes:
                state["train_seconds"] += now - run_start
                cpu_now = time.process_time()
                state["cpu_seconds"] += cpu_now - cpu_start
                state["step"] = step
                per, overall, div = quick_agreement(G, clf, clf_config)
                state["log"].append({"step": step, "agreement_100": round(overall, 4),
                                     "diversity": round(div, 4)})
                save_ckpt(ckpt_path, G, D, opt_g, opt_d, order_gen, perm, pos, state)
                print(f"checkpoint step {step} -> {ckpt_path} (wall {state['train_seconds'] / 60:.1f}m, "
                      f"cpu {state['cpu_seconds'] / 60:.1f} core-min); agreement on 100/class "
                      f"{100 * overall:.1f}% [" + " ".join(f"{100 * p:.0f}" for p in per) + "]"
                      f", diversity {div:.3f} (real {real_div:.3f})",
                      flush=True)
                # time spent checkpointing and measuring is not training time
                run_start = last_ckpt = last_log = time.time()
                cpu_start = time.process_time()
                stop = out_of_time
        if step < total_steps:
            print(f"stopped at step {step} (--max-minutes); run the same command to resume",
                  flush=True)
            return 0

    if step == 0:
        raise SystemExit(f"no checkpoint in {args.work}: nothing to export")
    interim = step < total_steps
    overall = export_and_measure(G, args, state, interim)
    if overall < 0.70:
        print("warning: overall class agreement below the 70% target", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
