#!/bin/sh
# sweep.sh — modeld end to end under load: wrk against each default model, with
# and without batching, at several concurrencies; one Markdown table.
#
#   cd BUILD_DIR && sh /path/to/modeld/bench/load/sweep.sh
#   LOAD_DURATION=3 sh bench/load/sweep.sh            # a quick look
#
# For each model (fashion, bert, fashion-gan), served ALONE so that the other
# models' workers take no CPU:
#   1. bench_engine --iters 200 MODEL_DIR 1 [SEQ]: the engine-only latency of one
#      request, no HTTP (BERT at SEQ = the token count of the longest fill-mask
#      body, [CLS]/[SEP] included, which prepare.py computes: the bodies go round
#      robin, so the p99 it is compared with is the longest bodies' latency).
#   2. the daemon with max_batch_size = 32 (batching on; max_queue_delay_us = 0,
#      the default: a worker runs whatever is queued, it never waits to fill a
#      batch), then again with max_batch_size = 1 (every request its own forward
#      pass); each time a short warm-up, then wrk at every concurrency.
# Then the overload run (overload.py): a tiny queue and 256 connections, to see
# that a full queue answers 503 at once.
#
# Environment (defaults in brackets):
#   BUILD [.]              build directory holding daemon/modeld and bench/bench_engine
#   MODELD [$BUILD/daemon/modeld], BENCH_ENGINE [$BUILD/bench/bench_engine]
#   MODELS [<source tree>/models]   directory holding fashion/, bert/, fashion-gan/
#   OUT [/tmp/modeld-load]  request bodies, raw wrk output, daemon logs, load-results.md
#   LOAD_DURATION [10]      seconds of each wrk run
#   LOAD_WARMUP [2]         seconds of the warm-up run after each daemon start
#   LOAD_CONCURRENCY ["1 8 32 128"], LOAD_MODELS ["fashion bert fashion-gan"]
#   LOAD_OVERLOAD [1]       0 skips the overload run
#   WRK [wrk], PYTHON [/usr/bin/python3]
#
# The machine is shared and has 2 cores, which wrk, the daemon and everything
# else share: numbers from different runs compare only roughly.  Never run two
# of these at once.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
BUILD=${BUILD:-.}
MODELD=${MODELD:-$BUILD/daemon/modeld}
BENCH_ENGINE=${BENCH_ENGINE:-$BUILD/bench/bench_engine}
MODELS=${MODELS:-$top/models}
OUT=${OUT:-/tmp/modeld-load}
LOAD_DURATION=${LOAD_DURATION:-10}
LOAD_WARMUP=${LOAD_WARMUP:-2}
LOAD_CONCURRENCY=${LOAD_CONCURRENCY:-"1 8 32 128"}
LOAD_MODELS=${LOAD_MODELS:-"fashion bert fashion-gan"}
LOAD_OVERLOAD=${LOAD_OVERLOAD:-1}
WRK=${WRK:-wrk}
PYTHON=${PYTHON:-/usr/bin/python3}
BATCH_ON=32   # max_batch_size of the "batching on" runs

die() { echo "sweep.sh: $*" >&2; exit 1; }
say() { echo "sweep.sh: $*" >&2; }

command -v "$WRK" >/dev/null 2>&1 ||
    die "wrk not found (WRK=$WRK): install it, e.g. 'sudo apt-get install wrk'"
[ -x "$PYTHON" ] || die "no Python at $PYTHON (set PYTHON)"
[ -x "$MODELD" ] ||
    die "no daemon at $MODELD: run from a build directory (after make), or set BUILD or MODELD"
if [ ! -x "$BENCH_ENGINE" ]; then
    say "no $BENCH_ENGINE ('make bench/bench_engine' in the build directory builds it):" \
        "the engine-only column is left empty"
    BENCH_ENGINE=
fi
case $LOAD_DURATION in *[!0-9]*|'') die "LOAD_DURATION is whole seconds, got '$LOAD_DURATION'" ;; esac
case $LOAD_WARMUP in *[!0-9]*|'') die "LOAD_WARMUP is whole seconds, got '$LOAD_WARMUP'" ;; esac

mkdir -p "$OUT/raw"
results=$OUT/load-results.md
raw=$OUT/raw.txt
: > "$raw"

