#!/usr/bin/python3
"""Make the benchmark's inputs: model directories and their ONNX exports.

    prepare.py resnet DIR ARCH        torchvision ARCH with random weights -> DIR
    prepare.py onnx MODEL_DIR BATCH OUT.onnx
                                      MODEL_DIR as ONNX (opset 14, fixed batch) for
                                      ONNX Runtime, plus OUT.json: name, input shape,
                                      FLOPs per sample

Every peer runs the very same weights: the ResNets go through
tools/export_model.py and the ONNX graph is exported from the module that
load_model_dir() rebuilds from the directory modeld reads.  Random weights are
enough for timing: nothing is data-dependent in a dense CNN, and the seed keeps
the files identical between runs.

The ONNX batch dimension is fixed, one file per batch size: that lets ONNX
Runtime fold shapes at session creation, its best configuration, and costs a
few seconds of export per row.

count_flops() is also bench_torch.py's, so both Python peers count what
engine_model_flops() counts: 2 per multiply-add of convolutions and linears.
"""

import json
import os
import sys

import torch
import torch.nn as nn

# no __pycache__ in the source tree (it is shipped whole in the tarball)
sys.dont_write_bytecode = True
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(BENCH), "tools"))
import export_model  # noqa: E402

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def count_flops(model, shape):
    """FLOPs of one sample of shape (C, H, W): 2 per multiply-add, conv + linear."""
    total = [0]

    def conv_hook(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total[0] += 2 * out[0].numel() * k

    def linear_hook(m, inp, out):
        total[0] += 2 * m.in_features * m.out_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    with torch.no_grad():
        model(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    return total[0]


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
    shape = input_shape(config)
    x = torch.zeros(batch, *shape)
    with torch.no_grad():
        torch.onnx.export(model, x, out_path, opset_version=14,
                          input_names=["input"], output_names=["logits"])
    meta = {"name": os.path.basename(os.path.normpath(model_dir)), "batch": batch,
            "shape": [batch, *shape], "flops_per_sample": count_flops(model, shape)}
    with open(os.path.splitext(out_path)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(meta, f)


def main(argv):
    if len(argv) == 3 and argv[0] == "resnet":
        make_resnet(argv[1], argv[2])
    elif len(argv) == 4 and argv[0] == "onnx":
        make_onnx(argv[1], int(argv[2]), argv[3])
    else:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
