#!/usr/bin/python3
"""GAN generators over HTTP end to end: POST /v1/models/{name}/generate.

Runs the built daemon on generators written here with random weights through
tools/export_model.py (a conditional one with a label embedding, Linear + Unflatten +
ConvTranspose2d + BatchNorm, tanh range; an unconditional RGB one with sigmoid range),
plus models/fashion-gan when it holds a trained checkpoint.  Checks:
  - a seed's latent is tests/latent_reference.py's (the documented sampler): the
    daemon's PNG for seed s equals PyTorch's output on that latent, quantised as
    save_image does (every pixel within 1 of it, 99% exactly), and equals the
    answer to the same latent sent explicitly, byte for byte;
  - the same request twice gives the same bytes; count n gives seeds s..s+n-1;
  - classes by label and index, the default tour of classes, interpolation ends;
  - Accept: image/png (raw body, X-Seed), grids of the right size;
  - concurrent requests (batched together) get the answers they get alone;
  - every error of the route: 400, 413, 422, and 404 for a route of another kind.

Exit codes follow automake: 0 pass, 77 skip (no PyTorch or PIL), 1 failure.
"""

import base64
import concurrent.futures
import io
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import testlib  # noqa: E402
import latent_reference  # noqa: E402

try:
    import numpy as np
    import torch
    import torch.nn as nn
    from PIL import Image
except ImportError as e:  # pragma: no cover - depends on the machine
    testlib.skip(f"needs PyTorch, numpy and PIL ({e}): apt-get install python3-torch python3-pil")

testlib.tools_on_path()
import export_model  # noqa: E402

LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
          "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print(f"FAIL: {what}", flush=True)


