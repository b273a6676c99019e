"""Test-only ComfyUI custom nodes for comfy-multi's integration tests.

Why this exists: comfy-multi's tests and benchmarks drive a real ComfyUI
(scripts/comfyui/start.sh loads this package) and need weight-free nodes with
controllable behaviour:

* ``CMSleep`` takes a known amount of wall time and reports ComfyUI progress
  (``progress`` WebSocket events) ``steps`` times, then returns its image
  unchanged. Use it for long-running / progress / interrupt / queueing tests.
  ComfyUI caches nodes whose inputs did not change, so vary ``seconds`` (or
  the upstream image) between runs that must really execute.
* ``CMFail`` raises ``RuntimeError(message)`` when executed: a prompt that
  passes validation but fails at run time (``execution_error``).
* ``CMNoise`` makes a seeded image of random pixels: outputs that PNG cannot
  compress (about 3 bytes a pixel), to fill a disk in the storage tests.

Not for production use.
"""

import time

import comfy.model_management
import comfy.utils


class CMSleep:
    """Sleep `seconds` in `steps` equal steps, reporting progress each step."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "seconds": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3600.0, "step": 0.01}),
                "steps": ("INT", {"default": 10, "min": 1, "max": 10000}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "comfy_multi/test"

    def run(self, image, seconds, steps):
        steps = max(1, int(steps))
        per_step = max(0.0, float(seconds)) / steps
        pbar = comfy.utils.ProgressBar(steps)
        for _ in range(steps):
            deadline = time.monotonic() + per_step
            # Sleep in short slices so POST /interrupt takes effect quickly.
            while True:
                comfy.model_management.throw_exception_if_processing_interrupted()
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(left, 0.05))
            pbar.update(1)  # -> "progress" {value, max, prompt_id, node}
        return (image,)


class CMFail:
    """Raise RuntimeError(message) at execution time."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE",),
                "message": ("STRING", {"default": "CMFail: intentional failure", "multiline": False}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "comfy_multi/test"

    def run(self, image, message):
        raise RuntimeError(message)


class CMNoise:
    """A width x height image of seeded random pixels."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "width": ("INT", {"default": 512, "min": 1, "max": 8192}),
                "height": ("INT", {"default": 512, "min": 1, "max": 8192}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"
    CATEGORY = "comfy_multi/test"

    def run(self, width, height, seed):
        import torch

        g = torch.Generator().manual_seed(int(seed))
        return (torch.rand((1, int(height), int(width), 3), generator=g),)


NODE_CLASS_MAPPINGS = {"CMSleep": CMSleep, "CMFail": CMFail, "CMNoise": CMNoise}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CMSleep": "Sleep with progress (comfy-multi test)",
    "CMFail": "Fail at run time (comfy-multi test)",
    "CMNoise": "Random pixels (comfy-multi test)",
}
