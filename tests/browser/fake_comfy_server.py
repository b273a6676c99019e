#!/usr/bin/env python3
"""fake_comfy_server.py -- TEST DOUBLE ONLY.

This is NOT part of comfy-multi and NOT a reference implementation. It exists
only to exercise tests/browser/editor_smoke.mjs (and to discover what the
ComfyUI frontend 1.58.1 requests at boot, see BOOT_NOTES.md) before the real
Rust server can serve the editor.

It serves the unpacked `comfyui_frontend_package/static` dir (from
scripts/frontend/install.sh) under an optional path prefix (e.g. /user07) and
answers the minimal boot API with canned data (object_info from the recorded
ComfyUI 0.3.64 trace). Every request is logged as one JSON line (stderr and,
with --log, a file) so the boot sequence can be inspected.

Usage:
  python3 fake_comfy_server.py --static DIR [--port 8199] [--prefix /user07]
      [--object-info FILE] [--log requests.jsonl] [--no-ws] [--no-redirect]
      [--fail ENDPOINT ...]   (answer 404 for e.g. /api/i18n, to test tolerance)
      [--seed-settings '{"Comfy.TutorialCompleted": true}']

Standard library only.
"""
import argparse
import base64
import hashlib
import json
import mimetypes
import os
import struct
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit, parse_qs

REF = "/work/shared/reference/comfyui-0.3.64-traces"

ARGS = None
LOCK = threading.Lock()
SETTINGS = {}
USERDATA = {}  # relative path -> (bytes, modified_ms, created_ms)
LOG_FH = None
T0 = time.time()
SEQ = [0]

FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
SYSTEM_STATS = {
    "system": {
        "os": "posix", "ram_total": 25276502016, "ram_free": 24244363264,
        "comfyui_version": "0.3.64", "required_frontend_version": "1.27.10",
        "installed_templates_version": "0.1.95", "required_templates_version": "0.1.95",
        "python_version": "3.11.7", "pytorch_version": "2.8.0+cu128",
        "embedded_python": False,
        "argv": ["main.py", "--listen", "127.0.0.1", "--port", "8188"],
    },
    "devices": [{"name": "cpu", "type": "cpu", "index": None,
                 "vram_total": 25276502016, "vram_free": 24244363264,
                 "torch_vram_total": 25276502016, "torch_vram_free": 24244363264}],
}


def log(entry):
    with LOCK:
        SEQ[0] += 1
        entry = {"seq": SEQ[0], "t": round(time.time() - T0, 3), **entry}
        line = json.dumps(entry)
        print(line, file=sys.stderr, flush=True)
        if LOG_FH:
            LOG_FH.write(line + "\n")
            LOG_FH.flush()


