#!/usr/bin/python3
"""The Open Inference Protocol (KServe v2 REST) end to end, on the default models.

Conformance: every v2 endpoint (server and model metadata, health, ready, config,
infer) and every error path of infer (bad JSON, unknown input, unsupported or
wrong datatype, shape and data that disagree, binary sizes that do not add up, a
truncated binary body, an unknown output, too many rows, an unknown model, a wrong
method).  Agreement: v2 infer gives the numbers /v1 gives for the same input, for
all three kinds (CNN probabilities, BERT fill-mask scores from the raw logits, GAN
pixels from the raw images), and the binary tensor extension gives the numbers the
JSON form gives.  The count of conformance checks is printed at the end.

Exit codes follow automake: 0 pass, 77 skip (no numpy/PIL or no default models),
1 failure.
"""

import base64
import io
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testlib  # noqa: E402

try:
    import numpy as np
    from PIL import Image
except ImportError as e:  # pragma: no cover - depends on the machine
    testlib.skip(f"needs numpy and PIL ({e}): apt-get install python3-numpy python3-pil")

Failure, expect, call = testlib.Failure, testlib.expect, testlib.call_json
CHECKS = [0]


def check(cond, what):
    CHECKS[0] += 1
    expect(cond, what)


def infer(d, model, body, headers=None):
    return call(d, "POST", f"/v2/models/{model}/infer", body, headers)


def refused(d, model, body, status, contains, headers=None):
    got, _, doc = call(d, "POST", f"/v2/models/{model}/infer", body, headers)
    check(got == status and contains.lower() in doc["error"].lower(),
          f"{model}: {json.dumps(body)[:120]} -> {got} {doc}, expected {status} with {contains!r}")


def output(doc, name):
    for o in doc["outputs"]:
        if o["name"] == name:
            return o
    raise Failure(f"no output {name} in {[o['name'] for o in doc['outputs']]}")


def sig6(x):
    """What /v1 prints for a float: 6 significant digits (JSON_REAL_PRECISION(6))."""
    return float(f"{x:.6g}")


def pixels(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(28, 28), dtype=np.uint8)


def binary_body(doc, blobs):
    """JSON part + the blobs, and the Inference-Header-Content-Length header."""
    head = json.dumps(doc).encode()
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head)),
                                    "Content-Type": "application/octet-stream"}


def split_binary(d, model, body, headers):
    """A binary answer: (JSON doc, {output name: raw bytes})."""
    status, hdrs, data = d.request("POST", f"/v2/models/{model}/infer", body, headers)
    check(status == 200, f"binary infer: {status} {data[:200]!r}")
    n = int(hdrs["inference-header-content-length"])
    check(hdrs.get("content-type") == "application/octet-stream", f"binary answer type {hdrs}")
    doc = json.loads(data[:n])
    raw, off = {}, n
    for o in doc["outputs"]:
        size = o.get("parameters", {}).get("binary_data_size")
        if size is not None:
            raw[o["name"]] = data[off:off + size]
            off += size
    check(off == len(data), f"binary answer: {len(data) - off} bytes left over")
    return doc, raw


# ---- endpoints ---------------------------------------------------------------------


