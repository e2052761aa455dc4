#!/usr/bin/python3
"""SIGHUP reloads the config and models without losing a request.

The daemon serves one model name from a config file.  Clients classify without
pause while the config is pointed at other weights and SIGHUP is sent: every
request must be answered 200 with exactly the old model's or the new model's
answer, and once the reload is logged only the new one.  Then reloads that must
fail (a corrupt checkpoint, a config with a syntax error) leave the current model
serving, and the request counters in /metrics carry on across all of it.
"""

import concurrent.futures
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import http_api  # noqa: E402  (its inputs and tiny model; its main() does not run)
import testlib  # noqa: E402

Failure, expect, call = testlib.Failure, testlib.expect, testlib.call_json
CLASSIFY = "/v1/models/m/classify"
IMAGES = [http_api.b64png(http_api.synthetic(s)) for s in range(8)]


def write_conf(path, model_dir, extra=""):
    with open(path + ".tmp", "w") as f:
        f.write(f"[server]\nmax_batch_size = 4\n{extra}[model m]\npath = {model_dir}\n")
    os.replace(path + ".tmp", path)  # the daemon never reads half a file


def answers(d):
    """The top label and score of every test image, as the daemon answers now."""
    out = []
    for img in IMAGES:
        status, _, doc = call(d, "POST", CLASSIFY, {"image": img, "top_k": 1})
        expect(status == 200, f"classify: {status} {doc}")
        top = doc["predictions"][0]
        out.append((top["label"], top["score"]))
    return out


def log_text(d):
    with open(d.log.name, errors="replace") as f:
        return f.read()


def wait_log(d, text, after, timeout=30.0):
    """Waits for `text` to appear in the daemon's log past offset `after`."""
    deadline = time.monotonic() + timeout
    while text not in log_text(d)[after:]:
        expect(time.monotonic() < deadline, f"no {text!r} in the log within {timeout:.0f} s")
        time.sleep(0.02)


def ok_count(d):
    return testlib.metric(testlib.scrape(d), "modeld_requests_total", model="m", outcome="ok")


def check_reload_under_load(d, conf, new_dir, old, new):
    stop = threading.Event()
    seen = []  # (time answered, image index, (label, score)) per request
    errors = []

    def client(k):
        i = k
        while not stop.is_set():
            img = i % len(IMAGES)
            try:
                status, _, doc = call(d, "POST", CLASSIFY, {"image": IMAGES[img], "top_k": 1})
            except (OSError, Failure) as e:
                errors.append(f"request failed: {e}")
                return
            if status != 200:
                errors.append(f"status {status}: {doc}")
                return
            top = doc["predictions"][0]
            seen.append((time.monotonic(), img, (top["label"], top["score"])))
            i += 1

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(client, k) for k in range(8)]
        time.sleep(0.5)
        mark = len(log_text(d))
        write_conf(conf, new_dir)
        d.proc.send_signal(signal.SIGHUP)
        wait_log(d, "reloaded:", mark)
        reloaded_at = time.monotonic()
        time.sleep(0.5)
        stop.set()
        for f in futures:
            f.result()
    expect(not errors, f"{len(errors)} requests lost during the reload: {errors[:3]}")
    n_old = n_new = 0
    for t, img, got in seen:
        if got == new[img]:
            n_new += 1
        elif got == old[img]:
            n_old += 1
            # a request that started before the swap may finish just after it
            expect(t < reloaded_at + 0.25, f"old model answered {t - reloaded_at:.2f} s after "
                                           "the reload was logged")
        else:
            raise Failure(f"image {img}: answer {got} is neither the old {old[img]} "
                          f"nor the new {new[img]}")
    expect(n_old > 0 and n_new > 0, f"old answers {n_old}, new {n_new}: no reload under load")
    expect(answers(d) == new, "after the reload the new weights do not answer")
    print(f"    reload under load: {len(seen)} requests, all 200 "
          f"({n_old} by the old weights, {n_new} by the new); 0 lost")


def check_failed_reloads(d, conf, tmp, current):
    bad = os.path.join(tmp, "corrupt")
    shutil.copytree(os.path.dirname(current[1]), bad)
    weights = os.path.join(bad, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    for what, write in (("corrupt checkpoint", lambda: write_conf(conf, bad)),
                        ("config syntax error", lambda: open(conf, "a").write("[server\n"))):
        mark = len(log_text(d))
        write()
        d.proc.send_signal(signal.SIGHUP)
        wait_log(d, "reload failed", mark)
        line = [ln for ln in log_text(d)[mark:].splitlines() if "reload failed" in ln][0]
        expect(answers(d) == current[0], f"after a failed reload ({what}) the answers changed")
        status, _, _ = call(d, "GET", "/v2/health/ready")
        expect(status == 200, f"not ready after a failed reload ({what})")
        print(f"    {what}: still serving; log: {line.split(' ', 2)[-1][:150]}")


def main():
    tmp = tempfile.mkdtemp(prefix="modeld-reload-")
    try:
        old_dir, _, _ = http_api.model_dirs(tmp)
        new_dir = os.path.join(tmp, "new")
        http_api.write_tiny_model(new_dir)
        conf = os.path.join(tmp, "modeld.conf")
        write_conf(conf, old_dir)
        with testlib.Daemon({}, ["--config", conf]) as d:
            old = answers(d)
            expect(ok_count(d) == len(old), "ok counter before the reload")
            # What the new weights answer, from a daemon of their own.
            with testlib.Daemon({"m": new_dir}) as ref:
                new = answers(ref)
            expect(old != new, "the two models answer the same: the test proves nothing")
            before = ok_count(d)
            check_reload_under_load(d, conf, new_dir, old, new)
            after = ok_count(d)
            expect(after > before, f"ok counter went from {before} to {after} over the reload")
            check_failed_reloads(d, conf, tmp, (new, os.path.join(new_dir, "config.json")))
        print("ok   sigterm_exit_0 after reloads")
    except (Failure, testlib.DaemonError) as e:
        print(f"FAIL {e}", flush=True)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("http_reload: passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
