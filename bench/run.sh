#!/bin/sh
# run.sh — modeld's engine against PyTorch and ONNX Runtime, one Markdown table.
#
# `make benchmark` runs this from the build directory (it builds bench/bench_engine
# first); by hand:  BENCH_ENGINE=/path/to/build/bench/bench_engine bench/run.sh
# (BENCH_CNN, the old name, is still read)
#
# What it does, and why:
#   1. Makes the inputs in a scratch directory (BENCH_DIR, default
#      $TMPDIR/modeld-bench, reused between runs): ResNet-50 and ResNet-18 with
#      random weights through tools/export_model.py, BERT-base with random
#      weights as a Hugging Face directory (prepare.py bert), the PyTorch
#      examples DCGAN generator (nz 100, ngf 64, 3x64x64) with random weights
#      (prepare.py dcgan), and one ONNX file per row for ONNX Runtime, exported
#      from the same weights.  The default models are read from models/fashion
#      and models/fashion-gan in the source tree.  A BERT row times BATCH
#      sequences of SEQ tokens, no padding, MLM logits at one [MASK] per
#      sequence; a GAN row BATCH images generated from N(0,1) latents (classes
#      i % num_classes for a conditional generator) (prepare.py's docstring has
#      the workloads and their FLOP counts).
#   2. For every row, runs the three peers one after another, BENCH_ROUNDS times
#      (default 3), rotating which goes first: the machines are shared and noisy,
#      so a ratio only means something when both sides saw the same minute
#      (docs/PERFORMANCE.md).  Each run prints its own median.
#   3. Keeps, per peer and row, the best of the rounds' medians (BENCH_AGG=median
#      takes their median instead) and prints the table; the raw lines stay in
#      $BENCH_DIR/raw.txt and the table in $BENCH_DIR/results.md.
#
# Every peer gets BENCH_THREADS threads (default 2, the machine's cores):
#   modeld  bench_engine --threads N (engine_set_blas_threads, once)
#   torch   /usr/bin/python3 with the OpenMP OpenBLAS, OMP/OPENBLAS_NUM_THREADS=N,
#           torch.set_num_threads(N)
#   ort     npm onnxruntime-node 1.30.0 in MODELD_ORT_DIR (default /tmp/modeld-ort,
#           outside the repository; installed there if missing), intra-op N, inter-op 1
# A peer that cannot run is left out with a message; its columns read "—".
# About 12 minutes on 2 quiet cores with the default rows (half of it the BERT rows),
# up to 25 on a busy machine; the first run spends about 2 more making the BERT inputs.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
BENCH_DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/modeld-bench}
BENCH_ENGINE=${BENCH_ENGINE:-${BENCH_CNN:-./bench/bench_engine}}
BENCH_ROUNDS=${BENCH_ROUNDS:-3}
BENCH_THREADS=${BENCH_THREADS:-2}
BENCH_AGG=${BENCH_AGG:-best}
BENCH_WARMUP=${BENCH_WARMUP:-2}
# model:batch pairs; the model is resnet50, resnet18, fashion, bert-base@SEQ, dcgan
# or fashion-gan
BENCH_ROWS=${BENCH_ROWS:-"resnet50:1 resnet50:16 resnet18:1 fashion:1 fashion:64
    bert-base@128:1 bert-base@128:8 bert-base@16:1 bert-base@16:8
    dcgan:1 dcgan:64 fashion-gan:64"}
PY=${BENCH_PYTHON:-/usr/bin/python3}
MODELD_ORT_DIR=${MODELD_ORT_DIR:-/tmp/modeld-ort}
OPENBLAS_OPENMP=${OPENBLAS_OPENMP:-/usr/lib/x86_64-linux-gnu/openblas-openmp}
# the default model's directory (the "fashion" rows); its name in the table stays "fashion"
BENCH_FASHION_DIR=${BENCH_FASHION_DIR:-$top/models/fashion}
# the default generator's directory (the "fashion-gan" rows)
BENCH_FASHION_GAN_DIR=${BENCH_FASHION_GAN_DIR:-$top/models/fashion-gan}
export MODELD_ORT_DIR

say() { printf 'bench: %s\n' "$*" >&2; }

# ---- peers available? ----------------------------------------------------------
if [ ! -x "$BENCH_ENGINE" ]; then
    say "no bench_engine at '$BENCH_ENGINE': run 'make benchmark' in a build directory, or set BENCH_ENGINE"
    exit 1
fi
have_torch=yes
if ! "$PY" -c 'import torch, torchvision' 2>/dev/null; then
    say "PyTorch not found for $PY: apt-get install python3-torch python3-torchvision"
    say "(the ResNet, BERT and DCGAN rows need it to make their weights: only the fashion and"
    say "fashion-gan rows will run, modeld alone)"
    have_torch=no
fi
if [ ! -d "$OPENBLAS_OPENMP" ]; then
    say "$OPENBLAS_OPENMP missing: apt-get install libopenblas0-openmp (PyTorch will run with"
    say "the default pthread OpenBLAS, which fights its OpenMP threads: its times will be poor)"
fi
have_ort=yes
if [ "$have_torch" = no ]; then
    have_ort=no
elif ! "$PY" -c 'import onnx' 2>/dev/null; then
    say "python3-onnx missing (needed to export ONNX): apt-get install python3-onnx; skipping ONNX Runtime"
    have_ort=no
elif ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    say "node/npm not found: apt-get install nodejs npm; skipping ONNX Runtime"
    have_ort=no
elif [ ! -d "$MODELD_ORT_DIR/node_modules/onnxruntime-node" ]; then
    say "installing onnxruntime-node@1.30.0 into $MODELD_ORT_DIR"
    mkdir -p "$MODELD_ORT_DIR"
    [ -f "$MODELD_ORT_DIR/package.json" ] || echo '{"name":"modeld-ort","private":true}' \
        >"$MODELD_ORT_DIR/package.json"
    # the variable stops its install script from fetching GPU binaries (that fails
    # here); the CPU library ships inside the package
    if ! (cd "$MODELD_ORT_DIR" && ONNXRUNTIME_NODE_INSTALL=skip \
            npm install --no-audit --no-fund onnxruntime-node@1.30.0 >&2); then
        say "npm install failed; skipping ONNX Runtime"
        have_ort=no
    fi
fi

# ---- inputs ----------------------------------------------------------------------
mkdir -p "$BENCH_DIR/onnx"
# a row's name is its model, and for a BERT the sequence length: bert-base@128
model_dir() {
    case $1 in
    fashion) echo "$BENCH_FASHION_DIR" ;;
    fashion-gan) echo "$BENCH_FASHION_GAN_DIR" ;;
    *) echo "$BENCH_DIR/${1%%@*}" ;;
    esac
}
seq_of() {
    case $1 in
    *@*) echo "${1#*@}" ;;
    esac
}
rows=
for row in $BENCH_ROWS; do
    name=${row%%:*} batch=${row#*:}
    dir=$(model_dir "$name")
    seq=$(seq_of "$name")
    case $name in
    bert-base@*)
        case $seq in
        '' | *[!0-9]*) say "bad sequence length in '$row' (bert-base@SEQ:BATCH)"; exit 1 ;;
        esac
        if [ ! -f "$dir/model.safetensors" ]; then
            if [ "$have_torch" = no ]; then
                say "skipping $row: no PyTorch to make bert-base"
                continue
            fi
            say "making $dir (random weights)"
            "$PY" "$here/prepare.py" bert "$dir" >&2
        fi
        ;;
    *@*) say "unknown model '$name' in BENCH_ROWS"; exit 1 ;;
    resnet*)
        if [ ! -f "$dir/model.safetensors" ]; then
            if [ "$have_torch" = no ]; then
                say "skipping $row: no PyTorch to make $name"
                continue
            fi
            say "making $dir (random weights)"
            "$PY" "$here/prepare.py" resnet "$dir" "$name" >&2
        fi
        ;;
    dcgan)
        if [ ! -f "$dir/model.safetensors" ]; then
            if [ "$have_torch" = no ]; then
                say "skipping $row: no PyTorch to make dcgan"
                continue
            fi
            say "making $dir (random weights)"
            "$PY" "$here/prepare.py" dcgan "$dir" >&2
        fi
        ;;
    fashion)
        if [ ! -f "$dir/model.safetensors" ]; then
            say "skipping $row: $dir is missing (tools/train_fashion.py makes it)"
            continue
        fi
        ;;
    fashion-gan)
        if [ ! -f "$dir/model.safetensors" ]; then
            say "skipping $row: $dir has no model.safetensors (tools/gan/train_gan.py makes it)"
            continue
        fi
        ;;
    *) say "unknown model '$name' in BENCH_ROWS"; exit 1 ;;
    esac
    if [ "$have_ort" = yes ]; then
        onnx=$BENCH_DIR/onnx/$name.b$batch.onnx
        # re-export when the weights changed (a retrained default model)
        if [ ! -f "$onnx" ] || [ -n "$(find "$dir/model.safetensors" -newer "$onnx")" ]; then
            say "exporting $onnx"
            if [ -n "$seq" ]; then
                "$PY" "$here/prepare.py" onnx-bert "$dir" "$batch" "$seq" "$onnx" >&2 || rm -f "$onnx"
            else
                "$PY" "$here/prepare.py" onnx "$dir" "$batch" "$onnx" >&2 || rm -f "$onnx"
            fi
        fi
    fi
    rows="$rows $row"
