#!/usr/bin/python3
"""Write and read modeld model directories (see docs/MODELS.md).

A model directory is config.json + model.safetensors + labels.txt.  This
module is the Python half of that contract: export_sequential() and
export_torchvision() write classifier directories, export_generator() and
export_dcgan() GAN generator directories, and load_model_dir() rebuilds the
PyTorch module from one so that tests can compute PyTorch's answer from the
very files the daemon serves (for a generator: a module called as
module(z, classes)).

Only plain nn.Sequential trees are exported as layer lists: their forward()
is known to run the children in order, which is what the daemon does.  A
custom module could do anything in forward(), so it is refused rather than
guessed at.  Every export is checked by rebuilding the module from the
written config and comparing outputs with the original.

This file is also the command-line exporter; run it with --help.  Loading a
.pth file here is the only place modeld's tooling unpickles anything, and it
uses torch.load(weights_only=True).
"""

import argparse
import collections
import json
import math
import os
import runpy
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
LABELS_FILE = "labels.txt"

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
RESIZE_MODES = ("stretch", "center_crop", "none")

TORCHVISION_ARCHS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2")
# The final layer of each torchvision architecture gives num_classes.
_TORCHVISION_HEAD = {
    "resnet18": "fc.weight", "resnet34": "fc.weight", "resnet50": "fc.weight",
    "mobilenet_v2": "classifier.1.weight",
}


class ExportError(ValueError):
    pass


# ---- layer table -------------------------------------------------------------
#
# One row per supported layer type: the PyTorch class, the constructor
# arguments written to config.json (exactly those listed in docs/MODELS.md;
# the daemon reads nothing else), which of them are required, and which are
# sizes (int or [h, w]).  _check_<type> functions refuse configurations the
# daemon does not implement.

_Layer = collections.namedtuple("_Layer", "cls args required sizes")

_CONV_ARGS = ("in_channels", "out_channels", "kernel_size", "stride", "padding",
              "dilation", "groups", "bias")
_SIZES = ("kernel_size", "stride", "padding", "dilation", "output_padding", "output_size")

LAYERS = {
    "Conv2d": _Layer(nn.Conv2d, _CONV_ARGS,
                     ("in_channels", "out_channels", "kernel_size"), _SIZES),
    "ConvTranspose2d": _Layer(nn.ConvTranspose2d, _CONV_ARGS + ("output_padding",),
                              ("in_channels", "out_channels", "kernel_size"), _SIZES),
    "BatchNorm2d": _Layer(nn.BatchNorm2d, ("num_features", "eps"), ("num_features",), ()),
    "BatchNorm1d": _Layer(nn.BatchNorm1d, ("num_features", "eps"), ("num_features",), ()),
    "Linear": _Layer(nn.Linear, ("in_features", "out_features", "bias"),
                     ("in_features", "out_features"), ()),
    "ReLU": _Layer(nn.ReLU, (), (), ()),
    "ReLU6": _Layer(nn.ReLU6, (), (), ()),
    "Sigmoid": _Layer(nn.Sigmoid, (), (), ()),
    "Tanh": _Layer(nn.Tanh, (), (), ()),
    "GELU": _Layer(nn.GELU, (), (), ()),
    "SiLU": _Layer(nn.SiLU, (), (), ()),
    "LeakyReLU": _Layer(nn.LeakyReLU, ("negative_slope",), (), ()),
    "ELU": _Layer(nn.ELU, ("alpha",), (), ()),
    "MaxPool2d": _Layer(nn.MaxPool2d, ("kernel_size", "stride", "padding", "ceil_mode"),
                        ("kernel_size",), _SIZES),
    "AvgPool2d": _Layer(nn.AvgPool2d, ("kernel_size", "stride", "padding", "ceil_mode",
                                       "count_include_pad"), ("kernel_size",), _SIZES),
    "AdaptiveAvgPool2d": _Layer(nn.AdaptiveAvgPool2d, ("output_size",), ("output_size",),
                                _SIZES),
    "Flatten": _Layer(nn.Flatten, (), (), ()),
    "Unflatten": _Layer(nn.Unflatten, ("unflattened_size",), ("unflattened_size",), ()),
    "Dropout": _Layer(nn.Dropout, (), (), ()),
    "Dropout2d": _Layer(nn.Dropout2d, (), (), ()),
    "Identity": _Layer(nn.Identity, (), (), ()),
    "Softmax": _Layer(nn.Softmax, (), (), ()),
}


def _pair(v):
    if isinstance(v, int):
        return (v, v)
    return tuple(int(x) for x in v)


def _size_json(v):
    """An int when both sides agree, else [h, w], as docs/MODELS.md allows."""
    h, w = _pair(v)
    return h if h == w else [h, w]


def _where(path):
    return "layers" + "".join(f"[{i}]" for i in path)


