#!/usr/bin/env python3
"""smoke.py — end-to-end smoke test of a running ComfyUI (weight-free workflows).

Why this exists: proves that the ComfyUI started by scripts/comfyui/start.sh
really executes prompts (HTTP API only: POST /prompt, poll /history/{id},
POST /upload/image, GET /view), and that comfy-multi's test nodes
(tests/comfyui_nodes/comfy_multi_test_nodes) are loaded. The prompts come from
tests/comfyui_nodes/workflows/*.json, which the Rust tests reuse.

Usage: <venv>/bin/python scripts/comfyui/smoke.py http://127.0.0.1:PORT
Needs only the stdlib + requests. Exits non-zero if any check fails.
"""

import argparse
import json
import os
import random
import struct
import sys
import time
import uuid
import zlib

import requests

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_WORKFLOWS = os.path.join(REPO_ROOT, "tests", "comfyui_nodes", "workflows")


# ---------------------------------------------------------------- tiny PNG io
def png_encode_rgb(width, height, pixel):
    """Encode an RGB8 PNG; pixel(x, y) -> (r, g, b)."""
    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter: none
        for x in range(width):
            raw.extend(pixel(x, y))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(raw)))
            + chunk(b"IEND", b""))


def png_decode(data):
    """Decode an 8-bit, non-interlaced RGB/RGBA PNG -> (w, h, channels, rows)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, w = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or ctype not in (2, 6) or interlace:
                raise ValueError(f"unsupported PNG depth={depth} type={ctype} interlace={interlace}")
            ch = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride, rows, prev = w * ch, [], bytearray(w * ch)
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - ch] if i >= ch else 0
            b, c = prev[i], (prev[i - ch] if i >= ch else 0)
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(line)
        prev = line
    return w, h, ch, rows


# ------------------------------------------------------------------- client
class Comfy:
    def __init__(self, url, timeout):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.client_id = "comfy-multi-smoke-" + uuid.uuid4().hex[:8]
        self.s = requests.Session()

    def get(self, path, **kw):
        r = self.s.get(self.url + path, timeout=30, **kw)
        r.raise_for_status()
        return r

    def wait_ready(self):
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return self.get("/system_stats").json()
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.25)

    def queue(self, prompt):
        r = self.s.post(self.url + "/prompt", json={"prompt": prompt, "client_id": self.client_id}, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(f"POST /prompt -> {r.status_code}: {r.text}")
        return r.json()["prompt_id"]

    def wait_history(self, prompt_id):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            h = self.get(f"/history/{prompt_id}").json()
            if prompt_id in h:
                return h[prompt_id]
            time.sleep(0.1)
        raise TimeoutError(f"prompt {prompt_id} not in /history after {self.timeout}s")

    def run(self, prompt):
        t0 = time.monotonic()
        pid = self.queue(prompt)
        entry = self.wait_history(pid)
        return pid, entry, time.monotonic() - t0

    def view(self, img):
        params = {"filename": img["filename"], "subfolder": img.get("subfolder", ""), "type": img["type"]}
        return self.get("/view", params=params).content


def load_workflow(dir_, name):
    with open(os.path.join(dir_, name)) as f:
        return json.load(f)


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def status_of(entry):
    st = entry.get("status") or {}
    return st.get("status_str"), st.get("completed"), st.get("messages", [])


# -------------------------------------------------------------------- tests
def t_invert(c, wf):
    p = load_workflow(wf, "invert.json")
    color = random.randint(0, 0xFFFFFF)  # vary so ComfyUI's cache can't skip it
    p["1"]["inputs"]["color"] = color
    pid, e, dt = c.run(p)
    s, done, _ = status_of(e)
    check(s == "success" and done, f"status {s!r} completed={done}")
    img = e["outputs"]["3"]["images"][0]
    check(img["type"] == "output", f"image type {img['type']}")
    w, h, ch, rows = png_decode(c.view(img))
    check((w, h) == (64, 64), f"size {w}x{h}")
    want = (0xFF - (color >> 16 & 0xFF), 0xFF - (color >> 8 & 0xFF), 0xFF - (color & 0xFF))
    got = tuple(rows[10][0:3])
    check(all(abs(a - b) <= 1 for a, b in zip(got, want)), f"pixel {got} != inverted {want}")
    return f"prompt {pid} {dt:.2f}s -> {img['filename']} pixel {got} (color {color:#08x} inverted)"


def t_upload_scale(c, wf):
    name = f"comfy_multi_smoke_{uuid.uuid4().hex[:8]}.png"
    png = png_encode_rgb(40, 30, lambda x, y: (x * 6, y * 8, 128))
    r = c.s.post(c.url + "/upload/image", files={"image": (name, png, "image/png")},
                 data={"overwrite": "true"}, timeout=30)
    check(r.status_code == 200, f"upload -> {r.status_code} {r.text}")
    up = r.json()
    p = load_workflow(wf, "upload_scale.json")
    p["1"]["inputs"]["image"] = up["name"] if not up.get("subfolder") else f"{up['subfolder']}/{up['name']}"
    pid, e, dt = c.run(p)
    s, done, _ = status_of(e)
    check(s == "success" and done, f"status {s!r} completed={done}")
    img = e["outputs"]["3"]["images"][0]
    w, h, ch, _ = png_decode(c.view(img))
    check((w, h) == (32, 24), f"scaled size {w}x{h}")
    return f"upload -> {up}; prompt {pid} {dt:.2f}s -> {img['filename']} {w}x{h}"


def t_fail(c, wf):
    p = load_workflow(wf, "fail.json")
    msg = f"comfy-multi smoke failure {uuid.uuid4().hex[:6]}"
    p["2"]["inputs"]["message"] = msg
    pid, e, dt = c.run(p)
    s, done, messages = status_of(e)
    check(s == "error" and not done, f"status {s!r} completed={done}")
    errs = [m[1] for m in messages if m[0] == "execution_error"]
    check(errs, f"no execution_error in history messages: {messages}")
    err = errs[0]
    check(err.get("node_id") == "2" and err.get("node_type") == "CMFail", f"error {err}")
    check(msg in err.get("exception_message", ""), f"exception_message {err.get('exception_message')!r}")
    return f"prompt {pid} {dt:.2f}s -> error {err['exception_type']}: {err['exception_message'].strip()!r}"


def t_sleep_preview(c, wf):
    p = load_workflow(wf, "sleep_preview.json")
    p["1"]["inputs"]["color"] = random.randint(0, 0xFFFFFF)  # defeat the cache
    p["2"]["inputs"]["seconds"] = 1.0
    pid, e, dt = c.run(p)
    s, done, _ = status_of(e)
    check(s == "success" and done, f"status {s!r} completed={done}")
    check(dt >= 1.0, f"finished in {dt:.2f}s, expected >= 1s of sleep")
    img = e["outputs"]["3"]["images"][0]
    check(img["type"] == "temp", f"preview image type {img['type']}")
    png_decode(c.view(img))
    return f"prompt {pid} {dt:.2f}s -> temp {img['filename']}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("url", nargs="?", default=os.environ.get("COMFYUI_URL", "http://127.0.0.1:8188"))
    ap.add_argument("--workflows", default=DEFAULT_WORKFLOWS)
    ap.add_argument("--timeout", type=float, default=120.0, help="per-wait timeout, seconds")
    a = ap.parse_args()

    c = Comfy(a.url, a.timeout)
    stats = c.wait_ready()
    print(f"system_stats: {json.dumps(stats)}")
    oi = c.get("/object_info/CMSleep").json()
    ok = "CMSleep" in oi and "CMFail" in c.get("/object_info/CMFail").json()
    print(f"test nodes loaded: {ok}")
    cases = [("empty-invert-save", t_invert), ("upload-load-scale-save", t_upload_scale),
             ("cmfail-error", t_fail), ("cmsleep-preview", t_sleep_preview)]
    failed = 0
    for name, fn in cases:
        try:
            print(f"PASS {name}: {fn(c, a.workflows)}")
        except Exception as ex:  # report every case, then fail overall
            failed += 1
            print(f"FAIL {name}: {type(ex).__name__}: {ex}")
    print(f"smoke: {len(cases) - failed} passed, {failed} failed")
    return 1 if failed or not ok else 0


if __name__ == "__main__":
    sys.exit(main())
