#!/usr/bin/python3
"""Generate golden CNN cases: model directories with PyTorch's answers.

usage: gen_cnn_golden.py OUT_DIR [CASE ...]

Without CASE names, every case is generated.

Each OUT_DIR/<case>/ is a complete model directory (config.json,
model.safetensors, labels.txt) plus
  input.f32      (N, C, H, W) float32 little-endian, already normalised: the
                 engine's input tensor, not pixels
  expected.f32   (N, K) float32 logits from PyTorch (eval mode, float32)
  tolerance.txt  "rtol atol": a value passes if |got - exp| <= atol + rtol*|exp|
Expected values are computed from the written files reloaded through
load_model_dir(), so a case tests the daemon's reading of exactly those files.

Weights are random but seeded, and every BatchNorm gets random statistics
and affine parameters: with PyTorch's initial values (mean 0, var 1, gamma 1,
beta 0) BatchNorm is nearly the identity and folding it could be wrong
unnoticed.
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
import export_model  # noqa: E402
import fashion_mnist  # noqa: E402

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# The engine folds BatchNorm into the preceding layer and sums in its own
# order, so float32 rounding differs from PyTorch's by a few ulps per layer,
# growing with depth.  1e-4 relative covers that; a logit near zero is often
# the small difference of large partial sums, so its error scales with the
# largest values rather than its own, hence an absolute floor of 1e-4 times
# max|expected|.
RTOL = 1e-4
ATOL_FRACTION = 1e-4


class Skip(Exception):
    pass


def randomise_batchnorm(model, gen):
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_((torch.rand(n, generator=gen) - 0.5) * 0.4)   # +-0.2
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen) * 1.5)      # [0.5, 2]
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))                 # [0.5, 1.5]
                m.bias.copy_((torch.rand(n, generator=gen) - 0.5) * 0.4)          # +-0.2


def class_labels(k):
    return [f"class_{i}" for i in range(k)]


def torchvision_case(arch, shape, n, seed):
    def make(case_dir):
        import torchvision
        torch.manual_seed(seed)
        model = getattr(torchvision.models, arch)(num_classes=10).eval()
        gen = torch.Generator().manual_seed(seed)
        randomise_batchnorm(model, gen)
        export_model.export_torchvision(arch, model, case_dir, class_labels(10), shape,
                                        IMAGENET_MEAN, IMAGENET_STD)
        return torch.randn(n, *shape, generator=gen)
    return make


def init_weights(model, gen, gain=2.0):
    """He-style random weights and visible biases, so that activations stay
    of order one through the whole network: PyTorch's default init shrinks
    them layer by layer until ops such as ReLU6 or ELU's alpha no longer
    change the output by more than the tolerance."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            w = m.weight
            fan_in = w.numel() // (w.shape[1] if isinstance(m, nn.ConvTranspose2d) else w.shape[0])
            with torch.no_grad():
                w.copy_(torch.randn(w.shape, generator=gen) * (gain / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_((torch.rand(m.bias.shape, generator=gen) - 0.5) * 0.6)


def layers_model():
    """Every CNN op of docs/MODELS.md's layer list, on a 3x23x23 input."""
    features = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),            # (8, 12, 12)
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 12, (3, 5), padding=(2, 4), dilation=2, groups=2),  # (12, 12, 12)
        nn.ReLU6(),
        nn.Sequential(                                                  # index-nested
            nn.Conv2d(12, 12, 3, padding=1, groups=12),                 # depthwise
            nn.BatchNorm2d(12, eps=0.1),                                # eps must be read
            nn.LeakyReLU(0.2),
        ),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),           # (12, 7, 7)
        nn.Conv2d(12, 16, 1),                                           # (16, 7, 7)
        nn.ELU(0.7),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),  # (16, 4, 4)
        nn.Conv2d(16, 16, 3, padding=1),
        nn.GELU(),
        nn.Conv2d(16, 16, 1),
        nn.Tanh(),
        nn.Conv2d(16, 16, 1),
        nn.Sigmoid(),
        nn.Conv2d(16, 16, 1),
        nn.SiLU(),
    )
    head = nn.Sequential(
        nn.Linear(16 * 3 * 3, 32),
        nn.BatchNorm1d(32, eps=1e-3),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Identity(),
        nn.Linear(32, 7),
    )
    model = nn.Sequential(collections.OrderedDict([
        ("features", features),
        ("pool", nn.AdaptiveAvgPool2d((3, 3))),                         # (16, 3, 3)
        ("flatten", nn.Flatten()),
        ("head", head),
    ])).eval()
    gen = torch.Generator().manual_seed(7)
    init_weights(model, gen)
    with torch.no_grad():
        features[3].weight.mul_(3.0)    # so that ReLU6 really clips
    randomise_batchnorm(model, gen)
    return model


def layers_case(dtype):
    def make(case_dir):
        export_model.export_sequential(layers_model(), case_dir, class_labels(7), (3, 23, 23),
                                       IMAGENET_MEAN, IMAGENET_STD, dtype=dtype)
        return torch.randn(3, 3, 23, 23, generator=torch.Generator().manual_seed(8))
    return make


