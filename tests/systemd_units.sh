#!/bin/sh
# The systemd units as make writes them: every path substituted, accepted by
# `systemd-analyze verify`, and hardened (`systemd-analyze security` exposure at
# most 2.0 of 10; the unit scores 1.2 as written).  verify checks that ExecStart=
# and ExecReload= name executables, so it runs on a copy of the service pointing
# at the daemon just built; tests/install.py verifies the installed units in their
# staging tree.  Skips (77) without systemd-analyze.
set -u
unit="$top_builddir/systemd/modeld.service"
socket="$top_srcdir/systemd/modeld.socket"
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "SKIP: systemd-analyze not found (apt-get install systemd)"
    exit 77
fi
[ -f "$unit" ] || { echo "FAIL: $unit was not made (make all writes it)"; exit 1; }
fail=0

# Every @variable@ of the .in file was replaced, with the configured paths.
if grep -n '@[A-Za-z_]*@' "$unit"; then
    echo "FAIL: $unit keeps placeholders (above)"
    fail=1
fi
for want in "ExecStart=$bindir/modeld --config $sysconfdir/modeld/modeld.conf" \
    "ExecReload=$bindir/modeld --check-config $sysconfdir/modeld/modeld.conf" \
    'ExecReload=/bin/kill -HUP $MAINPID'; do
    grep -qxF "$want" "$unit" || { echo "FAIL: $unit lacks the line: $want"; fail=1; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/modeld-units.XXXXXX") || exit 99
trap 'rm -rf "$tmp"' EXIT
# The copy runs the daemon built here; the file keeps its name, which verify uses.
sed "s|^\\(Exec[A-Za-z]*=\\)$bindir/modeld |\\1$top_builddir/daemon/modeld |" "$unit" \
    >"$tmp/modeld.service"
cp "$socket" "$tmp/modeld.socket"

# --man=no: the man pages are not installed here (tests/install.py checks them).
if ! systemd-analyze verify --man=no "$tmp/modeld.service" "$tmp/modeld.socket" \
    >"$tmp/verify.out" 2>&1 || [ -s "$tmp/verify.out" ]; then
    echo "FAIL: systemd-analyze verify:"
    cat "$tmp/verify.out"
    fail=1
fi

# Exposure as systemd computes it (0 = locked down, 10 = none); --threshold is in
# tenths.  Going above 2.0 means a hardening line went missing.  --offline and
# --threshold are systemd 250's.
if ! systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    echo "note: this systemd-analyze cannot score a unit file offline; exposure not checked"
elif ! systemd-analyze security --offline=yes --threshold=20 --no-pager \
    "$tmp/modeld.service" >"$tmp/security.out" 2>&1; then
    echo "FAIL: systemd-analyze security: exposure above 2.0"
    cat "$tmp/security.out"
    fail=1
else
    tail -n 1 "$tmp/security.out"
fi
exit $fail
