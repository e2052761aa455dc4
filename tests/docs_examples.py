#!/usr/bin/python3
"""Runs every shell example of docs/API.md against a live modeld, so the docs cannot rot.

The convention (also at the top of docs/API.md):

* An example is a fenced code block with lines starting with "$ ": each such line (and
  the lines it continues, as the shell would: a trailing backslash or an open quote) is
  a command; the lines after it, up to the next "$ " line or the end of the block, are
  its expected output.  The commands of one block run in order in one `sh`, so a
  variable set by one serves the next.  They run in a scratch directory where docs/ is
  the source tree's, against the default models (fashion, bert, fashion-gan);
  "localhost:8080" is replaced by the test daemon's address.
* Every curl is expected to get HTTP 200, unless the command ends with a comment whose
  first word is a status: `... # 404`.  (The test runs curl with --write-out to see it.)
* Expected output that parses as JSON (with `...` allowed, below) is compared as JSON
  with the answer: the same keys, and the same values, strings and integers exactly,
  numbers with a fraction or exponent within 1e-4 + 0.1% (floating point differs a
  little between machines; 1.0 is a float, 1 an integer).  Other output is compared
  line by line.  No expected output means none may come (curl -o file).
* `...` shortens: as a JSON value it matches anything; as the last item of an array, any
  further items; as an object member (`{"a": 1, ...}`), any further keys; within a
  string ("iVBORw0KGgo...", "waited ... ms"), any text.  In other output, a line `...`
  matches any number of lines, and `...` within a line any text.
* An HTML comment on the line before the block's fence changes how it runs:
  `<!-- not run -->` skips it; `<!-- daemon: auth -->` runs it against a second daemon
  (the fashion model only) with `auth_token_file` holding `s3cr3t`.

Each example's answer is also checked against docs/openapi.json: its status must be one
the operation documents, with a documented media type and, for JSON, a body that fits
the schema.

Usage: tests/docs_examples.py [FILE.md ...]   (default: docs/API.md)
Exit status: 0 pass, 1 fail, 77 skip (no curl, or the default models missing).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testlib  # noqa: E402


DOC_HOST = "localhost:8080"
AUTH_TOKEN = "s3cr3t"
ELLIPSIS = "\u0000..."          # what a bare ... becomes in expected JSON
STATUS_MARK = "@@docs-example-status"
END_MARK = "@@docs-example-end"


# ---- reading the examples ------------------------------------------------------------------


class Example:
    def __init__(self, file, line, command, expected, status):
        self.file, self.line = file, line
        self.command = command        # the shell text, continuation lines joined
        self.expected = expected      # list of lines
        self.status = status          # the HTTP status each curl must get

    def where(self):
        return f"{os.path.basename(self.file)}:{self.line}"


class Block:
    def __init__(self, file, line, directive, examples):
        self.file, self.line, self.directive, self.examples = file, line, directive, examples


def expected_status(command):
    """A trailing "# NNN ..." comment on the command's last line, else 200."""
    last = command.rstrip().split("\n")[-1]
    m = re.search(r"(?:^|\s)#\s*([1-5]\d\d)\b[^'\"]*$", last)
    return int(m.group(1)) if m else 200


