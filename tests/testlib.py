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

    def __init__(self, models, extra_args=(), binary=None, env=None, ready_headers=None):
        self.models = dict(models)
        self.ready_headers = ready_headers  # e.g. a bearer token when health is closed
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
                status, _, _ = http(self.port, "GET", "/v2/health/ready",
                                    headers=self.ready_headers, timeout=2.0)
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


def default_models():
    """The models a fresh clone serves (name -> directory under models/), or None when
    one of them lacks its weights."""
    models = {name: os.path.join(top_srcdir(), "models", name)
              for name in ("fashion", "bert", "fashion-gan")}
    ok = all(os.path.isfile(os.path.join(d, "model.safetensors")) for d in models.values())
    return models if ok else None


# ---- OpenAPI: docs/openapi.json and JSON values checked against its schemas ---------------


def openapi_file():
    return os.path.join(top_srcdir(), "docs", "openapi.json")


def load_openapi():
    """docs/openapi.json: (its bytes, the parsed document)."""
    with open(openapi_file(), "rb") as f:
        raw = f.read()
    return raw, json.loads(raw)


def openapi_ref(doc, ref):
    """The node a local "$ref" ("#/components/schemas/Error") points at."""
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise Failure(f"$ref {ref!r} is not a local JSON pointer")
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise Failure(f"$ref {ref!r} does not resolve")
        node = node[part]
    return node


def openapi_resolve(doc, node):
    """node with any chain of $refs followed."""
    seen = set()
    while isinstance(node, dict) and "$ref" in node:
        if node["$ref"] in seen:
            raise Failure(f"$ref cycle through {node['$ref']}")
        seen.add(node["$ref"])
        node = openapi_ref(doc, node["$ref"])
    return node