def _conv_padding(m, where):
    """Integer padding of a Conv2d, converting 'valid'/'same' where exact."""
    p = m.padding
    if isinstance(p, str):
        if p == "valid":
            return (0, 0)
        # 'same' (stride 1 only, PyTorch enforces that): total padding is
        # dilation*(k-1) per axis; PyTorch puts the odd pixel on the bottom
        # and right, which a symmetric integer padding cannot express.
        out = []
        for k, d in zip(m.kernel_size, m.dilation):
            total = d * (k - 1)
            if total % 2:
                raise ExportError(
                    f"{where}: Conv2d padding='same' with kernel {tuple(m.kernel_size)} and "
                    f"dilation {tuple(m.dilation)} pads asymmetrically; modeld supports "
                    "symmetric padding only (use an odd kernel or explicit padding)")
            out.append(total // 2)
        return tuple(out)
    return _pair(p)


def _check_conv(m, where, x):
    if m.padding_mode != "zeros":
        raise ExportError(f"{where}: {type(m).__name__} padding_mode={m.padding_mode!r} "
                          "is not supported (only 'zeros')")


def _check_pool(m, where, x):
    if isinstance(m, nn.MaxPool2d) and (_pair(m.dilation) != (1, 1) or m.return_indices):
        raise ExportError(f"{where}: MaxPool2d with dilation or return_indices is not supported")
    if isinstance(m, nn.AvgPool2d) and m.divisor_override is not None:
        raise ExportError(f"{where}: AvgPool2d divisor_override is not supported")


def _check_bn(m, where, x):
    if not m.affine or not m.track_running_stats or m.running_mean is None:
        raise ExportError(f"{where}: {type(m).__name__} needs affine=True and "
                          "track_running_stats=True (its running statistics are the weights)")
    want = 4 if isinstance(m, nn.BatchNorm2d) else 2
    if x.dim() != want:
        raise ExportError(f"{where}: {type(m).__name__} on a {x.dim()}-D input is not supported")


def _check_gelu(m, where, x):
    if m.approximate != "none":
        raise ExportError(f"{where}: GELU(approximate={m.approximate!r}) is not supported; "
                          "modeld implements the exact erf form (approximate='none')")


def _check_flatten(m, where, x):
    if m.start_dim != 1 or m.end_dim not in (-1, x.dim() - 1):
        raise ExportError(f"{where}: Flatten(start_dim={m.start_dim}, end_dim={m.end_dim}) "
                          "is not supported; only Flatten() (start_dim=1 to the end)")


def _check_unflatten(m, where, x):
    if m.dim not in (1, -1) or (m.dim == -1 and x.dim() != 2) or len(m.unflattened_size) != 3:
        raise ExportError(f"{where}: Unflatten must split dim 1 of an (N, F) tensor into "
                          f"[C, H, W]; got dim={m.dim}, size={tuple(m.unflattened_size)}")


def _check_softmax(m, where, x):
    dim = m.dim
    if dim is None:
        # PyTorch's implicit choice for 2-D and 4-D inputs is dim 1
        dim = 1
    if dim < 0:
        dim += x.dim()
    if dim != 1:
        raise ExportError(f"{where}: Softmax(dim={m.dim}) on a {x.dim()}-D input is not "
                          "supported; only over dim 1")


def _check_input_rank(m, where, x):
    want = 2 if isinstance(m, nn.Linear) else 4
    if x.dim() != want:
        raise ExportError(f"{where}: {type(m).__name__} on a {x.dim()}-D input is not "
                          f"supported (expected {want}-D)")


def _check_adaptive(m, where, x):
    if any(s is None for s in _tuple_or_int(m.output_size)):
        raise ExportError(f"{where}: AdaptiveAvgPool2d output_size with None is not supported")


def _tuple_or_int(v):
    return v if isinstance(v, tuple) else (v, v)


_CHECKS = {
    "Conv2d": (_check_conv, _check_input_rank),
    "ConvTranspose2d": (_check_conv, _check_input_rank),
    "BatchNorm2d": (_check_bn,),
    "BatchNorm1d": (_check_bn,),
    "Linear": (_check_input_rank,),
    "GELU": (_check_gelu,),
    "MaxPool2d": (_check_pool, _check_input_rank),
    "AvgPool2d": (_check_pool, _check_input_rank),
    "AdaptiveAvgPool2d": (_check_adaptive, _check_input_rank),
    "Flatten": (_check_flatten,),
    "Unflatten": (_check_unflatten,),
    "Softmax": (_check_softmax,),
}


def _arg_value(m, name, where):
    if name == "bias":
        return m.bias is not None
    if name == "padding" and isinstance(m, nn.Conv2d):
        return _size_json(_conv_padding(m, where))
    if name == "stride" and isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) and m.stride is None:
        return _size_json(m.kernel_size)
    if name == "unflattened_size":
        return [int(s) for s in m.unflattened_size]
    v = getattr(m, name)
    if name in _SIZES:
        return _size_json(v)
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v
    return float(v)


