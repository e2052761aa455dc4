#!/usr/bin/python3
"""The HTTP API end to end: every route, every error status, concurrency, shutdown.

Runs the built daemon ($top_builddir/daemon/modeld) on free loopback ports with
models/fashion (or, where that is missing, a tiny model written here), using
only the standard library: PNGs are made with zlib and struct.  Each check
prints one line; the last line is the "N passed, N failed" summary.  Every
response must carry Content-Type: application/json, and every error response
a JSON body {"error": "..."}.
"""

import base64
import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testlib  # noqa: E402

CLASSIFY = "/v1/models/fashion/classify"

# ---- inputs -------------------------------------------------------------------


def png_bytes(width, height, rows, color_type=0):
    """An 8-bit PNG: color_type 0 gray (rows of ints), 2 RGB (rows of flat triples)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def synthetic(seed, size=28):
    """A size x size gray image, different for every seed: [row][col] ints 0..255."""
    return [[(x * (seed + 3) + y * (2 * seed + 1) + seed * 17) % 256 for x in range(size)]
            for y in range(size)]


def b64png(pixels):
    return base64.b64encode(png_bytes(len(pixels[0]), len(pixels), pixels)).decode("ascii")


# ---- a model directory -----------------------------------------------------------


def write_tiny_model(path):
    """Flatten + Linear(784 -> 10) with fixed weights, for trees without models/fashion."""
    os.makedirs(path, exist_ok=True)
    config = {"kind": "cnn", "architecture": "layers", "num_classes": 10,
              "input": {"channels": 1, "height": 28, "width": 28, "resize": "stretch",
                        "mean": [0.5], "std": [0.5]},
              "layers": [{"type": "Flatten"},
                         {"type": "Linear", "in_features": 784, "out_features": 10}]}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(path, "labels.txt"), "w") as f:
        f.write("".join(f"class{i}\n" for i in range(10)))
    bias = struct.pack("<10f", *[0.01 * i for i in range(10)])
    weight = struct.pack("<7840f", *[((i * 37) % 101 - 50) / 5000.0 for i in range(7840)])
    header = {"1.bias": {"dtype": "F32", "shape": [10], "data_offsets": [0, len(bias)]},
              "1.weight": {"dtype": "F32", "shape": [10, 784],
                           "data_offsets": [len(bias), len(bias) + len(weight)]}}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(os.path.join(path, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + bias + weight)


def model_dirs(tmp):
    """(fashion, fashion with resize "none") directories."""
    fashion = os.path.join(testlib.top_srcdir(), "models", "fashion")
    if not os.path.isfile(os.path.join(fashion, "model.safetensors")):
        fashion = os.path.join(tmp, "tiny")
        write_tiny_model(fashion)
        print(f"note: {testlib.top_srcdir()}/models/fashion missing; using a tiny model")
    exact = os.path.join(tmp, "exact")
    os.makedirs(exact)
    for name in ("model.safetensors", "labels.txt"):
        os.symlink(os.path.abspath(os.path.join(fashion, name)), os.path.join(exact, name))
    with open(os.path.join(fashion, "config.json")) as f:
        config = json.load(f)
    config["input"]["resize"] = "none"
    with open(os.path.join(exact, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(fashion, "labels.txt")) as f:
        labels = [line.rstrip("\n") for line in f]
    return fashion, exact, labels


# ---- checking helpers (tests/testlib.py) ----------------------------------------------

Failure, expect, call = testlib.Failure, testlib.expect, testlib.call_json
scrape, metric = testlib.scrape, testlib.metric


def refused(daemon, status, method, path, body=None, headers=None, contains=""):
    got, hdrs, doc = call(daemon, method, path, body, headers)
    expect(got == status, f"{method} {path}: status {got}, expected {status}: {doc!r}")
    expect(contains.lower() in doc["error"].lower(),
           f"{method} {path}: error {doc['error']!r} lacks {contains!r}")
    return hdrs, doc


def check_predictions(preds, labels, top_k):
    expect(isinstance(preds, list) and len(preds) == top_k,
           f"{len(preds)} predictions, expected {top_k}")
    prev = 2.0
    for p in preds:
        expect(set(p) == {"label", "index", "score"}, f"prediction keys {sorted(p)}")
        expect(labels[p["index"]] == p["label"], f"label {p['label']!r} at index {p['index']}")
        expect(0.0 <= p["score"] <= 1.0 and p["score"] <= prev, f"scores not sorted: {preds}")
        prev = p["score"]


def classify(daemon, body, labels, top_k=5):
    status, _, doc = call(daemon, "POST", CLASSIFY, body)
    expect(status == 200, f"classify: {status} {doc}")
    expect(doc.get("model") == "fashion", f"model {doc.get('model')!r}")
    if "images" in body:
        expect(set(doc) == {"model", "results"}, f"keys {sorted(doc)}")
        for r in doc["results"]:
            check_predictions(r["predictions"], labels, top_k)
    else:
        expect(set(doc) == {"model", "predictions"}, f"keys {sorted(doc)}")
        check_predictions(doc["predictions"], labels, top_k)
    return doc


def same_scores(a, b, tol=1e-5):
    expect([p["index"] for p in a] == [p["index"] for p in b]
           and all(abs(x["score"] - y["score"]) <= tol for x, y in zip(a, b)),
           f"different predictions for the same image:\n  {a}\n  {b}")


# ---- the checks, on a daemon with default settings --------------------------------


def check_health(d, labels):
    status, _, doc = call(d, "GET", "/v2/health/live")
    expect(status == 200 and doc == {"status": "live"}, f"live: {status} {doc}")
    status, _, doc = call(d, "GET", "/v2/health/ready")
    expect(status == 200 and doc == {"status": "ready"}, f"ready: {status} {doc}")
    status, _, _ = call(d, "HEAD", "/v2/health/live")
    expect(status == 200, f"HEAD live: {status}")


def check_models(d, labels):
    status, _, doc = call(d, "GET", "/v1/models")
    expect(status == 200, f"models: {status}")
    expect(list(doc) == ["models"] and len(doc["models"]) == 2, f"models: {doc}")
    m = doc["models"][0]
    expect(m == {"name": "fashion", "kind": "cnn", "ready": True, "architecture": "layers",
                 "inputs": {"channels": 1, "height": 28, "width": 28},
                 "classes": len(labels), "max_batch_size": 16}, f"fashion entry: {m}")
    status, _, one = call(d, "GET", "/v1/models/fashion")
    expect(status == 200 and one == m, f"/v1/models/fashion: {status} {one}")
    refused(d, 404, "GET", "/v1/models/nope", contains="unknown model 'nope'")


def check_classify_image(d, labels):
    img = synthetic(1)
    doc = classify(d, {"image": b64png(img)}, labels)
    # All ten scores are a softmax: they sum to 1.
    full = classify(d, {"image": b64png(img), "top_k": len(labels)}, labels, len(labels))
    total = sum(p["score"] for p in full["predictions"])
    expect(abs(total - 1.0) < 1e-3, f"scores sum to {total}")
    same_scores(doc["predictions"], full["predictions"][:5])
    # A data URL is the same image.
    url = classify(d, {"image": "data:image/png;base64," + b64png(img)}, labels)
    same_scores(doc["predictions"], url["predictions"])


def check_classify_images(d, labels):
    imgs = [synthetic(s) for s in range(3)]
    doc = classify(d, {"images": [b64png(i) for i in imgs], "top_k": 3}, labels, 3)
    expect(len(doc["results"]) == 3, f"{len(doc['results'])} results for 3 images")
    for i, img in enumerate(imgs):
        single = classify(d, {"image": b64png(img), "top_k": 3}, labels, 3)
        same_scores(doc["results"][i]["predictions"], single["predictions"])


def check_pixels(d, labels):
    img = synthetic(5)
    from_png = classify(d, {"image": b64png(img)}, labels)
    from_pixels = classify(d, {"pixels": img}, labels)
    same_scores(from_png["predictions"], from_pixels["predictions"])
    rgb = [[[v, v, v] for v in row] for row in img]   # gray as RGB converts back exactly
    same_scores(from_png["predictions"], classify(d, {"pixels": rgb}, labels)["predictions"])


def check_top_k(d, labels):
    img = b64png(synthetic(2))
    classify(d, {"image": img, "top_k": 1}, labels, 1)
    classify(d, {"image": img, "top_k": 1000}, labels, len(labels))   # capped
    for bad in (0, -1, 2.5, "3", None, True):
        refused(d, 400, "POST", CLASSIFY, {"image": img, "top_k": bad},
                contains="top_k must be a positive integer")


def check_bad_requests(d, labels):
    img = b64png(synthetic(3))
    json_ct = {"Content-Type": "application/json"}
    refused(d, 400, "POST", CLASSIFY, b"{not json", json_ct, contains="not valid JSON")
    refused(d, 400, "POST", CLASSIFY, b"", json_ct, contains="empty body")
    refused(d, 400, "POST", CLASSIFY, b"[1]", json_ct, contains="must be a JSON object")
    refused(d, 400, "POST", CLASSIFY, {"image": 5}, contains="image must be a base64 string")
    refused(d, 400, "POST", CLASSIFY, {"images": "x"}, contains="images must be an array")
    refused(d, 400, "POST", CLASSIFY, {"images": [img, 7]}, contains="images[1]")
    refused(d, 400, "POST", CLASSIFY, {"image": img, "extra": 1},
            contains='unknown field "extra"')
    refused(d, 400, "POST", CLASSIFY, {"image": img, "pixels": [[1]]},
            contains="exactly one of")
    refused(d, 400, "POST", CLASSIFY, {}, contains="exactly one of")
    # No Content-Type at all is accepted; a charset parameter too.
    status, _, _ = call(d, "POST", CLASSIFY, json.dumps({"image": img}).encode())
    expect(status == 200, f"classify without Content-Type: {status}")
    status, _, _ = call(d, "POST", CLASSIFY, json.dumps({"image": img}),
                        {"Content-Type": "application/json; charset=utf-8"})
    expect(status == 200, f"classify with charset: {status}")


def check_routes(d, labels):
    refused(d, 404, "POST", "/v1/models/nope/classify", {"image": "x"},
            contains="unknown model 'nope'")
    refused(d, 404, "GET", "/v1/nothing", contains="no route")
    refused(d, 404, "GET", "/", contains="no route")
    refused(d, 404, "GET", "/v1/models/fashion/classify/more", contains="no route")
    # The BERT routes on a CNN model name its kind and the route that fits it.
    for route in ("fill-mask", "next-sentence"):
        refused(d, 404, "POST", f"/v1/models/fashion/{route}", {"text": "a [MASK]"},
                contains="model fashion is a cnn model")
        refused(d, 404, "POST", f"/v1/models/fashion/{route}", {"text": "a [MASK]"},
                contains="use POST /v1/models/fashion/classify")
    refused(d, 405, "GET", "/v1/models/fashion/fill-mask", contains="use POST")
    hdrs, _ = refused(d, 405, "GET", CLASSIFY, contains="use POST")
    expect(hdrs.get("allow") == "POST", f"Allow: {hdrs.get('allow')!r}")
    hdrs, _ = refused(d, 405, "POST", "/v1/models", {"x": 1}, contains="not allowed")
    expect(hdrs.get("allow") == "GET, HEAD", f"Allow: {hdrs.get('allow')!r}")
    refused(d, 405, "DELETE", "/v2/health/live", contains="not allowed")
    refused(d, 405, "PUT", "/v1/models/fashion", contains="not allowed")


def check_media_types(d, labels):
    body = json.dumps({"image": b64png(synthetic(4))})
    refused(d, 415, "POST", CLASSIFY, body, {"Content-Type": "text/plain"},
            contains="Content-Type must be application/json")
    refused(d, 415, "POST", CLASSIFY, {"image": "!!!not base64!!!"}, contains="not valid base64")
    refused(d, 415, "POST", CLASSIFY, {"image": base64.b64encode(b"hello, world").decode()},
            contains="could not be decoded")
    refused(d, 415, "POST", CLASSIFY, {"image": ""}, contains="empty")
    refused(d, 415, "POST", CLASSIFY, {"images": [b64png(synthetic(1)), "Zm9v"]},
            contains="images[1]")


def check_unprocessable(d, labels):
    refused(d, 422, "POST", CLASSIFY, {"pixels": [[0, 256]]}, contains="out of range")
    refused(d, 422, "POST", CLASSIFY, {"pixels": [[0, 1], [2]]}, contains="columns")
    refused(d, 422, "POST", CLASSIFY, {"pixels": [[[1, 2]]]}, contains="channels")
    refused(d, 422, "POST", CLASSIFY, {"pixels": []}, contains="empty")
    # The resize "none" copy takes only 28x28.
    path = "/v1/models/exact/classify"
    refused(d, 422, "POST", path, {"pixels": synthetic(1, 27)}, contains="28")
    refused(d, 422, "POST", path, {"image": b64png(synthetic(1, 27))}, contains="28")
    status, _, _ = call(d, "POST", path, {"pixels": synthetic(1)})
    expect(status == 200, f"exact size refused: {status}")


def check_keep_alive(d, labels):
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
    try:
        for path in ("/v2/health/live", "/v1/models", "/v2/health/ready"):
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            expect(resp.status == 200, f"keep-alive {path}: {resp.status}")
        body = json.dumps({"image": b64png(synthetic(6))})
        for _ in range(3):
            conn.request("POST", CLASSIFY, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            expect(resp.status == 200, f"keep-alive classify: {resp.status}")
    finally:
        conn.close()


def check_client_disconnect(d, labels):
    """Clients that hang up before their answer must not hurt anyone else."""
    body = json.dumps({"images": [b64png(synthetic(s)) for s in range(16)]}).encode()
    head = (f"POST {CLASSIFY} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    for cut in (len(head) + len(body), len(head) + 100):   # whole request, or half a body
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", d.port)) as s:
                s.sendall((head + body)[:cut])
    classify(d, {"image": b64png(synthetic(7))}, labels)


def check_metrics(d, labels):
    """/metrics counts every outcome and fills the histograms."""
    before = scrape(d)
    classify(d, {"image": b64png(synthetic(3))}, labels)
    refused(d, 400, "POST", CLASSIFY, {"image": 3})
    refused(d, 405, "POST", "/metrics", {})
    after = scrape(d)
    for outcome, delta in (("ok", 1), ("client_error", 1), ("rejected", 0)):
        got = (metric(after, "modeld_requests_total", model="fashion", outcome=outcome)
               - metric(before, "modeld_requests_total", model="fashion", outcome=outcome))
        expect(got == delta, f"modeld_requests_total {outcome} rose by {got}, not {delta}")
    for h in ("modeld_request_queue_seconds", "modeld_request_compute_seconds",
              "modeld_request_duration_seconds", "modeld_batch_size"):
        got = metric(after, h + "_count", model="fashion") - metric(before, h + "_count",
                                                                    model="fashion")
        expect(got == 1, f"{h}_count rose by {got}, not 1")
    expect(metric(after, "modeld_model_ready", model="fashion", kind="cnn") == 1,
           "modeld_model_ready is not 1")
    expect(metric(after, "modeld_model_load_seconds", model="fashion") > 0, "no load time")
    expect(metric(after, "modeld_requests_in_flight", model="fashion") == 0, "in flight at rest")


def check_request_timeout_header(d, labels):
    """X-Request-Timeout-Ms must be 1..max_request_timeout_ms milliseconds."""
    body = {"image": b64png(synthetic(2))}
    for bad in ("0", "-5", "abc", "1.5", "300001", "99999999999999999999"):
        refused(d, 400, "POST", CLASSIFY, body, {"X-Request-Timeout-Ms": bad},
                contains="X-Request-Timeout-Ms")
    status, _, _ = call(d, "POST", CLASSIFY, body, {"X-Request-Timeout-Ms": "60000"})
    expect(status == 200, f"a valid timeout header: {status}")


def check_concurrency(d, labels):
    """16 threads at once; each answer must be the one for that thread's image."""
    imgs = [synthetic(100 + i) for i in range(16)]
    expected = [classify(d, {"image": b64png(img), "top_k": 3}, labels, 3)["predictions"]
                for img in imgs]

    def worker(i):
        for _ in range(6):
            if i % 2:
                doc = classify(d, {"image": b64png(imgs[i]), "top_k": 3}, labels, 3)
                same_scores(doc["predictions"], expected[i])
            else:
                doc = classify(d, {"images": [b64png(imgs[i]), b64png(imgs[(i + 1) % 16])],
                                   "top_k": 3}, labels, 3)
                same_scores(doc["results"][0]["predictions"], expected[i])
                same_scores(doc["results"][1]["predictions"], expected[(i + 1) % 16])
        return True

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(worker, i) for i in range(16)]
        for f in futures:
            f.result()


