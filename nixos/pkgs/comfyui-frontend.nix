# The official ComfyUI web app, pinned.
#
# Why this file exists: every participant's `comfy-multi frontend` serves the real,
# unmodified ComfyUI editor (DESIGN.md, "The participant frontend"). Upstream ships
# that editor only as the `comfyui-frontend-package` wheel on PyPI, whose
# `comfyui_frontend_package/static/` directory is the built web app. We fetch the
# wheel by URL + hash (no Python needed at runtime) and keep just `static/`.
#
# The wheel itself is kept in `passthru.wheel`, so nixos/pkgs/comfyui.nix can
# install the *same* pinned frontend as a Python package into ComfyUI's own
# environment (ComfyUI imports `comfyui_frontend_package` at start-up).
#
# Bumping: `pip download --no-deps comfyui-frontend-package==X.Y.Z`, take the
# URL pip printed (`pip download -v`) and `nix hash file --sri <wheel>`.
{
  lib,
  stdenvNoCC,
  fetchurl,
  unzip,
}:

let
  version = "1.58.1";

  wheel = fetchurl {
    name = "comfyui_frontend_package-${version}-py3-none-any.whl";
    url = "https://files.pythonhosted.org/packages/1d/7b/dc5fda81cef8d299ab3ff4d3dc34e0c08bf72af546d5815ee7b9f08174f9/comfyui_frontend_package-${version}-py3-none-any.whl";
    # sha256 37912597537a731a8f421179618a736c24184c5bdbfa327f38b2fb7c291852d9 (as listed by PyPI)
    hash = "sha256-N5Ell1N6cxqPQhF5YYpzbCQYTFvb+jJ/OLL7fCkYUtk=";
  };
in
stdenvNoCC.mkDerivation {
  pname = "comfyui-frontend";
  inherit version;

  src = wheel;
  dontUnpack = true;
  nativeBuildInputs = [ unzip ];

  installPhase = ''
    runHook preInstall
    unzip -q "$src" 'comfyui_frontend_package/static/*' -d unpacked
    mkdir -p "$out"
    mv unpacked/comfyui_frontend_package/static "$out/static"
    # The frontend serves index.html as the editor's entry point; fail the build
    # early if upstream ever moves it.
    test -f "$out/static/index.html"
    runHook postInstall
  '';

  passthru = { inherit wheel; };

  meta = {
    description = "Official ComfyUI web frontend (static files of the comfyui-frontend-package wheel)";
    homepage = "https://github.com/Comfy-Org/ComfyUI_frontend";
    license = lib.licenses.gpl3Only;
    platforms = lib.platforms.all;
  };
}