done

# ---- interleaved runs --------------------------------------------------------------
raw=$BENCH_DIR/raw.txt
: >"$raw"
run_peer() { # peer name batch
    dir=$(model_dir "$2")
    # the sequence length, for a BERT row, is every peer's last argument
    seq=$(seq_of "$2")
    common="--threads $BENCH_THREADS --warmup $BENCH_WARMUP"
    case $1 in
    modeld)
        # shellcheck disable=SC2086
        "$BENCH_ENGINE" $common "$dir" "$3" $seq ;;
    torch)
        [ "$have_torch" = yes ] || return 0
        # shellcheck disable=SC2086
        LD_LIBRARY_PATH=$OPENBLAS_OPENMP${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
            OMP_NUM_THREADS=$BENCH_THREADS OPENBLAS_NUM_THREADS=$BENCH_THREADS \
            "$PY" "$here/bench_torch.py" $common "$dir" "$3" $seq ;;
    ort)
        onnx=$BENCH_DIR/onnx/$2.b$3.onnx
        [ "$have_ort" = yes ] && [ -f "$onnx" ] || return 0
        # shellcheck disable=SC2086
        node "$here/bench_ort.mjs" $common "$onnx" "$3" $seq ;;
    esac
}
start=$(date +%s)
loadavg() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown; }
load_start=$(loadavg)
say "rows:$rows; $BENCH_ROUNDS rounds, $BENCH_THREADS threads; raw lines in $raw"
for row in $rows; do
    name=${row%%:*} batch=${row#*:}
    r=0
    while [ "$r" -lt "$BENCH_ROUNDS" ]; do
        case $((r % 3)) in
        0) order="modeld torch ort" ;;
        1) order="torch ort modeld" ;;
        *) order="ort modeld torch" ;;
        esac
        for peer in $order; do
            if line=$(run_peer "$peer" "$name" "$batch"); then
                # the row's name, whatever the directory is called
                [ -n "$line" ] && line=$(echo "$line" | awk -v n="$name" '{ $2 = n; print }') &&
                    { echo "$line" >>"$raw"; say "$line"; }
            else
                say "$peer $name batch=$batch failed"
            fi
        done
        r=$((r + 1))
    done