def check_endpoints(d):
    status, _, doc = call(d, "GET", "/v2")
    check(status == 200 and doc["name"] == "modeld" and "binary_tensor_data" in doc["extensions"]
          and doc["version"], f"GET /v2: {doc}")
    for path in ("/v2/health/live", "/v2/health/ready"):
        check(call(d, "GET", path)[0] == 200, f"GET {path}")
    want = {"fashion": ("modeld_cnn", ["input"], ["logits", "probabilities"]),
            "bert": ("modeld_bert", ["input_ids", "attention_mask", "token_type_ids"],
                     ["logits", "mask_positions"]),
            "fashion-gan": ("modeld_gan", ["latent", "class"], ["images"])}
    for model, (platform, ins, outs) in want.items():
        status, _, doc = call(d, "GET", f"/v2/models/{model}")
        check(status == 200 and doc["name"] == model and doc["platform"] == platform
              and [i["name"] for i in doc["inputs"]] == ins
              and [o["name"] for o in doc["outputs"]] == outs
              and all(isinstance(t["shape"], list) and t["shape"][0] == -1
                      for t in doc["inputs"] + doc["outputs"]), f"metadata {model}: {doc}")
        status, _, doc = call(d, "GET", f"/v2/models/{model}/ready")
        check(status == 200 and doc == {"name": model, "ready": True}, f"ready {model}: {doc}")
        status, _, doc = call(d, "GET", f"/v2/models/{model}/config")
        check(status == 200 and doc["max_batch_size"] >= 1
              and "max_queue_delay_microseconds" in doc["dynamic_batching"]
              and [i["name"] for i in doc["input"]] == ins, f"config {model}: {doc}")
    for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/models/nope/config"):
        check(call(d, "GET", path)[0] == 404, f"GET {path} is not 404")
    check(infer(d, "nope", {"inputs": []})[0] == 404, "infer on an unknown model is not 404")
    for method, path in (("POST", "/v2"), ("GET", "/v2/models/fashion/infer"),
                         ("POST", "/v2/models/fashion/ready"), ("DELETE", "/v2/models/fashion")):
        check(call(d, method, path)[0] == 405, f"{method} {path} is not 405")
    check(call(d, "GET", "/v2/models/fashion/versions")[0] == 404, "unknown v2 subroute")


# ---- errors ------------------------------------------------------------------------


