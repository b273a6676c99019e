#!/usr/bin/env python3
"""model_smoke.py — prove that the generated test models (make_models.py) load
and run in a running ComfyUI.

Why this exists: comfy-multi's tests use seeded random model files instead of
downloaded weights. This checks, over HTTP only, that ComfyUI lists them in
/object_info and that the two model workflows succeed on them:
  upscale_model.json      LoadImage -> UpscaleModelLoader -> ImageUpscaleWithModel -> SaveImage
  checkpoint_txt2img.json CheckpointLoaderSimple -> CLIPTextEncode x2 -> KSampler
                          (2 steps, fixed seed, 64x64 EmptyLatentImage) -> VAEDecode -> SaveImage
For each file it checks: history status success, the output image exists, its
size (input x scale for upscalers, 64x64 for checkpoints) and that it is not
flat. Among make_models.py files of one kind (and scale), different seeds
must give different images.
With --check-determinism it regenerates every file that make_models.py wrote
(seed and kind come from the file's metadata) and compares the bytes.

Usage: <venv>/bin/python scripts/comfyui/model_smoke.py URL MODELS_DIR
  MODELS_DIR holds checkpoints/ and upscale_models/ (start.sh's BASE_DIR/models).
Needs the stdlib + requests (and the venv's torch for --check-determinism).
"""

import argparse
import hashlib
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from smoke import DEFAULT_WORKFLOWS, Comfy, check, load_workflow, png_decode, png_encode_rgb, status_of  # noqa: E402

MAKE_MODELS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_models.py")
MODEL_EXTS = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")
IN_W, IN_H = 48, 40  # upscaler input size


def safetensors_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def our_metadata(path):
    """make_models.py's metadata ({kind, seed, ...}) or None."""
    if not path.endswith(".safetensors"):
        return None
    meta = safetensors_header(path).get("__metadata__", {})
    return json.loads(meta["comfy_multi"]) if "comfy_multi" in meta else None


def upscaler_scale(path, default):
    """Scale of an SRVGG compact model, read from the tensor shapes."""
    if not path.endswith(".safetensors"):
        return default
    h = safetensors_header(path)
    last = max(int(k.split(".")[1]) for k in h if k.startswith("body."))
    in_nc = h["body.0.weight"]["shape"][1]
    return int(round(math.sqrt(h[f"body.{last}.bias"]["shape"][0] / in_nc)))


def image_stats(rows, ch):
    """(per-channel mean, per-channel std, fraction of 0/255 bytes)."""
    n, sums, sq, sat = 0, [0.0] * 3, [0.0] * 3, 0
    for row in rows:
        for i in range(0, len(row), ch):
            for c in range(3):
                v = row[i + c]
                sums[c] += v
                sq[c] += v * v
                sat += v in (0, 255)
            n += 1
    mean = [s / n for s in sums]
    std = [math.sqrt(max(0.0, q / n - m * m)) for q, m in zip(sq, mean)]
    return mean, std, sat / (3 * n)


def check_image(c, entry, node, want_wh):
    s, done, msgs = status_of(entry)
    errs = [m[1] for m in msgs if m[0] == "execution_error"]
    check(s == "success" and done, f"status {s!r} completed={done} {errs[:1]}")
    img = entry["outputs"][node]["images"][0]
    data = c.view(img)
    w, h, ch, rows = png_decode(data)
    check((w, h) == want_wh, f"size {w}x{h}, want {want_wh[0]}x{want_wh[1]}")
    mean, std, sat = image_stats(rows, ch)
    check(max(std) > 2.0, f"flat image: mean {mean} std {std}")
    check(sat < 0.9, f"saturated image: {sat:.0%} of bytes are 0 or 255")
    pixels = hashlib.sha256(b"".join(bytes(r) for r in rows)).hexdigest()[:16]
    desc = (f"{img['filename']} {w}x{h} mean {[round(m) for m in mean]} std {[round(s, 1) for s in std]} "
            f"sat {sat:.1%} pixels {pixels}")
    return pixels, desc


def list_local(models_dir, folder):
    d = os.path.join(models_dir, folder)
    if not os.path.isdir(d):
        return []
    return sorted(f for f in os.listdir(d) if f.endswith(MODEL_EXTS) and not f.startswith("."))


def combo(c, cls, name):
    """The file list of a model-folder combo input in /object_info/CLS."""
    info = c.get(f"/object_info/{cls}").json()[cls]
    spec = info["input"]["required"][name]
    check(isinstance(spec, list) and isinstance(spec[0], list), f"{cls}.{name} is not a combo: {spec}")
    return spec[0]


def run_upscale(c, wf, model, scale):
    name = f"comfy_multi_model_smoke_{uuid.uuid4().hex[:8]}.png"
    png = png_encode_rgb(IN_W, IN_H, lambda x, y: (x * 5, y * 6, (x * y) % 256))
    r = c.s.post(c.url + "/upload/image", files={"image": (name, png, "image/png")},
                 data={"overwrite": "true"}, timeout=30)
    check(r.status_code == 200, f"upload -> {r.status_code} {r.text}")
    p = load_workflow(wf, "upscale_model.json")
    p["1"]["inputs"]["image"] = r.json()["name"]
    p["2"]["inputs"]["model_name"] = model
    pid, e, dt = c.run(p)
    pixels, desc = check_image(c, e, "4", (IN_W * scale, IN_H * scale))
    return pixels, f"x{scale} {IN_W}x{IN_H} -> {desc}; {dt:.2f}s"


