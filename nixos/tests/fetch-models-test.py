#!/usr/bin/env python3
"""fetch-models-test: runs nixos/scripts/comfyui-fetch-models.sh against a local server.

Why this exists: the models script runs once per boot on the appliance
(comfyui-models.service) and is the only thing that puts gigabytes of
checkpoints in place. Its resume, hash check, token and fail-fast paths are
hard to see break in a VM, so this test runs the real script with
`bash -euo pipefail` (what writeShellApplication does) against a threaded HTTP
server on 127.0.0.1 (port 0) that serves generated files, answers byte ranges
(206/416), protects a path with a bearer token (401), can cut a response after
K bytes, and records every request. No other network is used.

Needs: python3 (stdlib only), bash, curl, jq, coreutils.
Run:   python3 nixos/tests/fetch-models-test.py
Prints `ok: ...` / `FAILED: ...: detail` per case and ends with exactly one
line `fetch-models: N passed, N failed`; exits 1 if any case failed.
"""

import hashlib
import http.server
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "comfyui-fetch-models.sh"
TOKEN = "hf_TestSecret_7f3a9c1e5b"
SIZE = 256 * 1024


def blob(seed, size=SIZE):
    return random.Random(seed).randbytes(size)


def sha(data):
    return hashlib.sha256(data).hexdigest()


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.files = {}  # path -> bytes
        self.protected = {}  # path -> required bearer token
        self.status = {}  # path -> fixed HTTP status (404, 503, ...)
        self.cuts = {}  # path -> list of byte counts; each request pops one
        self.slow = {}  # path -> seconds to pause after each 1/8 of the body
        self.log = []  # one dict per request

    @property
    def base(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def requests(self, path):
        with self.lock:
            return [r for r in self.log if r["path"] == path]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: a cut is a close

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        rec = {
            "path": self.path,
            "range": self.headers.get("Range"),
            "auth": self.headers.get("Authorization"),
            "status": None,
            "sent": 0,
        }
        with srv.lock:
            srv.log.append(rec)
            cut = srv.cuts[self.path].pop(0) if srv.cuts.get(self.path) else None
        if self.path in srv.status:
            return self.reply(rec, srv.status[self.path], b"nope\n")
        if self.path in srv.protected and rec["auth"] != f"Bearer {srv.protected[self.path]}":
            return self.reply(rec, 401, b"unauthorized\n", {"WWW-Authenticate": "Bearer"})
        data = srv.files.get(self.path)
        if data is None:
            return self.reply(rec, 404, b"not found\n")
        start = 0
        headers = {"Accept-Ranges": "bytes"}
        status = 200
        if rec["range"]:
            spec = rec["range"].removeprefix("bytes=")
            start = int(spec.split("-", 1)[0])
            if start >= len(data):
                # A body that curl must not append to the .part file.
                return self.reply(rec, 416, b"range not satisfiable\n",
                                  {"Content-Range": f"bytes */{len(data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        self.reply(rec, status, body, headers, cut)

    def reply(self, rec, status, body, headers=None, cut=None):
        rec["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        out = body if cut is None else body[:cut]
        pause = self.server.slow.get(rec["path"])
        step = max(1, len(out) // 8) if pause else len(out) or 1
        for i in range(0, len(out), step):
            self.wfile.write(out[i:i + step])
            self.wfile.flush()
            if pause:
                time.sleep(pause)
        rec["sent"] = len(out)
        if cut is not None:
            self.close_connection = True


class Run:
    def __init__(self, tmp, server):
        self.tmp = Path(tmp)
        self.server = server
        self.models = self.tmp / "models"
        self.models.mkdir()
        self.creds = None
        self.prefixes = f"{server.base}/private/"
        self.result = None

    def token(self, value):
        self.creds = self.tmp / "creds"
        self.creds.mkdir(exist_ok=True)
        (self.creds / "hf-token").write_text(value + "\n")

    def path(self, folder, name, suffix=""):
        return self.models / folder / (name + suffix)

    def run(self, entries, extra_path=None, **extra_env):
        manifest = self.tmp / "manifest.json"
        manifest.write_text(json.dumps(entries))
        env = {k: v for k, v in os.environ.items()
               if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
        env.update(
            MODELS_DIR=str(self.models),
            MANIFEST=str(manifest),
            TOKEN_URL_PREFIXES=self.prefixes,
            RETRY_DELAY_S="0",
            PROGRESS_INTERVAL_S="1",
            NO_PROXY="*",
        )
        env.update(extra_env)
        env.pop("CREDENTIALS_DIRECTORY", None)
        if self.creds:
            env["CREDENTIALS_DIRECTORY"] = str(self.creds)
        if extra_path:
            env["PATH"] = f"{extra_path}:{env['PATH']}"
        self.result = subprocess.run(
            ["bash", "-euo", "pipefail", str(SCRIPT)],
            env=env, capture_output=True, text=True, timeout=60,
        )
        return self.result

    @property
    def output(self):
        return self.result.stdout + self.result.stderr


class Failure(Exception):
    pass


def check(cond, detail):
    if not cond:
        raise Failure(detail)


def serve(server, path, data):
    server.files[path] = data
    return f"{server.base}{path}"


def entry(folder, name, url, data_or_hash):
    h = data_or_hash if isinstance(data_or_hash, str) else sha(data_or_hash)
    return {"folder": folder, "name": name, "url": url, "sha256": h}


def check_installed(r, folder, name, data):
    dest = r.path(folder, name)
    check(r.result.returncode == 0, f"exit {r.result.returncode}\n{r.output}")
    check(dest.is_file() and dest.read_bytes() == data, f"{dest} missing or wrong bytes")
    mark = r.path(folder, name, ".sha256")
    check(mark.is_file() and mark.read_text().strip() == sha(data), f"marker {mark} missing or wrong")
    check(not r.path(folder, name, ".part").exists(), ".part left behind")


# ----------------------------------------------------------------- cases --

def case_download(srv, tmp):
    """downloads a file and checks its sha256"""
    data = blob(1)
    url = serve(srv, "/files/dl.safetensors", data)
    r = Run(tmp, srv)
    t0 = time.monotonic()
    r.run([entry("checkpoints", "dl.safetensors", url, data)], PROGRESS_INTERVAL_S="30")
    took = time.monotonic() - t0
    check_installed(r, "checkpoints", "dl.safetensors", data)
    check(len(srv.requests("/files/dl.safetensors")) == 1, "expected exactly one request")
    check(took < 10, f"took {took:.1f} s: waits for the progress interval after the download")


def case_progress(srv, tmp):
    """a slow download prints progress every PROGRESS_INTERVAL_S seconds"""
    data = blob(16)
    url = serve(srv, "/files/slow.safetensors", data)
    srv.slow["/files/slow.safetensors"] = 0.3
    r = Run(tmp, srv)
    r.run([entry("checkpoints", "slow.safetensors", url, data)], PROGRESS_INTERVAL_S="1")
    check_installed(r, "checkpoints", "slow.safetensors", data)
    lines = [l for l in r.result.stdout.splitlines() if "slow.safetensors:" in l and "so far" in l]
    check(1 <= len(lines) <= 4, f"{len(lines)} progress lines:\n{r.output}")


def case_resume_after_cut(srv, tmp):
    """a download cut after half the bytes is retried with Range: bytes=<half>- and completes"""
    data = blob(2)
    half = len(data) // 2
    url = serve(srv, "/files/cut.safetensors", data)
    srv.cuts["/files/cut.safetensors"] = [half]
    r = Run(tmp, srv)
    r.run([entry("checkpoints", "cut.safetensors", url, data)])
    check_installed(r, "checkpoints", "cut.safetensors", data)
    reqs = srv.requests("/files/cut.safetensors")
    check(len(reqs) == 2, f"expected 2 requests, got {len(reqs)}: {reqs}")
    check(reqs[0]["range"] is None and reqs[0]["sent"] == half, f"first request: {reqs[0]}")
    check(reqs[1]["range"] == f"bytes={half}-" and reqs[1]["status"] == 206,
          f"second request: {reqs[1]}")
    check("attempt 1 failed" in r.output, f"no retry message:\n{r.output}")


def case_resume_existing_part(srv, tmp):
    """a pre-existing .part with the first half is resumed; only the rest is served"""
    data = blob(3)
    half = len(data) // 2
    url = serve(srv, "/files/part.safetensors", data)
    r = Run(tmp, srv)
    r.path("loras", "part.safetensors").parent.mkdir(parents=True)
    r.path("loras", "part.safetensors", ".part").write_bytes(data[:half])
    r.run([entry("loras", "part.safetensors", url, data)])
    check_installed(r, "loras", "part.safetensors", data)
    reqs = srv.requests("/files/part.safetensors")
    check(len(reqs) == 1, f"expected 1 request, got {reqs}")
    check(reqs[0]["range"] == f"bytes={half}-" and reqs[0]["sent"] == len(data) - half,
          f"request: {reqs[0]}")


def case_complete_part(srv, tmp):
    """a complete .part (server answers 416 to the resume) is accepted without the 416 body"""
    data = blob(4)
    url = serve(srv, "/files/full.safetensors", data)
    r = Run(tmp, srv)
    r.path("vae", "full.safetensors").parent.mkdir(parents=True)
    r.path("vae", "full.safetensors", ".part").write_bytes(data)
    r.run([entry("vae", "full.safetensors", url, data)])
    check_installed(r, "vae", "full.safetensors", data)
    reqs = srv.requests("/files/full.safetensors")
    check([q["status"] for q in reqs] == [416], f"requests: {reqs}")


def case_wrong_hash(srv, tmp):
    """a wrong hash exits non-zero, names the file and both hashes, leaves no file and no .part"""
    data = blob(5)
    url = serve(srv, "/files/bad.safetensors", data)
    expected = sha(b"something else")
    r = Run(tmp, srv)
    r.run([entry("checkpoints", "bad.safetensors", url, expected)])
    check(r.result.returncode != 0, "exit status 0")
    err = r.result.stderr
    check("checkpoints/bad.safetensors" in err and sha(data) in err and expected in err,
          f"message lacks name or hashes:\n{err}")
    for suffix in ("", ".part", ".sha256"):
        check(not r.path("checkpoints", "bad.safetensors", suffix).exists(),
              f"bad.safetensors{suffix} exists")


def case_stale_part(srv, tmp):
    """a .part with wrong bytes is deleted after the hash fails, and the next run downloads afresh"""
    data = blob(6)
    half = len(data) // 2
    url = serve(srv, "/files/stale.safetensors", data)
    r = Run(tmp, srv)
    r.path("checkpoints", "stale.safetensors").parent.mkdir(parents=True)
    r.path("checkpoints", "stale.safetensors", ".part").write_bytes(blob(99, half))
    e = entry("checkpoints", "stale.safetensors", url, data)
    r.run([e])
    check(r.result.returncode != 0, "first run: exit status 0")
    check("wrong sha256" in r.result.stderr, f"first run: no hash message:\n{r.output}")
    check(not r.path("checkpoints", "stale.safetensors", ".part").exists(), "first run: .part kept")
    check(not r.path("checkpoints", "stale.safetensors").exists(), "first run: file in place")
    r.run([e])
    check_installed(r, "checkpoints", "stale.safetensors", data)
    reqs = srv.requests("/files/stale.safetensors")
    check(len(reqs) == 2 and reqs[1]["range"] is None, f"second run did not start over: {reqs}")


def case_token(srv, tmp):
    """with a token file an auth-protected URL downloads, the token is sent only to TOKEN_URL_PREFIXES and never appears in output or curl's argv"""
    data, public = blob(7), blob(8)
    url = serve(srv, "/private/gated.safetensors", data)
    srv.protected["/private/gated.safetensors"] = TOKEN
    purl = serve(srv, "/files/public.safetensors", public)
    r = Run(tmp, srv)
    r.token(TOKEN)
    # A curl wrapper that records its arguments, to show the token is not among them.
    wrap = Path(tmp) / "bin"
    wrap.mkdir()
    argv_log = Path(tmp) / "curl-argv.log"
    (wrap / "curl").write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" >>"{argv_log}"\nexec "{shutil.which("curl")}" "$@"\n')
    (wrap / "curl").chmod(0o755)
    r.run([entry("checkpoints", "gated.safetensors", url, data),
           entry("checkpoints", "public.safetensors", purl, public)], extra_path=wrap)
    check_installed(r, "checkpoints", "gated.safetensors", data)
    check_installed(r, "checkpoints", "public.safetensors", public)
    check(TOKEN not in r.output, "token printed")
    check(argv_log.exists() and "gated.safetensors" in argv_log.read_text(), "curl wrapper not used")
    check(TOKEN not in argv_log.read_text(), "token in curl's argv")
    reqs = srv.requests("/private/gated.safetensors")
    check(len(reqs) == 1 and reqs[0]["auth"] == f"Bearer {TOKEN}", f"requests: {reqs}")
    check(srv.requests("/files/public.safetensors")[0]["auth"] is None,
          "token sent to a URL outside TOKEN_URL_PREFIXES")


def case_no_token(srv, tmp):
    """without a token, or with a wrong one, a protected URL fails fast with a message about 401"""
    data = blob(9)
    for label, token in (("none", None), ("wrong", "hf_wrong")):
        path = f"/private/{label}.safetensors"
        url = serve(srv, path, data)
        srv.protected[path] = TOKEN
        sub = Path(tmp) / label
        sub.mkdir()
        r = Run(sub, srv)
        if token:
            r.token(token)
        r.run([entry("checkpoints", f"{label}.safetensors", url, data)])
        check(r.result.returncode != 0, f"{label}: exit status 0")
        check("answered 401" in r.result.stderr and f"checkpoints/{label}.safetensors" in r.result.stderr,
              f"{label}: message:\n{r.output}")
        check(TOKEN not in r.output and (token is None or token not in r.output), f"{label}: token printed")
        reqs = srv.requests(path)
        check(len(reqs) == 1, f"{label}: {len(reqs)} requests, expected 1 (fail fast)")
        for suffix in ("", ".part", ".sha256"):
            check(not r.path("checkpoints", f"{label}.safetensors", suffix).exists(),
                  f"{label}: {label}.safetensors{suffix} exists")


def case_present(srv, tmp):
    """a present file with a matching marker is skipped without a request, one without a marker but the right hash is kept and marked, one with wrong content is replaced"""
    a, b, c = blob(10), blob(11), blob(12)
    ua = serve(srv, "/files/pa.safetensors", a)
    ub = serve(srv, "/files/pb.safetensors", b)
    uc = serve(srv, "/files/pc.safetensors", c)
    r = Run(tmp, srv)
    d = r.models / "checkpoints"
    d.mkdir()
    (d / "pa.safetensors").write_bytes(a)
    (d / "pa.safetensors.sha256").write_text(sha(a) + "\n")
    (d / "pb.safetensors").write_bytes(b)
    (d / "pc.safetensors").write_bytes(blob(13))
    r.run([entry("checkpoints", "pa.safetensors", ua, a),
           entry("checkpoints", "pb.safetensors", ub, b),
           entry("checkpoints", "pc.safetensors", uc, c)])
    for name, data in (("pa", a), ("pb", b), ("pc", c)):
        check_installed(r, "checkpoints", f"{name}.safetensors", data)
    check(len(srv.requests("/files/pa.safetensors")) == 0, "marked file was requested")
    check(len(srv.requests("/files/pb.safetensors")) == 0, "unmarked good file was requested")
    check(len(srv.requests("/files/pc.safetensors")) == 1, "wrong file was not downloaded once")
    check("pa.safetensors: present, skipped" in r.output, f"no skip message:\n{r.output}")


def case_one_fails(srv, tmp):
    """with several files where some fail (404 fails fast, 503 is retried 5 times) the others are still downloaded and the exit status is non-zero"""
    a, b = blob(14), blob(15)
    ua = serve(srv, "/files/ma.safetensors", a)
    ub = serve(srv, "/files/mb.safetensors", b)
    srv.status["/files/gone.safetensors"] = 404
    srv.status["/files/busy.safetensors"] = 503
    r = Run(tmp, srv)
    r.run([entry("checkpoints", "ma.safetensors", ua, a),
           entry("checkpoints", "gone.safetensors", f"{srv.base}/files/gone.safetensors", a),
           entry("loras", "busy.safetensors", f"{srv.base}/files/busy.safetensors", a),
           entry("loras", "mb.safetensors", ub, b)])
    check(r.result.returncode != 0, "exit status 0")
    for folder, name, data in (("checkpoints", "ma", a), ("loras", "mb", b)):
        dest = r.path(folder, f"{name}.safetensors")
        check(dest.is_file() and dest.read_bytes() == data, f"{folder}/{name} not downloaded")
    check(len(srv.requests("/files/gone.safetensors")) == 1, "404 was retried")
    check("gone.safetensors" in r.result.stderr and "answered 404" in r.result.stderr,
          f"no 404 message:\n{r.output}")
    check(len(srv.requests("/files/busy.safetensors")) == 5, "503 was not tried 5 times")
    check("2 of 4 failed" in r.result.stderr, f"no summary:\n{r.output}")
    for folder, name in (("checkpoints", "gone"), ("loras", "busy")):
        check(not r.path(folder, f"{name}.safetensors").exists(), f"{name} in place")


CASES = [case_download, case_progress, case_resume_after_cut, case_resume_existing_part, case_complete_part,
         case_wrong_hash, case_stale_part, case_token, case_no_token, case_present,
         case_one_fails]


def main():
    missing = [t for t in ("bash", "curl", "jq", "sha256sum", "numfmt") if shutil.which(t) is None]
    if missing:
        print(f"FAILED: prerequisites: {', '.join(missing)} not found on PATH "
              f"(scripts/test-deps.sh installs them; or apt-get install -y {' '.join(missing)})")
        print("fetch-models: 0 passed, 1 failed")
        return 1
    srv = Server()
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    passed = failed = 0
    started = time.monotonic()
    try:
        for case in CASES:
            sentence = case.__doc__.strip()
            with tempfile.TemporaryDirectory(prefix="fetch-models-") as tmp:
                try:
                    case(srv, tmp)
                except Failure as e:
                    failed += 1
                    print(f"FAILED: {sentence}: {e}")
                except Exception as e:  # a bug in the test or a hung script
                    failed += 1
                    print(f"FAILED: {sentence}: {type(e).__name__}: {e}")
                else:
                    passed += 1
                    print(f"ok: {sentence}")
    finally:
        srv.shutdown()
    print(f"  ({time.monotonic() - started:.1f} s)")
    print(f"fetch-models: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
