#!/usr/bin/python3
"""Operations: bearer-token access control, request ids, the access log, socket
activation.

With auth_token_file set, every route but the ones the config leaves open
answers 401 with a JSON error and WWW-Authenticate unless the request sends
"Authorization: Bearer <token>".  Every answer echoes X-Request-Id (the
client's, or a fresh one), and access_log writes one line per request with that
id and never the body.
"""

import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import http_api  # noqa: E402  (its inputs and model directories)
import testlib  # noqa: E402

Failure, expect, call = testlib.Failure, testlib.expect, testlib.call_json
TOKEN = "tok-3f9c1e-Zq"
CLASSIFY = "/v1/models/fashion/classify"


def status_of(d, method, path, body=None, headers=None):
    status, hdrs, _ = d.request(method, path, body, headers)
    return status, hdrs


def check_refused(d):
    body = {"image": http_api.b64png(http_api.synthetic(1))}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": f"Bearer {TOKEN[:-1]}"},
                    {"Authorization": "Bearer "}):
        for method, path, b in (("POST", CLASSIFY, body), ("GET", "/v1/models", None),
                                ("GET", "/metrics", None)):
            status, hdrs, doc = call(d, method, path, b, headers) if path != "/metrics" else \
                (*status_of(d, method, path, b, headers), None)
            expect(status == 401, f"{method} {path} with {headers}: {status}, expected 401")
            expect(hdrs.get("www-authenticate", "").startswith("Bearer"),
                   f"401 without WWW-Authenticate: {hdrs}")
            if doc is not None:
                expect("Authorization: Bearer" in doc["error"], f"401 message: {doc}")


def check_accepted(d):
    ok = {"Authorization": f"Bearer {TOKEN}"}
    status, _, doc = call(d, "POST", CLASSIFY, {"image": http_api.b64png(http_api.synthetic(2))},
                          ok)
    expect(status == 200 and doc["predictions"], f"classify with the token: {status} {doc}")
    for path in ("/v1/models", "/metrics"):
        expect(status_of(d, "GET", path, None, ok)[0] == 200, f"GET {path} with the token")
    # health stays open (auth_open_health defaults to yes)
    for path in ("/v2/health/live", "/v2/health/ready"):
        expect(status_of(d, "GET", path)[0] == 200, f"GET {path} without a token")


def check_request_ids(d):
    ok = {"Authorization": f"Bearer {TOKEN}"}
    _, hdrs = status_of(d, "GET", "/v1/models", None, {**ok, "X-Request-Id": "client-id.42"})
    expect(hdrs.get("x-request-id") == "client-id.42", f"X-Request-Id not echoed: {hdrs}")
    made = [status_of(d, "GET", "/v1/models", None, ok)[1].get("x-request-id") for _ in range(3)]
    expect(all(m and len(m) == 16 for m in made) and len(set(made)) == 3,
           f"made-up request ids: {made}")
    # an id with spaces or control bytes is not echoed into headers and logs
    _, hdrs = status_of(d, "GET", "/v1/models", None, {**ok, "X-Request-Id": "bad id"})
    expect(hdrs.get("x-request-id") != "bad id", "an id with a space was echoed")


def check_access_log(d):
    with open(d.log.name, errors="replace") as f:
        lines = [ln for ln in f if " access id=" in ln]
    expect(any("id=client-id.42 " in ln and "status=200" in ln for ln in lines),
           "no access line for the client's request id")
    expect(any("status=401" in ln for ln in lines), "no access line for a 401")
    ok = [ln for ln in lines if "path=/v1/models/fashion/classify" in ln and "status=200" in ln]
    expect(ok and "model=fashion" in ok[0] and " batch=1" in ok[0], f"classify line: {ok[:1]}")
    expect(not any("iVBOR" in ln or "image" in ln for ln in lines), "a request body was logged")
    print(f"    {len(lines)} access lines, e.g. {ok[0].split(' ', 2)[-1].strip()}")


def check_metrics_open(fashion, tmp, token_file):
    conf = os.path.join(tmp, "open.conf")
    with open(conf, "w") as f:
        f.write(f"[server]\nauth_token_file = {token_file}\nauth_open_health = no\n"
                "auth_open_metrics = yes\n")
    # /v2/health/ready, which testlib waits for, now needs the token too
    with testlib.Daemon({"fashion": fashion}, ["--config", conf],
                        ready_headers={"Authorization": f"Bearer {TOKEN}"}) as d:
        expect(status_of(d, "GET", "/metrics")[0] == 200, "open /metrics refused")
        expect(status_of(d, "GET", "/v2/health/ready")[0] == 401, "closed health answered")


