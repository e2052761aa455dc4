#!/bin/sh
# Golden tests: PyTorch (Debian's python3-torch) writes model directories with
# random or trained weights, inputs and its own logits; the engine must agree within
# the tolerance written beside each case.  CNN cases run through golden_cnn, BERT
# cases through golden_bert.  Skips (77) where torch is not installed.
set -u
py=${TORCH_PYTHON:-/usr/bin/python3}
if ! "$py" -c 'import torch, torchvision' 2>/dev/null; then
    echo "SKIP: $py cannot import torch/torchvision (apt-get install python3-torch python3-torchvision)"
    exit 77
fi
out="$top_builddir/tests/golden-data"
gen="$top_srcdir/tests/golden/gen_cnn_golden.py"
# Regenerate only when the generator or the default model changed.
if [ ! -f "$out/.stamp" ] || [ "$gen" -nt "$out/.stamp" ] ||
   [ "$top_srcdir/models/fashion/model.safetensors" -nt "$out/.stamp" ]; then
    rm -rf "$out"
    OMP_NUM_THREADS=2 "$py" "$gen" "$out" || { echo "FAIL: golden generation"; exit 1; }
    touch "$out/.stamp"
fi
fail=0
for case in "$out"/*/; do
    "$top_builddir/tests/golden_cnn" "$case" || fail=1
done

# BERT: Hugging Face layout model directories and PyTorch's logits at mask positions
# (tests/bert_reference.py is the model), in a folder of their own.
bout="$top_builddir/tests/golden-bert-data"
bgen="$top_srcdir/tests/golden/gen_bert_golden.py"
if [ ! -f "$bout/.stamp" ] || [ "$bgen" -nt "$bout/.stamp" ] ||
   [ "$top_srcdir/tests/bert_reference.py" -nt "$bout/.stamp" ]; then
    rm -rf "$bout"
    OMP_NUM_THREADS=2 "$py" "$bgen" "$bout" || { echo "FAIL: BERT golden generation"; exit 1; }
    touch "$bout/.stamp"
fi
for case in "$bout"/*/; do
    "$top_builddir/tests/golden_bert" "$case" || fail=1
done
exit $fail
