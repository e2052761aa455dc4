#!/usr/bin/python3
"""The three default models under concurrent load, health during it, SIGTERM in it.

Runs the built daemon on models/fashion, models/bert and models/fashion-gan with a
config that makes concurrent requests share batches (a queue delay, max_batch_size 8,
a BERT token budget that cuts batches of long texts), using only the standard library:
  1. every payload is sent alone and its answer kept: classify (Fashion-MNIST test
     images as pixel arrays, or synthetic ones where the dataset is missing; PNGs from
     docs/examples, one request of three), fill-mask texts of very different lengths
     (one with two masks, one with targets, one in Hugging Face's shape),
     next-sentence pairs, generate with different seeds, counts (one over
     max_batch_size), classes, a grid and an interpolation;
  2. CLIENTS threads, half on keep-alive connections and half on a connection per
     request, send a shuffled stream of all of them, each REPEATS times: every answer
     must equal the one alone (labels, token ids, strings, PNG bytes exactly; scores
     within SCORE_RTOL), and the debug log must show batches of several jobs for
     every model;
  3. meanwhile a thread polls /v2/health/live and /v2/health/ready: every answer 200,
     the worst latency under HEALTH_LIMIT_S (health never waits on a queue);
  4. SIGTERM under load, once on that daemon and then on fresh ones, at different
     moments (WAVE_DELAYS_S): WAVE_CLIENTS threads send continuously, a connection
     per request, plus uploads stalled half-way across the signal.  Every request
     sent on an accepted connection gets a whole answer, 200 and right, or 503
     "shutting down"; an upload finished within the daemon's grace gets 200; modeld
     exits 0 within STOP_LIMIT_S.
The last line is a summary to quote.  Requests go over raw sockets so that each
one's fate is known exactly: refused at connect or reset while being sent (never
accepted: fine once the listener is closed), or sent and then answered, or not
(see the note above sigterm_wave() for the one case a client cannot tell apart).

Exit codes follow automake: 0 pass, 1 failure, 77 skip (a default model missing),
99 hard error (the test itself broke).
"""

import base64
import errno
import gzip
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import testlib  # noqa: E402

MODELS = ("fashion", "bert", "fashion-gan")

CLIENTS = 48            # threads of phase 2
REPEATS = 24            # each payload is sent this many times in phase 2
WAVE_CLIENTS = 32       # threads of each SIGTERM wave
WAVE_DELAYS_S = (0.7, 0.2, 1.0, 0.5, 0.35, 0.85)  # load before SIGTERM, one wave each
SLOW_REST_S = 0.2       # a slow upload's second half, after the signal: in the grace
LATE_REST_S = 2.5       # the first wave's late upload: past main.c's 2 s grace
GRACE_SURE_S = 1.0      # sent this soon after the signal, an upload is surely in time
HEALTH_LIMIT_S = 1.0    # worst health answer allowed while the queues are full
HEALTH_PERIOD_S = 0.02
STOP_LIMIT_S = 30.0     # SIGTERM to exit
IO_TIMEOUT_S = 60.0     # any one socket operation; far over request_timeout_ms
MAX_PRINTED = 40        # failure lines printed; the count at the end says the rest

# Batched and alone, the same float32 arithmetic grouped differently may differ by a
# few ulps (~1e-7 relative).  Answers print 6 significant digits, so such a
# difference can move the last digit by one: at most 1e-5 relative (a value printed
# as 1.00000).  SCORE_RTOL allows exactly that; anything more is a real difference.
SCORE_RTOL = 1e-5

MAX_BATCH = 8

Failure = testlib.Failure
FAILURES = []
_failures_lock = threading.Lock()


def check(cond, what):
    if not cond:
        with _failures_lock:
            FAILURES.append(what)
            if len(FAILURES) <= MAX_PRINTED:
                print(f"FAIL: {what}", flush=True)


