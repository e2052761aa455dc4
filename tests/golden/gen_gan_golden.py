#!/usr/bin/python3
"""Generate golden GAN generator cases: model directories with PyTorch's images.

usage: gen_gan_golden.py OUT_DIR [CASE ...]

Without CASE names, every case is generated.  Each OUT_DIR/<case>/ is a
complete generator directory (config.json, model.safetensors, and labels.txt
when conditional) written by tools/export_model.py, plus
  z.f32          (N, latent_dim) float32 little-endian latents
  classes.i32    (N) int32 little-endian class ids (conditional cases only)
  expected.f32   (N, C, H, W) float32: PyTorch's raw generator output
  tolerance.txt  "rtol atol": a value passes if |got - exp| <= atol + rtol*|exp|
Expected values come from the written files reloaded through load_model_dir(),
so a case tests the daemon's reading of exactly those files.

Weights are random but seeded and every BatchNorm has random statistics and
affine parameters (gen_cnn_golden.py's helpers), so that folding BatchNorm into
a ConvTranspose2d, whose weight is laid out (in, out/groups, kh, kw), is
really exercised (the default model, models/fashion-gan, runs as shipped).  Tolerance as for the CNN cases: rtol 1e-4 plus an absolute
floor of 1e-4 times max|expected|.
"""

import collections
import os
import sys
import time

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, HERE)
import export_model  # noqa: E402
import gen_cnn_golden  # noqa: E402
from gen_cnn_golden import (init_weights, randomise_batchnorm, write_expected,  # noqa: E402
                            write_f32)


def labels(k):
    return [f"class_{i}" for i in range(k)]


def prepare(model, seed, gain=2.0):
    """Seeded He-style weights and random BatchNorm statistics, eval mode.  A
    stride-2 4x4 ConvTranspose2d reaches each output from a quarter of its taps,
    so the DCGANs take gain 8 to keep activations of order one (and the final
    Tanh out of its linear part)."""
    gen = torch.Generator().manual_seed(seed)
    init_weights(model, gen, gain)
    randomise_batchnorm(model, gen)
    return model.eval()


def latents(n, nz, seed, num_classes=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, nz, generator=gen)
    if not num_classes:
        return z, None
    # the first and last class ids, then random ones (repeats included)
    classes = torch.randint(0, num_classes, (n,), generator=gen)
    classes[0], classes[-1] = 0, num_classes - 1
    return z, classes


def dcgan_case(case_dir):
    """(a) The PyTorch examples DCGAN, nz 100, ngf 64, 3 channels, 64x64."""
    g = prepare(export_model.dcgan_generator(100, 64, 3), 11, gain=8.0)
    export_model.export_dcgan(g, case_dir, latent_dim=100, ngf=64, output_channels=3)
    return latents(3, 100, 12)


def mnist_like_case(case_dir):
    """(b) Linear -> Unflatten -> BN -> ReLU -> ConvT -> BN -> ReLU -> ConvT with
    output_padding -> Tanh: 28x28, the shape of tools/gan's generator."""
    nz = 64
    net = prepare(nn.Sequential(
        nn.Linear(nz, 128 * 7 * 7),
        nn.Unflatten(1, (128, 7, 7)),
        nn.BatchNorm2d(128),
        nn.ReLU(),
        nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1),                   # (64, 14, 14)
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.ConvTranspose2d(64, 1, 3, stride=2, padding=1, output_padding=1),   # (1, 28, 28)
        nn.Tanh(),
    ), 21)
    export_model.export_generator(net, case_dir, nz, (1, 28, 28), "tanh")
    return latents(4, nz, 22)


def dilated_grouped_case(case_dir):
    """(b) ConvTranspose2d with dilation, groups, output_padding, anisotropic
    kernel and stride, BatchNorm1d after the Linear, a sigmoid output."""
    nz = 24
    net = prepare(nn.Sequential(
        nn.Linear(nz, 32 * 5 * 5),
        nn.BatchNorm1d(32 * 5 * 5),
        nn.LeakyReLU(0.2),
        nn.Unflatten(1, (32, 5, 5)),
        nn.ConvTranspose2d(32, 16, 3, stride=2, padding=2, output_padding=1, dilation=2,
                           groups=4),                                           # (16, 10, 10)
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.ConvTranspose2d(16, 6, (3, 5), stride=(1, 2), padding=(1, 0),
                           groups=2, bias=False),                               # (6, 10, 23)
        nn.ELU(),
        nn.ConvTranspose2d(6, 3, 3, stride=3, padding=(0, 1), output_padding=(2, 0)),
        nn.Sigmoid(),                                                           # (3, 32, 67)
    ), 31)
    export_model.export_generator(net, case_dir, nz, (3, 32, 67), "sigmoid")
    return latents(5, nz, 32)