def file_info(path):
    data, modified, created = USERDATA[path]
    return {"path": path, "size": len(data), "modified": modified, "created": created}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeComfy/0"

    def log_message(self, *a):  # silence default logging; we log JSON lines
        pass

    # ---- helpers ---------------------------------------------------------
    def _send(self, status, body=b"", ctype="application/json", extra=None):
        if isinstance(body, (dict, list, str, int, float, bool)) or body is None:
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._status = status

    def _json(self, obj, status=200):
        self._send(status, json.dumps(obj).encode())

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _route(self):
        raw = self.path
        parts = urlsplit(raw)
        path = parts.path
        prefix = ARGS.prefix
        self._status = None
        self._note = None
        if prefix:
            if path == prefix and not ARGS.no_redirect:
                q = ("?" + parts.query) if parts.query else ""
                self._send(301, b"", "text/plain", {"Location": prefix + "/" + q})
                return
            if path == prefix:
                path = "/"
            elif path.startswith(prefix + "/"):
                path = path[len(prefix):]
            else:
                self._send(404, {"error": "outside prefix"})
                self._note = "outside-prefix"
                return
        q = parse_qs(parts.query, keep_blank_values=True)
        self._dispatch(path, q)

    def _finish_log(self):
        log({"method": self.command, "url": self.path, "status": self._status,
             **({"note": self._note} if self._note else {})})

    def do_GET(self):
        try:
            self._route()
        finally:
            if not getattr(self, "_ws", False):
                self._finish_log()

    do_HEAD = do_GET
    do_POST = do_GET
    do_DELETE = do_GET
    do_PUT = do_GET
    do_PATCH = do_GET

    # ---- routing ---------------------------------------------------------
    def _dispatch(self, path, q):
        m = self.command
        api = path[4:] if path.startswith("/api/") else None
        if api is not None and ("/api" + api) in ARGS.fail:
            self._note = "forced-404"
            return self._json({"error": "forced"}, 404)

        if path == "/ws" or api == "/ws":
            if ARGS.no_ws:
                self._note = "ws-disabled"
                return self._json({"error": "no ws"}, 404)
            return self._websocket(q)

        if api is not None:
            return self._api(m, api, q)
        if path.startswith("/internal/"):
            return self._internal(m, path[len("/internal"):], q)
        if path.startswith("/templates/"):
            self._note = "templates-404"
            return self._json({"error": "no templates in fake"}, 404)
        return self._static(path)

    def _api(self, m, api, q):
        if api == "/features" and m == "GET":
            return self._json(FEATURES)
        if api == "/system_stats":
            return self._json(SYSTEM_STATS)
        if api == "/users" and m == "GET":
            return self._json({"storage": "server", "migrated": True})
        if api == "/settings":
            if m == "POST":
                SETTINGS.update(json.loads(self._body() or b"{}"))
                return self._send(200, b"", "text/plain")
            return self._json(SETTINGS)
        if api.startswith("/settings/"):
            key = unquote(api[len("/settings/"):])
            if m == "POST":
                b = self._body()
                SETTINGS[key] = json.loads(b) if b else None
                return self._send(200, b"", "text/plain")
            return self._json(SETTINGS.get(key))
        if api == "/userdata" and m == "GET":
            d = (q.get("dir") or [""])[0].strip("/")
            if not d:
                return self._json({"error": "dir required"}, 400)
            files = sorted(p[len(d) + 1:] for p in USERDATA if p.startswith(d + "/"))
            if not files:
                return self._json({"error": "not found"}, 404)
            if (q.get("full_info") or ["false"])[0] == "true":
                return self._json([{**file_info(d + "/" + f), "path": f} for f in files])
            if (q.get("split") or ["false"])[0] == "true":
                return self._json([[f, *f.rsplit("/", 1)] if "/" in f else [f, f] for f in files])
            return self._json(files)
        if api.startswith("/userdata/"):
            rest = api[len("/userdata/"):]
            if "/move/" in rest and m == "POST":
                src, dst = (unquote(x) for x in rest.split("/move/", 1))
                if src not in USERDATA:
                    return self._json({"error": "not found"}, 404)
                USERDATA[dst] = USERDATA.pop(src)
                return self._json(file_info(dst))
            name = unquote(rest)
            if m == "GET":
                if name in USERDATA:
                    ctype = "text/css" if name.endswith(".css") else "application/json"
                    return self._send(200, USERDATA[name][0], ctype)
                return self._json({"error": "not found"}, 404)
            if m == "POST":
                now = int(time.time() * 1000)
                if name in USERDATA and (q.get("overwrite") or ["true"])[0] == "false":
                    return self._json({"error": "exists"}, 409)
                created = USERDATA[name][2] if name in USERDATA else now
                USERDATA[name] = (self._body(), now, created)
                if (q.get("full_info") or ["false"])[0] == "true":
                    return self._json(file_info(name))
                return self._json(name)
            if m == "DELETE":
                if USERDATA.pop(name, None) is None:
                    return self._json({"error": "not found"}, 404)
                return self._send(204, b"", "text/plain")
        if api == "/extensions":
            return self._json([])
        if api == "/i18n":
            return self._json({})
        if api == "/object_info":
            with open(ARGS.object_info, "rb") as f:
                return self._send(200, f.read())
        if api.startswith("/object_info/"):
            with open(ARGS.object_info, "rb") as f:
                d = json.load(f)
            c = unquote(api[len("/object_info/"):])
            return self._json({c: d[c]} if c in d else {})
        if api == "/embeddings":
            return self._json([])
        if api == "/models":
            return self._json(["checkpoints", "loras", "vae"])
        if api.startswith("/models/"):
            return self._json([])
        if api == "/experiment/models":
            return self._json([])
        if api == "/queue":
            if m == "POST":
                return self._send(200, b"", "text/plain")
            return self._json({"queue_running": [], "queue_pending": []})
        if api == "/history":
            if m == "POST":
                return self._send(200, b"", "text/plain")
            return self._json({})
        if api == "/jobs" and m == "GET":
            limit = int((q.get("limit") or ["0"])[0] or 0)
            offset = int((q.get("offset") or ["0"])[0] or 0)
            return self._json({"jobs": [], "pagination": {"offset": offset, "limit": limit,
                                                          "total": 0, "has_more": False}})
        if api == "/global_subgraphs":
            return self._json({})
        if api == "/workflow_templates":
            return self._json({})
        if api in ("/interrupt", "/free") and m == "POST":
            return self._send(200, b"", "text/plain")
        self._note = "UNHANDLED"
        return self._json({"error": "not implemented in fake"}, 404)

    def _internal(self, m, p, q):
        if p == "/folder_paths":
            return self._json({})
        if p.startswith("/files/"):
            return self._json([])
        self._note = "UNHANDLED"
        return self._json({"error": "not implemented in fake"}, 404)

    def _static(self, path):
        if path == "/":
            path = "/index.html"
        rel = os.path.normpath(unquote(path)).lstrip("/")
        full = os.path.join(ARGS.static, rel)
        if rel.startswith("..") or not os.path.isfile(full):
            self._note = "static-404"
            return self._send(404, b"not found", "text/plain")
        ctype = mimetypes.guess_type(full)[0] or "application/octet-stream"
        if full.endswith((".js", ".mjs")):
            ctype = "text/javascript"
        with open(full, "rb") as f:
            return self._send(200, f.read(), ctype)

    # ---- minimal WebSocket (RFC 6455, text frames only) ------------------
    def _websocket(self, q):
        key = self.headers.get("Sec-WebSocket-Key")
        if not key or "websocket" not in (self.headers.get("Upgrade") or "").lower():
            return self._json({"error": "expected websocket"}, 400)
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self._status = 101
        self._ws = True
        self._finish_log()
        sid = (q.get("clientId") or [uuid.uuid4().hex])[0] or uuid.uuid4().hex
        self._ws_send({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": sid}})
        log({"ws": "sent", "type": "status", "sid": sid})
        first = True
        try:
            while True:
                op, payload = self._ws_recv()
                if op == 8:
                    log({"ws": "close"})
                    return
                if op == 9:
                    self._ws_raw(0xA, payload)
                    continue
                if op != 1:
                    continue
                try:
                    msg = json.loads(payload)
                except ValueError:
                    msg = None
                log({"ws": "recv", "msg": msg})
                if first and isinstance(msg, dict) and msg.get("type") == "feature_flags":
                    self._ws_send({"type": "feature_flags", "data": FEATURES})
                    log({"ws": "sent", "type": "feature_flags"})
                first = False
        except (ConnectionError, OSError, EOFError):
            log({"ws": "disconnected"})
        finally:
            self.close_connection = True

    def _ws_raw(self, op, data):
        hdr = bytes([0x80 | op])
        n = len(data)
        if n < 126:
            hdr += bytes([n])
        elif n < 65536:
            hdr += bytes([126]) + struct.pack(">H", n)
        else:
            hdr += bytes([127]) + struct.pack(">Q", n)
        self.wfile.write(hdr + data)
        self.wfile.flush()

    def _ws_send(self, obj):
        self._ws_raw(1, json.dumps(obj).encode())

    def _read(self, n):
        b = self.rfile.read(n)
        if len(b) < n:
            raise EOFError
        return b

    def _ws_recv(self):
        b0, b1 = self._read(2)
        op = b0 & 0x0F
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read(8))[0]
        mask = self._read(4) if b1 & 0x80 else b"\0\0\0\0"
        data = bytes(c ^ mask[i % 4] for i, c in enumerate(self._read(n)))
        return op, data


def main():
    global ARGS, LOG_FH
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--static", required=True, help="comfyui_frontend_package/static dir")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8199)
    ap.add_argument("--prefix", default="", help="serve under a sub-path, e.g. /user07")
    ap.add_argument("--object-info", default=os.path.join(REF, "object_info.json"))
    ap.add_argument("--log", help="append request log (JSON lines) to this file")
    ap.add_argument("--no-ws", action="store_true", help="answer /ws with 404")
    ap.add_argument("--no-redirect", action="store_true",
                    help="serve index.html at PREFIX (no slash) instead of redirecting")
    ap.add_argument("--fail", nargs="*", default=[], help="API paths to answer with 404")
    ap.add_argument("--seed-settings", default="{}",
                    help='initial settings JSON, e.g. \'{"Comfy.TutorialCompleted": true}\' '
                         '(makes the frontend load its default graph instead of the templates dialog)')
    ARGS = ap.parse_args()
    ARGS.prefix = ARGS.prefix.rstrip("/")
    SETTINGS.update(json.loads(ARGS.seed_settings))
    if ARGS.log:
        LOG_FH = open(ARGS.log, "a")
    srv = ThreadingHTTPServer((ARGS.host, ARGS.port), Handler)
    srv.daemon_threads = True
    print(f"fake-comfy listening on http://{ARGS.host}:{ARGS.port}{ARGS.prefix}/", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
