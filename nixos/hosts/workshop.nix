# Example workshop host: a Verda (ex DataCrunch) H100 GPU server.
#
# Why this file exists: `nixosConfigurations.workshop` in flake.nix. It is the host
# docs/DEPLOY.md walks through, and what CI evaluates to prove the module works on a
# realistic machine. Copy it, change the marked lines, deploy with
#   nixos-rebuild switch --flake .#workshop
#
# Hardware specifics (disks, boot loader, kernel modules) live in
# workshop-hardware.nix; replace that file with the output of
# `nixos-generate-config --show-hardware-config` on the real machine.
{
  config,
  pkgs,
  ...
}:

{
  imports = [ ./workshop-hardware.nix ];

  networking.hostName = "workshop";
  time.timeZone = "UTC";
  system.stateVersion = "25.11";

  # ------------------------------------------------------------ NVIDIA + CUDA --
  # CUDA and the driver are unfree; torch & co. are built with CUDA.
  nixpkgs.config = {
    allowUnfree = true;
    cudaSupport = true;
    # Leave cudaCapabilities at nixpkgs' default (it includes the H100's 9.0):
    # changing it changes every CUDA derivation and misses the binary cache below.
  };
  # Headless: this selects the NVIDIA kernel driver; no X server is started.
  services.xserver.videoDrivers = [ "nvidia" ];
  hardware.graphics.enable = true; # libcuda.so etc. under /run/opengl-driver
  hardware.nvidia = {
    open = true; # H100 (Hopper) is supported by, and recommended with, the open modules
    package = config.boot.kernelPackages.nvidiaPackages.stable;
    nvidiaSettings = false;
    nvidiaPersistenced = true; # keep GPUs initialised between jobs (no cold-start delay)
    # For 8x H100 SXM machines (NVSwitch), use the data-center driver and
    # fabricmanager instead of videoDrivers above:
    #   datacenter.enable = true;
  };
  # nvidia-smi comes with the driver (the nvidia module puts it on PATH).
  environment.systemPackages = [ pkgs.nvtopPackages.nvidia ];

  # ------------------------------------------------------------------ access --
  services.openssh = {
    enable = true;
    settings = {
      PasswordAuthentication = false;
      KbdInteractiveAuthentication = false;
      PermitRootLogin = "prohibit-password";
    };
  };
  users.users.root.openssh.authorizedKeys.keys = [
    # CHANGE: the instructor's / operator's SSH public key(s).
    "ssh-ed25519 AAAA-REPLACE-WITH-YOUR-PUBLIC-KEY instructor@example"
  ];

  nix.settings = {
    experimental-features = [
      "nix-command"
      "flakes"
    ];
    max-jobs = "auto";
    # Prebuilt CUDA packages (torch with CUDA & co.) from the NixOS CUDA team's
    # cache; without it the first deploy compiles PyTorch for hours.
    extra-substituters = [ "https://cache.nixos-cuda.org" ];
    extra-trusted-public-keys = [ "cache.nixos-cuda.org:74DUi4Ye579gUqzH4ziL9IyiJBlDpMRn9MBN8oNan9M=" ];
  };

  # ---------------------------------------------------------------- workshop --
  services.comfy-multi = {
    enable = true;
    domain = "workshop.example.org"; # CHANGE
    tls = {
      # CHANGE: certificate files put on the host beforehand (see docs/DEPLOY.md),
      # or replace both lines with `acme = true; acmeEmail = "you@example.org";`.
      certificate = "/var/lib/comfy-multi-tls/fullchain.pem";
      key = "/var/lib/comfy-multi-tls/key.pem";
    };

    participants = 40; # user01 … user40
    instructor = "instructor";
    queue = {
      mode = "fair_share";
      maxPendingPerParticipant = 6;
    };

    gpus = [ 0 ]; # one H100; on a 2x/4x/8x machine: [ 0 1 ] …
    comfyui = {
      extraArgs = [
        "--preview-method"
        "auto"
      ];
      models = [
        # The workshop's checkpoint; fetched into /var/lib/comfyui/models before
        # ComfyUI starts (resumable, hash-checked). Add LoRAs, VAEs, … the same way.
        {
          folder = "checkpoints";
          name = "sd_xl_base_1.0.safetensors";
          url = "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors";
          sha256 = "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b";
        }
      ];
    };

    # Loads the checkpoint on every GPU before the first participant's job
    # (Workflow → Export (API) in the editor makes such a file).
    warmup = [ ./warmup/sdxl-txt2img.api.json ];

    settings = {
      # Anything of the TOML config can be set here; e.g. a longer job estimate for
      # SDXL at 1024², used for ETAs until real timings are measured.
      queue.default_job_seconds = 8.0;
    };
  };
}