def embedding_case(case_dir):
    """(c) A conditional generator: nn.Embedding(10, 16), condition first."""
    nz, k, e = 32, 10, 16
    net = prepare(nn.Sequential(
        nn.Linear(e + nz, 64 * 4 * 4),
        nn.BatchNorm1d(64 * 4 * 4),
        nn.ReLU(),
        nn.Unflatten(1, (64, 4, 4)),
        nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1),                    # (32, 8, 8)
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1),                     # (1, 16, 16)
        nn.Tanh(),
    ), 41)
    emb = nn.Embedding(k, e)
    with torch.no_grad():
        emb.weight.copy_(torch.randn(k, e, generator=torch.Generator().manual_seed(42)))
    export_model.export_generator(
        net, case_dir, nz, (1, 16, 16), "tanh", labels=labels(k),
        condition={"type": "embedding", "key": "label_emb.weight", "order": "label_first"},
        cond_module=emb)
    return latents(6, nz, 43, k)


def one_hot_dcgan_case(case_dir):
    """(c) A conditional DCGAN (the preset, one-hot classes after z, ngf 16)."""
    nz, k = 20, 7
    g = prepare(export_model.dcgan_generator(nz + k, 16, 1), 51, gain=8.0)
    export_model.export_dcgan(g, case_dir, latent_dim=nz, ngf=16, output_channels=1,
                              labels=labels(k), condition={"type": "one_hot"})
    return latents(4, nz, 52, k)


def fashion_gan_case(case_dir):
    """(d) The default model, models/fashion-gan, as shipped: two latents for each of
    its classes."""
    src = os.path.join(REPO, "models", "fashion-gan")
    if not os.path.isfile(os.path.join(src, export_model.WEIGHTS_FILE)):
        raise gen_cnn_golden.Skip(f"{src} does not exist yet (tools/gan/train_gan.py writes it)")
    os.makedirs(case_dir, exist_ok=True)
    for f in (export_model.CONFIG_FILE, export_model.WEIGHTS_FILE, export_model.LABELS_FILE):
        with open(os.path.join(src, f), "rb") as a, open(os.path.join(case_dir, f), "wb") as b:
            b.write(a.read())
    _, config, labels_ = export_model.load_model_dir(case_dir)
    k = len(labels_)
    gen = torch.Generator().manual_seed(61)
    z = torch.randn(2 * k, config["latent_dim"], generator=gen)
    return z, torch.arange(2 * k) % k


CASES = collections.OrderedDict([
    ("dcgan", dcgan_case),
    ("layers_mnist", mnist_like_case),
    ("layers_dilated_grouped", dilated_grouped_case),
    ("cond_embedding", embedding_case),
    ("cond_one_hot_dcgan", one_hot_dcgan_case),
    ("fashion_gan", fashion_gan_case),
])


def generate(name, out_dir):
    case_dir = os.path.join(out_dir, name)
    t0 = time.time()
    z, classes = CASES[name](case_dir)
    model, config, _ = export_model.load_model_dir(case_dir)
    with torch.no_grad():
        expected = model(z, classes)                                   # (N, C, H, W)
        # float64 rerun: how far float32 itself strays, to see the tolerance
        # leaves room for an engine that rounds differently
        reference = model.double()(z.double(), classes)
    out = config["output"]
    assert tuple(expected.shape) == (z.shape[0], out["channels"], out["height"], out["width"])
    write_f32(os.path.join(case_dir, "z.f32"), z)
    if classes is not None:
        classes.numpy().astype("<i4").tofile(os.path.join(case_dir, "classes.i32"))
    write_expected(case_dir, name, f"z {tuple(z.shape)}", expected, reference, t0)


def main(argv):
    return gen_cnn_golden.cli(argv, __doc__, CASES, generate)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