# ---- checks that need their own settings ---------------------------------------------


def write_conf(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def check_limits(fashion, labels, tmp):
    conf = write_conf(tmp, "limits.conf",
                      "[server]\nmax_body_bytes = 4096\nmax_images_per_request = 3\n")
    with testlib.Daemon({"fashion": fashion}, ["--config", conf]) as d:
        small = b64png([[0] * 28 for _ in range(28)])
        big = json.dumps({"image": base64.b64encode(os.urandom(5000)).decode()})
        refused(d, 413, "POST", CLASSIFY, big, {"Content-Type": "application/json"},
                contains="max_body_bytes")
        refused(d, 413, "POST", CLASSIFY, {"images": [small] * 4}, contains="too many images")
        classify(d, {"images": [small] * 3}, labels)
        # Chunked, so the size is only known while reading: still 413.
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=30)
        try:
            chunks = (big.encode()[i:i + 1000] for i in range(0, len(big), 1000))
            conn.request("POST", CLASSIFY, chunks, {"Content-Type": "application/json"},
                         encode_chunked=True)
            resp = conn.getresponse()
            data = resp.read()
            expect(resp.status == 413 and b"max_body_bytes" in data,
                   f"chunked over the limit: {resp.status} {data[:200]!r}")
        finally:
            conn.close()
        classify(d, {"image": small}, labels)