def write_conf(tmp):
    # The queue waits 2 ms for a batch to fill, so concurrent requests do share forward
    # passes; 400 tokens per BERT pass makes the longest texts cut batches by tokens
    # rather than by count.  Debug logging shows the batches (worker.c logs each).
    path = os.path.join(tmp, "load.conf")
    with open(path, "w", encoding="utf-8") as f:
        f.write("[server]\n"
                "log_level = debug\n"
                "http_threads = 4\n"
                "workers = 1\n"
                f"max_batch_size = {MAX_BATCH}\n"
                "max_batch_tokens = 400\n"
                "max_queue_delay_us = 2000\n"
                "queue_capacity = 1024\n")
    return path


# ---- payloads ------------------------------------------------------------------------


class Payload:
    """One request body and, once sent alone, its answer."""

    def __init__(self, name, model, route, body):
        self.name = name
        self.model = model
        self.path = f"/v1/models/{model}/{route}"
        self.body = json.dumps(body).encode("utf-8")
        self.want = None

    def request(self, keep_alive):
        head = (f"POST {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n"
                f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
        return head.encode("ascii") + self.body


def fashion_test_images(indices):
    """Fashion-MNIST test images as [28][28] ints, read with the standard library
    (tools/fashion_mnist.py needs numpy); None where the dataset is not installed."""
    root = os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
    path = os.path.join(root, "t10k-images-idx3-ubyte.gz")
    if not os.path.isfile(path):
        return None
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n, h, w = struct.unpack(">IIII", raw[:16])
    if magic != 0x803 or (h, w) != (28, 28) or len(raw) != 16 + n * h * w:
        raise Failure(f"{path}: not a 28x28 IDX image file")
    out = []
    for i in indices:
        img = raw[16 + i * 784:16 + (i + 1) * 784]
        out.append([list(img[r * 28:(r + 1) * 28]) for r in range(28)])
    return out


def synthetic_image(seed):
    """A blob over noise: different enough between seeds to give different answers."""
    rng = random.Random(seed)
    cy, cx = rng.uniform(6, 22), rng.uniform(6, 22)
    sy, sx = rng.uniform(8, 120), rng.uniform(8, 120)
    return [[min(255, int(230 * math.exp(-(r - cy) ** 2 / sy - (c - cx) ** 2 / sx))
                 + rng.randrange(25)) for c in range(28)] for r in range(28)]


def classify_payloads():
    n = 22
    indices = [(i * 457 + 3) % 10000 for i in range(n)]
    images = fashion_test_images(indices)
    if images is None:
        print("no Fashion-MNIST test set: synthetic pixel arrays instead", flush=True)
        images = [synthetic_image(i) for i in range(n)]
        names = [f"synthetic {i}" for i in range(n)]
    else:
        names = [f"test image {i}" for i in indices]
    out = []
    for i, (name, px) in enumerate(zip(names, images)):
        top_k = (3, 1, 5, 10)[i % 4]
        out.append(Payload(f"classify {name} top_k {top_k}", "fashion", "classify",
                           {"pixels": px, "top_k": top_k}))
    examples = os.path.join(testlib.top_srcdir(), "docs", "examples")
    pngs = {}
    for name in ("sneaker", "bag", "trouser"):
        with open(os.path.join(examples, f"{name}.png"), "rb") as f:
            pngs[name] = base64.b64encode(f.read()).decode("ascii")
    out.append(Payload("classify sneaker.png", "fashion", "classify",
                       {"image": pngs["sneaker"], "top_k": 3}))
    # three images in one request: one job of 3 units among jobs of 1
    out.append(Payload("classify [bag, trouser, sneaker].png", "fashion", "classify",
                       {"images": [pngs["bag"], pngs["trouser"], pngs["sneaker"]], "top_k": 2}))
    return out


# Lengths from 3 to about 100 tokens, so that batches mix them (packed, no padding).
FILL_MASK = [
    {"text": "[MASK].", "top_k": 5},
    {"text": "the [MASK] is red.", "top_k": 3},
    {"text": "paris is the [MASK] of france.", "top_k": 5},
    {"text": "the man went to the [MASK] to buy some milk.", "top_k": 5},
    {"text": "she plays [MASK] music every evening after dinner with her friends.", "top_k": 2},
    {"text": "the children walked to [MASK] together in the morning, laughing and "
             "talking about the games they would play.", "top_k": 5},
    {"text": "he said that the box was too [MASK] to carry up the [MASK].", "top_k": 3},
    {"text": "the king and the [MASK] lived in a castle near the river.",
     "targets": ["queen", "king", "man", "river"]},
    {"inputs": "the weather today is [MASK], so we stay at home.",
     "parameters": {"top_k": 4}},
    {"text": "in the winter the river freezes, and the people of the town walk across the "
             "ice to the market on the other side, where farmers sell [MASK] and bread, "
             "and the children run between the stalls.", "top_k": 5},
    {"text": "the doctor told the patient to rest for a week, to drink more water, to "
             "sleep at least eight hours every night, to stay away from work and from the "
             "computer, and to come back to the [MASK] if the pain did not go away after "
             "three or four days, or if a fever started, because then the treatment "
             "would have to change and more tests would be needed.", "top_k": 5},
    {"text": "[MASK] [MASK] [MASK]", "top_k": 1},
]

NEXT_SENTENCE = [
    ("the man went to the store.", "he bought a gallon of milk."),
    ("the man went to the store.", "penguins do not fly."),
    ("it rained all day, so the game was moved to the next week, when the weather was "
     "better.", "the players were glad of it."),
]

# Seeds past 2^63 - 1 come as strings; count 10 is over max_batch_size (chunks).
GENERATE = [
    {"count": 1, "seed": 7, "class": "Sneaker"},
    {"count": 2, "seed": 42, "class": 3},
    {"count": 3, "seed": 1000},
    {"count": 4, "seed": 5, "class": "Bag"},
    {"count": 1, "seed": "18446744073709551615", "class": "Trouser"},
    {"count": 10, "seed": 77},
    {"count": 5, "seed": 9, "grid": True},
    {"interpolate": {"from_seed": 3, "to_seed": 9, "steps": 4}, "class": 0},
]


def all_payloads():
    out = classify_payloads()
    for i, body in enumerate(FILL_MASK):
        out.append(Payload(f"fill-mask #{i} {json.dumps(body)[:60]}", "bert", "fill-mask", body))
    for i, (a, b) in enumerate(NEXT_SENTENCE):
        out.append(Payload(f"next-sentence #{i}", "bert", "next-sentence",
                           {"text_a": a, "text_b": b}))
    for i, body in enumerate(GENERATE):
        out.append(Payload(f"generate #{i} {json.dumps(body)}", "fashion-gan", "generate", body))
    return out


# ---- raw HTTP -----------------------------------------------------------------------


class Reply:
    """How far one request got.  stage: 'refused' (connect failed), 'unsent' (the
    connection failed while the request was being written), 'answered' (a whole
    response), 'unanswered' (written in full, then the connection ended or timed out
    before a whole response; error says how, got how many bytes came, reset whether
    it was a reset: TCP's answer to a request nobody read)."""

    def __init__(self, stage, status=None, headers=None, body=b"", error=None, got=0,
                 reset=False):
        self.stage, self.status, self.headers = stage, status, headers or {}
        self.body, self.error, self.got, self.reset = body, error, got, reset

    def reset_unread(self):
        return self.stage == "unanswered" and self.reset and self.got == 0

    def describe(self):
        if self.stage == "answered":
            return f"{self.status} {self.body[:200]!r}"
        return f"{self.stage}: {self.error} after {self.got} response bytes"


class Unanswered(Exception):
    def __init__(self, error, got, reset=False):
        super().__init__(error)
        self.error, self.got, self.reset = error, got, reset


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_response(sock):
    """(status, {lower-case header: value}, body) of one response with Content-Length."""
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise Unanswered("connection closed", len(buf))
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise Unanswered(f"bad status line {lines[0]!r}", len(buf))
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise Unanswered(f"no Content-Length in {head[:300]!r}", len(buf))
        want = int(headers["content-length"])
        while len(body) < want:
            chunk = sock.recv(65536)
            if not chunk:
                raise Unanswered(f"connection closed in the body ({len(body)} of {want} bytes)",
                                 len(buf))
            buf += chunk
            body += chunk
        if len(body) > want:
            raise Unanswered(f"{len(body) - want} bytes past Content-Length", len(buf))
        return int(parts[1]), headers, body
    except socket.timeout:
        raise Unanswered(f"no whole response in {IO_TIMEOUT_S:.0f} s", len(buf))
    except ConnectionError as e:
        raise Unanswered(f"{type(e).__name__} ({errno.errorcode.get(e.errno, e.errno)})",
                         len(buf), isinstance(e, ConnectionResetError))


def exchange(sock, data):
    """Sends one request on sock and reads its response: a Reply, never raises."""
    try:
        sock.sendall(data)
    except OSError as e:
        return Reply("unsent", error=f"{type(e).__name__} while sending")
    try:
        status, headers, body = read_response(sock)
    except Unanswered as e:
        return Reply("unanswered", error=e.error, got=e.got, reset=e.reset)
    return Reply("answered", status, headers, body)


def one_shot(port, payload):
    """payload on a connection of its own (Connection: close)."""
    try:
        sock = connect(port)
    except OSError as e:
        return Reply("refused", error=f"{type(e).__name__} at connect")
    try:
        return exchange(sock, payload.request(keep_alive=False))
    finally:
        sock.close()


# ---- comparing answers -------------------------------------------------------------------


def short(v):
    s = json.dumps(v)
    return s if len(s) <= 80 else f"{s[:60]}... ({len(s)} chars)"


def first_difference(want, got, where="answer"):
    """None when got is want (floats within SCORE_RTOL, everything else exact), else
    where and how they first differ."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            keys = sorted(got) if isinstance(got, dict) else type(got).__name__
            return f"{where}: keys {keys}, alone {sorted(want)}"
        for k in want:
            d = first_difference(want[k], got[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return f"{where}: {short(got)}, alone {short(want)}"
        for i, (w, g) in enumerate(zip(want, got)):
            d = first_difference(w, g, f"{where}[{i}]")
            if d:
                return d
        return None
    if isinstance(want, float) or isinstance(got, float):
        if (isinstance(want, (int, float)) and isinstance(got, (int, float))
                and not isinstance(want, bool) and not isinstance(got, bool)
                and abs(want - got) <= SCORE_RTOL * max(abs(want), abs(got))):
            return None
        return f"{where}: {got!r}, alone {want!r} (over {SCORE_RTOL:g} relative)"
    if type(got) is not type(want) or got != want:
        if isinstance(want, str) and isinstance(got, str) and len(want) > 80:
            at = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b),
                      min(len(want), len(got)))
            return (f"{where}: a {len(got)}-char string, alone {len(want)} chars, first "
                    f"differs at {at}")
        return f"{where}: {short(got)}, alone {short(want)}"
    return None


def check_answer(payload, reply, what):
    """A 200 answer that must equal the one alone; True if it does."""
    if reply.stage != "answered" or reply.status != 200:
        check(False, f"{what}: {payload.name}: {reply.describe()}")
        return False
    ctype = reply.headers.get("content-type")
    try:
        doc = json.loads(reply.body)
    except ValueError:
        doc = None
    if ctype != "application/json" or doc is None:
        check(False, f"{what}: {payload.name}: Content-Type {ctype}, body {reply.body[:200]!r}")
        return False
    diff = first_difference(payload.want, doc)
    check(diff is None, f"{what}: {payload.name}: {diff}")
    return diff is None


# ---- 1. alone --------------------------------------------------------------------------


def answers_alone(port, payloads):
    t0 = time.monotonic()
    for p in payloads:
        r = one_shot(port, p)
        if r.stage != "answered" or r.status != 200:
            raise Failure(f"alone: {p.name}: {r.describe()}")
        try:
            p.want = json.loads(r.body)
        except ValueError:
            raise Failure(f"alone: {p.name}: not JSON: {r.body[:200]!r}")
    print(f"alone: {len(payloads)} payloads answered one at a time in "
          f"{time.monotonic() - t0:.2f} s", flush=True)


# ---- 2. and 3. load, with health polled throughout -----------------------------------------


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.n = {}

    def add(self, key, k=1):
        with self.lock:
            self.n[key] = self.n.get(key, 0) + k

    def __getitem__(self, key):
        return self.n.get(key, 0)


def load_client(port, stream, keep_alive, counts, barrier):
    """Sends stream (payloads) in order; keep-alive clients reuse their connection
    until the daemon says Connection: close."""
    sock = None
    barrier.wait()
    try:
        for p in stream:
            if sock is None:
                try:
                    sock = connect(port)
                except OSError as e:
                    counts.add("sent")
                    check(False, f"load: {p.name}: {type(e).__name__} at connect")
                    continue
            counts.add("sent")
            r = exchange(sock, p.request(keep_alive))
            if r.stage == "answered":
                counts.add("answered")
            if not check_answer(p, r, "load"):
                counts.add("mismatches" if r.stage == "answered" and r.status == 200
                           else "errors")
            if (not keep_alive or r.stage != "answered"
                    or r.headers.get("connection", "").lower() == "close"):
                sock.close()
                sock = None
    except Exception as e:  # a bug here must fail the test, not vanish with the thread
        check(False, f"load client: {type(e).__name__}: {e}\n{traceback.format_exc()}")
    finally:
        if sock is not None:
            sock.close()


def health_poller(port, stop, worst, counts):
    """Polls both health routes, a connection each, as a load balancer would."""
    while not stop.is_set():
        for path in ("/v2/health/live", "/v2/health/ready"):
            t0 = time.monotonic()
            try:
                status, _, body = testlib.http(port, "GET", path, timeout=IO_TIMEOUT_S)
            except OSError as e:
                check(False, f"health: GET {path}: {type(e).__name__}: {e}")
                continue
            dt = time.monotonic() - t0
            counts.add("polls")
            worst[path] = max(worst.get(path, 0.0), dt)
            check(status == 200, f"health: GET {path} under load: {status} {body[:200]!r}")
        stop.wait(HEALTH_PERIOD_S)


def load_phase(port, payloads):
    rng = random.Random(20240611)
    jobs = [p for p in payloads for _ in range(REPEATS)]
    rng.shuffle(jobs)
    counts = Counts()
    barrier = threading.Barrier(CLIENTS + 1)
    clients = [threading.Thread(target=load_client,
                                args=(port, jobs[i::CLIENTS], i % 2 == 0, counts, barrier))
               for i in range(CLIENTS)]
    for t in clients:
        t.start()
    stop, worst, polls = threading.Event(), {}, Counts()
    poller = threading.Thread(target=health_poller, args=(port, stop, worst, polls))
    poller.start()
    barrier.wait()
    t0 = time.monotonic()
    for t in clients:
        t.join()
    elapsed = time.monotonic() - t0
    stop.set()
    poller.join()
    check(counts["sent"] == len(jobs), f"load: {counts['sent']} of {len(jobs)} requests sent")
    print(f"load: {CLIENTS} clients (half keep-alive), {counts['sent']} requests sent, "
          f"{counts['answered']} answered, {counts['mismatches']} mismatches, "
          f"{counts['errors']} errors, in {elapsed:.2f} s "
          f"({counts['answered'] / elapsed:.0f}/s)", flush=True)
    health_worst = max(worst.values(), default=0.0)
    print("health: " + ", ".join(f"{p} worst {1e3 * s:.1f} ms" for p, s in worst.items())
          + f" over {polls['polls']} polls (limit {HEALTH_LIMIT_S * 1e3:.0f} ms)", flush=True)
    check(polls["polls"] >= 2, f"health: only {polls['polls']} polls during the load")
    check(health_worst < HEALTH_LIMIT_S,
          f"health: an answer took {health_worst * 1e3:.0f} ms under load, over "
          f"{HEALTH_LIMIT_S * 1e3:.0f} ms: health must not wait on the queues")
    return counts, elapsed, health_worst, polls["polls"]


BATCH_LINE = re.compile(r"model (\S+) worker \d+: batch of (\d+) jobs")


def batches_in_log(log_path):
    """{model: [jobs per batch]} from worker.c's debug lines (it logs a batch of more
    than one job, or one job of several units)."""
    with open(log_path, errors="replace") as f:
        text = f.read()
    out = {m: [] for m in MODELS}
    for m in BATCH_LINE.finditer(text):
        out.setdefault(m.group(1), []).append(int(m.group(2)))
    for model in MODELS:
        sizes = out[model]
        check(any(n > 1 for n in sizes),
              f"batches: model {model} never ran several jobs together under load "
              f"(batch sizes logged: {sorted(set(sizes))})")
        check(all(n <= MAX_BATCH for n in sizes),
              f"batches: model {model} ran {max(sizes)} jobs at once, over max_batch_size "
              f"{MAX_BATCH}")
    desc = ", ".join(f"{m} {sum(n > 1 for n in out[m])} (up to {max(out[m], default=0)} jobs)"
                     for m in MODELS)
    print(f"batches of several jobs: {desc}", flush=True)
    return out


# ---- 4. SIGTERM under load ------------------------------------------------------------------
#
# What "accepted" can mean to a client: the kernel completes the TCP handshake and
# buffers the request for a connection in the listen backlog before modeld accept()s
# it, and closing the listening socket (modeld does at SIGTERM) resets every
# connection still there.  Such a request was never read by anyone, and the client
# sees a reset before any byte of an answer, which it cannot tell from an accepted
# connection reset with its request unread.  So after SIGTERM "never accepted" is:
# refused at connect, reset while sending, or reset before any answer byte.  A clean
# close (FIN) without an answer, a partial answer, a reset after some bytes of one,
# or any of these before SIGTERM, is a failure.


def sigterm_wave(d, payloads, delay, late):
    """WAVE_CLIENTS threads send continuously, a connection per request, until a connect
    is refused; SIGTERM goes to the daemon after delay seconds.  Plus one slow upload
    per model across the signal, and if late, one upload finished after the grace.
    Returns the counts; exit and exit_s among them."""
    counts = Counts()
    signalled = threading.Event()
    done = threading.Event()
    t_sig = [None]

    def client(i):
        rng = random.Random(7000 + i)
        try:
            while not done.is_set():
                p = rng.choice(payloads)
                r = one_shot(d.port, p)
                if r.stage in ("refused", "unsent") or r.reset_unread():
                    kind = "reset unread" if r.reset_unread() else r.stage
                    counts.add(kind)
                    check(signalled.is_set(), f"sigterm wave: {p.name}: {r.describe()} "
                          "before SIGTERM")
                    if r.stage == "refused":
                        return
                    continue
                counts.add("sent")
                if r.stage != "answered":
                    counts.add("unanswered")
                    check(False, f"sigterm wave: {p.name} was sent in full on an accepted "
                          f"connection and got no whole answer: {r.describe()}")
                    continue
                counts.add("answered")
                if r.status == 200:
                    counts.add("ok")
                    if not check_answer(p, r, "sigterm wave"):
                        counts.add("mismatches")
                elif r.status == 503:
                    counts.add("503")
                    msg = ""
                    try:
                        msg = json.loads(r.body).get("error", "")
                    except (ValueError, AttributeError):
                        pass
                    check(signalled.is_set() and "shutting down" in msg and
                          r.headers.get("content-type") == "application/json",
                          f"sigterm wave: {p.name}: 503 {r.headers.get('content-type')} "
                          f"{r.body[:200]!r}{'' if signalled.is_set() else ' before SIGTERM'}")
                else:
                    counts.add("other")
                    check(False, f"sigterm wave: {p.name}: {r.describe()}")
        except Exception as e:
            check(False, f"sigterm wave client: {type(e).__name__}: {e}\n{traceback.format_exc()}")

    def slow_upload(p, started, rest_s):
        """Headers and half the body before SIGTERM, the rest rest_s after it.  Sent
        well within main.c's grace for uploads in progress (GRACE_SURE_S) the request
        is queued as usual and must be answered 200 and right.  Sent later (as the
        late upload is, or any when this process was starved) the models may be
        closed already: 503 "shutting down" is right too, but an answer is due either
        way (the connection was accepted long before)."""
        data = p.request(keep_alive=False)
        cut = len(data) - len(p.body) // 2
        try:
            sock = connect(d.port)
        except OSError as e:
            started.set()
            check(False, f"slow upload: {p.name}: {type(e).__name__} at connect")
            return
        try:
            try:
                sock.sendall(data[:cut])
            finally:
                started.set()
            signalled.wait(STOP_LIMIT_S)
            time.sleep(rest_s)
            sent_s = time.monotonic() - t_sig[0]
            r = exchange(sock, data[cut:])
            what = f"upload finished {sent_s:.2f} s after SIGTERM"
            kind = "late" if rest_s == LATE_REST_S else "slow"
            counts.add(kind)
            if r.stage == "answered" and r.status == 503 and sent_s > GRACE_SURE_S:
                counts.add(f"{kind} 503")
                check(b"shutting down" in r.body and
                      r.headers.get("content-type") == "application/json",
                      f"{what}: {p.name}: {r.describe()}, expected JSON 'shutting down'")
            elif check_answer(p, r, what):
                counts.add(f"{kind} 200")
        except Exception as e:
            check(False, f"slow upload: {type(e).__name__}: {e}\n{traceback.format_exc()}")
        finally:
            sock.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(WAVE_CLIENTS)]
    # the largest body of each model, so that half of it is a good part of a request
    slow = [max((p for p in payloads if p.model == m), key=lambda p: len(p.body))
            for m in MODELS]
    uploads = [(p, SLOW_REST_S) for p in slow] + ([(slow[0], LATE_REST_S)] if late else [])
    started = [threading.Event() for _ in uploads]
    threads += [threading.Thread(target=slow_upload, args=(p, e, rest))
                for (p, rest), e in zip(uploads, started)]
    for t in threads:
        t.start()
    for e in started:
        e.wait(IO_TIMEOUT_S)
    # under load for sure: as many answers as clients, then delay more of it
    deadline = time.monotonic() + IO_TIMEOUT_S
    while counts["ok"] < WAVE_CLIENTS and time.monotonic() < deadline and not FAILURES:
        time.sleep(0.01)
    time.sleep(delay)
    before = counts["ok"]
    t_sig[0] = time.monotonic()
    at = utc_now()
    d.proc.send_signal(signal.SIGTERM)
    signalled.set()
    try:
        code = d.proc.wait(STOP_LIMIT_S)
    except subprocess.TimeoutExpired:
        code = None
    exit_s = time.monotonic() - t_sig[0]
    # After the exit every connect is refused, so the clients stop by themselves;
    # done only bounds a client that keeps being reset.
    done.set()
    for t in threads:
        t.join(IO_TIMEOUT_S + 5)
    check(not any(t.is_alive() for t in threads), "sigterm wave: a client never finished")
    check(before > 0, "sigterm wave: no request was answered before SIGTERM: not under load")
    check(code is not None, f"sigterm wave: modeld still running {STOP_LIMIT_S:.0f} s after "
          "SIGTERM")
    check(code is None or code == 0, f"sigterm wave: modeld exited with status {code} after "
          "SIGTERM, expected 0")
    check(counts["slow"] == len(slow), f"sigterm wave: {counts['slow']} of {len(slow)} slow "
          "uploads finished")
    check(counts["late"] == int(late), "sigterm wave: the late upload did not finish")
    counts.add("never", counts["refused"] + counts["unsent"] + counts["reset unread"])
    counts.add("before", before)
    counts.n["exit"], counts.n["exit_s"] = code, exit_s
    print(f"sigterm after {delay:.1f} s: {counts['sent']} sent on accepted connections, "
          f"{counts['answered']} answered ({counts['ok']} ok, {before} of them before the "
          f"signal; {counts['503']} 503), {counts['unanswered']} unanswered; slow uploads "
          f"{counts['slow 200']} 200, {counts['slow 503']} 503"
          + (f", the late one {'503' if counts['late 503'] else '200'}" if late else "")
          + f"; never accepted {counts['never']} "
          f"({counts['refused']} refused, {counts['unsent']} reset while sending, "
          f"{counts['reset unread']} reset unread from the backlog); SIGTERM at {at}, exit "
          f"{code} {exit_s:.2f} s after it", flush=True)
    return counts


def utc_now():
    """The time as the daemon's log writes it, to line the two up."""
    t = time.time()
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def print_log(d):
    """What a failure needs of a daemon's debug log: its info, warning and error lines
    (start, SIGTERM, drain, stop), then testlib's tail."""
    try:
        with open(d.log.name, errors="replace") as f:
            lines = [line for line in f if " debug " not in line]
    except OSError:
        return
    print(f"---- {d.log.name}: lines other than debug ----")
    sys.stdout.write("".join(lines[-40:]))
    d.print_log(30)