def _json_type(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def schema_errors(doc, schema, value, where="$"):
    """What is wrong with value as an instance of an OpenAPI 3.0 schema object: a list of
    messages, empty when it fits.  Covers the keywords docs/openapi.json uses ($ref, type,
    nullable, enum, properties, required, additionalProperties, items, min/maxItems,
    minimum/maximum, min/maxLength, pattern, oneOf, anyOf, allOf, not); format,
    discriminator and the annotations are not checked."""
    import re
    schema = openapi_resolve(doc, schema)
    errs = []
    t = _json_type(value)
    want = schema.get("type")
    if value is None and schema.get("nullable"):
        return []
    if want is not None and not (t == want or (want == "number" and t == "integer")):
        return [f"{where}: {t}, expected {want}"]
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if t in ("integer", "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(f"{where}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(f"{where}: {value} > maximum {schema['maximum']}")
    if t == "string":
        if "minLength" in schema and len(value) < schema["minLength"]:
            errs.append(f"{where}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errs.append(f"{where}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errs.append(f"{where}: {value[:40]!r} does not match {schema['pattern']}")
    if t == "array":
        if "minItems" in schema and len(value) < schema["minItems"]:
            errs.append(f"{where}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errs.append(f"{where}: more than {schema['maxItems']} items")
        if "items" in schema:
            for i, x in enumerate(value):
                errs += schema_errors(doc, schema["items"], x, f"{where}[{i}]")
    if t == "object":
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in value:
                errs.append(f"{where}: lacks {k!r}")
        extra = schema.get("additionalProperties", True)
        for k, x in value.items():
            if k in props:
                errs += schema_errors(doc, props[k], x, f"{where}.{k}")
            elif extra is False:
                errs.append(f"{where}: unexpected key {k!r}")
            elif isinstance(extra, dict):
                errs += schema_errors(doc, extra, x, f"{where}.{k}")
    for sub in schema.get("allOf", []):
        errs += schema_errors(doc, sub, value, where)
    if "anyOf" in schema:
        fits = [schema_errors(doc, s, value, where) for s in schema["anyOf"]]
        if all(fits):
            errs.append(f"{where}: fits none of anyOf: " + "; ".join(f[0] for f in fits))
    if "oneOf" in schema:
        fits = [schema_errors(doc, s, value, where) for s in schema["oneOf"]]
        n = sum(1 for f in fits if not f)
        if n == 0:
            errs.append(f"{where}: fits none of oneOf: " + "; ".join(f[0] for f in fits))
        elif n > 1:
            errs.append(f"{where}: fits {n} of oneOf, expected exactly one")
    if "not" in schema and not schema_errors(doc, schema["not"], value, where):
        errs.append(f"{where}: fits the schema under not")
    return errs


def openapi_operation(doc, method, path):
    """(path template, operation object) that documents method on a concrete path, or
    (template, None) when the path is documented without that method, or (None, None).
    A literal segment beats a {parameter}."""
    segs = path.split("?")[0].split("/")
    best = None
    for template in doc.get("paths", {}):
        tsegs = template.split("/")
        if len(tsegs) != len(segs):
            continue
        params = 0
        for t, s in zip(tsegs, segs):
            if t.startswith("{") and t.endswith("}"):
                params += 1
                if not s:
                    break
            elif t != s:
                break
        else:
            if best is None or params < best[0]:
                best = (params, template)
    if best is None:
        return None, None
    item = doc["paths"][best[1]]
    return best[1], item.get(method.lower())


def openapi_check_answer(doc, method, path, status, content_type, body):
    """Problems with an answer as docs/openapi.json documents it: a status the operation
    does not list, a media type it does not list, or a JSON body that does not fit the
    schema.  [] when the path is not documented at all (an unknown route)."""
    template, op = openapi_operation(doc, method, path)
    if template is None:
        return []
    where = f"{method} {path}"
    if op is None:
        return [] if status == 405 else [f"{where}: {template} documents no {method}"]
    responses = op.get("responses", {})
    resp = responses.get(str(status)) or responses.get(f"{status // 100}XX") \
        or responses.get("default")
    if resp is None:
        return [f"{where}: status {status} is not among the documented {sorted(responses)}"]
    resp = openapi_resolve(doc, resp)
    content = resp.get("content", {})
    mtype = (content_type or "").split(";")[0].strip().lower()
    media = next((m for k, m in content.items() if k.split(";")[0].strip().lower() == mtype),
                 None)
    if media is None:
        return [f"{where}: {status} answered with {content_type!r}; documented: "
                f"{sorted(content)}"]
    if mtype != "application/json" or "schema" not in media:
        return []
    try:
        value = json.loads(body)
    except ValueError:
        return [f"{where}: {status} body is not JSON: {body[:100]!r}"]
    return [f"{where} -> {status}: {e}" for e in schema_errors(doc, media["schema"], value)]


def scrape(d):
    """GET /metrics: {(name, frozenset of label items): value}, after checking the
    text format: HELP and TYPE before each family, cumulative buckets ending in +Inf
    that equal _count."""
    status, hdrs, data = d.request("GET", "/metrics")
    expect(status == 200, f"/metrics: {status} {data[:200]!r}")
    expect(hdrs.get("content-type", "").startswith("text/plain; version=0.0.4"),
           f"/metrics Content-Type {hdrs.get('content-type')!r}")
    samples, typed = {}, {}
    for line in data.decode("utf-8").splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            typed[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        items = frozenset(tuple(kv.split("=", 1)) for kv in labels.rstrip("}").split(",")
                          if kv)
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name[:-len(suffix)] in typed:
                family = name[:-len(suffix)]
        expect(family in typed, f"/metrics: {name} has no # TYPE line")
        expect(name.startswith("modeld_"), f"/metrics: {name} is not prefixed modeld_")
        samples[(name, items)] = float(value)
    for (name, items), count in samples.items():
        if not name.endswith("_count") or typed.get(name[:-6]) != "histogram":
            continue
        base = name[:-6]
        model = [kv for kv in items if kv[0] == "model"]
        buckets = sorted((float(dict(k[1])["le"].strip('"')), v) for k, v in samples.items()
                         if k[0] == base + "_bucket" and set(model) <= k[1])
        values = [v for _, v in buckets]
        expect(values == sorted(values) and buckets[-1][0] == float("inf")
               and values[-1] == count, f"/metrics: {base} {model} buckets {buckets} vs {count}")
    return samples


def metric(samples, name, **labels):
    want = frozenset((k, f'"{v}"') for k, v in labels.items())
    return samples.get((name, want), 0.0)
