#!/bin/sh
# modeld --check-config: exit 0 and "config OK: N models" when the settings and
# every model load; 2 and the problem on stderr when anything would stop start-up,
# the weights included.  No HTTP: nothing listens.
set -u
modeld="$top_builddir/daemon/modeld"
models="$top_srcdir/models"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/modeld-check.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
fail=0

# expect STATUS WHAT ARGS...: runs modeld ARGS, wants exit STATUS; output in
# $tmp/out and $tmp/err.
expect() {
    want=$1 what=$2
    shift 2
    "$modeld" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    got=$?
    if [ "$got" -ne "$want" ]; then
        echo "FAIL: $what: exit $got, expected $want (modeld $*)"
        sed 's/^/  stdout: /' "$tmp/out"
        sed 's/^/  stderr: /' "$tmp/err"
        fail=1
        return 1
    fi
    return 0
}

# want_in FILE TEXT WHAT: FILE contains TEXT.
want_in() {
    grep -qF -- "$2" "$1" || {
        echo "FAIL: $3: no '$2' in:"
        cat "$1"
        fail=1
    }
}

# The shipped config with the default models of the source tree (./models).
if (cd "$top_srcdir" && expect 0 "shipped config" --check-config conf/modeld.conf); then
    want_in "$tmp/out" "config OK: 3 models" "shipped config"
    [ -s "$tmp/err" ] && { echo "FAIL: shipped config: stderr not empty:"; cat "$tmp/err"; fail=1; }
fi
# FILE given as --config, and --check-config=FILE, mean the same.
expect 0 "--config with --check-config" --check-config --config "$top_srcdir/conf/modeld.conf" \
    --model "fashion=$models/fashion" && want_in "$tmp/out" "config OK: 1 models" "--config"
expect 0 "--check-config=FILE" "--check-config=$top_srcdir/conf/modeld.conf" \
    --model "fashion=$models/fashion" && want_in "$tmp/out" "fashion  cnn" "--check-config=FILE"

# A copy of the classifier whose weights are cut short: config.json still reads,
# so only loading the weights finds it.
mkdir "$tmp/broken"
cp "$models/fashion/config.json" "$models/fashion/labels.txt" "$tmp/broken/"
head -c 4096 "$models/fashion/model.safetensors" >"$tmp/broken/model.safetensors"
cat >"$tmp/broken.conf" <<EOF
[server]
workers = 1

[model fashion]
path = $models/fashion

[model broken]
path = $tmp/broken
EOF
expect 2 "truncated weights" --check-config "$tmp/broken.conf" &&
    want_in "$tmp/err" "model broken" "truncated weights"
[ -s "$tmp/out" ] && { echo "FAIL: a failed check printed to stdout:"; cat "$tmp/out"; fail=1; }

# Weights fine, labels one short: found only by comparing the loaded network.
mkdir "$tmp/labels"
cp "$models/fashion/config.json" "$models/fashion/model.safetensors" "$tmp/labels/"
head -n 9 "$models/fashion/labels.txt" >"$tmp/labels/labels.txt"
expect 2 "labels one short" --check-config --model "short=$tmp/labels" &&
    want_in "$tmp/err" "labels.txt" "labels one short"

# Settings: a bad value names its line; a missing directory names the model.
printf '[server]\nworkers = 0\n' >"$tmp/bad.conf"
expect 2 "bad value" --check-config "$tmp/bad.conf" && want_in "$tmp/err" "bad.conf:2" "bad value"
expect 2 "missing model directory" --check-config --model "gone=$tmp/nonexistent" &&
    want_in "$tmp/err" "model gone" "missing model directory"
expect 2 "missing config file" --check-config "$tmp/nonexistent.conf"
expect 2 "two config files" --check-config "$tmp/bad.conf" --config "$tmp/bad.conf" &&
    want_in "$tmp/err" "two config files" "two config files"
printf '[server]\nauth_token_file = %s/no-token\n' "$tmp" >"$tmp/token.conf"
expect 2 "unreadable token file" --check-config "$tmp/token.conf" \
    --model "fashion=$models/fashion" && want_in "$tmp/err" "auth_token_file" "token file"
exit $fail
