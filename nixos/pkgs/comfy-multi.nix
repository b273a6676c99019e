# The `comfy-multi` binary, built from this repository.
#
# Why this file exists: the flake's `packages.default` and the NixOS module's
# `services.comfy-multi.package` default both come from here, so the appliance and
# `nix build` always run the same build of the same source.
#
# Only the files cargo needs go into the source (lib.fileset), so editing docs,
# nixos/ or workflows/ does not rebuild the binary. Crates come from Cargo.lock
# (`cargoLock.lockFile`), no vendor hash to keep in sync. If Cargo.lock ever gains a
# git dependency, add its hash under `cargoLock.outputHashes`.
{
  lib,
  rustPlatform,
  pkg-config,
  openssl,
}:

let
  root = ../..;
  fs = lib.fileset;
  cargoToml = lib.importTOML (root + "/Cargo.toml");
in
rustPlatform.buildRustPackage {
  pname = "comfy-multi";
  version = cargoToml.package.version or "0.0.0";

  src = fs.toSource {
    inherit root;
    fileset = fs.unions (
      [
        (root + "/Cargo.toml")
        (root + "/Cargo.lock")
        (root + "/src")
      ]
      # Present or not depending on how far the code has grown; cargo may need them
      # (build script, embedded assets, declared test/bench targets).
      ++ map fs.maybeMissing [
        (root + "/build.rs")
        (root + "/bench") # [[bin]] queue-bench lives here
        (root + "/assets")
        (root + "/static")
        (root + "/tests")
        (root + "/benches")
        (root + "/examples")
      ]
    );
  };

  cargoLock.lockFile = root + "/Cargo.lock";

  # Harmless if no crate links OpenSSL; needed if one does (e.g. a native-tls
  # reqwest/redis feature).
  nativeBuildInputs = [ pkg-config ];
  buildInputs = [ openssl ];

  # The test suite needs a spawned Redis, a CPU ComfyUI from PyPI and headless
  # Chromium (DESIGN.md, "Tests that prove it"); it runs in the project's CI, not in
  # the Nix sandbox. The NixOS VM test (checks.vm-test) exercises this build.
  doCheck = false;

  meta = {
    description = "ComfyUI workshop appliance: many participants, shared GPUs, one fair queue";
    mainProgram = "comfy-multi";
    # No license here on purpose: Cargo.toml is the place to declare it.
    platforms = lib.platforms.linux;
  };
}
