# ComfyUI, the real one, for the GPU workers (`comfyui@gpuN.service`).
#
# Why this file exists: the pinned nixpkgs (nixos-25.11) has no ComfyUI package
# (nixpkgs gained `comfyui` only in 2026), so the appliance packages a released
# ComfyUI itself. This is the default of `services.comfy-multi.comfyui.package`;
# point that option at any other ComfyUI build (a newer release, nixified-ai's,
# nixpkgs' own on a newer channel) as long as `bin/comfyui` accepts ComfyUI's CLI.
#
# GPU or CPU is decided by the nixpkgs the package is built with: with
# `nixpkgs.config.cudaSupport = true` (the example host) `python3Packages.torch` is
# the CUDA build; without it (the VM test) it is the CPU build and the service adds
# `--cpu`.
#
# The web editor ComfyUI would serve is the same pinned `comfyui-frontend-package`
# wheel the participants get (nixos/pkgs/comfyui-frontend.nix). ComfyUI listens on
# loopback only; nobody browses to it, but it imports the package at start-up.
# `comfyui-workflow-templates` and `comfyui-embedded-docs` are left out: ComfyUI
# logs that they are missing and runs without them.
{
  lib,
  stdenvNoCC,
  fetchFromGitHub,
  python3,
  makeBinaryWrapper,
  comfyui-frontend,
}:

let
  version = "0.3.65";

  python = python3;

  # The same wheel as the participants' static bundle, installed as a Python package.
  frontendPython = python.pkgs.buildPythonPackage {
    pname = "comfyui_frontend_package";
    inherit (comfyui-frontend) version;
    format = "wheel";
    src = comfyui-frontend.wheel;
    pythonImportsCheck = [ "comfyui_frontend_package" ];
  };

  # ComfyUI's requirements.txt (v0.3.65), minus the three comfyui-* helper packages
  # discussed above (frontend provided, templates/docs optional).
  # Present in nixpkgs' python3Packages on some releases only (not in nixos-25.11):
  # nixpkgs' attribute where it exists, else our pinned package.
  spandrelFor = ps: ps.spandrel or (ps.callPackage ./spandrel.nix { });

  pythonEnv = python.withPackages (
    ps: with ps; [
      torch
      torchsde
      torchvision
      torchaudio
      numpy
      einops
      transformers
      tokenizers
      sentencepiece
      safetensors
      aiohttp
      yarl
      pyyaml
      pillow
      scipy
      tqdm
      psutil
      alembic
      sqlalchemy
      av
      requests
      # "non essential" in requirements.txt, used by common nodes
      kornia
      (spandrelFor ps)
      soundfile
      pydantic
      pydantic-settings
      frontendPython
    ]
  );
in
stdenvNoCC.mkDerivation {
  pname = "comfyui";
  inherit version;

  # Tag v0.3.65. Hash as published in nixified-ai/flake's npins pin of this tag
  # (base32 1ksaj3mfy9zb399rjn3lp1cqikrdawnjgs67sckhkpq175hkm4zp).
  src = fetchFromGitHub {
    owner = "comfyanonymous";
    repo = "ComfyUI";
    rev = "51696e3fdcdfad657cb15854345fbcbbe70eef8d";
    hash = "sha256-95M6YTkB3wkn08foJy1XLc+IWbh0WJlTGusn7+qQSs8=";
  };

  nativeBuildInputs = [ makeBinaryWrapper ];

  dontBuild = true;

  # ComfyUI runs from its source tree. Everything it writes (models, custom_nodes,
  # input, output, temp, user, its database) goes under `--base-directory`, which
  # the service always passes, so the read-only store copy is never written to.
  installPhase = ''
    runHook preInstall
    mkdir -p $out/share/comfyui $out/bin
    cp -r . $out/share/comfyui
    makeBinaryWrapper ${pythonEnv}/bin/python3 $out/bin/comfyui \
      --add-flags "$out/share/comfyui/main.py" \
      --set PYTHONDONTWRITEBYTECODE 1 \
      --unset PYTHONPATH
    runHook postInstall
  '';

  passthru = {
    inherit python pythonEnv;
    # Fixed-output sources from PyPI that scripts/check-nix.sh downloads and
    # re-hashes on every CI run (ComfyUI's GitHub tarball cannot be fetched there).
    pypiSources = [
      comfyui-frontend.wheel
    ]
    ++ lib.optional (!(python.pkgs ? spandrel)) (spandrelFor python.pkgs).src;
  };

  meta = {
    description = "Modular diffusion model GUI, API and backend with a graph/nodes interface";
    homepage = "https://github.com/comfyanonymous/ComfyUI";
    license = lib.licenses.gpl3Only;
    mainProgram = "comfyui";
    platforms = lib.platforms.linux;
  };
}
