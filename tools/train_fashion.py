#!/usr/bin/python3
"""Train modeld's default model, models/fashion, on Fashion-MNIST.

Reproducible on a plain Debian machine: the data come from the
dataset-fashion-mnist package, the seed fixes initialisation and data order,
and training uses two CPU threads.  The reported accuracies are measured on
the exported directory reloaded through load_model_dir(), i.e. on exactly the
files the daemon serves, and written to README.md next to them.
"""

import argparse
import os
import shlex
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)
import export_model  # noqa: E402
import fashion_mnist  # noqa: E402

REPO = os.path.dirname(TOOLS)


def build(dropout=0.25):
    # (N, 1, 28, 28) -> (N, 32, 14, 14) -> (N, 64, 7, 7) -> (N, 10)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(128, 10),
    )


def predict(model, x, batch=1000):
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(model(x[i:i + batch]).argmax(1))
    return torch.cat(out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join(REPO, "models", "fashion"),
                   help="model directory to write (default: models/fashion)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    command = " ".join(["/usr/bin/python3", "tools/train_fashion.py"]
                       + [shlex.quote(a) for a in sys.argv[1:]])

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_start = time.time()

    train_px, train_y = fashion_mnist.load("train")
    test_px, test_y = fashion_mnist.load("test")
    # Rounded so that config.json states exactly what training used.
    scaled = torch.from_numpy(train_px).double() / 255.0
    mean = round(scaled.mean().item(), 4)
    std = round(scaled.std().item(), 4)
    config_like = {"input": {"channels": 1, "height": 28, "width": 28,
                             "mean": [mean], "std": [std]}}
    x_train = export_model.normalize_pixels(train_px, config_like)   # (60000, 1, 28, 28)
    y_train = torch.from_numpy(train_y).long()                       # (60000,)
    y_test = torch.from_numpy(test_y).long()                         # (10000,)

    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = (len(x_train) + args.batch_size - 1) // args.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch)
    order_gen = torch.Generator().manual_seed(args.seed)

    t_train = time.time()
    cpu_train = time.process_time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x_train), generator=order_gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(perm), args.batch_size):
            idx = perm[i:i + args.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
            total += len(idx)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss_sum / total:.4f}, "
              f"running train acc {100 * correct / total:.2f}%, "
              f"{time.time() - t_train:.0f} s, {time.process_time() - cpu_train:.0f} s CPU",
              flush=True)
    train_seconds = time.time() - t_train
    train_cpu_seconds = time.process_time() - cpu_train

    export_model.export_sequential(model, args.out, fashion_mnist.CLASSES, (1, 28, 28),
                                   mean=[mean], std=[std])

    # Everything below measures the written files, not the in-memory model.
    served, config, labels = export_model.load_model_dir(args.out)
    train_acc = (predict(served, export_model.normalize_pixels(train_px, config))
                 == y_train).double().mean().item() * 100
    test_pred = predict(served, export_model.normalize_pixels(test_px, config))
    test_acc = (test_pred == y_test).double().mean().item() * 100
    per_class = [(test_pred[y_test == k] == k).double().mean().item() * 100
                 for k in range(len(labels))]
    total_seconds = time.time() - t_start
    print(f"exported {args.out}: train {train_acc:.2f}%, test {test_acc:.2f}%, "
          f"training {train_seconds:.0f} s, total {total_seconds:.0f} s")

    write_readme(args, command, config, labels, train_acc, test_acc, per_class,
                 train_seconds, train_cpu_seconds, total_seconds)
    if test_acc < 90.0:
        print("error: test accuracy below the 90% target", file=sys.stderr)
        return 1
    return 0


def write_readme(args, command, config, labels, train_acc, test_acc, per_class,
                 train_seconds, train_cpu_seconds, total_seconds):
    size = os.path.getsize(os.path.join(args.out, export_model.WEIGHTS_FILE))
    nparams = sum(t.numel() for t in build().parameters())
    rows = "\n".join(f"| {k} | {name} | {acc:.1f} |"
                     for k, (name, acc) in enumerate(zip(labels, per_class)))
    inp = config["input"]
    text = f"""# fashion — modeld's default model

A small CNN classifying 28×28 grayscale clothing images into the 10
Fashion-MNIST classes.  It was trained by this repository, from scratch, on
Debian's `dataset-fashion-mnist` package (Zalando's Fashion-MNIST, MIT
licence; 60,000 training and 10,000 test images), with
`tools/train_fashion.py`.  Nothing was downloaded.

## Accuracy

Measured on the files in this directory, reloaded through
`tools/export_model.py:load_model_dir` (PyTorch, float32):

| set | images | top-1 accuracy |
|---|---|---|
| training | 60,000 | {train_acc:.2f}% |
| test | 10,000 | **{test_acc:.2f}%** |

Per class, on the test set:

| index | label | accuracy % |
|---|---|---|
{rows}

`tests/http_accuracy.py` checks that the daemon serving this directory over
HTTP reaches the same accuracy as PyTorch.

## Architecture

`architecture: "layers"` in `config.json`, a plain `nn.Sequential`
({nparams:,} parameters, {size / 1e6:.1f} MB of F32 weights):

```
(N, 1, 28, 28)
Conv2d(1, 32, 3, padding=1) - BatchNorm2d(32) - ReLU - MaxPool2d(2)    -> (N, 32, 14, 14)
Conv2d(32, 64, 3, padding=1) - BatchNorm2d(64) - ReLU - MaxPool2d(2)   -> (N, 64, 7, 7)
Flatten - Linear(3136, 128) - ReLU - Dropout(0.25)                      -> (N, 128)
Linear(128, 10)                                                         -> (N, 10) logits
```

Input: the image converted to gray, resized to 28×28 ("{inp['resize']}"), then
`(pixel / 255 - {inp['mean'][0]}) / {inp['std'][0]}` (mean and standard
deviation of the training set).  Fashion-MNIST images are white garments on a
black background; photos of dark clothes on a light background should be
inverted first.

## Training

```
{command}
```

- seed {args.seed} (`torch.manual_seed`; a separate seeded generator fixes the
  order of the training images in every epoch)
- {args.epochs} epochs, batch {args.batch_size}, Adam with a one-cycle learning
  rate schedule peaking at {args.lr}, cross-entropy loss, no augmentation
- {args.threads} CPU threads (`torch.set_num_threads`), torch {torch.__version__}
- training took {train_cpu_seconds:.0f} s of CPU time and {train_seconds:.0f} s of wall time
  ({total_seconds:.0f} s including data loading, export and evaluation) on
  {os.cpu_count()} cores shared with other work (1-minute load average
  {os.getloadavg()[0]:.1f} when it finished)

The same command on another machine gives the same training procedure; the
last digits of the weights may differ between CPU kernels and torch versions.
"""
    with open(os.path.join(args.out, "README.md"), "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