def _describe(seq, x, path):
    """(layer list, output) of an nn.Sequential run on x, child by child."""
    entries = []
    for i, (name, m) in enumerate(seq.named_children()):
        where = _where(path + (i,))
        if type(m) is nn.Sequential:
            layers, x = _describe(m, x, path + (i,))
            entry = {"type": "Sequential", "layers": layers}
        else:
            tname = type(m).__name__
            if tname not in LAYERS or type(m) is not LAYERS[tname].cls:
                raise ExportError(
                    f"{where}: module {type(m).__module__}.{type(m).__qualname__} "
                    f"('{name}') is not supported; supported: {', '.join(LAYERS)} and "
                    "nested nn.Sequential")
            for check in _CHECKS.get(tname, ()):
                check(m, where, x)
            entry = {"type": tname}
            for arg in LAYERS[tname].args:
                entry[arg] = _arg_value(m, arg, where)
            try:
                x = m(x)
            except RuntimeError as e:
                raise ExportError(f"{where}: {tname} fails on an input of shape "
                                  f"{tuple(x.shape)}: {e}") from None
        if name != str(i):
            entry = {"type": entry["type"], "name": name,
                     **{k: v for k, v in entry.items() if k != "type"}}
        entries.append(entry)
    return entries, x


# ---- building modules back from config.json ------------------------------------

def _build_layer(entry, where):
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        raise ExportError(f"{where}: each layer must be an object with a string 'type'")
    tname = entry["type"]
    args = {k: v for k, v in entry.items() if k not in ("type", "name")}
    if tname == "Sequential":
        layers = args.pop("layers", None)
        if args or not isinstance(layers, list):
            raise ExportError(f"{where}: Sequential takes exactly 'layers' (a list)")
        return _build_sequential(layers, where)
    if tname not in LAYERS:
        raise ExportError(f"{where}: unknown layer type {tname!r}")
    spec = LAYERS[tname]
    unknown = set(args) - set(spec.args)
    if unknown:
        raise ExportError(f"{where}: {tname} has unknown arguments {sorted(unknown)}")
    missing = [a for a in spec.required if a not in args]
    if missing:
        raise ExportError(f"{where}: {tname} needs {missing}")
    for k in list(args):
        if isinstance(args[k], list):
            args[k] = tuple(args[k])
    if tname == "Flatten":
        return nn.Flatten()
    if tname == "Unflatten":
        return nn.Unflatten(1, args["unflattened_size"])
    if tname == "Softmax":
        return nn.Softmax(dim=1)
    return spec.cls(**args)


def _build_sequential(layers, where="layers"):
    children = collections.OrderedDict()
    for i, entry in enumerate(layers):
        sub = f"{where}[{i}]"
        name = entry.get("name", str(i)) if isinstance(entry, dict) else str(i)
        if name in children:
            raise ExportError(f"{sub}: duplicate name {name!r}")
        children[name] = _build_layer(entry, sub)
    return nn.Sequential(children)


def _torchvision_model(arch, num_classes):
    import torchvision
    if arch not in TORCHVISION_ARCHS:
        raise ExportError(f"unknown torchvision architecture {arch!r}; "
                          f"supported: {', '.join(TORCHVISION_ARCHS)}")
    return getattr(torchvision.models, arch)(num_classes=num_classes)


def build_module(config):
    """An untrained nn.Module with the structure described by config (for a
    generator: its network alone, without the condition; build_generator()
    gives the whole)."""
    arch = config.get("architecture")
    if config.get("kind") == "gan" and arch == "dcgan":
        cond = config.get("condition") or {}
        if cond.get("type") == "embedding":
            raise ExportError("a DCGAN's input width depends on its embedding's: "
                              "use load_model_dir()")
        return _gan_net(config, int(config["num_classes"]) if cond else 0)
    if arch == "layers":
        layers = config.get("layers")
        if not isinstance(layers, list):
            raise ExportError("config: architecture 'layers' needs a 'layers' list")
        return _build_sequential(layers)
    return _torchvision_model(arch, int(config["num_classes"]))


# ---- writing -----------------------------------------------------------------

def _json_layers(layers, indent):
    pad = " " * indent
    lines = []
    for i, e in enumerate(layers):
        comma = "," if i + 1 < len(layers) else ""
        if e.get("type") == "Sequential":
            head = {k: v for k, v in e.items() if k != "layers"}
            lines.append(pad + json.dumps(head)[:-1] + ', "layers": [')
            lines.extend(_json_layers(e["layers"], indent + 2))
            lines.append(pad + "]}" + comma)
        else:
            lines.append(pad + json.dumps(e) + comma)
    return lines


def _config_text(config):
    """JSON with one layer per line: diffable and readable next to the code."""
    lines = ["{"]
    keys = [k for k in config if k != "layers"]
    for k in keys:
        comma = "," if (k != keys[-1] or "layers" in config) else ""
        lines.append(f"  {json.dumps(k)}: {json.dumps(config[k])}{comma}")
    if "layers" in config:
        lines.append('  "layers": [')
        lines.extend(_json_layers(config["layers"], 4))
        lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _input_config(input_shape, mean, std, resize, resize_shorter):
    if len(input_shape) != 3:
        raise ExportError(f"input_shape must be (C, H, W), got {input_shape}")
    c, h, w = (int(v) for v in input_shape)
    if c not in (1, 3):
        raise ExportError(f"input channels must be 1 or 3, got {c}")
    if not (1 <= h <= 4096 and 1 <= w <= 4096):
        raise ExportError(f"input height and width must be 1..4096, got {h}x{w}")

    def per_channel(v, default, what):
        v = [default] if v is None else [float(x) for x in v]
        if len(v) == 1:
            v = v * c
        if len(v) != c or not all(math.isfinite(x) for x in v):
            raise ExportError(f"{what} needs 1 or {c} finite numbers, got {v}")
        return v

    mean = per_channel(mean, 0.0, "mean")
    std = per_channel(std, 1.0, "std")
    if any(s <= 0 for s in std):
        raise ExportError(f"std must be positive, got {std}")
    if resize not in RESIZE_MODES:
        raise ExportError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
    inp = {"channels": c, "height": h, "width": w, "resize": resize}
    if resize == "center_crop":
        if resize_shorter is None or int(resize_shorter) < max(h, w):
            raise ExportError("resize 'center_crop' needs resize_shorter >= height and width "
                              f"(got {resize_shorter} for {h}x{w})")
        inp["resize_shorter"] = int(resize_shorter)
    elif resize_shorter is not None:
        raise ExportError("resize_shorter only applies to resize 'center_crop'")
    inp["mean"] = mean
    inp["std"] = std
    return inp


