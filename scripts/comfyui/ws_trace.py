#!/usr/bin/env python3
"""ws_trace.py — record the WebSocket messages ComfyUI sends for one prompt.

Why this exists: comfy-multi proxies/relays ComfyUI's /ws protocol, and its
tests compare against what a real ComfyUI actually sends. This connects to
/ws?clientId=..., queues one API-format workflow with that client_id, and
writes every frame received until the prompt is finished (``executing`` with
node null, or ``execution_error`` / ``execution_interrupted``) as a JSON list:
text frames as the parsed JSON object, binary frames as
{"binary": true, "type": <first big-endian u32>, "len": <frame length>}.

Usage: <venv>/bin/python scripts/comfyui/ws_trace.py URL WORKFLOW.json OUT.json
       [--interrupt-after S]   POST /interrupt S seconds after queueing
Needs aiohttp (installed in the ComfyUI venv). Workflow nodes of class
EmptyImage get a random colour so ComfyUI's cache does not skip the run.
"""

import argparse
import asyncio
import json
import random
import struct
import sys
import uuid

import aiohttp


async def trace(url, workflow, interrupt_after, grace, timeout):
    url = url.rstrip("/")
    client_id = "comfy-multi-trace-" + uuid.uuid4().hex[:8]
    for node in workflow.values():
        if node.get("class_type") == "EmptyImage":
            node["inputs"]["color"] = random.randint(0, 0xFFFFFF)
    msgs = []
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{url}/ws?clientId={client_id}") as ws:
            # first frame is the initial "status" message
            first = await ws.receive(timeout=timeout)
            msgs.append(json.loads(first.data))
            async with s.post(f"{url}/prompt", json={"prompt": workflow, "client_id": client_id}) as r:
                body = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"POST /prompt -> {r.status}: {body}")
            prompt_id = body["prompt_id"]
            interrupter = None
            if interrupt_after is not None:
                async def interrupt():
                    await asyncio.sleep(interrupt_after)
                    async with s.post(f"{url}/interrupt", json={"prompt_id": prompt_id}) as r:
                        print(f"POST /interrupt -> {r.status}", file=sys.stderr)
                interrupter = asyncio.ensure_future(interrupt())
            finished = False
            while True:
                try:
                    m = await ws.receive(timeout=grace if finished else timeout)
                except asyncio.TimeoutError:
                    if finished:
                        break
                    raise
                if m.type == aiohttp.WSMsgType.TEXT:
                    j = json.loads(m.data)
                    msgs.append(j)
                    t, d = j.get("type"), j.get("data", {})
                    if d.get("prompt_id") == prompt_id and (
                        (t == "executing" and d.get("node") is None)
                        or t in ("execution_error", "execution_interrupted")
                    ):
                        finished = True  # keep reading briefly for trailing frames
                elif m.type == aiohttp.WSMsgType.BINARY:
                    (typ,) = struct.unpack(">I", m.data[:4])
                    msgs.append({"binary": True, "type": typ, "len": len(m.data)})
                else:
                    break
            if interrupter:
                await interrupter
    return prompt_id, msgs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("url")
    ap.add_argument("workflow")
    ap.add_argument("out")
    ap.add_argument("--interrupt-after", type=float, default=None)
    ap.add_argument("--grace", type=float, default=1.0, help="seconds to keep reading after the end")
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args()
    with open(a.workflow) as f:
        wf = json.load(f)
    prompt_id, msgs = asyncio.run(trace(a.url, wf, a.interrupt_after, a.grace, a.timeout))
    with open(a.out, "w") as f:
        json.dump(msgs, f, indent=1)
        f.write("\n")
    print(f"prompt {prompt_id}: {len(msgs)} messages -> {a.out}")
    for m in msgs:
        print("  ", m.get("type"), json.dumps(m.get("data"))[:160] if "data" in m else m)


if __name__ == "__main__":
    main()