def check_errors(d):
    img = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.5] * 784}
    status, _, doc = call(d, "POST", "/v2/models/fashion/infer", "{not json")
    check(status == 400, f"bad JSON: {status}")
    refused(d, "fashion", {"inputs": [dict(img, name="image")]}, 400, "no input 'image'")
    refused(d, "fashion", {"inputs": [dict(img, datatype="FP16")]}, 400, "FP16 is not taken")
    refused(d, "fashion", {"inputs": [dict(img, datatype="INT64", data=[1] * 784)]}, 400,
            "must be FP32 or UINT8")
    refused(d, "fashion", {"inputs": [dict(img, data=[0.5] * 783)]}, 400,
            "784 elements but \"data\" has 783")
    refused(d, "fashion", {"inputs": [dict(img, shape=[1, 3, 28, 28],
                                           data=[0.5] * 2352)]}, 400, "shape [N,1,28,28]")
    refused(d, "fashion", {"inputs": [dict(img, data=["x"] * 784)]}, 400, "not a number")
    refused(d, "fashion", {"inputs": [img, img]}, 400, "given twice")
    refused(d, "fashion", {"inputs": [img], "outputs": [{"name": "scores"}]}, 400,
            "no output 'scores'")
    refused(d, "fashion", {"inputs": [img], "extra": 1}, 400, "extra")
    refused(d, "fashion", {"inputs": [dict(img, shape=[1000000, 1, 28, 28])]}, 400,
            "more elements than a body")
    refused(d, "fashion", {"inputs": [dict(img, shape=[300, 1, 28, 28],
                                           data=[0.0] * (300 * 784))]}, 413,
            "max_images_per_request")
    refused(d, "fashion", {"inputs": [{"name": "input", "shape": [1, 28, 28, 1],
                                       "datatype": "UINT8", "data": [300] * 784}]}, 400,
            "not a UINT8 value")
    refused(d, "bert", {"inputs": [{"name": "input_ids", "shape": [1, 3], "datatype": "INT64",
                                    "data": [2, 999999, 3]}]}, 400, "outside the vocabulary")
    refused(d, "bert", {"inputs": [{"name": "input_ids", "shape": [1, 3], "datatype": "INT64",
                                    "data": [2, 4, 3]},
                                   {"name": "attention_mask", "shape": [1, 3],
                                    "datatype": "INT64", "data": [1, 0, 1]}]}, 400, "1s then 0s")
    refused(d, "fashion-gan", {"inputs": [{"name": "latent", "shape": [1, 64], "datatype": "FP32",
                                           "data": [0.0] * 64}]}, 400, "conditional")
    # binary tensor extension
    blob = struct.pack("<784f", *([0.5] * 784))
    meta = {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                        "parameters": {"binary_data_size": len(blob)}}]}
    body, hdrs = binary_body(meta, [blob[:-4]])
    status, _, doc = infer(d, "fashion", body, hdrs)
    check(status == 400 and "truncated" in doc["error"], f"truncated binary body: {status} {doc}")
    bad = json.loads(json.dumps(meta))
    bad["inputs"][0]["parameters"]["binary_data_size"] = len(blob) - 4
    body, hdrs = binary_body(bad, [blob[:-4]])
    status, _, doc = infer(d, "fashion", body, hdrs)
    check(status == 400 and "binary_data_size is 3132" in doc["error"],
          f"binary size mismatch: {status} {doc}")
    body, hdrs = binary_body(meta, [blob, b"xx"])
    status, _, doc = infer(d, "fashion", body, hdrs)
    check(status == 400 and "2 bytes" not in doc["error"] and "follow the JSON" in doc["error"],
          f"bytes past the last input: {status} {doc}")
    hdrs = dict(hdrs, **{"Inference-Header-Content-Length": "99999"})
    status, _, doc = infer(d, "fashion", body, hdrs)
    check(status == 400 and "Inference-Header-Content-Length" in doc["error"],
          f"header length past the body: {status} {doc}")
    # JSON cannot carry NaN or infinity: an answer that would is refused, binary is not
    huge = dict(img, data=[3e38, -3e38] * 392)
    refused(d, "fashion", {"inputs": [huge]}, 500, "NaN or infinity")
    status, _, _ = d.request("POST", "/v2/models/fashion/infer",
                             {"inputs": [huge], "parameters": {"binary_data_output": True}})
    check(status == 200, f"non-finite logits as binary data: {status}")
    # an answer too big for JSON: 250 masks x the vocabulary
    vocab = [ln.rstrip("\n") for ln in open(os.path.join(models_dir(), "bert", "vocab.txt"),
                                              encoding="utf-8")]
    ids = [[vocab.index("[CLS]")] + [vocab.index("[MASK]")] * 125 + [vocab.index("[SEP]")]] * 2
    big = {"inputs": [{"name": "input_ids", "shape": [2, 127], "datatype": "INT64", "data": ids}]}
    refused(d, "bert", big, 413, "binary_data_output")
    status, hdrs, data = d.request("POST", "/v2/models/bert/infer",
                                   dict(big, parameters={"binary_data_output": True}))
    check(status == 200 and hdrs.get("content-type") == "application/octet-stream",
          f"the same as binary data: {status} {hdrs}")
    both = json.loads(json.dumps(meta))
    both["inputs"][0]["data"] = [0.5] * 784
    body, hdrs = binary_body(both, [blob])
    status, _, doc = infer(d, "fashion", body, hdrs)
    check(status == 400 and "exactly one" in doc["error"], f"data and binary: {status} {doc}")


# ---- agreement with /v1 ---------------------------------------------------------------


