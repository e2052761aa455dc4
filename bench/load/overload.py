#!/usr/bin/python3
"""overload.py — modeld past its capacity: a full queue must answer 503 at once.

    /usr/bin/python3 bench/load/overload.py --modeld BUILD/daemon/modeld \
        [--model-dir models/fashion] [--bodies /tmp/modeld-load/classify.jsonl]
    /usr/bin/python3 bench/load/overload.py --url http://127.0.0.1:8080   # a daemon you started

With --modeld it starts its own daemon on a free port, serving the fashion model
with a tiny queue (queue_capacity 4, max_batch_size 1, so the queue is full almost
all the time), and stops it at the end.  With --url it uses a running daemon as it
is configured (give it a small queue_capacity, or nothing will be refused).

Two kinds of client, both standard library only:
  blast   --connections (256) keep-alive connections opened at once, each sending
          --requests (100) classify requests back to back: the overload.
  probe   --probes (2) connections in a separate process, sending requests back to
          back while the blast is at full strength (from its first 503 until its
          first connection is done): the latency one request sees under overload.
The blast's own latencies are not that: 256 requests always outstanding at a
throughput of a few thousand a second put tens of milliseconds on every one of
them by Little's law alone, most of it waiting for the one Python event loop
that reads all 256 sockets (the client takes about as much CPU as the daemon on
these 2 cores).  The probe's process is idle between its own requests, so what
it measures is the daemon's answer time under the overload (plus the scheduling
delay of a busy machine).  Both are reported, 200s and 503s separately.

Every answer of both is checked: a 503 must carry Retry-After and a JSON
{"error": "..."} body, a 200 must be a classify answer.  Prints a Markdown
section; exits 1 if a check failed (a bad 503 or 200, a status other than
200/503, a socket error, or no 503 at all: the daemon was not overloaded).
One event loop per process rather than threads: Python threads take turns on
the GIL every 5 ms, which would put that much noise on every measurement.
"""

import argparse
import asyncio
import itertools
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))