SANITIZER = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|"
                       r"WARNING: ThreadSanitizer")


def sanitizer_reports(log_path):
    """A sanitizer build aborts on its first report, so the exit status catches it;
    this names it.  (A daemon killed after a failure may leave none.)"""
    try:
        with open(log_path, errors="replace") as f:
            hits = [line.rstrip() for line in f if SANITIZER.search(line)]
    except OSError:
        return
    check(not hits, f"sanitizer report in {log_path}: {hits[:3]}")


# ---- main ---------------------------------------------------------------------------------------


def run(models, conf, payloads, daemons):
    """Phases 1-4; every daemon started goes into daemons, for main to clean up."""
    d = testlib.Daemon(models, extra_args=["--config", conf])
    daemons.append(d)
    d.start()
    answers_alone(d.port, payloads)
    load, load_s, health_worst, polls = load_phase(d.port, payloads)
    batches = batches_in_log(d.log.name)
    waves = [sigterm_wave(d, payloads, WAVE_DELAYS_S[0], late=True)]
    # more shutdowns at other moments of the load, each on a fresh daemon
    for delay in WAVE_DELAYS_S[1:]:
        d = testlib.Daemon(models, extra_args=["--config", conf])
        daemons.append(d)
        d.start()
        waves.append(sigterm_wave(d, payloads, delay, late=False))
    multi = sum(sum(n > 1 for n in sizes) for sizes in batches.values())
    largest = "/".join(str(max(batches[m], default=0)) for m in MODELS)
    total = {k: sum(w[k] for w in waves)
             for k in ("sent", "answered", "ok", "503", "never", "slow 200", "slow 503",
                       "late 503")}
    exits = sorted(set(w["exit"] for w in waves), key=str)
    return (f"{load['sent']} requests sent, {load['answered']} answered, "
            f"{load['mismatches']} mismatches in {load_s:.1f} s; {multi} batches of several "
            f"jobs, up to {largest} jobs ({'/'.join(MODELS)}); health worst "
            f"{health_worst * 1e3:.1f} ms over {polls} polls; {len(waves)} SIGTERM waves: "
            f"{total['sent']} sent, {total['answered']} answered ({total['ok']} ok, "
            f"{total['503']} 503), {total['never']} not accepted; slow uploads "
            f"{total['slow 200']} 200, {total['slow 503']} 503; late upload "
            f"{'503' if total['late 503'] else '200'}, exit "
            f"{'/'.join(map(str, exits))} in at most {max(w['exit_s'] for w in waves):.2f} s")