def run_checkpoint(c, wf, model, seed):
    p = load_workflow(wf, "checkpoint_txt2img.json")
    p["1"]["inputs"]["ckpt_name"] = model
    p["5"]["inputs"]["seed"] = seed
    pid, e, dt = c.run(p)
    pixels, desc = check_image(c, e, "7", (64, 64))
    return pixels, f"{desc}; {dt:.2f}s"


def check_determinism(models_dir, folder, name):
    path = os.path.join(models_dir, folder, name)
    meta = our_metadata(path)
    with tempfile.TemporaryDirectory() as td:
        out = os.path.join(td, name)
        args = [sys.executable, MAKE_MODELS, meta["kind"], "--seed", str(meta["seed"]), "--out", out]
        if meta["kind"] == "upscale":
            args += ["--scale", str(meta["scale"])]
        t0 = time.monotonic()
        subprocess.run(args, check=True, stderr=subprocess.DEVNULL)
        dt = time.monotonic() - t0
        same = open(out, "rb").read() == open(path, "rb").read()
    check(same, "the regenerated file differs")
    return f"regenerated (kind {meta['kind']} seed {meta['seed']}) in {dt:.1f}s, byte-identical"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("url")
    ap.add_argument("models_dir")
    ap.add_argument("--workflows", default=DEFAULT_WORKFLOWS)
    ap.add_argument("--timeout", type=float, default=300.0, help="per-wait timeout, seconds")
    ap.add_argument("--scale", type=int, default=4, help="scale of .pth upscalers (others: read from the file)")
    ap.add_argument("--check-determinism", action="store_true")
    a = ap.parse_args()

    c = Comfy(a.url, a.timeout)
    c.wait_ready()
    failed, passed = 0, 0

    def case(name, fn):
        nonlocal failed, passed
        try:
            out = fn()
            print(f"PASS {name}: {out[1] if isinstance(out, tuple) else out}", flush=True)
            passed += 1
            return out
        except Exception as ex:  # report every case, then fail overall
            failed += 1
            print(f"FAIL {name}: {type(ex).__name__}: {ex}", flush=True)
            return None

    kinds = [("upscale_models", "UpscaleModelLoader", "model_name"),
             ("checkpoints", "CheckpointLoaderSimple", "ckpt_name")]
    local = {}
    for folder, cls, inp in kinds:
        local[folder] = list_local(a.models_dir, folder)

        def listed(folder=folder, cls=cls, inp=inp):
            names = combo(c, cls, inp)
            missing = [f for f in local[folder] if f not in names]
            check(local[folder], f"no model files in {os.path.join(a.models_dir, folder)}")
            check(not missing, f"{missing} not in {cls}.{inp} {names}")
            return f"{cls}.{inp} = {names}"
        case(f"object_info {folder}", listed)

    outputs = {}
    for model in local["upscale_models"]:
        path = os.path.join(a.models_dir, "upscale_models", model)
        r = case(f"upscale {model}", lambda: run_upscale(c, a.workflows, model, upscaler_scale(path, a.scale)))
        meta = our_metadata(path)  # compare only make_models.py files of different seeds
        if r and meta:
            outputs.setdefault("upscale_models", {}).setdefault((meta["seed"], meta["scale"]), (model, r[0]))
    for model in local["checkpoints"]:
        r = case(f"txt2img {model} (load + job)", lambda: run_checkpoint(c, a.workflows, model, 42))
        meta = our_metadata(os.path.join(a.models_dir, "checkpoints", model))
        if r and meta:
            outputs.setdefault("checkpoints", {}).setdefault(meta["seed"], (model, r[0]))
        if r:
            # Same prompt, other sampler seed: ComfyUI reuses the loaded model
            # and the text encodings, so this times one job alone.
            case(f"txt2img {model} (job only, seed 43)", lambda: run_checkpoint(c, a.workflows, model, 43))

    for folder, outs in outputs.items():
        outs = list(outs.values())
        if len(outs) < 2:
            print(f"SKIP distinct outputs {folder}: fewer than 2 seeds ran")
            continue

        def distinct(outs=outs):
            seen = {}
            for model, pixels in outs:
                check(pixels not in seen, f"{model} and {seen.get(pixels)} gave identical images")
                seen[pixels] = model
            return f"{len(outs)} models, {len(outs)} different images"
        case(f"distinct outputs {folder}", distinct)

    if a.check_determinism:
        for folder, _, _ in kinds:
            for model in local[folder]:
                if our_metadata(os.path.join(a.models_dir, folder, model)) is None:
                    print(f"SKIP determinism {folder}/{model}: not written by make_models.py")
                    continue
                case(f"determinism {folder}/{model}",
                     lambda: check_determinism(a.models_dir, folder, model))

    print(f"model_smoke: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