# ---- processes: every child is tracked so that an interrupted sweep leaves
# no daemon behind.  Children run in the background and we `wait` on them: a
# shell runs its traps only between commands, so a foreground child would delay
# the cleanup until it finished on its own.
daemon_pid=
child_pid=
cleanup() {
    if [ -n "$child_pid" ]; then kill "$child_pid" 2>/dev/null || :; wait "$child_pid" 2>/dev/null || :; fi
    if [ -n "$daemon_pid" ]; then kill "$daemon_pid" 2>/dev/null || :; wait "$daemon_pid" 2>/dev/null || :; fi
    child_pid='' daemon_pid=''
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

run() {   # run CMD... as a tracked child; returns its status
    "$@" &
    child_pid=$!
    rc=0
    wait "$child_pid" || rc=$?
    child_pid=
    return $rc
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_daemon MODEL MAX_BATCH: serve MODEL alone; sets daemon_pid and port
start_daemon() {
    conf=$OUT/raw/modeld-$1-b$2.ini
    cat > "$conf" <<EOF
# written by bench/load/sweep.sh
[server]
max_batch_size = $2
max_queue_delay_us = 0
# larger than the highest concurrency: this sweep measures throughput and
# latency, not load shedding (overload.py does that)
queue_capacity = 256
[model $1]
path = $MODELS/$1
EOF
    port=$(free_port)
    log=$OUT/raw/modeld-$1-b$2.log
    "$MODELD" --listen "127.0.0.1:$port" --config "$conf" > "$log" 2>&1 &
    daemon_pid=$!
    # ready = GET /v2/health/ready answers 200; give up if the daemon exits
    "$PYTHON" - "$port" "$daemon_pid" <<'EOF' || { tail -n 20 "$log" >&2; die "modeld ($1, max_batch_size $2) did not become ready; log: $log"; }
import os, sys, time, urllib.request
port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(1)
    time.sleep(0.1)
sys.exit(1)
EOF
}

stop_daemon() {
    kill "$daemon_pid" 2>/dev/null || :
    wait "$daemon_pid" 2>/dev/null || :
    daemon_pid=
}

# jget KEY LINE: a number from a LOAD {...} line (body.lua prints flat keys;
# the socket error names appear once each)
jget() { printf '%s\n' "$2" | sed -n "s/.*\"$1\":\([-0-9.eE+]*\).*/\1/p"; }

route() {
    case $1 in
        fashion) echo classify ;;
        bert) echo fill-mask ;;
        fashion-gan) echo generate ;;
        *) die "unknown model '$1': this sweep knows fashion, bert and fashion-gan" ;;
    esac
}

# ---- request bodies (deterministic; rewritten every run, a few seconds)
MODELS=$MODELS "$PYTHON" "$here/prepare.py" "$OUT" >&2
# BERT's engine-only reference is the longest body's length: the bodies go round robin, so
# the p99 it is compared with is the latency of the longest ones.
seq=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["fill_mask_tokens"]["max"])' \
      "$OUT/meta.json" 2>/dev/null) || seq=28

rows=$OUT/raw/rows.md        # the main table's rows
summary=$OUT/raw/summary.md  # the per-model rows
: > "$rows"
: > "$summary"
start_load=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')
started=$(date -u '+%Y-%m-%d %H:%M UTC')

