#!/usr/bin/python3
"""docs/openapi.json: a sound OpenAPI 3.0 document that describes exactly the routes the
daemon answers, served byte for byte at GET /v1/openapi.json.

Static checks (no daemon): the file parses (no duplicate keys, ends in a newline so the
compiled-in copy is identical), has the fields OpenAPI 3.0.3 requires, every $ref
resolves and every component is used, every operation has responses with descriptions
and schemas, path parameters match the templates, operation ids are unique, every example
fits its schema, and the documented routes are exactly ROUTES below, which must in turn
cover every route daemon/http.c names (its strcmp(url, "...") paths, the INFER_ROUTES
suffixes and the "METHOD /path" of its messages).  Where some python3 on the machine has
pip's openapi-spec-validator (no Debian package has it), its verdict counts too.

Live checks (the built daemon with the default models): GET /v1/openapi.json is the file
byte for byte, and every documented operation, called for a model of each kind it takes
(with its documented request examples, and with a body that is not an object), answers
with a documented status, media type and schema.  A daemon that answers 404 for
/v1/openapi.json predates the v2 routes: the byte comparison and the /v2 probes are then
skipped with a message, the /v1 probes still run.

Exit status: 0 pass, 1 fail, 77 skip (no docs/openapi.json).
"""

import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testlib  # noqa: E402

Failure, expect = testlib.Failure, testlib.expect

# The contract: every (method, path) the daemon answers; GET routes answer HEAD too,
# which OpenAPI need not list.  A new route goes here, into docs/openapi.json and
# docs/API.md together.
ROUTES = {
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{name}"),
    ("POST", "/v1/models/{name}/classify"),
    ("POST", "/v1/models/{name}/fill-mask"),
    ("POST", "/v1/models/{name}/next-sentence"),
    ("POST", "/v1/models/{name}/generate"),
    ("GET", "/v2"),
    ("GET", "/v2/models/{name}"),
    ("GET", "/v2/models/{name}/ready"),
    ("GET", "/v2/models/{name}/config"),
    ("POST", "/v2/models/{name}/infer"),
}

# Which default model a path's {name} takes (None: a model of every kind).
ROUTE_MODELS = {
    "/v1/models/{name}/classify": ["fashion"],
    "/v1/models/{name}/fill-mask": ["bert"],
    "/v1/models/{name}/next-sentence": ["bert"],
    "/v1/models/{name}/generate": ["fashion-gan"],
}
# The model each documented request example of POST /v2/models/{name}/infer is for.
INFER_EXAMPLE_MODELS = {"text": "bert", "latent": "fashion-gan"}
ALL_MODELS = ["fashion", "bert", "fashion-gan"]

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
PATH_ITEM_KEYS = METHODS | {"$ref", "summary", "description", "servers", "parameters"}
OPERATION_KEYS = {"tags", "summary", "description", "externalDocs", "operationId",
                  "parameters", "requestBody", "responses", "callbacks", "deprecated",
                  "security", "servers"}
SCHEMA_KEYS = {"title", "multipleOf", "maximum", "exclusiveMaximum", "minimum",
               "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems",
               "minItems", "uniqueItems", "maxProperties", "minProperties", "required", "enum",
               "type", "allOf", "oneOf", "anyOf", "not", "items", "properties",
               "additionalProperties", "description", "format", "default", "nullable",
               "discriminator", "readOnly", "writeOnly", "xml", "externalDocs", "example",
               "deprecated"}
SCHEMA_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
COMPONENT_KINDS = {"schemas", "responses", "parameters", "examples", "requestBodies",
                   "headers", "securitySchemes", "links", "callbacks"}


def is_ext(key):
    return key.startswith("x-")