def parse_blocks(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    blocks = []
    i = 0
    prev = ""   # the last non-blank line before the fence
    while i < len(lines):
        m = re.match(r"^(\s*)(```+|~~~+)", lines[i])
        if not m:
            if lines[i].strip():
                prev = lines[i].strip()
            i += 1
            continue
        indent, fence = len(m.group(1)), m.group(2)
        start = i + 1
        j = start
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        body = [ln[indent:] if ln[:indent].strip() == "" else ln.lstrip()
                for ln in lines[start:j]]
        directive = None
        dm = re.fullmatch(r"<!--\s*(.*?)\s*-->", prev)
        if dm:
            directive = dm.group(1)
        if any(ln.startswith("$ ") for ln in body):
            blocks.append(Block(path, start, directive, parse_examples(path, start, body)))
        prev = ""
        i = j + 1
    return blocks


def unfinished(command):
    """Does the shell need another line: a quote left open, or a trailing backslash?"""
    quote = None
    i = 0
    word_start = True
    while i < len(command):
        c = command[i]
        if quote == "'":
            if c == "'":
                quote = None
        elif c == "\\":
            if i + 1 == len(command):
                return True
            i += 1
        elif quote == '"':
            if c == '"':
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "#" and word_start:
            while i < len(command) and command[i] != "\n":
                i += 1
            continue
        word_start = quote is None and c in " \t\n;|&("
        i += 1
    return quote is not None


def parse_examples(path, first_line, body):
    examples = []
    k = 0
    while k < len(body) and not body[k].startswith("$ "):
        k += 1   # text before the first command is not checked
    while k < len(body):
        line_no = first_line + k + 1
        cmd = [body[k][2:]]
        while unfinished("\n".join(cmd)) and k + 1 < len(body):
            k += 1
            cmd.append(body[k])
        k += 1
        out = []
        while k < len(body) and not body[k].startswith("$ "):
            out.append(body[k])
            k += 1
        while out and not out[-1].strip():
            out.pop()
        command = "\n".join(cmd)
        examples.append(Example(path, line_no, command, out, expected_status(command)))
    return examples


# ---- comparing ---------------------------------------------------------------------------------


def mark_ellipses(text):
    """Expected JSON with bare ... turned into markers json can read: a value or array
    item becomes the string ELLIPSIS, an object member becomes "ELLIPSIS": null."""
    out = []
    stack = []
    expect_key = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
            expect_key = False
            continue
        if text.startswith("...", i):
            out.append(json.dumps(ELLIPSIS) + (": null" if stack and stack[-1] == "{"
                                               and expect_key else ""))
            i += 3
            expect_key = False
            continue
        if c in "{[":
            stack.append(c)
            expect_key = c == "{"
        elif c in "}]":
            if stack:
                stack.pop()
        elif c == ",":
            expect_key = bool(stack) and stack[-1] == "{"
        elif c == ":":
            expect_key = False
        out.append(c)
        i += 1
    return "".join(out)


def parse_expected_json(lines):
    text = "\n".join(lines).strip()
    if not text or text[0] not in "{[":
        return None
    try:
        return json.loads(mark_ellipses(text))
    except ValueError:
        return None


def json_mismatches(want, got, where="$"):
    if want == ELLIPSIS:
        return []
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{where}: expected an object, got {json.dumps(got)[:80]}"]
        errs = []
        open_ended = ELLIPSIS in want
        for k, v in want.items():
            if k == ELLIPSIS:
                continue
            if k not in got:
                errs.append(f"{where}: no key {k!r}")
            else:
                errs += json_mismatches(v, got[k], f"{where}.{k}")
        if not open_ended:
            extra = [k for k in got if k not in want]
            if extra:
                errs.append(f"{where}: unexpected keys {extra}")
        return errs
    if isinstance(want, list):
        if not isinstance(got, list):
            return [f"{where}: expected an array, got {json.dumps(got)[:80]}"]
        if want and want[-1] == ELLIPSIS:
            want = want[:-1]
            if len(got) < len(want):
                return [f"{where}: {len(got)} items, expected at least {len(want)}"]
            got = got[:len(want)]
        elif len(got) != len(want):
            return [f"{where}: {len(got)} items, expected {len(want)}"]
        errs = []
        for i, (w, g) in enumerate(zip(want, got)):
            errs += json_mismatches(w, g, f"{where}[{i}]")
        return errs
    if isinstance(want, str):
        if not isinstance(got, str):
            return [f"{where}: expected a string, got {json.dumps(got)[:80]}"]
        return [] if glob_match(want, got) else [f"{where}: {got[:120]!r}, expected "
                                                 f"{want[:120]!r}"]
    if isinstance(want, bool) or want is None:
        return [] if got is want else [f"{where}: {got!r}, expected {want!r}"]
    if isinstance(want, int):
        ok = isinstance(got, int) and not isinstance(got, bool) and got == want
        return [] if ok else [f"{where}: {got!r}, expected the integer {want}"]
    # a number written with a fraction or an exponent: a float, nearly equal
    ok = isinstance(got, float) and abs(got - want) <= 1e-4 + 1e-3 * abs(want)
    return [] if ok else [f"{where}: {got!r}, expected {want!r}"]


def glob_match(want, got):
    """Is got the string want, where each ... in want stands for any text?"""
    parts = want.split("...")
    return re.fullmatch(".*".join(re.escape(p) for p in parts), got, re.S) is not None


def line_mismatches(want, got):
    """Non-JSON output, line by line: `...` lines skip any lines, and `...` within a line
    stands for any text."""
    def match(wi, gi):
        if wi == len(want):
            return gi == len(got)
        w = want[wi]
        if w.strip() == "...":
            return any(match(wi + 1, g) for g in range(gi, len(got) + 1))
        if gi == len(got):
            return False
        g = got[gi]
        return glob_match(w, g) and match(wi + 1, gi + 1)
    return [] if match(0, 0) else ["output differs"]


def compare(ex, stdout):
    got_text = stdout.replace("\r\n", "\n").rstrip("\n")
    if not ex.expected:
        return [] if not got_text.strip() else [f"expected no output, got {got_text[:200]!r}"]
    want_json = parse_expected_json(ex.expected)
    if want_json is not None:
        try:
            got = json.loads(got_text)
        except ValueError:
            return [f"expected JSON, got {got_text[:200]!r}"]
        return json_mismatches(want_json, got)
    errs = line_mismatches([ln.rstrip() for ln in ex.expected],
                           [ln.rstrip() for ln in got_text.split("\n")])
    if errs:
        return ["output differs:\n      expected: " + "\n                ".join(ex.expected)
                + "\n      got:      " + "\n                ".join(got_text.split("\n")[:30])]
    return []


# ---- running -------------------------------------------------------------------------------------


def request_of(command, port):
    """(method, path) of the curl in a command, for the OpenAPI check; None if unclear."""
    m = re.search(rf"127\.0\.0\.1:{port}(/[^\s'\"?]*)", command)
    if not m or command.count("curl ") != 1:
        return None
    mm = re.search(r"(?:-X|--request)\s+([A-Z]+)", command)
    if mm:
        method = mm.group(1)
    elif re.search(r"(?:^|\s)(?:-d|--data\S*|-F|--form)(?:\s|=|@)", command):
        method = "POST"
    elif re.search(r"(?:^|\s)(?:-I|--head)(?:\s|$)", command):
        method = "HEAD"
    else:
        method = "GET"
    return method, m.group(1)


def run_block(block, port, workdir, bindir, openapi):
    script = []
    for n, ex in enumerate(block.examples):
        cmd = ex.command.replace(DOC_HOST, f"127.0.0.1:{port}")
        script += [cmd, f"printf '\\n{END_MARK} {n} %s\\n' $?", f"echo '{END_MARK} {n}' >&2"]
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
               DOCS_EXAMPLE_STATUS_MARK=STATUS_MARK)
    try:
        proc = subprocess.run(["sh", "-c", "\n".join(script)], cwd=workdir, env=env,
                              capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        return [f"{block.examples[0].where()}: the block ran over 120 s"]
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    problems = []
    for n, ex in enumerate(block.examples):
        mo = re.search(rf"\n{END_MARK} {n} (\d+)\n", out)
        me = re.search(rf"(?:^|\n){END_MARK} {n}\n", err)
        if not mo or not me:
            problems.append(f"{ex.where()}: did not run to its end (exit {proc.returncode}); "
                            f"stderr {err[-300:]!r}")
            break
        stdout, out = out[:mo.start()], out[mo.end():]
        stderr, err = err[:me.start()], err[me.end():]
        statuses = [int(s) for s in re.findall(rf"{STATUS_MARK} (\d+)", stderr)]
        stderr_rest = re.sub(rf"{STATUS_MARK} \d+\n?", "", stderr).strip()
        shown = ex.command.replace("\n", " ")[:100]
        if mo.group(1) != "0":
            problems.append(f"{ex.where()}: `{shown}` exited {mo.group(1)}: {stderr_rest[:300]}")
            continue
        if any(s != ex.status for s in statuses):
            problems.append(f"{ex.where()}: `{shown}`: HTTP {statuses}, expected {ex.status}; "
                            f"output {stdout[:300]!r}")
            continue
        problems += [f"{ex.where()}: `{shown}`: {e}" for e in compare(ex, stdout)]
        req = request_of(ex.command.replace(DOC_HOST, f"127.0.0.1:{port}"), port)
        if req and statuses and "-o" not in ex.command.split() and " -i" not in ex.command \
                and " -D" not in ex.command:
            method, path = req
            ctype = "application/json" if stdout.lstrip().startswith(("{", "[")) else \
                ("text/plain" if path == "/metrics" else None)
            if ctype is not None and method != "HEAD":
                problems += [f"{ex.where()}: {e}" for e in testlib.openapi_check_answer(
                    openapi, method, path, statuses[-1], ctype, stdout.encode())]
    return problems


def curl_wrapper(bindir, real_curl):
    path = os.path.join(bindir, "curl")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                "# the examples' curl, telling the test each answer's status on stderr\n"
                f"exec '{real_curl}' --write-out '%{{stderr}}{STATUS_MARK} %{{http_code}}\\n' "
                '"$@"\n')
    os.chmod(path, 0o755)