def percentile(sorted_ms, p):
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_ms:
        return None
    k = max(0, min(len(sorted_ms) - 1, -(-len(sorted_ms) * p // 100) - 1))
    return sorted_ms[int(k)]


class Run:
    """Requests to send, and everything that came back (one per client kind).

    on_503: called at the first 503 (the blast uses it to start the probe)."""

    def __init__(self, host, port, path, bodies, on_503=None):
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "Content-Type: application/json\r\n").encode()
        # built once: the client's own cost per request must stay small
        reqs = [head + b"Content-Length: %d\r\n\r\n" % len(b) + b for b in bodies]
        self.requests = itertools.cycle(reqs)
        self.on_503 = on_503
        self.ms = {200: [], 503: []}
        self.other = {}               # status -> count
        self.errors = {"connect": 0, "read": 0, "timeout": 0}
        self.no_retry_after = 0       # 503s without Retry-After
        self.bad_error_body = 0       # 503s whose body is not {"error": "..."}
        self.bad_ok_body = 0          # 200s whose body is not a classify answer
        self.retry_after = set()      # the Retry-After values seen
        self.examples = []            # a few offending answers, for the report
        self.reconnects = 0

    def record(self, status, headers, body, secs):
        ms = secs * 1000.0
        if status == 200:
            self.ms[200].append(ms)
            try:
                ok = "predictions" in json.loads(body)
            except ValueError:
                ok = False
            if not ok:
                self.bad_ok_body += 1
                self.example(status, headers, body)
        elif status == 503:
            if not self.ms[503] and self.on_503 is not None:
                self.on_503()
            self.ms[503].append(ms)
            ra = headers.get("retry-after")
            if ra is None:
                self.no_retry_after += 1
                self.example(status, headers, body)
            else:
                self.retry_after.add(ra)
            try:
                doc = json.loads(body)
                ok = isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"]
            except ValueError:
                ok = False
            if not ok:
                self.bad_error_body += 1
                self.example(status, headers, body)
        else:
            self.other[status] = self.other.get(status, 0) + 1
            self.example(status, headers, body)

    def example(self, status, headers, body):
        if len(self.examples) < 3:
            self.examples.append(f"{status} {headers} {body[:200]!r}")

    def result(self):
        """Plain data (it crosses from the probe's process)."""
        d = dict(vars(self))
        for k in ("requests", "on_503"):
            del d[k]
        d["retry_after"] = sorted(d["retry_after"])
        return d


class Client(asyncio.Protocol):
    """One keep-alive connection sending `left` requests, one at a time, or
    until `stop()` is true.  Resolves `done` with the number of requests still
    to send when the connection ends (0, or more if the server closed it)."""

    def __init__(self, run, left, done, stop):
        self.run, self.left, self.done, self.stop = run, left, done, stop
        self.tr = None
        self.in_flight = False

    def connection_made(self, transport):
        self.tr = transport
        self.send()

    def send(self):
        if self.stop():
            self.left = 0
        if self.left == 0:
            self.tr.close()
            return
        self.left -= 1
        self.buf = bytearray()
        self.head = None
        self.in_flight = True
        self.t0 = time.perf_counter()
        self.tr.write(next(self.run.requests))

    def data_received(self, data):
        now = time.perf_counter()
        self.buf += data
        if self.head is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for ln in lines[1:]:
                k, _, v = ln.partition(":")
                headers[k.strip().lower()] = v.strip()
            # libmicrohttpd sends Content-Length for these fixed-size answers
            length = int(headers.get("content-length", "0"))
            self.head = (status, headers, end + 4, length)
        status, headers, start, length = self.head
        if len(self.buf) < start + length:
            return
        self.in_flight = False
        self.run.record(status, headers, bytes(self.buf[start:start + length]), now - self.t0)
        if headers.get("connection", "").lower() == "close":
            self.tr.close()          # connection_lost() reports what is left
        else:
            self.send()

    def connection_lost(self, exc):
        if self.in_flight:           # the server dropped a request unanswered
            self.run.errors["read"] += 1
            self.in_flight = False
        if not self.done.done():
            self.done.set_result(self.left)


async def connection(run, host, port, n, stop):
    """Send n requests (or until stop()) over one connection, reconnecting if
    the server closes it."""
    loop = asyncio.get_running_loop()
    left, first = n, True
    while left > 0 and not stop():
        if not first:
            run.reconnects += 1
        first = False
        done = loop.create_future()
        try:
            await loop.create_connection(lambda: Client(run, left, done, stop), host, port)
        except OSError:
            run.errors["connect"] += 1
            left -= 1                # that request is lost; try the next one
            continue
        left = await done


async def drive(run, host, port, conns, per_conn, timeout, stop=lambda: False, on_first_done=None):
    """conns connections at once; returns the seconds it took."""
    async def one():
        await connection(run, host, port, per_conn, stop)
        if on_first_done is not None:
            on_first_done()
    tasks = [asyncio.ensure_future(one()) for _ in range(conns)]
    t0 = time.perf_counter()
    _done, pending = await asyncio.wait(tasks, timeout=timeout)
    for t in pending:
        t.cancel()
    run.errors["timeout"] += len(pending)  # at most one request in flight each
    return time.perf_counter() - t0


def probe_main(host, port, path, bodies, conns, go, stop, timeout, results):
    """The probe's process: wait for the blast's first 503, then send requests
    back to back on a few connections until the blast starts to wind down."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run = Run(host, port, path, bodies)
    secs = 0.0
    if go.wait(timeout):
        secs = asyncio.run(drive(run, host, port, conns, 1 << 60, timeout, stop.is_set))
    results.put((run.result(), secs))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base, proc, secs=60):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(base + "/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def fmt(v):
    return "—" if v is None else f"{v:.2f}"


def report(blast, blast_s, probe, probe_s, args, config):
    runs = [(f"blast, {args.connections} connections", blast, blast_s),
            (f"probe, {args.probes} connections", probe, probe_s)]
    out = [f"## Overload: {args.model}, {config}", ""]
    total = lambda r: (len(r["ms"][200]) + len(r["ms"][503]) + sum(r["other"].values())
                       + sum(r["errors"].values()))
    nb, npr = total(blast), total(probe)
    out.append(
        f"Blast: {args.connections} keep-alive connections opened at once, {args.requests} "
        f"requests each, back to back: {nb} requests in {blast_s:.2f} s ({nb / max(blast_s, 1e-9):.0f}/s). "
        f"Probe: {args.probes} connections in a separate process, back to back while the blast "
        f"was at full strength: {npr} requests in {probe_s:.2f} s. Latency from the client, "
        "request written to last byte read. The blast's latencies are mostly its own queueing "
        f"({args.connections} requests always outstanding, one Python event loop reading them); "
        "the probe's are what one request sees from the overloaded daemon.")
    out.append("")
    out.append("| client | answer | count | share | p50 ms | p99 ms | max ms |")
    out.append("|---|---|---:|---:|---:|---:|---:|")
    for name, r, _ in runs:
        n = total(r)
        for st in (200, 503):
            v = sorted(r["ms"][st])
            share = f"{100.0 * len(v) / n:.1f} %" if n else "—"
            out.append(f"| {name} | {st} | {len(v)} | {share} | {fmt(percentile(v, 50))} | "
                       f"{fmt(percentile(v, 99))} | {fmt(v[-1] if v else None)} |")
        bad = sum(r["other"].values()) + sum(r["errors"].values())
        share = f"{100.0 * bad / n:.1f} %" if n else "—"
        other = ", ".join(f"{k}: {v}" for k, v in sorted(r["other"].items())) or "none"
        errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items())
        out.append(f"| {name} | other (statuses: {other}; socket errors: {errs}) | {bad} | "
                   f"{share} | | | |")
    out.append("")

    both = lambda f: sum(f(r) for _, r, _ in runs)
    n200 = both(lambda r: len(r["ms"][200]))
    n503 = both(lambda r: len(r["ms"][503]))
    no_ra = both(lambda r: r["no_retry_after"])
    bad_err = both(lambda r: r["bad_error_body"])
    bad_ok = both(lambda r: r["bad_ok_body"])
    bad = both(lambda r: sum(r["other"].values()) + sum(r["errors"].values()))
    ra_vals = sorted(set(blast["retry_after"]) | set(probe["retry_after"]))
    checks = [
        ("the daemon was overloaded (some 503s)", n503 > 0),
        (f"every 503 has Retry-After ({n503 - no_ra}/{n503}; values: "
         f"{', '.join(ra_vals) or '—'})", no_ra == 0),
        (f"every 503 body is JSON {{\"error\": \"...\"}} ({n503 - bad_err}/{n503})", bad_err == 0),
        (f"every 200 is a classify answer ({n200 - bad_ok}/{n200})", bad_ok == 0),
        ("no other status, no socket error", bad == 0),
        ("the probe ran during the overload", npr > 0),
    ]
    for what, ok in checks:
        out.append(f"- {'ok' if ok else '**FAILED**'}: {what}")
    reconnects = both(lambda r: r["reconnects"])
    if reconnects:
        out.append(f"- note: the server closed connections; {reconnects} reconnects")
    for _, r, _ in runs:
        for ex in r["examples"]:
            out.append(f"- offending answer: `{ex}`")
    print("\n".join(out))
    return all(ok for _, ok in checks)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--modeld", help="daemon binary: start one with a tiny queue")
    src.add_argument("--url", help="base URL of a running daemon, e.g. http://127.0.0.1:8080")
    ap.add_argument("--model", default="fashion", help="model name (default fashion)")
    ap.add_argument("--model-dir", default=os.path.join(TOP, "models", "fashion"),
                    help="model directory for --modeld (default <repo>/models/fashion)")
    ap.add_argument("--bodies", default="/tmp/modeld-load/classify.jsonl",
                    help="classify bodies, one JSON per line (bench/load/prepare.py)")
    ap.add_argument("--connections", type=int, default=256, help="blast connections")
    ap.add_argument("--requests", type=int, default=100, help="requests per blast connection")
    ap.add_argument("--probes", type=int, default=2, help="probe connections")
    ap.add_argument("--queue-capacity", type=int, default=4)
    ap.add_argument("--max-batch-size", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=120, help="seconds for the whole run")
    ap.add_argument("--log", help="daemon log file (default: discarded)")
    args = ap.parse_args()

    try:
        with open(args.bodies, "rb") as f:
            bodies = [ln.rstrip(b"\n") for ln in f if ln.strip()]
    except OSError as e:
        sys.exit(f"overload.py: {e} (bench/load/prepare.py writes the bodies)")
    if not bodies:
        sys.exit(f"overload.py: no bodies in {args.bodies}")

    # SIGTERM (sweep.sh being stopped) must still run the finally below and stop
    # our daemon and the probe: make it an exception like SIGINT
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    proc, tmp, log, prober = None, None, None, None
    try:
        if args.modeld:
            tmp = tempfile.TemporaryDirectory(prefix="modeld-overload-")
            conf = os.path.join(tmp.name, "overload.ini")
            with open(conf, "w") as f:
                f.write(f"[server]\nqueue_capacity = {args.queue_capacity}\n"
                        f"max_batch_size = {args.max_batch_size}\n"
                        f"[model {args.model}]\npath = {os.path.abspath(args.model_dir)}\n")
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            log = open(args.log, "wb") if args.log else subprocess.DEVNULL
            proc = subprocess.Popen([args.modeld, "--listen", f"127.0.0.1:{port}",
                                     "--config", conf], stdout=log, stderr=log)
            config = f"queue_capacity {args.queue_capacity}, max_batch_size {args.max_batch_size}"
        else:
            base = args.url.rstrip("/")
            config = "the daemon at " + base + " as configured"
        if not wait_ready(base, proc):
            sys.exit(f"overload.py: daemon at {base} not ready"
                     + (f" (log: {args.log})" if args.log else ""))
        u = urllib.parse.urlsplit(base)
        host, port = u.hostname, u.port or 80
        path = f"/v1/models/{args.model}/classify"

        # the probe: its own process (own GIL, own event loop), started now so
        # that forking costs nothing during the blast; it waits for `go`
        go, stop, results = multiprocessing.Event(), multiprocessing.Event(), multiprocessing.Queue()
        prober = multiprocessing.Process(
            target=probe_main,
            args=(host, port, path, bodies, args.probes, go, stop, args.timeout, results))
        prober.start()

        blast = Run(host, port, path, bodies, on_503=go.set)
        blast_s = asyncio.run(drive(blast, host, port, args.connections, args.requests,
                                    args.timeout, on_first_done=stop.set))
        stop.set()
        go.set()                     # no 503 at all: let the probe finish anyway
        probe, probe_s = results.get(timeout=args.timeout + 10)
        prober.join()
        ok = report(blast.result(), blast_s, probe, probe_s, args, config)
    finally:
        if prober is not None and prober.is_alive():
            prober.terminate()
            prober.join()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log not in (None, subprocess.DEVNULL):
            log.close()
        if tmp is not None:
            tmp.cleanup()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