def _check_labels(labels, num_classes):
    labels = [str(s) for s in labels]
    if len(labels) != num_classes:
        raise ExportError(f"{len(labels)} labels for a model with {num_classes} classes")
    for i, s in enumerate(labels):
        if not s.strip() or "\n" in s or "\r" in s:
            raise ExportError(f"label {i} ({s!r}) is empty or contains a line break")
    return labels


def _weights(state_dict, dtype):
    if dtype not in DTYPES:
        raise ExportError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    out = {}
    for k, v in state_dict.items():
        if k.endswith("num_batches_tracked"):
            continue
        v = v.detach().cpu()
        out[k] = v.to(DTYPES[dtype]).contiguous() if v.is_floating_point() else v.contiguous()
    return out


def _write_dir(out_dir, config, weights, labels):
    os.makedirs(out_dir, exist_ok=True)
    safetensors_io.save_file(weights, os.path.join(out_dir, WEIGHTS_FILE),
                             metadata={"format": "pt"})
    with open(os.path.join(out_dir, CONFIG_FILE), "w", encoding="utf-8") as f:
        f.write(_config_text(config))
    if labels is not None:
        with open(os.path.join(out_dir, LABELS_FILE), "w", encoding="utf-8") as f:
            f.write("".join(s + "\n" for s in labels))
    elif os.path.exists(os.path.join(out_dir, LABELS_FILE)):
        os.remove(os.path.join(out_dir, LABELS_FILE))   # a stale one would be misleading


def _same_outputs(a, b, x):
    with torch.no_grad():
        ya, yb = a(x), b(x)
    return ya.shape == yb.shape and torch.allclose(ya, yb, rtol=1e-5, atol=1e-6)


def export_sequential(module, out_dir, labels, input_shape, mean=None, std=None,
                      resize="stretch", resize_shorter=None, dtype="F32"):
    """Write module (a tree of nn.Sequential) as a "layers" model directory.

    Returns the config dict written.  Raises ExportError for anything the
    daemon would not run exactly as PyTorch does.
    """
    if type(module) is not nn.Sequential:
        raise ExportError(
            f"export_sequential needs an nn.Sequential, got {type(module).__qualname__}; "
            "a custom forward() cannot be written as a layer list")
    inp = _input_config(input_shape, mean, std, resize, resize_shorter)
    was_training = module.training
    module.eval()
    try:
        x = torch.zeros(1, inp["channels"], inp["height"], inp["width"])
        with torch.no_grad():
            layers, y = _describe(module, x, ())
        if y.dim() != 2 or y.shape[1] < 1:
            raise ExportError(f"the network's output has shape {tuple(y.shape)}; "
                              "a classifier must end in (N, num_classes)")
        config = {"kind": "cnn", "architecture": "layers", "num_classes": int(y.shape[1]),
                  "input": inp, "layers": layers}
        labels = _check_labels(labels, config["num_classes"])

        state = module.state_dict()
        rebuilt = build_module(config).eval()
        rebuilt.load_state_dict(state, strict=True)
        probe = torch.randn(2, inp["channels"], inp["height"], inp["width"],
                            generator=torch.Generator().manual_seed(0))
        if not _same_outputs(module, rebuilt, probe):
            raise ExportError("internal: the module rebuilt from config.json computes "
                              "something else than the original")
        _write_dir(out_dir, config, _weights(state, dtype), labels)
    finally:
        module.train(was_training)
    return config


def _as_state_dict(obj):
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        if not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ExportError("weights are not a state_dict (name -> tensor)")
        if obj and all(k.startswith("module.") for k in obj):
            # saved from nn.DataParallel / DistributedDataParallel
            obj = {k[len("module."):]: v for k, v in obj.items()}
        return obj
    raise ExportError(f"weights must be an nn.Module or a state_dict, got {type(obj).__name__}")


