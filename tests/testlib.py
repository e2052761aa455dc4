"""Helpers for the Python tests that `make check` runs against a live modeld.

    with testlib.Daemon({"fashion": model_dir}) as d:
        status, headers, body = d.request("GET", "/v2/health/ready")
    # leaving the block sends SIGTERM and fails unless modeld exits with 0

Exit codes follow automake's test driver: 0 pass, 77 skip, 99 hard error,
anything else a failure.  The daemon's output goes to a log file that is
printed when something goes wrong, so a failing run explains itself.
"""

import http.client as http_client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

EXIT_SKIP = 77
EXIT_HARD_ERROR = 99

HERE = os.path.dirname(os.path.abspath(__file__))


def top_srcdir():
    return os.environ.get("top_srcdir") or os.path.dirname(HERE)


def top_builddir():
    return os.environ.get("top_builddir") or top_srcdir()


def daemon_binary():
    return os.path.join(top_builddir(), "daemon", "modeld")


def tools_on_path():
    """Make tools/ (export_model, fashion_mnist, ...) importable."""
    tools = os.path.join(top_srcdir(), "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)


def skip(why):
    print(f"SKIP: {why}", flush=True)
    sys.exit(EXIT_SKIP)


def fail(why):
    print(f"FAIL: {why}", flush=True)
    sys.exit(1)


def free_port():
    """A loopback port free right now; the daemon may still lose a race for it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(port, method, path, body=None, headers=None, timeout=120.0):
    """One request to 127.0.0.1:port: (status, {lower-case name: value}, body bytes).

    body may be bytes, str, or any other value, which is sent as JSON.
    """
    headers = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        headers.setdefault("Content-Type", "application/json")
    if isinstance(body, str):
        body = body.encode("utf-8")
    conn = http_client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


class DaemonError(Exception):
    pass


class Daemon:
    """modeld serving `models` (name -> directory) on a free loopback port."""

    READY_TIMEOUT = 30.0
    STOP_TIMEOUT = 30.0

    def __init__(self, models, extra_args=(), binary=None, env=None):
        self.models = dict(models)
        self.extra_args = list(extra_args)
        self.binary = binary or daemon_binary()
        self.env = env
        self.proc = None
        self.port = None
        self.log = tempfile.NamedTemporaryFile(prefix="modeld-test-", suffix=".log",
                                               delete=False)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.stop()
        else:
            self.kill()
            self.print_log()
        return False

    def argv(self):
        argv = [self.binary, "--listen", f"127.0.0.1:{self.port}"]
        for name, path in self.models.items():
            argv += ["--model", f"{name}={path}"]
        return argv + self.extra_args

    def start(self):
        if not os.access(self.binary, os.X_OK):
            raise DaemonError(f"{self.binary} is not an executable (build it first)")
        # Another process can take the port between free_port() and bind();
        # the daemon then exits at once and a fresh port is tried.
        for _ in range(3):
            self.port = free_port()
            self.proc = subprocess.Popen(self.argv(), stdout=self.log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env)
            if self.wait_ready():
                return
            if self.proc.poll() is None:
                self.kill()
                self.print_log()
                raise DaemonError(f"not ready within {self.READY_TIMEOUT:.0f} s: "
                                  + " ".join(self.argv()))
        self.print_log()
        raise DaemonError(f"exited with status {self.proc.returncode} before becoming ready: "
                          + " ".join(self.argv()))

    def wait_ready(self):
        """True once /v2/health/ready answers 200; False if the process died."""
        deadline = time.monotonic() + self.READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                status, _, _ = http(self.port, "GET", "/v2/health/ready", timeout=2.0)
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def request(self, method, path, body=None, headers=None, timeout=120.0):
        return http(self.port, method, path, body, headers, timeout)

    def stop(self):
        """SIGTERM, then require a clean exit with status 0."""
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise DaemonError(f"daemon was not running at stop (exit status {code})")
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=self.STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            self.print_log()
            raise DaemonError(f"did not exit within {self.STOP_TIMEOUT:.0f} s of SIGTERM")
        if code != 0:
            self.print_log()
            raise DaemonError(f"exited with status {code} after SIGTERM, expected 0")
        self.log.close()
        os.unlink(self.log.name)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def print_log(self, lines=60):
        try:
            with open(self.log.name, errors="replace") as f:
                tail = f.readlines()[-lines:]
        except OSError:
            return
        print(f"---- last {len(tail)} lines of the daemon log ({self.log.name}) ----")
        sys.stdout.write("".join(tail))
        print("---- end of daemon log ----", flush=True)


# ---- checking helpers shared by the HTTP tests ------------------------------------


class Failure(Exception):
    """A check that did not hold; the tests report it and fail."""


def expect(cond, what):
    if not cond:
        raise Failure(what)


def call_json(daemon, method, path, body=None, headers=None):
    """A request whose answer must be JSON: (status, headers, parsed body).  An error
    status must carry {"error": "<a message>"}."""
    status, hdrs, data = daemon.request(method, path, body, headers)
    ctype = hdrs.get("content-type", "")
    expect(ctype == "application/json",
           f"{method} {path}: Content-Type {ctype!r}, body {data[:200]!r}")
    if method == "HEAD":
        expect(data == b"", f"HEAD {path} has a body")
        return status, hdrs, None
    try:
        doc = json.loads(data)
    except ValueError:
        raise Failure(f"{method} {path}: body is not JSON: {data[:200]!r}")
    if status >= 400:
        expect(isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"],
               f"{method} {path}: {status} without an error message: {doc!r}")
    return status, hdrs, doc
