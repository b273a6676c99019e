# comfy-multi as a Nix flake: the binary, the pinned ComfyUI frontend, the NixOS
# module, an example workshop host, a VM test and a dev shell.
#
# Why this file exists: the appliance is ONE NixOS host declared here
# (DESIGN.md, "NixOS appliance"). Deploy: `nixos-rebuild switch --flake .#workshop`
# (see docs/DEPLOY.md). Check: `scripts/check-nix.sh` (parse, evaluate, render and
# verify units/nginx); `nix build .#checks.x86_64-linux.vm-test` boots it.
#
# Inputs: only nixpkgs (nixos-25.11, pinned in flake.lock). The Rust build uses
# nixpkgs' buildRustPackage with Cargo.lock directly, so no crane/naersk input.
{
  description = "comfy-multi: a ComfyUI workshop appliance (many participants, shared GPUs, one fair queue)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      system = "x86_64-linux";
      inherit (nixpkgs) lib;
      pkgs = nixpkgs.legacyPackages.${system};

      # The module's package defaults call the same nixos/pkgs/*.nix files as
      # `packages.*` below, but with the HOST's nixpkgs (so its `cudaSupport`,
      # overlays etc. apply): importing `nixosModules.default` needs nothing else.
      module = ./nixos/module.nix;
    in
    {
      packages.${system} = {
        default = self.packages.${system}.comfy-multi;
        comfy-multi = pkgs.callPackage ./nixos/pkgs/comfy-multi.nix { };
        comfyui-frontend = pkgs.callPackage ./nixos/pkgs/comfyui-frontend.nix { };
        # CPU build here (this package set has no cudaSupport); the workshop host
        # builds the CUDA one from its own nixpkgs config.
        comfyui = pkgs.callPackage ./nixos/pkgs/comfyui.nix {
          comfyui-frontend = self.packages.${system}.comfyui-frontend;
        };
      };

      overlays.default = final: prev: {
        comfy-multi = final.callPackage ./nixos/pkgs/comfy-multi.nix { };
        comfyui-frontend = final.callPackage ./nixos/pkgs/comfyui-frontend.nix { };
      };

      nixosModules.default = module;
      nixosModules.comfy-multi = module;

      nixosConfigurations.workshop = lib.nixosSystem {
        modules = [
          self.nixosModules.default
          ./nixos/hosts/workshop.nix
        ];
      };

      checks.${system} = {
        vm-test = import ./nixos/tests/vm-test.nix {
          inherit pkgs;
          module = self.nixosModules.default;
        };
        package = self.packages.${system}.comfy-multi;
      };

      devShells.${system}.default = pkgs.mkShell {
        name = "comfy-multi-dev";
        inputsFrom = [ self.packages.${system}.comfy-multi ];
        packages = with pkgs; [
          cargo
          rustc
          clippy
          rustfmt
          rust-analyzer
          redis # the tests spawn a real redis-server
          python3 # CPU ComfyUI for integration tests comes from PyPI
          curl
          jq
          nixfmt # RFC 166 style
          shellcheck
          nginx # `nginx -t` in scripts/check-nix.sh
        ];
        RUST_BACKTRACE = "1";
      };

      formatter.${system} = pkgs.nixfmt;
    };
}