for model in $LOAD_MODELS; do
    r=$(route "$model")
    [ -d "$MODELS/$model" ] || die "no model directory $MODELS/$model"
    bodies=$OUT/$r.jsonl

    # 1. engine only, before any daemon runs (nothing else on the cores)
    engine_ms=
    engine_what="batch 1"
    if [ -n "$BENCH_ENGINE" ]; then
        set -- "$MODELS/$model" 1
        if [ "$model" = bert ]; then set -- "$@" "$seq"; engine_what="batch 1, seq $seq, the longest body"; fi
        say "$model: engine only: bench_engine --iters 200 $*"
        if run "$BENCH_ENGINE" --iters 200 "$@" > "$OUT/raw/engine-$model.txt" 2>&1; then
            engine_ms=$(sed -n 's/.*median_ms=\([0-9.]*\).*/\1/p' "$OUT/raw/engine-$model.txt" | head -n 1)
        else
            say "$model: bench_engine failed: $(tail -n 3 "$OUT/raw/engine-$model.txt")"
        fi
    fi

    # 2. through the daemon
    for mb in $BATCH_ON 1; do
        if [ "$mb" = 1 ]; then mode="off (max_batch_size 1)"; else mode="on (max_batch_size $mb)"; fi
        start_daemon "$model" "$mb"
        url=http://127.0.0.1:$port/v1/models/$model/$r
        say "$model, batching $mode: port $port, warm-up ${LOAD_WARMUP}s"
        if [ "$LOAD_WARMUP" -gt 0 ]; then
            run "$WRK" -t2 -c8 -d"${LOAD_WARMUP}s" -s "$here/body.lua" "$url" -- "$bodies" \
                > "$OUT/raw/wrk-$model-b$mb-warmup.txt" 2>&1 || :
        fi
        for c in $LOAD_CONCURRENCY; do
            t=$(( c < 2 ? c : 2 ))
            f=$OUT/raw/wrk-$model-b$mb-c$c.txt
            # --timeout 30s (the daemon's request_timeout_ms): a slow answer is
            # a latency, not a socket error (wrk's default gives up at 2 s)
            run "$WRK" -t"$t" -c"$c" -d"${LOAD_DURATION}s" --timeout 30s --latency \
                -s "$here/body.lua" "$url" -- "$bodies" > "$f" 2>&1 ||
                say "$model c=$c: wrk exited with $? (output: $f)"
            line=$(grep '^LOAD ' "$f" | tail -n 1 || :)
            if [ -z "$line" ]; then
                say "$model c=$c: no LOAD line from wrk: $(tail -n 3 "$f")"
                printf '| %s | %s | %s | — | — | — | wrk failed |\n' "$model" "$mode" "$c" >> "$rows"
                continue
            fi
            printf '%s b%s c%s %s\n' "$model" "$mb" "$c" "$line" >> "$raw"
            rps=$(jget rps "$line"); p50=$(jget p50_ms "$line"); p99=$(jget p99_ms "$line")
            failed=$(( $(jget non2xx "$line") + $(jget connect "$line") + $(jget read "$line") \
                       + $(jget write "$line") + $(jget timeout "$line") ))
            row=$(printf '| %s | %s | %s | %.0f | %.2f | %.2f | %s |' \
                  "$model" "$mode" "$c" "$rps" "$p50" "$p99" "$failed")
            echo "$row" >> "$rows"
            say "$row"
            # what the per-model summary needs
            [ "$c" = 32 ] && eval "rps32_b$mb=\$rps"
            [ "$c" = 1 ] && eval "p99c1_b$mb=\$p99"
        done
        stop_daemon
    done

    # per-model summary: batching's gain, and what HTTP adds at one client
    rb=${rps32_b32:-}; r1=${rps32_b1:-}; p=${p99c1_b32:-}
    tput=$(awk -v a="$rb" -v b="$r1" -v m="$model" 'BEGIN {
        if (a == "" || b == "" || b + 0 == 0) { print "— | — | —"; exit }
        r = a / b
        t = (m == "fashion" || m == "bert") ? (r >= 1.5 ? "met" : "**not met**") : "no target"
        printf "%.0f / %.0f | %.2f× | %s", a, b, r, t }')
    lat=$(awk -v p="$p" -v e="$engine_ms" -v w="$engine_what" 'BEGIN {
        if (p == "" || e == "" || e + 0 == 0) { printf "%s | %s (%s) | — | —", (p == "" ? "—" : p), (e == "" ? "—" : e), w; exit }
        r = p / e
        printf "%.2f | %.3f (%s) | %.2f× | %s", p, e, w, r, (r <= 1.2 ? "met" : "**not met**") }')
    echo "| $model | $tput | $lat |" >> "$summary"
    unset rps32_b32 rps32_b1 p99c1_b32 p99c1_b1
done

{
    echo "# modeld load test"
    echo
    echo "$started; ${LOAD_DURATION} s per run after a ${LOAD_WARMUP} s warm-up per daemon start;" \
         "$(nproc 2>/dev/null || echo '?') cores; load average before: $start_load," \
         "after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?'). wrk with min(2, c) threads" \
         "on the same machine as the daemon. Each model served alone. Latencies: each request's own," \
         "write to answer (body.lua; not wrk's corrected histogram). failed = non-2xx answers + socket errors."
    echo
    echo "| model | batching | concurrency | req/s | p50 ms | p99 ms | failed |"
    echo "|---|---|---:|---:|---:|---:|---:|"
    cat "$rows"
    echo
    echo "Batching's gain: req/s at concurrency 32 with max_batch_size $BATCH_ON over max_batch_size 1" \
         "(target ≥ 1.5× for fashion and bert). HTTP's cost: p99 at concurrency 1 (batching on)" \
         "over the engine-only median of bench_engine --iters 200 (target ≤ 1.2×)."
    echo
    echo "| model | req/s c=32, batching / max_batch_size 1 | ratio | target ≥ 1.5× | p99 ms c=1 | engine-only median ms | ratio | target ≤ 1.2× |"
    echo "|---|---:|---:|---|---:|---:|---:|---|"
    cat "$summary"
} > "$results"

if [ "$LOAD_OVERLOAD" != 0 ]; then
    say "overload run (overload.py)"
    echo >> "$results"
    # its own daemon, on its own port; the table goes to the results file too
    run "$PYTHON" "$here/overload.py" --modeld "$MODELD" --model-dir "$MODELS/fashion" \
        --bodies "$OUT/classify.jsonl" --log "$OUT/raw/modeld-overload.log" \
        > "$OUT/raw/overload.md" || say "overload.py reported a failure (exit $?)"
    cat "$OUT/raw/overload.md" >> "$results"
fi

cat "$results"
say "results in $results; raw wrk output and daemon logs in $OUT/raw"
