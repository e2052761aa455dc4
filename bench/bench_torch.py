#!/usr/bin/python3
"""PyTorch peer of bench_engine: the same model directory, the same measurement.

    bench_torch.py [--threads N] [--iters K] [--warmup W] MODEL_DIR BATCH [SEQ]

Prints one line in bench_engine's format, with "torch" in place of "modeld":
    torch <name> batch=B median_ms=.. p10_ms=.. images_per_s=.. gflops=.. peak_pct=..
and for a BERT directory (config.json with model_type "bert"; SEQ required)
" seq=T" at the end, images_per_s then counting sequences.  A GAN generator
directory (kind "gan", no SEQ) times module(z, classes) on prepare.py's
gan_workload(): BATCH latents, classes i % num_classes when conditional.

PyTorch is set up at its best, as docs/PERFORMANCE.md describes:
Debian's torch links the system BLAS, so run.sh starts this with
LD_LIBRARY_PATH pointing at the OpenMP build of OpenBLAS and
OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = N (the pthread build fights torch's
OpenMP pool).  Here: torch.set_num_threads(N), model.eval(),
torch.inference_mode(); the module is the one load_model_dir() rebuilds from
the directory, i.e. the weights modeld runs.  Conv layers go through oneDNN
(mkldnn) as torch 1.13 chooses by default; nothing is traced or scripted,
because a server running a plain eager module is the peer we compare with.

A BERT runs prepare.py's workload through tests/bert_reference.py (the
golden tests' oracle, Hugging Face's module and key names) loaded from
model.safetensors: the encoder over the whole batch, then the MLM head on
the mask rows only (prepare.mlm_at_positions()).
"""

import argparse
import math
import os
import sys
import time

import torch

# no __pycache__ in the source tree (it is shipped whole in the tarball)
sys.dont_write_bytecode = True
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
import prepare  # noqa: E402  (also puts tools/ on sys.path)
import export_model  # noqa: E402

CORE_PEAK_GFLOPS, CORES = 116.5, 2  # as bench_engine: 233 GFLOP/s at 2 threads
AUTO_SECONDS = 2.0
MIN_ITERS, MAX_ITERS = 5, 2000


def percentile(sorted_ms, q):
    """Nearest rank, as bench_engine computes it."""
    i = max(0, min(len(sorted_ms) - 1, math.ceil(q * len(sorted_ms)) - 1))
    return sorted_ms[i]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=0, help="0: about 2 s worth")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("model_dir")
    p.add_argument("batch", type=int)
    p.add_argument("seq", type=int, nargs="?", help="sequence length, BERT only")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    bert = prepare.is_bert_dir(args.model_dir)
    if bert:
        if args.seq is None:
            p.error("a BERT directory needs SEQ")
        model, config = prepare.load_bert(args.model_dir)
        prepare.check_seq(config, args.seq)
        flops = prepare.bert_flops(config, args.seq)
        ids, positions = prepare.bert_workload(args.batch, args.seq)

        def forward():
            return prepare.mlm_at_positions(model, ids, positions)
    else:
        if args.seq is not None:
            p.error("SEQ is for BERT directories only")
        model, config, _ = export_model.load_model_dir(args.model_dir)
        if prepare.is_gan_config(config):
            flops = prepare.gan_flops(model, config)
            inputs = prepare.gan_workload(config, args.batch)
            if len(inputs) == 1:
                inputs = (inputs[0], None)
        else:
            shape = prepare.input_shape(config)
            flops = prepare.count_flops(model, shape)
            inputs = (torch.randn(args.batch, *shape,
                                  generator=torch.Generator().manual_seed(0)),)

        def forward():
            return model(*inputs)

    with torch.inference_mode():
        last = 0.0
        for i in range(max(args.warmup, 1 if args.iters == 0 else 0)):
            t0 = time.perf_counter()
            forward()
            last = (time.perf_counter() - t0) * 1e3
        iters = args.iters
        if iters == 0:
            iters = int(min(MAX_ITERS, max(MIN_ITERS, AUTO_SECONDS * 1e3 / max(last, 1e-3))))
        ms = []
        for _ in range(iters):
            t0 = time.perf_counter()
            forward()
            ms.append((time.perf_counter() - t0) * 1e3)
    ms.sort()
    median = percentile(ms, 0.5)
    gflops = flops * args.batch / (median * 1e6)
    peak = CORE_PEAK_GFLOPS * min(args.threads, CORES)
    name = os.path.basename(os.path.normpath(args.model_dir))
    print(f"torch {name} batch={args.batch} median_ms={median:.4f} "
          f"p10_ms={percentile(ms, 0.1):.4f} images_per_s={args.batch * 1e3 / median:.1f} "
          f"gflops={gflops:.2f} peak_pct={100 * gflops / peak:.1f} iters={iters} "
          f"threads={torch.get_num_threads()}" + (f" seq={args.seq}" if bert else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