def export_torchvision(name, state_dict_or_model, out_dir, labels, input_shape=(3, 224, 224),
                       mean=None, std=None, resize="stretch", resize_shorter=None, dtype="F32"):
    """Write a torchvision resnet18/34/50 or mobilenet_v2 as a model directory."""
    if name not in TORCHVISION_ARCHS:
        raise ExportError(f"unknown torchvision architecture {name!r}; "
                          f"supported: {', '.join(TORCHVISION_ARCHS)}")
    state = dict(_as_state_dict(state_dict_or_model))
    head = _TORCHVISION_HEAD[name]
    if head not in state or state[head].dim() != 2:
        raise ExportError(f"{name}: state_dict has no 2-D '{head}' to read num_classes from")
    num_classes = int(state[head].shape[0])
    inp = _input_config(input_shape, mean, std, resize, resize_shorter)
    if inp["channels"] != 3:
        raise ExportError(f"{name} takes 3-channel input, not {inp['channels']}")
    labels = _check_labels(labels, num_classes)

    model = _torchvision_model(name, num_classes).eval()
    _load_strict(model, state, name)
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, inp["height"], inp["width"]))
    except RuntimeError as e:
        raise ExportError(f"{name} cannot run on {inp['height']}x{inp['width']}: {e}") from None
    config = {"kind": "cnn", "architecture": name, "num_classes": num_classes, "input": inp}
    _write_dir(out_dir, config, _weights(state, dtype), labels)
    return config


# ---- generators (kind "gan") ---------------------------------------------------
#
# A generator directory holds the network (a layer list, or the DCGAN preset
# under its own key names) and, for a conditional generator, how a class id
# joins the latent: an embedding row (a tensor of its own in the checkpoint) or
# a one-hot vector, before or after z.  The network sees the concatenation as
# (N, F, 1, 1) when its first layer is a convolution-like one (DCGAN), else
# (N, F) (a Linear first); modeld treats both as one (F, 1, 1) value.

GAN_RANGES = ("tanh", "sigmoid")
COND_TYPES = ("embedding", "one_hot")
COND_ORDERS = ("latent_first", "label_first")
DEFAULT_COND_KEY = "label_emb.weight"
DCGAN_SIZE = 64

# first layers that take (N, C, H, W); anything else is given (N, F)
_SPATIAL_FIRST = ("Conv2d", "ConvTranspose2d", "BatchNorm2d", "MaxPool2d", "AvgPool2d",
                  "AdaptiveAvgPool2d")
# layers that take either rank, so they do not decide it
_ANY_RANK = ("ReLU", "ReLU6", "Sigmoid", "Tanh", "GELU", "SiLU", "LeakyReLU", "ELU",
             "Dropout", "Dropout2d", "Identity")


class DCGANGenerator(nn.Module):
    """The Generator of github.com/pytorch/examples dcgan/main.py: children
    main.0 .. main.13, input (N, nz, 1, 1), output (N, nc, 64, 64) in [-1, 1]."""

    def __init__(self, nz, ngf, nc):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, x):
        return self.main(x)


def dcgan_generator(nz, ngf, nc):
    """An untrained DCGANGenerator: nz input features (latent plus condition)."""
    return DCGANGenerator(int(nz), int(ngf), int(nc))


class GeneratorModule(nn.Module):
    """A generator as modeld runs it: module(z, classes) -> (N, C, H, W).

    net: the network (an nn.Sequential or a DCGANGenerator); embedding: the
    nn.Embedding of an "embedding" condition.  z is (N, latent_dim); classes
    (N) int64 class ids, or None when num_classes is 0."""

    def __init__(self, net, latent_dim, num_classes=0, cond_type=None, embedding=None,
                 label_first=False):
        super().__init__()
        self.net = net
        self.embedding = embedding
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.cond_type = cond_type
        self.label_first = bool(label_first)
        self.spatial_input = _spatial_input(net)

    def forward(self, z, classes=None):
        x = z
        if self.num_classes:
            if classes is None:
                raise ValueError("a conditional generator needs classes")
            if self.cond_type == "embedding":
                c = self.embedding(classes)
            else:
                c = nn.functional.one_hot(classes, self.num_classes).to(z.dtype)
            x = torch.cat([c, z] if self.label_first else [z, c], 1)
        if self.spatial_input:
            x = x[:, :, None, None]
        return self.net(x)


def _first_leaf(module):
    for m in module.modules():
        if type(m) is nn.Sequential or isinstance(m, DCGANGenerator):
            continue
        if type(m).__name__ not in _ANY_RANK:
            return m
    return None


def _spatial_input(net):
    first = _first_leaf(net)
    return first is not None and type(first).__name__ in _SPATIAL_FIRST


def _gan_net(config, cond_dim):
    """The untrained network of a gan config whose condition is cond_dim wide."""
    if config.get("architecture") == "dcgan":
        return dcgan_generator(int(config["latent_dim"]) + cond_dim, int(config["ngf"]),
                               int(config["output"]["channels"]))
    layers = config.get("layers")
    if not isinstance(layers, list):
        raise ExportError("config: architecture 'layers' needs a 'layers' list")
    return _build_sequential(layers)