done

# ---- the table ----------------------------------------------------------------------
table() {
    echo "| workload | modeld ms | items/s | GFLOP/s | % peak | PyTorch ms | ratio vs PyTorch | ORT ms | ratio vs ORT |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for row in $rows; do
        name=${row%%:*} batch=${row#*:}
        awk -v name="$name" -v batch="batch=$batch" -v agg="$BENCH_AGG" '
            function val(key,   i, kv) {
                for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) return kv[2] + 0 }
                return -1
            }
            $2 == name && $3 == batch { n[$1]++; ms[$1, n[$1]] = val("median_ms"); fl[$1, n[$1]] = val("gflops")
                                        pk[$1, n[$1]] = val("peak_pct") }
            # best of the rounds, or their median; the GFLOP/s that goes with it
            function pick(p,   i, j, t, u, v, k) {
                if (!n[p]) return -1
                for (i = 1; i <= n[p]; i++) for (j = i + 1; j <= n[p]; j++)
                    if (ms[p, j] < ms[p, i]) { t = ms[p, i]; ms[p, i] = ms[p, j]; ms[p, j] = t
                                               u = fl[p, i]; fl[p, i] = fl[p, j]; fl[p, j] = u
                                               v = pk[p, i]; pk[p, i] = pk[p, j]; pk[p, j] = v }
                k = agg == "median" ? int((n[p] + 1) / 2) : 1
                sel_fl[p] = fl[p, k]; sel_pk[p] = pk[p, k]
                return ms[p, k]
            }
            function fmt(x) { return x < 0 ? "—" : x < 10 ? sprintf("%.3f", x) : sprintf("%.1f", x) }
            function ratio(a, b) { return (a < 0 || b < 0) ? "—" : sprintf("%.2f×", a / b) }
            END {
                label = name == "resnet50" ? "ResNet-50 224×224" : name == "resnet18" ? "ResNet-18 224×224" \
                      : name == "fashion" ? "Fashion-MNIST CNN" \
                      : name == "dcgan" ? "DCGAN 64×64×3 (nz 100, ngf 64)" \
                      : name == "fashion-gan" ? "Fashion GAN (default)" \
                      : name ~ /^bert-base@/ ? "BERT-base seq " substr(name, 11) : name
                sub(/batch=/, "", batch)
                m = pick("modeld"); t = pick("torch"); o = pick("ort")
                printf "| %s batch %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", label, batch, fmt(m),
                    m < 0 ? "—" : sprintf("%.0f", batch * 1000 / m),
                    m < 0 ? "—" : sprintf("%.1f", sel_fl["modeld"]),
                    m < 0 ? "—" : sprintf("%.0f%%", sel_pk["modeld"]),
                    fmt(t), ratio(t, m), fmt(o), ratio(o, m)
            }' "$raw"
    done
    echo
    echo "Median of each run, $BENCH_AGG of $BENCH_ROUNDS interleaved rounds; $BENCH_THREADS thread(s) each;" \
        "ratio = peer ms / modeld ms (> 1: modeld faster); % peak of 116.5 GFLOP/s FP32 per core used." \
        "items/s: images (classified, or generated for the GAN rows), or for BERT sequences" \
        "(MLM logits at one [MASK] each, no padding)." \
        "Load average (1/5/15 min) at start $load_start, at end $load_end: above ~1 on 2 cores," \
        "someone else was running and the times are inflated."
}
load_end=$(loadavg)
table | tee "$BENCH_DIR/results.md"
say "done in $(( $(date +%s) - start )) s"