def deconv_model():
    """A classifier with generator-style ops: ConvTranspose2d (BatchNorm folded into
    one), Unflatten, Dropout2d, Softmax."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),                          # (8, 12, 12)
        nn.ReLU(),
        nn.ConvTranspose2d(8, 6, 3, stride=2, padding=2, output_padding=1,
                           dilation=2),                                   # (6, 24, 24)
        nn.BatchNorm2d(6),
        nn.Tanh(),
        nn.Dropout2d(0.2),
        nn.ConvTranspose2d(6, 4, (3, 2), stride=(1, 2), padding=(1, 0), groups=2,
                           bias=False),                                   # (4, 24, 48)
        nn.AdaptiveAvgPool2d(4),                                          # (4, 4, 4)
        nn.Flatten(),
        nn.Linear(64, 32),
        nn.Unflatten(1, (2, 4, 4)),
        nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1),  # (3, 8, 8)
        nn.LeakyReLU(),
        nn.Flatten(),
        nn.Linear(192, 5),
        nn.Softmax(dim=1),
    ).eval()
    gen = torch.Generator().manual_seed(9)
    init_weights(model, gen)
    randomise_batchnorm(model, gen)
    return model


def deconv_case(case_dir):
    export_model.export_sequential(deconv_model(), case_dir, class_labels(5), (3, 23, 23),
                                   IMAGENET_MEAN, IMAGENET_STD)
    return torch.randn(2, 3, 23, 23, generator=torch.Generator().manual_seed(10))


def fashion_case(case_dir):
    src = os.path.join(REPO, "models", "fashion")
    if not os.path.isfile(os.path.join(src, export_model.CONFIG_FILE)):
        raise Skip(f"{src} does not exist yet (tools/train_fashion.py writes it)")
    if not fashion_mnist.available():
        raise Skip(f"Fashion-MNIST not found in {fashion_mnist.data_dir()} "
                   "(apt-get install dataset-fashion-mnist)")
    os.makedirs(case_dir, exist_ok=True)
    for f in (export_model.CONFIG_FILE, export_model.WEIGHTS_FILE, export_model.LABELS_FILE):
        with open(os.path.join(src, f), "rb") as a, open(os.path.join(case_dir, f), "wb") as b:
            b.write(a.read())
    _, config, _ = export_model.load_model_dir(case_dir)
    images, _ = fashion_mnist.load("test")
    return export_model.normalize_pixels(images[:64], config)


CASES = collections.OrderedDict([
    ("resnet18", torchvision_case("resnet18", (3, 64, 64), 2, 18)),
    ("resnet34", torchvision_case("resnet34", (3, 32, 32), 1, 34)),
    ("resnet50", torchvision_case("resnet50", (3, 64, 64), 2, 50)),
    ("mobilenet_v2", torchvision_case("mobilenet_v2", (3, 64, 64), 2, 2)),
    ("layers", layers_case("F32")),
    ("layers_f16", layers_case("F16")),
    ("layers_bf16", layers_case("BF16")),
    ("layers_deconv", deconv_case),
    ("fashion", fashion_case),
])


def write_f32(path, t):
    t.detach().numpy().astype("<f4").tofile(path)


def generate(name, out_dir):
    case_dir = os.path.join(out_dir, name)
    t0 = time.time()
    x = CASES[name](case_dir).float().contiguous()                  # (N, C, H, W)
    model, config, _ = export_model.load_model_dir(case_dir)
    inp = config["input"]
    assert tuple(x.shape[1:]) == (inp["channels"], inp["height"], inp["width"])
    with torch.no_grad():
        expected = model(x)                                         # (N, K)
        # float64 rerun: how far float32 itself strays, to see the tolerance
        # leaves room for an engine that rounds differently
        reference = model.double()(x.double())
    assert expected.shape == (x.shape[0], config["num_classes"])
    write_f32(os.path.join(case_dir, "input.f32"), x)
    write_expected(case_dir, name, "input " + "x".join(str(d) for d in x.shape), expected,
                   reference, t0)


def write_expected(case_dir, name, what, expected, reference, t0):
    """expected.f32 and tolerance.txt (rtol RTOL, atol ATOL_FRACTION * max|expected|)
    for PyTorch's float32 answer, and a line on how far float32 strays from the
    float64 reference, as a share of that tolerance."""
    atol = ATOL_FRACTION * expected.abs().max().item()
    f32_err = ((expected.double() - reference).abs()
               / (atol + RTOL * reference.abs())).max().item()
    write_f32(os.path.join(case_dir, "expected.f32"), expected)
    with open(os.path.join(case_dir, "tolerance.txt"), "w") as f:
        f.write(f"{RTOL:g} {atol:.6g}\n")
    print(f"{name}: {what} -> {tuple(expected.shape)}, max|exp| "
          f"{expected.abs().max().item():.4g}, rtol {RTOL:g} atol {atol:.3g}, "
          f"float32 error {f32_err:.3f} of tolerance, {time.time() - t0:.1f} s", flush=True)


def cli(argv, doc, cases, generate):
    """A generator script's command line: OUT_DIR [CASE ...], every case by default;
    a case may raise Skip."""
    prog = os.path.basename(argv[0])
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print("\n\n".join(doc.split("\n\n")[1:3]).strip())
        print("cases: " + " ".join(cases))
        return 0 if len(argv) >= 2 else 2
    out_dir = argv[1]
    names = argv[2:] or list(cases)
    unknown = [n for n in names if n not in cases]
    if unknown:
        print(f"{prog}: unknown case(s) {unknown}; cases: {' '.join(cases)}", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.time()
    for name in names:
        try:
            generate(name, out_dir)
        except Skip as e:
            print(f"{name}: skipped: {e}", flush=True)
    print(f"generated in {time.time() - t0:.1f} s")
    return 0


def main(argv):
    return cli(argv, __doc__, CASES, generate)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