def randomise_bn(model, gen):
    """Non-trivial running statistics, so folding BatchNorm is exercised."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def make_conditional(out_dir):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    nz, emb = 16, 6
    net = nn.Sequential(
        nn.Linear(nz + emb, 16 * 7 * 7), nn.BatchNorm1d(16 * 7 * 7), nn.ReLU(),
        nn.Unflatten(1, (16, 7, 7)),
        nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.ConvTranspose2d(8, 1, 4, 2, 1), nn.Tanh())
    randomise_bn(net, gen)
    embedding = nn.Embedding(len(LABELS), emb)
    export_model.export_generator(
        net, out_dir, nz, (1, 28, 28), "tanh", labels=LABELS,
        condition={"type": "embedding", "key": "label_emb.weight", "order": "latent_first"},
        cond_module=embedding)


def make_plain(out_dir):
    torch.manual_seed(4)
    nz = 7
    net = nn.Sequential(nn.Linear(nz, 3 * 6 * 5), nn.Unflatten(1, (3, 6, 5)),
                        nn.ConvTranspose2d(3, 3, 3, 1, 1), nn.Sigmoid())
    export_model.export_generator(net, out_dir, nz, (3, 6, 5), "sigmoid")


class Model:
    """The PyTorch side of one model directory."""

    def __init__(self, name, path):
        self.name, self.path = name, path
        self.module, self.config, self.labels = export_model.load_model_dir(path)
        self.module.eval()
        self.nz = self.config["latent_dim"]
        self.classes = self.config.get("num_classes", 0)
        out = self.config["output"]
        self.shape = (out["channels"], out["height"], out["width"])
        self.range = out["range"]

    def pixels(self, latents, classes=None):
        """(N, H, W, C) uint8 as the API promises: range to [0, 1], floor(v*255 + 0.5)."""
        z = torch.tensor(np.array(latents, dtype=np.float32))
        cls = torch.tensor(classes, dtype=torch.long) if classes is not None else None
        with torch.inference_mode():
            y = self.module(z, cls) if self.classes else self.module(z)
        v = (y + 1) / 2 if self.range == "tanh" else y
        q = torch.clamp(torch.floor(v * 255 + 0.5), 0, 255).to(torch.uint8)
        return q.permute(0, 2, 3, 1).numpy()


def decode_png(data):
    img = Image.open(io.BytesIO(data))
    img.load()
    a = np.array(img)
    return a[:, :, None] if a.ndim == 2 else a


def generate(d, model, body, accept=None):
    headers = {"Accept": accept} if accept else None
    return d.request("POST", f"/v1/models/{model}/generate", body, headers)


def images_of(body):
    doc = json.loads(body)
    return doc, [decode_png(base64.b64decode(i["png"])) for i in doc["images"] if "png" in i]


def close_to(got, want, what):
    diff = np.abs(got.astype(int) - want.astype(int))
    exact = float((diff == 0).mean())
    check(got.shape == want.shape and diff.max() <= 1 and exact >= 0.99,
          f"{what}: max pixel diff {diff.max()}, {exact:.4f} exact (shape {got.shape} vs "
          f"{want.shape})")
    return diff.max()


def test_model(d, m):
    n = m.name
    st, _, body = generate(d, n, {"count": 3, "seed": 42, **({"class": "Sneaker"} if m.classes else {})})
    check(st == 200, f"{n}: seeded generate -> {st} {body[:200]!r}")
    doc, imgs = images_of(body)
    check([i["seed"] for i in doc["images"]] == [42, 43, 44], f"{n}: seeds {doc['images']}")
    lat = [latent_reference.latent_from_seed(42 + i, m.nz) for i in range(3)]
    want = m.pixels(lat, [7] * 3 if m.classes else None)
    worst = close_to(np.stack(imgs), want, f"{n}: seeds 42..44 against PyTorch")
    if m.classes:
        check(all(i["class"] == "Sneaker" and i["class_index"] == 7 for i in doc["images"]),
              f"{n}: class fields {doc['images']}")

    # the same latent sent explicitly, alone both times: the same bytes
    one = {"seed": 5, **({"class": 2} if m.classes else {})}
    st1, _, b1 = generate(d, n, one)
    st2, _, b2 = generate(d, n, one)
    check(st1 == st2 == 200 and b1 == b2, f"{n}: the same request twice differs")
    lat5 = latent_reference.latent_from_seed(5, m.nz)
    st3, _, b3 = generate(d, n, {"latent": lat5, **({"class": 2} if m.classes else {})})
    check(st3 == 200, f"{n}: explicit latent -> {st3} {b3[:200]!r}")
    if st1 == 200 and st3 == 200:
        p1 = json.loads(b1)["images"][0]["png"]
        p3 = json.loads(b3)["images"][0]["png"]
        check(p1 == p3, f"{n}: seed 5 and its latent sent explicitly give different PNGs")
        check(json.loads(b3)["images"][0].get("index") == 0, f"{n}: explicit latent entry")

    # raw PNG
    st, hdr, raw = generate(d, n, one, accept="image/png")
    check(st == 200 and hdr.get("content-type") == "image/png" and raw[:8] == b"\x89PNG\r\n\x1a\n",
          f"{n}: Accept: image/png -> {st} {hdr.get('content-type')}")
    check(hdr.get("x-seed") == "5", f"{n}: X-Seed {hdr.get('x-seed')}")
    if st == 200 and st1 == 200:
        check(base64.b64encode(raw).decode() == json.loads(b1)["images"][0]["png"],
              f"{n}: raw PNG differs from the JSON one")

    # grid: ceil(sqrt(5)) = 3 to a row, 2-pixel padding
    c, h, w = m.shape
    st, hdr, raw = generate(d, n, {"count": 5, "seed": 1, "grid": True}, accept="image/png")
    check(st == 200, f"{n}: grid -> {st} {raw[:200]!r}")
    if st == 200:
        g = decode_png(raw)
        check(g.shape[:2] == (2 * (h + 2) + 2, 3 * (w + 2) + 2), f"{n}: grid shape {g.shape}")
    st, _, body = generate(d, n, {"count": 5, "seed": 1, "grid": True})
    doc = json.loads(body) if st == 200 else {}
    check(st == 200 and "grid" in doc and all("png" not in i for i in doc["images"]),
          f"{n}: JSON grid -> {st} {str(doc)[:200]}")

    # interpolation: its ends are the seeds' own images
    st, _, body = generate(d, n, {"interpolate": {"from_seed": 3, "to_seed": 9, "steps": 4},
                                  **({"class": 0} if m.classes else {})})
    check(st == 200, f"{n}: interpolate -> {st} {body[:200]!r}")
    if st == 200:
        doc, imgs = images_of(body)
        check([round(i["t"], 4) for i in doc["images"]] == [0, 0.3333, 0.6667, 1],
              f"{n}: interpolation t {doc['images']}")
        a = np.array(latent_reference.latent_from_seed(3, m.nz), dtype=np.float32)
        b = np.array(latent_reference.latent_from_seed(9, m.nz), dtype=np.float32)
        lat = [(1 - t) * a + t * b for t in (0.0, 1 / 3, 2 / 3, 1.0)]
        close_to(np.stack(imgs), m.pixels(lat, [0] * 4 if m.classes else None),
                 f"{n}: interpolation against PyTorch")

    # concurrent requests, batched together, answer as alone
    bodies = [{"seed": 100 + i, **({"class": i % 10} if m.classes else {})} for i in range(12)]
    alone = [generate(d, n, b)[2] for b in bodies]
    with concurrent.futures.ThreadPoolExecutor(12) as ex:
        together = list(ex.map(lambda b: generate(d, n, b)[2], bodies))
    for i, (x, y) in enumerate(zip(alone, together)):
        ix, iy = images_of(x)[1][0], images_of(y)[1][0]
        diff = np.abs(ix.astype(int) - iy.astype(int)).max()
        check(diff <= 1, f"{n}: request {i} batched differs from alone by {diff}")
    return worst


def test_conditional_only(d, m):
    n = m.name
    st, _, body = generate(d, n, {"count": 12, "seed": 0})
    doc = json.loads(body)
    check(st == 200 and [i["class_index"] for i in doc["images"]] == [i % 10 for i in range(12)],
          f"{n}: default classes {[i.get('class_index') for i in doc.get('images', [])]}")
    st, _, _ = generate(d, n, {"class": 9})
    check(st == 200, f"{n}: class by index -> {st}")


def test_errors(d, cond, plain):
    cases = [
        (cond, {"count": 0}, 422, "at least 1"),
        (cond, {"count": 65}, 413, "limit of 64"),
        (cond, {"latent": [0.5] * 3}, 422, f"takes {16}"),
        (cond, {"class": "Sneakers"}, 422, "unknown class"),
        (cond, {"class": 10}, 422, "outside 0..9"),
        (plain, {"class": 0}, 422, "unconditional"),
        (cond, {"seed": "forty-two"}, 400, "unsigned 64-bit"),
        (cond, {"seed": -3}, 400, "unsigned 64-bit"),
        (cond, {"seed": 1, "latent": [0] * 16}, 400, "give one of"),
        (cond, {"interpolate": {"from_seed": 1, "to_seed": 2, "steps": 1}}, 422, "at least 2"),
        (cond, {"steps": 3}, 400, "unknown field"),
        (cond, "not json", 400, "not valid JSON"),
    ]
    for model, body, status, part in cases:
        st, hdr, data = generate(d, model, body)
        msg = json.loads(data).get("error", "") if data[:1] == b"{" else ""
        check(st == status and part in msg and hdr.get("content-type") == "application/json",
              f"{model} {body!r}: {st} {msg!r}, want {status} with {part!r}")
    st, _, data = generate(d, cond, {"count": 2}, accept="image/png")
    check(st == 422 and b"grid" in data, f"Accept: image/png with count 2 -> {st} {data[:120]!r}")
    st, _, data = d.request("POST", f"/v1/models/{cond}/classify", {"image": "AAAA"})
    check(st == 404 and b"generate" in data, f"classify on a GAN -> {st} {data[:160]!r}")
    # the bare curl of the docs: -d sends application/x-www-form-urlencoded
    st, _, data = d.request("POST", f"/v1/models/{cond}/generate", b'{"seed":7}',
                            {"Content-Type": "application/x-www-form-urlencoded"})
    check(st == 200, f"form-typed JSON body -> {st} {data[:120]!r}")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        cond_dir, plain_dir = os.path.join(tmp, "cond"), os.path.join(tmp, "plain")
        make_conditional(cond_dir)
        make_plain(plain_dir)
        models = {"cgan": cond_dir, "plain": plain_dir}
        default = os.path.join(testlib.top_srcdir(), "models", "fashion-gan")
        if os.path.exists(os.path.join(default, "model.safetensors")):
            models["fashion-gan"] = default
        else:
            print("models/fashion-gan not present: testing the random-weight generators only")
        # a queue that waits for batches, so the concurrent requests do share them
        with testlib.Daemon(models, extra_args=("--config", write_conf(tmp))) as d:
            st, _, body = d.request("GET", "/v1/models")
            info = {m["name"]: m for m in json.loads(body)["models"]}
            check(info["cgan"]["kind"] == "gan" and info["cgan"]["latent_dim"] == 16 and
                  info["cgan"]["classes"] == 10 and info["plain"]["classes"] == 0 and
                  info["plain"]["output"] == {"channels": 3, "height": 6, "width": 5},
                  f"/v1/models: {info}")
            worst = {}
            for name, path in models.items():
                m = Model(name, path)
                worst[name] = test_model(d, m)
                if m.classes:
                    test_conditional_only(d, m)
            test_errors(d, "cgan", "plain")
            print(f"largest pixel difference against PyTorch per model: {worst}")
    if FAILURES:
        print(f"{len(FAILURES)} failure(s)")
        return 1
    print("all generate checks passed")
    return 0


def write_conf(tmp):
    path = os.path.join(tmp, "modeld.conf")
    with open(path, "w", encoding="utf-8") as f:
        f.write("[server]\nmax_queue_delay_us = 20000\nworkers = 1\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