def main():
    if not os.access(testlib.daemon_binary(), os.X_OK):
        print(f"FAIL: {testlib.daemon_binary()} not built")
        return 1
    models = {m: os.path.join(testlib.top_srcdir(), "models", m) for m in MODELS}
    for m, path in models.items():
        if not os.path.isfile(os.path.join(path, "model.safetensors")):
            testlib.skip(f"{path} has no model.safetensors")
    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="modeld-http-load-")
    daemons = []
    summary = None
    try:
        summary = run(models, write_conf(tmp), all_payloads(), daemons)
    except (Failure, testlib.DaemonError, OSError) as e:
        check(False, f"{type(e).__name__}: {e}")
    except Exception:
        traceback.print_exc()
        check(False, "the test itself broke (above)")
        return testlib.EXIT_HARD_ERROR
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        # Not testlib.Daemon.stop(): each wave signalled its daemon itself and checked
        # the exit.  The logs are kept, and their tails printed, only on failure.
        for d in daemons:
            sanitizer_reports(d.log.name)
            if FAILURES:
                d.kill()
                print_log(d)
            else:
                d.log.close()
                os.unlink(d.log.name)
    if FAILURES:
        print(f"{len(FAILURES)} failure(s); the first: {FAILURES[0]}", flush=True)
        return 1
    print(f"http_load: {summary}; total {time.monotonic() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
