# spandrel: loads upscale / restoration models (ESRGAN, SwinIR, SRVGG, …) by
# inspecting their state dict. ComfyUI's UpscaleModelLoader imports it.
#
# Why this file exists: nixpkgs' python3Packages has no `spandrel` in nixos-25.11
# (the release flake.lock pins) nor in the 26.11pre snapshot the CI evaluation
# kit uses, so nixos/pkgs/comfyui.nix takes nixpkgs' attribute where one exists
# (`ps ? spandrel`) and this package otherwise.
#
# The pure-Python wheel from PyPI, pinned by version and hash; the hash was
# checked against the wheel PyPI serves (sha256 hex 6c93e3ec…35b5), and
# scripts/check-nix.sh re-checks it with `nix hash file` whenever PyPI is
# reachable. Bumping: `pip download --no-deps spandrel==X.Y.Z` and
# `nix hash file --sri spandrel-X.Y.Z-py3-none-any.whl`.
{
  lib,
  buildPythonPackage,
  fetchPypi,
  torch,
  torchvision,
  safetensors,
  numpy,
  einops,
  typing-extensions,
}:

buildPythonPackage rec {
  pname = "spandrel";
  version = "0.4.2";
  format = "wheel";

  src = fetchPypi {
    inherit pname version format;
    dist = "py3";
    python = "py3";
    hash = "sha256-bJPj7L6w5Uj9LfRaYFRys0wWFCh8VrUbszze965SNbU=";
  };

  dependencies = [
    torch
    torchvision
    safetensors
    numpy
    einops
    typing-extensions
  ];

  pythonImportsCheck = [ "spandrel" ];

  meta = {
    description = "Loads upscaling and restoration model architectures from their weights";
    homepage = "https://github.com/chaiNNer-org/spandrel";
    license = lib.licenses.mit;
  };
}