def check_queue_full(fashion, labels, tmp):
    """One slot, batches of one, many clients: refusals are fast 503s with Retry-After."""
    conf = write_conf(tmp, "queue.conf",
                      "[server]\nqueue_capacity = 1\nmax_batch_size = 1\nhttp_threads = 8\n")
    body = json.dumps({"images": [b64png(synthetic(s)) for s in range(64)], "top_k": 1})
    with testlib.Daemon({"fashion": fashion}, ["--config", conf]) as d:
        def one(_):
            status, hdrs, doc = call(d, "POST", CLASSIFY, body)
            if status == 503:
                expect(hdrs.get("retry-after") == "1", f"503 without Retry-After: {hdrs}")
                expect("queue_capacity" in doc["error"], f"503 error: {doc}")
            else:
                expect(status == 200, f"status {status}: {doc}")
            return status
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(one, range(24)))
        print(f"    queue_capacity 1: {statuses.count(200)} answered, "
              f"{statuses.count(503)} refused with 503")
        expect(statuses.count(200) >= 1, "nothing answered")


def check_expiry(fashion, labels, tmp):
    """request_timeout_ms 1: a request queued behind a long one expires with 503."""
    conf = write_conf(tmp, "expiry.conf",
                      "[server]\nrequest_timeout_ms = 1\nmax_batch_size = 1\n")
    big = {"images": [b64png(synthetic(s % 50)) for s in range(256)], "top_k": 1}
    small = {"image": b64png(synthetic(1)), "top_k": 1}
    with testlib.Daemon({"fashion": fashion}, ["--config", conf]) as d:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            running = pool.submit(call, d, "POST", CLASSIFY, big)
            answers = [running.result()] if running.done() else []
            # Small requests while the big one runs wait behind it: over 1 ms.
            while not running.done():
                answers.append(call(d, "POST", CLASSIFY, small))
            answers.append(running.result())
        expired = [a for a in answers if a[0] == 503]
        for status, hdrs, doc in answers:
            expect(status in (200, 503), f"status {status}: {doc}")
        for status, hdrs, doc in expired:
            expect("request_timeout_ms" in doc["error"] and hdrs.get("retry-after") == "1",
                   f"expired request: {hdrs} {doc}")
        expect(expired, f"no request expired in {len(answers)} tries")
        print(f"    request_timeout_ms 1: {len(expired)} of {len(answers)} expired")