def no_duplicates(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise Failure(f"duplicate key {k!r} in one object")
        seen[k] = v
    return seen


# ---- static checks -------------------------------------------------------------------------


def check_file(raw):
    expect(raw.endswith(b"\n"), "docs/openapi.json must end with a newline (the compiled-in "
                                "copy adds one to every line)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Failure(f"docs/openapi.json is not UTF-8: {e}")
    try:
        return json.loads(text, object_pairs_hook=no_duplicates)
    except ValueError as e:
        raise Failure(f"docs/openapi.json is not JSON: {e}")


def check_top(doc):
    expect(isinstance(doc, dict), "the document is not an object")
    for k in doc:
        expect(k in {"openapi", "info", "servers", "paths", "components", "security", "tags",
                     "externalDocs"} or is_ext(k), f"unknown top-level field {k!r}")
    expect(re.fullmatch(r"3\.0\.\d+", str(doc.get("openapi"))),
           f"openapi is {doc.get('openapi')!r}, expected 3.0.x")
    info = doc.get("info")
    expect(isinstance(info, dict) and isinstance(info.get("title"), str)
           and isinstance(info.get("version"), str), "info needs title and version strings")
    configure = os.path.join(testlib.top_srcdir(), "configure.ac")
    if os.path.exists(configure):
        with open(configure) as f:
            m = re.search(r"AC_INIT\(\[[^]]*\],\s*\[([^]]*)\]", f.read())
        expect(m and m.group(1) == info["version"],
               f"info.version {info['version']!r} is not configure.ac's version "
               f"{m.group(1) if m else None!r}")
    expect(isinstance(doc.get("paths"), dict) and doc["paths"], "no paths")
    comps = doc.get("components", {})
    for kind in comps:
        expect(kind in COMPONENT_KINDS or is_ext(kind), f"unknown components kind {kind!r}")
        for name in comps[kind]:
            expect(re.fullmatch(r"[A-Za-z0-9._-]+", name), f"bad component name {name!r}")
    schemes = comps.get("securitySchemes", {})
    for req in doc.get("security", []) + [r for _, _, op in operations(doc)
                                          for r in op.get("security", [])]:
        for name in req:
            expect(name in schemes, f"security requirement names unknown scheme {name!r}")
    for name, s in schemes.items():
        expect(s.get("type") in {"apiKey", "http", "oauth2", "openIdConnect"},
               f"securityScheme {name}: type {s.get('type')!r}")
        if s.get("type") == "http":
            expect(isinstance(s.get("scheme"), str), f"securityScheme {name}: no scheme")


def operations(doc):
    for path, item in doc.get("paths", {}).items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


def walk(node, where="#"):
    """Every (pointer, dict) in the document."""
    if isinstance(node, dict):
        yield where, node
        for k, v in node.items():
            yield from walk(v, f"{where}/{k.replace('~', '~0').replace('/', '~1')}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{where}/{i}")


def check_refs(doc):
    used = set()
    for where, node in walk(doc):
        if "$ref" in node:
            expect(set(node) == {"$ref"}, f"{where}: $ref with sibling keys {sorted(node)}")
            testlib.openapi_ref(doc, node["$ref"])
            used.add(node["$ref"])
        if where.endswith("/discriminator") and isinstance(node.get("mapping"), dict):
            for target in node["mapping"].values():
                testlib.openapi_ref(doc, target)
                used.add(target)
    for kind, defs in doc.get("components", {}).items():
        if kind == "securitySchemes":
            continue
        for name in defs:
            expect(f"#/components/{kind}/{name}" in used,
                   f"components/{kind}/{name} is never used")


def check_schema(doc, schema, where):
    if "$ref" in schema:
        return
    for k in schema:
        expect(k in SCHEMA_KEYS or is_ext(k), f"{where}: unknown schema keyword {k!r}")
    t = schema.get("type")
    expect(t is None or t in SCHEMA_TYPES, f"{where}: type {t!r}")
    if t == "array":
        expect("items" in schema, f"{where}: an array schema needs items")
    for k in ("allOf", "oneOf", "anyOf"):
        if k in schema:
            expect(isinstance(schema[k], list) and schema[k], f"{where}: {k} must be a list")
            for i, s in enumerate(schema[k]):
                check_schema(doc, s, f"{where}/{k}/{i}")
    for k in ("items", "not"):
        if k in schema:
            check_schema(doc, schema[k], f"{where}/{k}")
    if isinstance(schema.get("additionalProperties"), dict):
        check_schema(doc, schema["additionalProperties"], f"{where}/additionalProperties")
    props = schema.get("properties", {})
    for name, s in props.items():
        check_schema(doc, s, f"{where}/properties/{name}")
    if "required" in schema and "properties" in schema:
        for r in schema["required"]:
            expect(r in props or schema.get("additionalProperties", True) is not False,
                   f"{where}: required {r!r} is not a property")
    if "discriminator" in schema:
        expect("oneOf" in schema or "anyOf" in schema, f"{where}: discriminator without oneOf")
    for k in ("default", "example"):
        if k in schema:
            errs = testlib.schema_errors(doc, schema, schema[k], f"{where}/{k}")
            expect(not errs, "; ".join(errs))


def check_schemas(doc):
    for name, s in doc.get("components", {}).get("schemas", {}).items():
        check_schema(doc, s, f"#/components/schemas/{name}")
    for where, node in walk(doc.get("paths", {}), "#/paths"):
        if isinstance(node.get("schema"), dict):
            check_schema(doc, node["schema"], where + "/schema")


def check_parameter(doc, p, where):
    p = testlib.openapi_resolve(doc, p)
    expect(isinstance(p.get("name"), str) and p.get("in") in {"query", "header", "path",
                                                                "cookie"},
           f"{where}: a parameter needs name and in")
    expect(("schema" in p) != ("content" in p), f"{where}: schema or content, one of them")
    if p["in"] == "path":
        expect(p.get("required") is True, f"{where}: path parameter {p['name']} must be "
                                          "required")
    if p["in"] == "header":
        expect(p["name"].lower() not in {"accept", "content-type", "authorization"},
               f"{where}: header {p['name']} cannot be a parameter in OpenAPI")
    if "example" in p:
        errs = testlib.schema_errors(doc, p["schema"], p["example"], f"{where}/example")
        expect(not errs, "; ".join(errs))
    return p


def check_media(doc, content, where):
    expect(isinstance(content, dict) and content, f"{where}: empty content")
    for mtype, media in content.items():
        expect(re.fullmatch(r"[a-z]+/[a-z0-9.+*-]+(;.*)?", mtype), f"{where}: media type "
                                                                   f"{mtype!r}")
        expect("schema" in media, f"{where}/{mtype}: no schema")
        examples = []
        if "example" in media:
            examples.append(("example", media["example"]))
        for name, ex in media.get("examples", {}).items():
            ex = testlib.openapi_resolve(doc, ex)
            expect("value" in ex, f"{where}/{mtype}/examples/{name}: no value")
            examples.append((name, ex["value"]))
        for name, value in examples:
            if mtype.startswith("application/json"):
                errs = testlib.schema_errors(doc, media["schema"], value,
                                             f"{where}/{mtype} example {name}")
                expect(not errs, "; ".join(errs[:5]))


def check_operations(doc):
    ids = set()
    tags = {t["name"] for t in doc.get("tags", [])}
    for path, item in doc["paths"].items():
        expect(path.startswith("/"), f"path {path!r} does not start with /")
        for k in item:
            expect(k in PATH_ITEM_KEYS or is_ext(k), f"{path}: unknown field {k!r}")
        expect(any(k in METHODS for k in item), f"{path}: no operation")
        template_params = set(re.findall(r"{([^}/]+)}", path))
        path_level = [check_parameter(doc, p, f"{path}/parameters")
                      for p in item.get("parameters", [])]
        for method in (m for m in item if m in METHODS):
            op = item[method]
            where = f"{method.upper()} {path}"
            for k in op:
                expect(k in OPERATION_KEYS or is_ext(k), f"{where}: unknown field {k!r}")
            expect(isinstance(op.get("operationId"), str) and op["operationId"] not in ids,
                   f"{where}: missing or duplicate operationId {op.get('operationId')!r}")
            ids.add(op["operationId"])
            for t in op.get("tags", []):
                expect(t in tags, f"{where}: tag {t!r} is not in the top-level tags")
            params = {(p["name"], p["in"]): p for p in path_level}
            own = [check_parameter(doc, p, where) for p in op.get("parameters", [])]
            expect(len({(p["name"], p["in"]) for p in own}) == len(own),
                   f"{where}: a parameter is listed twice")
            params.update({(p["name"], p["in"]): p for p in own})
            declared = {name for name, loc in params if loc == "path"}
            expect(declared == template_params,
                   f"{where}: path parameters {sorted(declared)} but the template has "
                   f"{sorted(template_params)}")
            if "requestBody" in op:
                body = testlib.openapi_resolve(doc, op["requestBody"])
                check_media(doc, body.get("content"), f"{where} requestBody")
            expect(method in ("post", "put", "patch") or "requestBody" not in op,
                   f"{where}: a request body on {method}")
            responses = op.get("responses")
            expect(isinstance(responses, dict) and responses, f"{where}: no responses")
            expect(any(c.startswith("2") for c in responses), f"{where}: no success response")
            for code, resp in responses.items():
                expect(code == "default" or re.fullmatch(r"[1-5](\d\d|XX)", code),
                       f"{where}: response key {code!r}")
                resp = testlib.openapi_resolve(doc, resp)
                expect(isinstance(resp.get("description"), str),
                       f"{where} {code}: a response needs a description")
                if "content" in resp:
                    check_media(doc, resp["content"], f"{where} {code}")
                for h, hdr in resp.get("headers", {}).items():
                    hdr = testlib.openapi_resolve(doc, hdr)
                    expect("schema" in hdr, f"{where} {code}: header {h} has no schema")
                    expect(h.lower() != "content-type", f"{where} {code}: Content-Type "
                                                        "is not a response header in OpenAPI")
                if code.startswith(("4", "5")) and "content" in resp:
                    # the Error object, or (a readiness probe) the success answer's schema
                    schema = resp["content"].get("application/json", {}).get("schema")
                    ok = testlib.openapi_resolve(doc, responses.get("200", {}))
                    ok_schema = ok.get("content", {}).get("application/json", {}).get("schema")
                    expect(schema in ({"$ref": "#/components/schemas/Error"}, ok_schema),
                           f"{where} {code}: an error answer must be the Error object")


def documented_routes(doc):
    return {(method.upper(), path) for path, method, _ in operations(doc)}


def check_routes(doc):
    have = documented_routes(doc)
    missing = sorted(ROUTES - have)
    extra = sorted(have - ROUTES)
    expect(not missing, f"routes the daemon answers but docs/openapi.json lacks: {missing}")
    expect(not extra, f"documented routes the daemon does not answer (add them to ROUTES in "
                      f"tests/openapi_check.py once it does): {extra}")


def http_c_routes():
    """(method or None, path template) for every route daemon/http.c names."""
    with open(os.path.join(testlib.top_srcdir(), "daemon", "http.c")) as f:
        src = f.read()
    routes = set()
    for path in re.findall(r'strcmp\(\s*url\s*,\s*"(/[^"]*)"\s*\)', src):
        routes.add((None, path))
    expect(len(routes) >= 3, "found no strcmp(url, \"...\") routes in daemon/http.c: update "
                             "tests/openapi_check.py to how it routes now")
    # {"/classify", ...} or {MODELS_PREFIX, "/classify", ...}: the prefix is a string
    # constant ending in a slash, the model's name follows it
    consts = dict(re.findall(r'(\w+)\[\]\s*=\s*"([^"]*)"', src))
    consts.update(re.findall(r'#define\s+(\w+)\s+"([^"]*)"', src))
    table = re.search(r"INFER_ROUTES\[\]\s*=\s*{(.*?)\n};", src, re.S)
    expect(table is not None, "no INFER_ROUTES table in daemon/http.c: update "
                              "tests/openapi_check.py to how it routes now")
    entries = re.findall(r'{\s*(?:(\w+)\s*,\s*)?"(/[^"]+)"', table.group(1))
    expect(entries, "no entries found in INFER_ROUTES")
    for prefix, suffix in entries:
        prefix = consts.get(prefix, "/v1/models/") if prefix else "/v1/models/"
        routes.add(("POST", prefix + "{name}" + suffix))
    # "GET /v1/models/{name}", "POST /v1/models/%s/fill-mask" in messages
    tokens = re.findall(r'"((?:[^"\\\n]|\\.)*)"|\'(?:[^\'\\\n]|\\.)*\'|/\*.*?\*/|//[^\n]*', src,
                        re.S)
    for literal in (t for t in tokens if t):
        for method, path in re.findall(r"\b(GET|POST|PUT|DELETE|PATCH) (/[A-Za-z0-9_./{}%-]*)",
                                       literal):
            routes.add((method, re.sub(r"%\.?\*?s", "{name}", path).rstrip(".")))
    return routes


def check_http_c(doc):
    have = documented_routes(doc)
    paths = {p for _, p in have}
    norm = lambda p: re.sub(r"{[^}]*}", "{}", p)  # noqa: E731
    have_norm = {(m, norm(p)) for m, p in have}
    paths_norm = {norm(p) for p in paths}
    for method, path in sorted(http_c_routes(), key=str):
        if method is None:
            expect(norm(path) in paths_norm, f"daemon/http.c routes {path} but "
                                             "docs/openapi.json does not document it")
        else:
            expect((method, norm(path)) in have_norm,
                   f"daemon/http.c names {method} {path} but docs/openapi.json does not "
                   "document it")


def check_with_validator(doc):
    """Where some python3 has pip's openapi-spec-validator (Debian 12 packages none), its
    verdict too: the JSON Schema of OpenAPI 3.0 itself."""
    import shutil
    import subprocess
    code = ("import json, sys\n"
            "from openapi_spec_validator import OpenAPIV30SpecValidator as V\n"
            "errs = list(V(json.load(open(sys.argv[1]))).iter_errors())\n"
            "print('\\n'.join(e.message[:300] for e in errs[:10]))\n"
            "sys.exit(1 if errs else 0)\n")
    for python in dict.fromkeys(p for p in (sys.executable, shutil.which("python3")) if p):
        probe = subprocess.run([python, "-c", "import openapi_spec_validator"],
                               capture_output=True, timeout=60)
        if probe.returncode != 0:
            continue
        run = subprocess.run([python, "-c", code, testlib.openapi_file()], capture_output=True,
                             text=True, timeout=120)
        expect(run.returncode == 0, f"openapi-spec-validator ({python}) finds:\n"
                                    f"{run.stdout}{run.stderr[-500:]}")
        print(f"note: openapi-spec-validator ({python}) finds no error")
        return
    print("note: no python3 here has openapi-spec-validator: structural checks only")


# ---- live checks ------------------------------------------------------------------------------


def live(doc, raw):
    models = testlib.default_models()
    if models is None:
        print("note: models/ lacks the default models' weights; live checks skipped")
        return
    if not os.access(testlib.daemon_binary(), os.X_OK):
        print(f"note: {testlib.daemon_binary()} is not built; live checks skipped")
        return
    problems = []
    with testlib.Daemon(models) as d:
        status, hdrs, body = d.request("GET", "/v1/openapi.json")
        if status == 404:
            print("SKIP (part): the daemon answers 404 for GET /v1/openapi.json, so it "
                  "predates the /v2 routes: no byte comparison, no /v2 probes")
            served = False
        else:
            served = True
            if status != 200 or hdrs.get("content-type") != "application/json":
                problems.append(f"GET /v1/openapi.json: {status}, Content-Type "
                                f"{hdrs.get('content-type')!r}")
            elif body != raw:
                problems.append(f"GET /v1/openapi.json ({len(body)} bytes) is not "
                                f"docs/openapi.json ({len(raw)} bytes) byte for byte: rebuild?")
            else:
                print(f"ok: GET /v1/openapi.json is docs/openapi.json ({len(raw)} bytes)")
        probed = 0
        for path, method, op in operations(doc):
            if not served and (path == "/v1/openapi.json" or path.startswith("/v2")
                               and not path.startswith("/v2/health/")):
                continue
            names = ROUTE_MODELS.get(path, ALL_MODELS) if "{name}" in path else [None]
            calls = []  # (model, body, must be 200)
            if method == "get":
                calls = [(n, None, True) for n in names]
            else:
                media = op["requestBody"]["content"]["application/json"]
                for ex_name, ex in media.get("examples", {}).items():
                    ex = testlib.openapi_resolve(doc, ex)
                    if path.endswith("/infer") and ex_name not in INFER_EXAMPLE_MODELS:
                        problems.append(f"infer example {ex_name!r}: name its model in "
                                        "INFER_EXAMPLE_MODELS (tests/openapi_check.py)")
                    for n in names:
                        if path.endswith("/infer") and INFER_EXAMPLE_MODELS.get(ex_name) != n:
                            continue
                        calls.append((n, json.dumps(ex["value"]), True))
                calls += [(n, "[]", False) for n in names]
            if "{name}" in path:
                calls.append(("no-such-model", None if method == "get" else "{}", False))
            for name, body, must_succeed in calls:
                url = path.replace("{name}", name) if name else path
                headers = {"Content-Type": "application/json"} if body is not None else {}
                status, hdrs, data = d.request(method.upper(), url, body, headers)
                probed += 1
                if must_succeed and status != 200:
                    problems.append(f"{method.upper()} {url} {body and body[:80]}: {status} "
                                    f"{data[:200]!r}")
                problems += testlib.openapi_check_answer(doc, method.upper(), url, status,
                                                         hdrs.get("content-type"), data)
                if "x-request-id" not in hdrs:
                    problems.append(f"{method.upper()} {url}: no X-Request-Id")
    expect(not problems, "answers that disagree with docs/openapi.json:\n  "
           + "\n  ".join(problems))
    print(f"ok: {probed} calls to documented operations answered as documented")


def main():
    if not os.path.exists(testlib.openapi_file()):
        testlib.skip(f"{testlib.openapi_file()} is missing")
    raw, _ = testlib.load_openapi()
    failed = 0
    passed = 0
    doc = None
    checks = [("file", lambda: check_file(raw))]
    for name, fn in checks:
        try:
            doc = fn()
            passed += 1
            print(f"ok: {name}")
        except Failure as e:
            print(f"FAIL: {name}: {e}")
            print(f"{passed} passed, 1 failed")
            return 1
    for name, fn in [("top level", check_top), ("$refs", check_refs),
                     ("schemas", check_schemas), ("operations", check_operations),
                     ("openapi-spec-validator", check_with_validator),
                     ("routes", check_routes), ("daemon/http.c routes", check_http_c),
                     ("live daemon", lambda doc: live(doc, raw))]:
        try:
            fn(doc)
            passed += 1
            print(f"ok: {name}")
        except Failure as e:
            failed += 1
            print(f"FAIL: {name}: {e}")
        except testlib.DaemonError as e:
            failed += 1
            print(f"FAIL: {name}: daemon: {e}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