def check_cnn(d):
    batch = [pixels(s) for s in range(5)]
    body = {"id": "req-7", "inputs": [{"name": "input", "shape": [5, 28, 28, 1],
                                       "datatype": "UINT8",
                                       "data": np.stack(batch)[..., None].tolist()}]}
    status, _, doc = infer(d, "fashion", body)
    check(status == 200 and doc["id"] == "req-7" and doc["model_name"] == "fashion",
          f"v2 CNN: {status} {doc}")
    probs = np.array(output(doc, "probabilities")["data"], dtype=np.float32).reshape(5, 10)
    logits = np.array(output(doc, "logits")["data"], dtype=np.float64).reshape(5, 10)
    soft = np.exp(logits - logits.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    check(np.allclose(soft, probs, rtol=1e-5, atol=1e-7), "probabilities are not softmax(logits)")
    for i, px in enumerate(batch):
        status, _, v1 = call(d, "POST", "/v1/models/fashion/classify",
                             {"pixels": px.tolist(), "top_k": 10})
        check(status == 200, f"v1 classify: {status}")
        labels = [p["index"] for p in v1["predictions"]]
        check(labels == list(np.argsort(-probs[i], kind="stable")),
              f"image {i}: v1 order {labels} vs v2 {list(np.argsort(-probs[i]))}")
        worst = max(abs(float(probs[i][p["index"]]) - p["score"]) / max(p["score"], 1e-30)
                    for p in v1["predictions"])
        # /v1 prints 6 significant digits (5e-6 relative at worst), and the batch of 5
        # here ran beside the single image of /v1 in different GEMM blockings.
        check(worst <= 1e-5, f"image {i}: v1 scores differ from v2's by {worst:.2g} relative")
    # FP32 input (normalised) in binary, outputs in binary: the same numbers.
    mean, std = 0.286, 0.353
    x = ((np.stack(batch).astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
    meta = {"inputs": [{"name": "input", "shape": [5, 1, 28, 28], "datatype": "FP32",
                        "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}]}
    doc2, raw = split_binary(d, "fashion", *binary_body(meta, [x.astype("<f4").tobytes()]))
    got = np.frombuffer(raw["probabilities"], dtype="<f4").reshape(5, 10)
    check(np.allclose(got, probs, rtol=1e-5, atol=1e-7) and len(doc2["outputs"]) == 1,
          f"binary FP32 path differs: max {np.abs(got - probs).max()}")
    print("    CNN: 5 images, v2 probabilities = /v1 scores (to /v1's 6 digits), binary = JSON")


def check_bert(d):
    texts = ["the man went to the [MASK] to buy some milk .", "a [MASK] day in the [MASK] ."]
    body = {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": texts}]}
    status, _, doc = infer(d, "bert", body)
    check(status == 200, f"v2 BERT text: {status} {doc}")
    pos = np.array(output(doc, "mask_positions")["data"]).reshape(-1, 2)
    lg = output(doc, "logits")
    logits = np.array(lg["data"], dtype=np.float64).reshape(lg["shape"])
    check(len(pos) == 3 and logits.shape[0] == 3, f"3 masks expected, got {pos.tolist()}")
    rows = iter(range(3))
    for s, text in enumerate(texts):
        status, _, v1 = call(d, "POST", "/v1/models/bert/fill-mask", {"text": text, "top_k": 5})
        check(status == 200, f"v1 fill-mask: {status}")
        for mask in v1["masks"]:
            r = next(rows)
            check(pos[r][0] == s, f"row {r} belongs to sequence {pos[r][0]}, not {s}")
            p = np.exp(logits[r] - logits[r].max())
            p /= p.sum()
            top = [a["token"] for a in mask]
            check(top == list(np.argsort(-p, kind="stable")[:5]),
                  f"{text!r}: v1 top-5 {top} vs v2 {list(np.argsort(-p)[:5])}")
            check(all(abs(p[a["token"]] - a["score"]) <= 2e-6 for a in mask),
                  f"{text!r}: v1 scores differ from softmax(v2 logits)")
    print(f"    BERT: 2 texts, 3 masks: v2 logits give /v1's top-5 tokens and scores")
    return logits, pos


def check_bert_ids(d, logits, pos):
    """input_ids padded to one width with attention_mask, sent as binary INT64: the
    same logits as the texts.  The ids are looked up in the model's vocab.txt, word
    by word (every word of these sentences is one token of it)."""
    vocab = [ln.rstrip("\n") for ln in open(os.path.join(models_dir(), "bert", "vocab.txt"),
                                              encoding="utf-8")]
    index = {t: i for i, t in enumerate(vocab)}
    words = [["[CLS]", "the", "man", "went", "to", "the", "[MASK]", "to", "buy", "some", "milk",
              ".", "[SEP]"], ["[CLS]", "a", "[MASK]", "day", "in", "the", "[MASK]", ".", "[SEP]"]]
    if not all(w in index for ws in words for w in ws):
        print("    BERT ids: skipped (a word is not one token in this vocabulary)")
        return
    width = max(len(ws) for ws in words)
    ids = np.zeros((2, width), dtype="<i8")
    mask = np.zeros((2, width), dtype="<i8")
    for i, ws in enumerate(words):
        ids[i, :len(ws)] = [index[w] for w in ws]
        mask[i, :len(ws)] = 1
    meta = {"inputs": [{"name": "input_ids", "shape": [2, width], "datatype": "INT64",
                        "parameters": {"binary_data_size": ids.nbytes}},
                       {"name": "attention_mask", "shape": [2, width], "datatype": "INT64",
                        "parameters": {"binary_data_size": mask.nbytes}}],
            "parameters": {"binary_data_output": True}}
    doc, raw = split_binary(d, "bert", *binary_body(meta, [ids.tobytes(), mask.tobytes()]))
    got = np.frombuffer(raw["logits"], dtype="<f4").reshape(-1, logits.shape[1])
    got_pos = np.frombuffer(raw["mask_positions"], dtype="<i8").reshape(-1, 2)
    check(np.array_equal(got_pos, pos), f"mask positions {got_pos.tolist()} vs {pos.tolist()}")
    check(np.allclose(got, logits, rtol=1e-5, atol=1e-5),
          f"ids path differs from text path: max {np.abs(got - logits).max()}")
    print("    BERT: padded input_ids + attention_mask in binary = the texts' logits")


def check_gan(d):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((3, 64)).astype(np.float32)
    classes = [7, 0, 9]
    body = {"inputs": [{"name": "latent", "shape": [3, 64], "datatype": "FP32", "data": z.tolist()},
                       {"name": "class", "shape": [3], "datatype": "INT64", "data": classes}]}
    status, _, doc = infer(d, "fashion-gan", body)
    check(status == 200, f"v2 GAN: {status} {doc}")
    imgs = np.array(output(doc, "images")["data"], dtype=np.float32).reshape(3, 1, 28, 28)
    for i in range(3):
        status, _, v1 = call(d, "POST", "/v1/models/fashion-gan/generate",
                             {"latent": [z[i].tolist()], "class": classes[i]})
        check(status == 200, f"v1 generate: {status} {v1}")
        png = np.array(Image.open(io.BytesIO(base64.b64decode(v1["images"][0]["png"]))))
        # save_image's quantisation of a tanh output
        want = np.clip(np.floor((imgs[i, 0] + 1) / 2 * 255 + 0.5), 0, 255).astype(np.uint8)
        check(np.array_equal(png, want), f"image {i}: v1 PNG differs from v2 pixels by "
                                         f"{np.abs(png.astype(int) - want.astype(int)).max()}")
    print("    GAN: 3 latents, v2 images quantised = /v1 PNG pixels exactly")


def models_dir():
    return os.path.join(testlib.top_srcdir(), "models")


def main():
    models = {m: os.path.join(models_dir(), m) for m in ("fashion", "bert", "fashion-gan")}
    missing = [m for m, p in models.items() if not os.path.isfile(os.path.join(p,
                                                                                "model.safetensors"))]
    if missing:
        testlib.skip(f"default models missing: {missing}")
    try:
        with testlib.Daemon(models) as d:
            for fn in (check_endpoints, check_errors, check_cnn):
                fn(d)
                print(f"ok   {fn.__name__}", flush=True)
            logits, pos = check_bert(d)
            print("ok   check_bert", flush=True)
            check_bert_ids(d, logits, pos)
            print("ok   check_bert_ids", flush=True)
            check_gan(d)
            print("ok   check_gan", flush=True)
            # v2 requests are counted with the model's /v1 ones
            errors = testlib.metric(testlib.scrape(d), "modeld_requests_total", model="fashion",
                                    outcome="client_error")
            check(errors >= 15, f"v2 errors not counted in /metrics: {errors}")
    except (Failure, testlib.DaemonError) as e:
        print(f"FAIL {e}", flush=True)
        return 1
    print(f"http_v2: {CHECKS[0]} conformance checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