def wait_for(what, cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        expect(time.monotonic() < deadline, f"timed out waiting for {what}")
        time.sleep(0.005)


def check_hangup_and_deadline(fashion, labels, tmp):
    """Queued work of a client that hangs up is dropped before it runs; a request's
    own X-Request-Timeout-Ms expires it."""
    conf = write_conf(tmp, "hangup.conf", "[server]\nmax_batch_size = 1\n")
    big = {"images": [b64png(synthetic(s % 50)) for s in range(256)], "top_k": 1}
    small = json.dumps({"image": b64png(synthetic(5))}).encode()
    head = (f"POST {CLASSIFY} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(small)}\r\n\r\n").encode()
    with testlib.Daemon({"fashion": fashion}, ["--config", conf]) as d:
        def in_flight():
            return metric(scrape(d), "modeld_requests_in_flight", model="fashion")

        def submitted():  # in flight or already answered
            m = scrape(d)
            return (metric(m, "modeld_requests_in_flight", model="fashion")
                    + metric(m, "modeld_requests_total", model="fashion", outcome="ok"))
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            # Three big requests keep the single worker busy, one image at a time.
            bigs = []
            for i in range(3):
                bigs.append(pool.submit(call, d, "POST", CLASSIFY, big))
                wait_for(f"big request {i} queued", lambda: submitted() >= i + 1)
            socks = []
            for i in range(5):
                s = socket.create_connection(("127.0.0.1", d.port))
                s.sendall(head + small)
                socks.append(s)
            wait_for("small requests queued", lambda: submitted() >= 8)
            status, _, doc = call(d, "POST", CLASSIFY, json.loads(small),
                                  {"X-Request-Timeout-Ms": "1"})
            expect(status == 503 and "X-Request-Timeout-Ms (1)" in doc["error"],
                   f"a 1 ms deadline behind busy work: {status} {doc}")
            for s in socks:
                s.close()
            for f in bigs:
                status, _, doc = f.result()
                expect(status == 200, f"big request: {status} {doc}")
        wait_for("in flight back to 0", lambda: in_flight() == 0)
        m = scrape(d)
        cancelled = metric(m, "modeld_requests_total", model="fashion", outcome="cancelled")
        expired = metric(m, "modeld_requests_total", model="fashion", outcome="expired")
        rows = metric(m, "modeld_batch_size_sum", model="fashion")
        expect(cancelled == 5, f"{cancelled} cancelled, not 5")
        expect(expired == 1, f"{expired} expired, not 1")
        expect(rows == 3 * 256, f"{rows} rows ran: the hung-up requests' work was not dropped")
        print(f"    5 clients hung up while queued: {cancelled:.0f} cancelled, rows run "
              f"{rows:.0f} (the big requests' only); 1 expired by its own deadline")


def check_shutdown_finishes_in_flight(fashion, labels, tmp):
    """SIGTERM while requests run: each is answered, then exit 0 (testlib checks)."""
    body = json.dumps({"images": [b64png(synthetic(s)) for s in range(64)], "top_k": 1})
    d = testlib.Daemon({"fashion": fashion}, ["--config", write_conf(
        tmp, "drain.conf", "[server]\nmax_batch_size = 4\n")])
    d.start()
    try:
        results = []
        started = threading.Barrier(9)

        def one():
            conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
            try:
                conn.connect()
                started.wait()
                conn.request("POST", CLASSIFY, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                results.append((resp.status, resp.getheader("Content-Type"), resp.read()))
            finally:
                conn.close()

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        started.wait()
        time.sleep(0.05)
        d.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        code = d.proc.wait(30)
        expect(code == 0, f"exit status {code} after SIGTERM")
        expect(len(results) == 8, f"{len(results)} of 8 requests answered")
        for status, ctype, data in results:
            expect(status == 200 and ctype == "application/json",
                   f"in-flight request got {status}: {data[:200]!r}")
    except BaseException:
        d.kill()
        d.print_log()
        raise


def check_startup_errors(fashion, labels, tmp):
    binary = testlib.daemon_binary()
    bad = write_conf(tmp, "bad.conf", "[server]\nworkers = 1\nthreads = 2\n")
    cases = [(["--config", bad], "bad.conf:3: unknown key 'threads'"),
             (["--listen", "nowhere"], "expected HOST:PORT"),
             (["--model", "fashion"], "expected NAME=DIR"),
             (["--bogus"], "unknown option"),
             (["--model", f"x={tmp}/missing"], "missing")]
    for args, message in cases:
        p = subprocess.run([binary] + args, capture_output=True, text=True, timeout=30)
        expect(p.returncode == 2, f"{args}: exit {p.returncode}, expected 2: {p.stderr}")
        expect(message in p.stderr, f"{args}: stderr {p.stderr!r} lacks {message!r}")
    p = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    expect(p.returncode == 0 and "--model NAME=DIR" in p.stdout, f"--help: {p.returncode}")
    p = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    expect(p.returncode == 0 and p.stdout.startswith("modeld "), f"--version: {p.stdout!r}")
    # Bind failure: a port already taken.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        p = subprocess.run([binary, "--listen", f"127.0.0.1:{port}", "--model",
                            f"fashion={fashion}"], capture_output=True, text=True, timeout=30)
    expect(p.returncode == 1 and "cannot listen" in p.stderr,
           f"port in use: exit {p.returncode}: {p.stderr!r}")