def _condition(latent_dim, labels, condition, cond_module):
    """(config entries, cond_dim, embedding weight or None) for the arguments."""
    if condition is None:
        if labels is not None or cond_module is not None:
            raise ExportError("labels and cond_module belong to a conditional generator: "
                              "give condition too")
        return {}, 0, None
    if labels is None:
        raise ExportError("a conditional generator needs labels (one per class)")
    if not isinstance(condition, dict) or set(condition) - {"type", "key", "order"}:
        raise ExportError(f"condition must be a dict of type, key, order; got {condition!r}")
    num_classes = len(labels)
    labels = _check_labels(labels, num_classes)
    ctype = condition.get("type")
    order = condition.get("order", "latent_first")
    if ctype not in COND_TYPES:
        raise ExportError(f"condition type must be one of {COND_TYPES}, got {ctype!r}")
    if order not in COND_ORDERS:
        raise ExportError(f"condition order must be one of {COND_ORDERS}, got {order!r}")
    cond = {"type": ctype}
    if ctype == "one_hot":
        if cond_module is not None or "key" in condition:
            raise ExportError("a one_hot condition takes no cond_module and no key")
        weight, cond_dim = None, num_classes
    else:
        if type(cond_module) is not nn.Embedding or cond_module.num_embeddings != num_classes:
            raise ExportError(f"an embedding condition needs cond_module, an nn.Embedding of "
                              f"{num_classes} rows (one per label); got {cond_module!r}")
        if cond_module.max_norm is not None:
            raise ExportError("nn.Embedding(max_norm=...) renormalises rows at lookup; "
                              "modeld reads rows as stored")
        cond["key"] = str(condition.get("key", DEFAULT_COND_KEY))
        weight, cond_dim = cond_module.weight.detach(), cond_module.embedding_dim
    cond["order"] = order
    return {"num_classes": num_classes, "condition": cond}, cond_dim, weight


def _output_config(output, output_range):
    if len(output) != 3:
        raise ExportError(f"output must be (C, H, W), got {output}")
    c, h, w = (int(v) for v in output)
    if c not in (1, 3) or not (1 <= h <= 4096 and 1 <= w <= 4096):
        raise ExportError(f"output must have 1 or 3 channels and sides 1..4096, got {output}")
    if output_range not in GAN_RANGES:
        raise ExportError(f"output_range must be one of {GAN_RANGES}, got {output_range!r}")
    return {"channels": c, "height": h, "width": w, "range": output_range}


def _export_gan(net, config, cond_weight, labels, out_dir, dtype):
    """Checks that the module rebuilt from config computes what net (with the
    condition) does, then writes the directory."""
    state = dict(net.state_dict())
    cond = config.get("condition", {})
    if cond_weight is not None:
        if cond["key"] in state:
            raise ExportError(f"condition key {cond['key']!r} is also a network weight")
        state[cond["key"]] = cond_weight
    original = _generator_from(config, net, cond_weight)
    rebuilt = _load_generator(config, {k: v.float() for k, v in state.items()}, "export")
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(3, config["latent_dim"], generator=gen)
    classes = (torch.randint(0, config["num_classes"], (3,), generator=gen)
               if config.get("num_classes") else None)
    with torch.no_grad():
        ya, yb = original(z, classes), rebuilt(z, classes)
    out = config["output"]
    if tuple(ya.shape[1:]) != (out["channels"], out["height"], out["width"]):
        raise ExportError(f"the generator makes {tuple(ya.shape[1:])}, output says "
                          f"{(out['channels'], out['height'], out['width'])}")
    if ya.shape != yb.shape or not torch.allclose(ya, yb, rtol=1e-5, atol=1e-6):
        raise ExportError("internal: the generator rebuilt from config.json computes "
                          "something else than the original")
    _write_dir(out_dir, config, _weights(state, dtype), labels)
    return config


def _generator_from(config, net, cond_weight):
    cond = config.get("condition", {})
    emb = None
    if cond.get("type") == "embedding":
        emb = nn.Embedding.from_pretrained(cond_weight.float(), freeze=True)
    return GeneratorModule(net, config["latent_dim"], config.get("num_classes", 0),
                           cond.get("type"), emb, cond.get("order") == "label_first").eval()


def _load_generator(config, tensors, where):
    """A GeneratorModule from a gan config and its checkpoint's tensors."""
    tensors = dict(tensors)
    cond = config.get("condition") or {}
    weight = None
    if cond.get("type") == "embedding":
        weight = tensors.pop(cond["key"], None)
        if weight is None or weight.dim() != 2 or weight.shape[0] != config["num_classes"]:
            raise ExportError(f"{where}: no ({config['num_classes']}, E) embedding "
                              f"{cond['key']!r}")
    cond_dim = (weight.shape[1] if weight is not None
                else int(config["num_classes"]) if cond.get("type") == "one_hot" else 0)
    net = _gan_net(config, cond_dim)
    _load_strict(net, tensors, where)
    return _generator_from(config, net.eval(), weight)