def check_bad_token_file(fashion, tmp):
    for name, content in (("missing", None), ("empty", "\n"), ("spaces", "a b\n")):
        path = os.path.join(tmp, name)
        if content is not None:
            with open(path, "w") as f:
                f.write(content)
        conf = os.path.join(tmp, name + ".conf")
        with open(conf, "w") as f:
            f.write(f"[server]\nauth_token_file = {path}\n")
        d = testlib.Daemon({"fashion": fashion}, ["--config", conf])
        try:
            d.start()
        except testlib.DaemonError:
            with open(d.log.name) as f:
                text = f.read()
            expect("auth_token_file" in text, f"{name} token file: log lacks the reason: {text}")
            continue
        d.kill()
        raise Failure(f"started with a {name} token file")


def check_socket_activation(fashion):
    """The listening socket systemd passes (LISTEN_FDS) is served, not a new one."""
    import shutil as sh
    import subprocess
    import time
    tool = sh.which("systemd-socket-activate")
    if tool is None:
        print("    skipped: no systemd-socket-activate (Debian package systemd)")
        return
    port = testlib.free_port()
    proc = subprocess.Popen([tool, "-l", f"127.0.0.1:{port}", testlib.daemon_binary(),
                             "--listen", "127.0.0.1:1", "--model", f"fashion={fashion}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:  # the socket exists before modeld runs: the first request starts it
            try:
                status, _, _ = testlib.http(port, "GET", "/v2/health/ready", timeout=5)
                if status == 200:
                    break
            except OSError:
                pass
            expect(time.monotonic() < deadline and proc.poll() is None,
                   "socket-activated modeld never became ready")
            time.sleep(0.05)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode(errors="replace")
    if "socket activation" in out or "listening on http://127.0.0.1:1 " in out:
        raise Failure(f"modeld did not serve the passed socket:\n{out}")
    expect(f"listening on http://127.0.0.1:{port}" in out,
           f"log does not show the passed socket:\n{out}")
    expect(proc.returncode == 0, f"exit status {proc.returncode} after SIGTERM")
    print(f"    served the socket passed on fd 3 (127.0.0.1:{port}); --listen ignored")


def check_shutdown_timeout(fashion, tmp):
    """SIGTERM with shutdown_timeout_ms = 0: the running batch finishes (200), what is
    still queued is answered 503 at once, nothing is left unanswered, exit 0."""
    import concurrent.futures
    import signal
    import time
    conf = os.path.join(tmp, "stop.conf")
    with open(conf, "w") as f:
        f.write("[server]\nshutdown_timeout_ms = 0\nmax_batch_size = 1\n")
    big = {"images": [http_api.b64png(http_api.synthetic(s % 40)) for s in range(256)]}
    d = testlib.Daemon({"fashion": fashion}, ["--config", conf])
    d.start()
    try:
        def in_flight():
            return testlib.metric(testlib.scrape(d), "modeld_requests_in_flight", model="fashion")
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(call, d, "POST", CLASSIFY, big) for _ in range(4)]
            deadline = time.monotonic() + 20
            while in_flight() < 4:
                expect(time.monotonic() < deadline, "the requests never queued")
                time.sleep(0.005)
            d.proc.send_signal(signal.SIGTERM)
            statuses = [f.result()[0] for f in futures]
            errors = [f.result()[2]["error"] for f in futures if f.result()[0] == 503]
        code = d.proc.wait(timeout=30)
    finally:
        d.kill()
    expect(code == 0, f"exit status {code}")
    expect(statuses.count(200) >= 1 and statuses.count(503) >= 1
           and statuses.count(200) + statuses.count(503) == 4, f"statuses {statuses}")
    expect(all("shutting down" in e for e in errors), f"503 messages: {errors}")
    print(f"    SIGTERM with 4 requests in flight: {statuses.count(200)} finished, "
          f"{statuses.count(503)} answered 503 (shutdown_timeout_ms 0), exit 0")


def main():
    tmp = tempfile.mkdtemp(prefix="modeld-ops-")
    try:
        fashion, _, _ = http_api.model_dirs(tmp)
        token_file = os.path.join(tmp, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        conf = os.path.join(tmp, "auth.conf")
        with open(conf, "w") as f:
            f.write(f"[server]\nauth_token_file = {token_file}\naccess_log = yes\n")
        with testlib.Daemon({"fashion": fashion}, ["--config", conf]) as d:
            for check in (check_refused, check_accepted, check_request_ids, check_access_log):
                check(d)
                print(f"ok   {check.__name__}", flush=True)
        check_metrics_open(fashion, tmp, token_file)
        print("ok   check_metrics_open", flush=True)
        check_bad_token_file(fashion, tmp)
        print("ok   check_bad_token_file", flush=True)
        check_socket_activation(fashion)
        print("ok   check_socket_activation", flush=True)
        check_shutdown_timeout(fashion, tmp)
        print("ok   check_shutdown_timeout", flush=True)
    except (Failure, testlib.DaemonError, OSError) as e:
        print(f"FAIL {e}", flush=True)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("http_ops: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