# ---- driver ----------------------------------------------------------------------------


def main():
    if not os.access(testlib.daemon_binary(), os.X_OK):
        print(f"FAIL: {testlib.daemon_binary()} not built")
        return 1
    tmp = tempfile.mkdtemp(prefix="modeld-http-api-")
    passed, failed = 0, 0

    def run(name, fn, *args):
        nonlocal passed, failed
        t0 = time.time()
        try:
            fn(*args)
        except (Failure, testlib.DaemonError, OSError, concurrent.futures.TimeoutError) as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)
            return
        passed += 1
        print(f"ok   {name} ({time.time() - t0:.1f} s)", flush=True)

    try:
        fashion, exact, labels = model_dirs(tmp)
        shared = [check_health, check_models, check_classify_image, check_classify_images,
                  check_pixels, check_top_k, check_bad_requests, check_routes,
                  check_media_types, check_unprocessable, check_keep_alive,
                  check_client_disconnect, check_concurrency, check_metrics,
                  check_request_timeout_header]
        try:
            with testlib.Daemon({"fashion": fashion, "exact": exact}) as d:
                for fn in shared:
                    run(fn.__name__, fn, d, labels)
                # Still alive and answering after all of the above.
                run("still_ready", check_health, d, labels)
            passed += 1
            print("ok   sigterm_exit_0", flush=True)
        except testlib.DaemonError as e:
            failed += 1
            print(f"FAIL daemon: {e}", flush=True)
        for fn in (check_limits, check_queue_full, check_expiry, check_hangup_and_deadline,
                   check_shutdown_finishes_in_flight,
                   check_startup_errors):
            run(fn.__name__, fn, fashion, labels, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