def export_generator(model_sequential, out_dir, latent_dim, output, output_range="tanh",
                     labels=None, condition=None, cond_module=None, dtype="F32"):
    """Write a generator whose network is an nn.Sequential of standard layers
    (architecture "layers") as a model directory; returns the config written.

    latent_dim: z's width; output: (C, H, W) the network must produce;
    output_range: "tanh" (values in [-1, 1]) or "sigmoid" ([0, 1]).
    Conditional generators give labels (one per class), condition (a dict as
    in config.json: {"type": "embedding" | "one_hot", "key": tensor name
    (embedding only, default "label_emb.weight"), "order": "latent_first"
    (default) | "label_first"}) and, for an embedding, cond_module (the
    nn.Embedding).  The network's input is then [z, cond] (or [cond, z]).
    """
    if type(model_sequential) is not nn.Sequential:
        raise ExportError("export_generator needs an nn.Sequential network, got "
                          f"{type(model_sequential).__qualname__}; for the DCGAN preset use "
                          "export_dcgan()")
    latent_dim = int(latent_dim)
    entries, cond_dim, cond_weight = _condition(latent_dim, labels, condition, cond_module)
    out = _output_config(output, output_range)
    was_training = model_sequential.training
    model_sequential.eval()
    try:
        f = latent_dim + cond_dim
        x = (torch.zeros(1, f, 1, 1) if _spatial_input(model_sequential)
             else torch.zeros(1, f))
        with torch.no_grad():
            layers, _ = _describe(model_sequential, x, ())
        config = {"kind": "gan", "architecture": "layers", "latent_dim": latent_dim,
                  **entries, "output": out, "layers": layers}
        return _export_gan(model_sequential, config, cond_weight,
                           None if labels is None else list(labels), out_dir, dtype)
    finally:
        model_sequential.train(was_training)


def export_dcgan(generator, out_dir, latent_dim, ngf, output_channels=3, labels=None,
                 condition=None, cond_module=None, dtype="F32"):
    """Write a PyTorch-examples DCGAN Generator (a module whose `main` holds the
    14 layers, keys main.0.weight ...) as architecture "dcgan": 64x64 images,
    output range tanh.  The condition arguments are export_generator's; the
    first ConvTranspose2d then takes latent_dim + the condition's width."""
    latent_dim = int(latent_dim)
    entries, cond_dim, cond_weight = _condition(latent_dim, labels, condition, cond_module)
    out = _output_config((output_channels, DCGAN_SIZE, DCGAN_SIZE), "tanh")
    want = dcgan_generator(latent_dim + cond_dim, ngf, output_channels)
    got = getattr(generator, "main", None)
    if (type(got) is not nn.Sequential or len(got) != len(want.main) or
            any(type(a) is not type(b) for a, b in zip(got, want.main))):
        raise ExportError("export_dcgan needs a module whose `main` is the DCGAN "
                          "Generator's nn.Sequential (ConvTranspose2d, BatchNorm2d, ReLU x 4, "
                          "then ConvTranspose2d, Tanh)")
    have = {k: tuple(v.shape) for k, v in generator.state_dict().items()}
    need = {k: tuple(v.shape) for k, v in want.state_dict().items()}
    if have != need:
        diff = sorted(set(have.items()) ^ set(need.items()))[:4]
        raise ExportError(f"the generator's weights are not those of DCGAN(nz={latent_dim} + "
                          f"{cond_dim}, ngf={ngf}, nc={output_channels}): {diff}")
    for a, b in zip(got, want.main):
        if isinstance(a, nn.ConvTranspose2d) and (a.stride, a.padding, a.output_padding,
                                                   a.dilation, a.groups) != (
                b.stride, b.padding, b.output_padding, b.dilation, b.groups):
            raise ExportError(f"{a}: not the DCGAN's ConvTranspose2d ({b})")
    for m in got:
        if isinstance(m, nn.BatchNorm2d):
            _check_bn(m, "main", torch.zeros(1, 1, 1, 1))
    config = {"kind": "gan", "architecture": "dcgan", "latent_dim": latent_dim, **entries,
              "output": out, "ngf": int(ngf)}
    was_training = generator.training
    generator.eval()
    try:
        return _export_gan(generator, config, cond_weight,
                           None if labels is None else list(labels), out_dir, dtype)
    finally:
        generator.train(was_training)


# ---- reading -----------------------------------------------------------------

def _load_strict(model, state, what):
    """load_state_dict(strict=True), tolerating absent num_batches_tracked."""
    state = dict(state)
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros_like(v)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ExportError(f"{what}: weights do not match the architecture: {e}") from None


def read_labels(path):
    with open(path, encoding="utf-8") as f:
        labels = f.read().split("\n")
    if labels and labels[-1] == "":
        labels.pop()
    return labels


def load_model_dir(path):
    """(module in eval mode with float32 weights, config dict, labels list).

    A classifier's module maps (N, C, H, W) inputs to logits; a generator's
    (kind "gan") is a GeneratorModule called as module(z, classes), classes
    None for an unconditional one, and its labels list is empty then."""
    with open(os.path.join(path, CONFIG_FILE), encoding="utf-8") as f:
        config = json.load(f)
    kind = config.get("kind")
    if kind not in ("cnn", "gan"):
        raise ExportError(f"{path}: kind {kind!r} is neither 'cnn' nor 'gan'")
    num_classes = config.get("num_classes", 0 if kind == "gan" else None)
    labels = read_labels(os.path.join(path, LABELS_FILE)) if num_classes else []
    if len(labels) != num_classes:
        raise ExportError(f"{path}: {len(labels)} labels, num_classes is {num_classes}")
    tensors, _ = safetensors_io.load_file(os.path.join(path, WEIGHTS_FILE))
    tensors = {k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()}
    where = os.path.join(path, WEIGHTS_FILE)
    if kind == "gan":
        return _load_generator(config, tensors, where), config, labels
    model = build_module(config)
    _load_strict(model, tensors, where)
    return model.eval(), config, labels