def start_daemon(models, args=()):
    d = testlib.Daemon(models, args)
    d.start()
    return d


def main(argv):
    files = argv or [os.path.join(testlib.top_srcdir(), "docs", "API.md")]
    real_curl = shutil.which("curl")
    if real_curl is None:
        testlib.skip("curl is not installed (apt-get install curl)")
    models = testlib.default_models()
    if models is None:
        testlib.skip("the default models' weights are missing from models/")
    _, openapi = testlib.load_openapi()
    blocks = [b for f in files for b in parse_blocks(f)]
    if not blocks:
        testlib.fail(f"no examples found in {files}")
    tmp = tempfile.mkdtemp(prefix="modeld-docs-")
    passed = failed = skipped = 0
    try:
        bindir = os.path.join(tmp, "bin")
        workdir = os.path.join(tmp, "work")
        os.makedirs(bindir)
        os.makedirs(workdir)
        os.symlink(os.path.join(testlib.top_srcdir(), "docs"), os.path.join(workdir, "docs"))
        curl_wrapper(bindir, real_curl)
        token_file = os.path.join(tmp, "token")
        with open(token_file, "w") as f:
            f.write(AUTH_TOKEN + "\n")
        auth_conf = os.path.join(tmp, "auth.conf")
        with open(auth_conf, "w") as f:
            f.write(f"[server]\nauth_token_file = {token_file}\n")
        daemons = {}
        try:
            daemons[None] = start_daemon(models)
            for block in blocks:
                d = block.directive
                if d == "not run":
                    skipped += len(block.examples)
                    print(f"skip {block.examples[0].where()}: marked not run")
                    continue
                if d is not None and d.startswith("daemon:"):
                    kind = d.split(":", 1)[1].strip()
                    if kind != "auth":
                        testlib.fail(f"{block.file}:{block.line}: unknown directive {d!r}")
                    if kind not in daemons:
                        daemons[kind] = start_daemon({"fashion": models["fashion"]},
                                                     ["--config", auth_conf])
                    daemon = daemons[kind]
                else:
                    daemon = daemons[None]
                problems = run_block(block, daemon.port, workdir, bindir, openapi)
                bad = {p.split(":", 2)[1] for p in problems}
                for ex in block.examples:
                    if str(ex.line) in bad:
                        failed += 1
                    else:
                        passed += 1
                        print(f"ok   {ex.where()}: {ex.command.splitlines()[0][:90]}")
                for p in problems:
                    print(f"FAIL {p}")
        except testlib.DaemonError as e:
            failed += 1
            print(f"FAIL daemon: {e}")
        finally:
            for name, d in daemons.items():
                try:
                    d.stop()
                except testlib.DaemonError as e:
                    failed += 1
                    print(f"FAIL daemon {name or 'default'}: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
