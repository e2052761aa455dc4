"""`make install DESTDIR=...` into a staging tree, then the installed copy is run.

Checks the install tree (binary, config, default models, systemd units, man pages),
that the installed unit names the installed paths, systemd-analyze verify on the
units inside the staging tree (--root: ExecStart= must exist there, and the man
pages of Documentation=), the man pages through groff's warnings, and then the
installed binary: --check-config on the installed config, and serving the installed
`fashion` model until /v2/health/ready says 200 and a classify answers.  Last,
`make uninstall DESTDIR=...` must leave no file behind.

The installed binary looks for the default models in the non-staged pkgdatadir, so
the test gives it a copy of the installed config with [model] sections pointing into
the staging tree.  The recursive make writes only into the staging tree, so this
also runs in distcheck's read-only source tree.
"""

import base64
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testlib  # noqa: E402
from testlib import Failure, expect  # noqa: E402

MODELS = ("fashion", "bert", "fashion-gan")


def env_dir(name):
    value = os.environ.get(name)
    if not value:
        testlib.skip(f"${name} is not set (run through make check)")
    return value


def make(top_builddir, destdir, target):
    """$(MAKE) TARGET DESTDIR=destdir in the build tree; its output on failure."""
    argv = shlex.split(os.environ.get("MAKE") or "make")
    # Not make check's jobserver (its descriptors are not passed to this test) nor
    # its flags: a plain sequential install.
    env = dict(os.environ, MAKEFLAGS="", MFLAGS="")
    env.pop("MAKELEVEL", None)
    proc = subprocess.run(argv + ["-C", top_builddir, target, f"DESTDIR={destdir}"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise Failure(f"make {target} DESTDIR={destdir} failed:\n"
                      + proc.stdout.decode(errors="replace")[-4000:])


def staged(destdir, path):
    return destdir + path


def check_tree(d, dirs):
    want = [
        (f"{dirs['bindir']}/modeld", True),
        (f"{dirs['sysconfdir']}/modeld/modeld.conf", False),
        (f"{dirs['mandir']}/man8/modeld.8", False),
        (f"{dirs['mandir']}/man5/modeld.conf.5", False),
    ]
    for m in MODELS:
        for f in ("config.json", "model.safetensors"):
            want.append((f"{dirs['pkgdatadir']}/models/{m}/{f}", False))
    unitdir = dirs["systemdsystemunitdir"]
    if unitdir:
        want += [(f"{unitdir}/modeld.service", False), (f"{unitdir}/modeld.socket", False)]
    for path, executable in want:
        p = staged(d, path)
        expect(os.path.isfile(p), f"not installed: {path}")
        if executable:
            expect(os.access(p, os.X_OK), f"not executable: {path}")
    if unitdir:
        with open(staged(d, f"{unitdir}/modeld.service")) as f:
            unit = f.read()
        start = f"ExecStart={dirs['bindir']}/modeld --config {dirs['sysconfdir']}/modeld/modeld.conf"
        expect(start + "\n" in unit, f"installed unit lacks {start!r}")
        expect(d not in unit, "installed unit names the staging directory")


def verify_units(d, dirs):
    """systemd-analyze verify inside the staging tree: ExecStart=/ExecReload= and the
    man pages of Documentation= must be there."""
    unitdir = dirs["systemdsystemunitdir"]
    if not unitdir or shutil.which("systemd-analyze") is None:
        print("note: systemd-analyze or the unit directory missing; units not verified")
        return
    usage = subprocess.run(["systemd-analyze", "--help"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT).stdout.decode(errors="replace")
    if "--recursive-errors" not in usage or "--root" not in usage:
        print("note: systemd-analyze older than 250 (no --root, --recursive-errors); "
              "installed units not verified")
        return
    # With --root, verify finds units only in systemd's own search path inside the
    # root, and a configured unit directory need not be one (distcheck's is under its
    # temporary prefix): the installed units are checked from a copy in the staging
    # tree's /etc/systemd/system, removed again before the uninstall.
    etc = staged(d, "/etc/systemd/system")
    copied = os.path.normpath(unitdir) != "/etc/systemd/system"
    if copied:
        os.makedirs(etc, exist_ok=True)
        for name in ("modeld.service", "modeld.socket"):
            shutil.copy(staged(d, f"{unitdir}/{name}"), etc)
    # --recursive-errors=no: the staging tree has no sysinit.target and the like.
    argv = ["systemd-analyze", "verify", f"--root={d}", "--recursive-errors=no",
            "/etc/systemd/system/modeld.service", "/etc/systemd/system/modeld.socket"]
    env = dict(os.environ, MANPATH=staged(d, dirs["mandir"]))
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    out = proc.stdout.decode(errors="replace")
    if copied:
        for name in ("modeld.service", "modeld.socket"):
            os.unlink(os.path.join(etc, name))
    expect(proc.returncode == 0 and not out.strip(),
           f"systemd-analyze verify on the installed units:\n{out}")


def lint_man_pages(d, dirs):
    if shutil.which("groff") is None:
        print("note: groff missing; man pages not linted")
        return
    for page in ("man8/modeld.8", "man5/modeld.conf.5"):
        path = staged(d, f"{dirs['mandir']}/{page}")
        proc = subprocess.run(["groff", "-man", "-ww", "-z", path],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = proc.stdout.decode(errors="replace")
        expect(proc.returncode == 0 and not out.strip(), f"groff on {page}:\n{out}")
        with open(path) as f:
            text = f.read()
        expect("@" not in text.replace("\\@", ""), f"{page} keeps an @placeholder@")


def staged_config(d, dirs, tmp, models):
    """The installed config with [model] sections for models in the staging tree."""
    with open(staged(d, f"{dirs['sysconfdir']}/modeld/modeld.conf")) as f:
        text = f.read()
    for m in models:
        text += f"\n[model {m}]\npath = {staged(d, dirs['pkgdatadir'])}/models/{m}\n"
    path = os.path.join(tmp, f"modeld-{len(models)}.conf")
    with open(path, "w") as f:
        f.write(text)
    return path


def run_installed(d, dirs, tmp):
    binary = staged(d, f"{dirs['bindir']}/modeld")
    every = staged_config(d, dirs, tmp, MODELS)
    proc = subprocess.run([binary, "--check-config", every], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, cwd=tmp)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    expect(proc.returncode == 0 and out.startswith(f"config OK: {len(MODELS)} models"),
           f"installed --check-config: exit {proc.returncode}\n{out}{err}")

    one = staged_config(d, dirs, tmp, ["fashion"])
    with open(os.path.join(testlib.top_srcdir(), "docs", "examples", "sneaker.png"), "rb") as f:
        image = base64.b64encode(f.read()).decode()
    with testlib.Daemon({}, extra_args=["--config", one], binary=binary) as daemon:
        status, _, _ = daemon.request("GET", "/v2/health/ready")
        expect(status == 200, f"/v2/health/ready: {status}")
        status, _, doc = testlib.call_json(daemon, "POST", "/v1/models/fashion/classify",
                                           {"image": image, "top_k": 1})
        expect(status == 200, f"classify: {status} {doc}")
        expect(doc["predictions"][0]["label"] == "Sneaker", f"classify: {doc}")


def main():
    top_builddir = testlib.top_builddir()
    dirs = {name: env_dir(name) for name in ("bindir", "sysconfdir", "pkgdatadir", "mandir")}
    dirs["systemdsystemunitdir"] = os.environ.get("systemdsystemunitdir", "")
    tmp = tempfile.mkdtemp(prefix="modeld-install.")
    dest = os.path.join(tmp, "dest")
    try:
        make(top_builddir, dest, "install")
        check_tree(dest, dirs)
        verify_units(dest, dirs)
        lint_man_pages(dest, dirs)
        run_installed(dest, dirs, tmp)
        make(top_builddir, dest, "uninstall")
        left = [os.path.join(r, f) for r, _, files in os.walk(dest) for f in files]
        expect(not left, f"make uninstall left: {left}")
    except (Failure, testlib.DaemonError) as e:
        testlib.fail(str(e))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("install: tree, units, man pages, --check-config and serving from DESTDIR OK")


if __name__ == "__main__":
    main()
