#!/bin/sh
# Golden tests: PyTorch (Debian's python3-torch) writes model directories with
# random or trained weights, inputs and its own outputs; the engine must agree within
# the tolerance written beside each case.  CNN cases run through golden_cnn, GAN
# generators through golden_gan, BERT cases through golden_bert, each family in a
# folder of its own.  Skips (77) where torch is not installed.
set -u
py=${TORCH_PYTHON:-/usr/bin/python3}
if ! "$py" -c 'import torch, torchvision' 2>/dev/null; then
    echo "SKIP: $py cannot import torch/torchvision (apt-get install python3-torch python3-torchvision)"
    exit 77
fi
golden="$top_srcdir/tests/golden"
fail=0

# run_family OUT GENERATOR CHECKER [DEPENDENCY ...]: regenerates OUT only when the
# generator or a dependency is newer than its stamp, then runs CHECKER on every case.
run_family() {
    out=$1 gen=$2 checker=$3
    shift 3
    stale=no
    [ -f "$out/.stamp" ] || stale=yes
    for f in "$gen" "$@"; do
        [ "$stale" = no ] && [ "$f" -nt "$out/.stamp" ] && stale=yes
    done
    if [ "$stale" = yes ]; then
        rm -rf "$out"
        OMP_NUM_THREADS=2 "$py" "$gen" "$out" || { echo "FAIL: generating $out"; fail=1; return; }
        touch "$out/.stamp"
    fi
    for case in "$out"/*/; do
        "$top_builddir/tests/$checker" "$case" || fail=1
    done
}

# CNNs: torchvision architectures, layer lists, the default model
run_family "$top_builddir/tests/golden-data" "$golden/gen_cnn_golden.py" golden_cnn \
    "$top_srcdir/models/fashion/model.safetensors"
# GAN generators: PyTorch's raw images for fixed latents and classes (the exporter
# writes these directories and the CNN generator lends its helpers)
run_family "$top_builddir/tests/golden-gan-data" "$golden/gen_gan_golden.py" golden_gan \
    "$golden/gen_cnn_golden.py" "$top_srcdir/tools/export_model.py"
# BERT: Hugging Face layout model directories and PyTorch's logits at mask positions
# (tests/bert_reference.py is the model)
run_family "$top_builddir/tests/golden-bert-data" "$golden/gen_bert_golden.py" golden_bert \
    "$top_srcdir/tests/bert_reference.py"
exit $fail