def normalize_pixels(pixels, config):
    """The engine's input tensor for uint8 pixels already at the model's size.

    pixels: (N, H, W) or (N, C, H, W) uint8, numpy or torch.
    returns (N, C, H, W) float32: (pixel / 255 - mean) / std, as the daemon does.
    """
    x = torch.as_tensor(pixels)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    inp = config["input"]
    c = inp["channels"]
    if tuple(x.shape[1:]) != (c, inp["height"], inp["width"]):
        raise ExportError(f"pixels of shape {tuple(x.shape)} do not match the model input "
                          f"({c}, {inp['height']}, {inp['width']})")
    mean = torch.tensor(inp.get("mean", [0.0] * c), dtype=torch.float32).view(1, c, 1, 1)
    std = torch.tensor(inp.get("std", [1.0] * c), dtype=torch.float32).view(1, c, 1, 1)
    return ((x.float() / 255.0) - mean) / std


# ---- command line ------------------------------------------------------------

_EPILOG = """\
examples:
  %(prog)s --torchvision resnet18 --weights resnet18.pth --labels imagenet.txt \\
      --out models/r18 --height 224 --width 224 --resize center_crop --resize-shorter 256 \\
      --mean 0.485 0.456 0.406 --std 0.229 0.224 0.225

  %(prog)s --sequential-script net.py --weights net.pth --labels classes.txt \\
      --out models/net --channels 1 --height 28 --width 28 --mean 0.286 --std 0.353

--weights is read with torch.load(weights_only=True) and must hold a state_dict
(a dict under "state_dict" or "model", or a "module."-prefixed one, is accepted
too).  A --sequential-script file defines build(), returning an nn.Sequential of
the layers listed in docs/MODELS.md; nothing else in the script is used.
The output directory holds config.json, model.safetensors and labels.txt.
"""


def _parse_args(argv):
    p = argparse.ArgumentParser(
        prog="export_model.py",
        description="Write a modeld model directory (docs/MODELS.md) from PyTorch weights.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--torchvision", metavar="NAME", choices=TORCHVISION_ARCHS,
                     help="torchvision architecture: " + ", ".join(TORCHVISION_ARCHS))
    src.add_argument("--sequential-script", metavar="FILE.py",
                     help="Python file whose build() returns the nn.Sequential to export")
    p.add_argument("--weights", metavar="FILE.pth",
                   help="state_dict saved with torch.save (required with --torchvision)")
    p.add_argument("--out", required=True, metavar="DIR", help="model directory to write")
    p.add_argument("--labels", required=True, metavar="FILE",
                   help="class labels, one per line, line i = class i")
    p.add_argument("--channels", type=int, metavar="C", help="1 or 3 (default 3 for torchvision)")
    p.add_argument("--height", type=int, metavar="H", help="input height (torchvision: 224)")
    p.add_argument("--width", type=int, metavar="W", help="input width (torchvision: 224)")
    p.add_argument("--mean", type=float, nargs="+", metavar="M",
                   help="per-channel mean of pixel/255 (one value or one per channel; default 0)")
    p.add_argument("--std", type=float, nargs="+", metavar="S",
                   help="per-channel std of pixel/255 (default 1)")
    p.add_argument("--resize", choices=RESIZE_MODES, default="stretch",
                   help="how the daemon fits images to H x W (default: stretch)")
    p.add_argument("--resize-shorter", type=int, metavar="N",
                   help="with --resize center_crop: shorter side before the crop, e.g. 256")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="F32",
                   help="weight storage type (default F32)")
    args = p.parse_args(argv)
    if args.torchvision and not args.weights:
        p.error("--torchvision needs --weights")
    if args.sequential_script and None in (args.channels, args.height, args.width):
        p.error("--sequential-script needs --channels, --height and --width")
    return args


def _load_pth(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch reports unpickling refusals with several types
        raise ExportError(f"{path}: cannot load as a state_dict ({e})") from None


def main(argv=None):
    args = _parse_args(argv)
    try:
        labels = read_labels(args.labels)
        if args.torchvision:
            shape = (args.channels or 3, args.height or 224, args.width or 224)
            config = export_torchvision(args.torchvision, _load_pth(args.weights), args.out,
                                        labels, shape, args.mean, args.std, args.resize,
                                        args.resize_shorter, args.dtype)
        else:
            build = runpy.run_path(args.sequential_script).get("build")
            if not callable(build):
                raise ExportError(f"{args.sequential_script} defines no build() function")
            module = build()
            if args.weights:
                if not isinstance(module, nn.Module):
                    raise ExportError("build() did not return an nn.Module")
                _load_strict(module, _as_state_dict(_load_pth(args.weights)), args.weights)
            config = export_sequential(module, args.out, labels,
                                       (args.channels, args.height, args.width), args.mean,
                                       args.std, args.resize, args.resize_shorter, args.dtype)
    except (ExportError, OSError, safetensors_io.SafetensorsError) as e:
        print(f"export_model.py: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {config['architecture']}, {config['num_classes']} classes, "
          f"{args.dtype} weights")
    return 0


if __name__ == "__main__":
    sys.exit(main())
