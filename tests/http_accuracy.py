#!/usr/bin/python3
"""End to end: modeld classifies the 10,000 Fashion-MNIST test images as PyTorch does.

Every test image is encoded as a PNG and sent over HTTP, the way a client
would, to a daemon serving models/fashion.  PyTorch runs the same files
(reloaded by load_model_dir) on the same pixels.  The two must agree on
accuracy to 0.05 percentage points and on the top-1 class of all but at
most 5 images, and the daemon must reach the model's 90% floor.

Requests go out from several client threads at once so that the batcher
really merges requests; a mix-up between requests would show up as
disagreements.
"""

import base64
import concurrent.futures
import io
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testlib  # noqa: E402

PER_REQUEST = 100
CLIENTS = 4
MAX_ACCURACY_GAP = 0.05     # percentage points
MAX_DISAGREEMENTS = 5
MIN_ACCURACY = 90.0


def encode_png(pixels):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def classify(daemon, images_b64, labels):
    """Top-1 indices the daemon returns for a list of base64 PNGs."""
    status, headers, body = daemon.request(
        "POST", "/v1/models/fashion/classify", {"images": images_b64, "top_k": 1})
    if status != 200:
        raise AssertionError(f"HTTP {status}: {body[:500]!r}")
    reply = json.loads(body)
    results = reply.get("results")
    if reply.get("model") != "fashion" or not isinstance(results, list) \
            or len(results) != len(images_b64):
        raise AssertionError(f"unexpected reply shape: {body[:500]!r}")
    out = []
    for r in results:
        preds = r["predictions"]
        if len(preds) != 1:
            raise AssertionError(f"top_k 1 gave {len(preds)} predictions")
        p = preds[0]
        if labels[p["index"]] != p["label"] or not 0.0 <= p["score"] <= 1.0:
            raise AssertionError(f"inconsistent prediction {p}")
        out.append(p["index"])
    return out


def main():
    try:
        import torch
        import PIL  # noqa: F401
    except ImportError as e:
        testlib.skip(f"needs torch and PIL in {sys.executable} ({e})")
    testlib.tools_on_path()
    import export_model
    import fashion_mnist
    if not fashion_mnist.available():
        testlib.skip(f"Fashion-MNIST not found in {fashion_mnist.data_dir()} "
                     "(apt-get install dataset-fashion-mnist)")
    torch.set_num_threads(2)

    model_dir = os.path.join(testlib.top_srcdir(), "models", "fashion")
    images, truth = fashion_mnist.load("test")          # (10000, 28, 28), (10000,)
    model, config, labels = export_model.load_model_dir(model_dir)

    with torch.no_grad():
        x = export_model.normalize_pixels(images, config)
        torch_pred = torch.cat([model(x[i:i + 1000]).argmax(1)
                                for i in range(0, len(x), 1000)]).tolist()

    t0 = time.time()
    encoded = [encode_png(img) for img in images]
    chunks = [encoded[i:i + PER_REQUEST] for i in range(0, len(encoded), PER_REQUEST)]
    print(f"encoded {len(encoded)} PNGs in {time.time() - t0:.1f} s", flush=True)

    try:
        with testlib.Daemon({"fashion": model_dir}) as daemon:
            t0 = time.time()
            with concurrent.futures.ThreadPoolExecutor(CLIENTS) as pool:
                answers = list(pool.map(lambda c: classify(daemon, c, labels), chunks))
            elapsed = time.time() - t0
    except testlib.DaemonError as e:
        testlib.fail(f"modeld: {e}")
    except AssertionError as e:
        testlib.fail(f"classify: {e}")
    daemon_pred = [i for a in answers for i in a]

    n = len(truth)
    daemon_acc = 100.0 * sum(p == t for p, t in zip(daemon_pred, truth)) / n
    torch_acc = 100.0 * sum(p == t for p, t in zip(torch_pred, truth)) / n
    differ = [i for i in range(n) if daemon_pred[i] != torch_pred[i]]
    print(f"modeld:  {daemon_acc:.2f}% top-1 on {n} images "
          f"({elapsed:.1f} s, {n / elapsed:.0f} images/s over HTTP)")
    print(f"PyTorch: {torch_acc:.2f}% top-1 on the same files")
    print(f"top-1 disagreements: {len(differ)}" + (f" (images {differ[:20]})" if differ else ""))

    problems = []
    if abs(daemon_acc - torch_acc) > MAX_ACCURACY_GAP:
        problems.append(f"accuracies differ by {abs(daemon_acc - torch_acc):.2f} points "
                        f"(> {MAX_ACCURACY_GAP})")
    if len(differ) > MAX_DISAGREEMENTS:
        problems.append(f"{len(differ)} disagreements (> {MAX_DISAGREEMENTS})")
    if daemon_acc < MIN_ACCURACY:
        problems.append(f"accuracy {daemon_acc:.2f}% below {MIN_ACCURACY}%")
    if problems:
        testlib.fail("; ".join(problems))
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
