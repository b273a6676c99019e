# services.comfy-multi: the whole ComfyUI workshop host as one NixOS module.
#
# Why this file exists: DESIGN.md's appliance. One `nixos-rebuild switch` brings up
#   comfy-multi.service                  the hub (queue, admin, worker gateway)
#   comfy-multi-frontend@<name>.service  one ComfyUI-compatible server per participant
#   comfyui@gpuN.service                 one real ComfyUI per GPU (loopback only)
#   comfy-multi-worker@gpuN.service      the agent feeding that ComfyUI from the queue
#   comfyui-models.service               downloads model files before ComfyUI starts
#   comfy-multi-secrets.service          creates logins/tokens once (root-only files)
#   redis-comfy-multi.service            the queue's state (AOF, fsync always)
#   nginx                                TLS, /userNN/ → frontend, /admin/ + /worker/ → hub
# all grouped under comfy-multi.target.
#
# The TOML config the binary reads is rendered from `settings`, whose defaults are
# built in ONE place (`defaultSettings` below) from the typed options; any key can be
# overridden or added through `settings` itself. The rendered file is checked at
# build time with `comfy-multi check-config` (toggle: `checkConfig`).
#
# Style follows nixpkgs service modules (RFC 42 `settings`, LoadCredential for
# secrets, strict systemd sandboxing).
{
  config,
  lib,
  pkgs,
  ...
}:

let
  inherit (lib)
    mkOption
    mkEnableOption
    mkIf
    mkDefault
    types
    literalExpression
    optional
    optionals
    optionalAttrs
    concatStringsSep
    escapeShellArgs
    listToAttrs
    nameValuePair
    ;

  cfg = config.services.comfy-multi;
  tomlFormat = pkgs.formats.toml { };

  # ---------------------------------------------------------------- names --
  padWidth = n: lib.max 2 (lib.stringLength (toString n));
  participantNames =
    if builtins.isInt cfg.participants then
      map (i: "user${lib.fixedWidthNumber (padWidth cfg.participants) i}") (
        lib.range 1 cfg.participants
      )
    else
      cfg.participants;
  # Everyone who gets a frontend and a login: the participants and the instructor.
  loginNames = participantNames ++ optional (cfg.instructor != null) cfg.instructor;

  gpuId = n: "gpu${toString n}";
  comfyPort = n: cfg.comfyui.basePort + n;
  localWorkerIds = map gpuId cfg.gpus;
  workerIds = localWorkerIds ++ cfg.externalWorkers;

  hubAddr = "127.0.0.1:${toString cfg.hub.port}";
  hubUrl = "http://${hubAddr}";
  redisName = "comfy-multi";
  redisCfg = config.services.redis.servers.${redisName};
  redisSocket = "/run/redis-${redisName}/redis.sock";
  frontendSocketDir = "/run/comfy-multi/frontend";
  comfyuiStateRoot = "/var/lib/comfyui";

  # Where systemd puts each unit's credentials (LoadCredential=).
  hubCreds = "/run/credentials/comfy-multi.service";

  participantsFile =
    if cfg.credentialsFile != null then cfg.credentialsFile else "${cfg.secretsDir}/participants.toml";
  adminPasswordFile =
    if cfg.adminPasswordFile != null then cfg.adminPasswordFile else "${cfg.secretsDir}/admin-password";

  # ------------------------------------------------------------- settings --
  # THE place where options become config keys. Each leaf is mkDefault, so
  # `services.comfy-multi.settings.<section>.<key>` overrides any of them.
  defaultSettings = {
    state_dir = cfg.stateDir;
    public_url = "https://${cfg.domain}";
    redis = {
      url = "redis+unix://${redisSocket}";
      key_prefix = "comfy-multi";
    };
    hub = {
      listen = hubAddr;
      worker_tokens_file = "${hubCreds}/worker-tokens";
      admin_password_file = "${hubCreds}/admin-password";
      session_secret_file = "${hubCreds}/session-secret";
    };
    queue = {
      inherit (cfg.queue) mode;
      max_pending_per_participant = cfg.queue.maxPendingPerParticipant;
    };
    participants = {
      names = participantNames;
      credentials_file = "${hubCreds}/participants.toml";
    }
    // optionalAttrs (cfg.instructor != null) { inherit (cfg) instructor; };
    frontend = {
      static_dir = "${cfg.frontendPackage}/static";
      max_upload_bytes = cfg.maxUploadBytes;
      hub_url = hubUrl;
    }
    // optionalAttrs (cfg.workflowsDir != null) { workflows_dir = "${cfg.workflowsDir}"; };
  }
  // optionalAttrs (cfg.warmup != [ ]) {
    warmup = map (w: { workflow = "${w}"; }) cfg.warmup;
  }
  // optionalAttrs (cfg.pools != [ ]) {
    pools = map (
      p:
      {
        inherit (p) name kind burst state;
        price_per_gpu_hour = p.pricePerGpuHour;
        max_concurrency = p.maxConcurrency;
      }
      // optionalAttrs (p.kind == "comfyui_url") {
        inherit (p) urls capacity;
      }
      // optionalAttrs (p.headersFile != null) {
        headers_file = "${hubCreds}/pool-${p.name}-headers";
      }
      // optionalAttrs (p.kind == "runpod_serverless") {
        endpoint_id = p.endpointId;
        api_key_file = "${hubCreds}/pool-${p.name}-api-key";
        object_info_file = "${p.objectInfoFile}";
        timeout_s = p.timeoutS;
        queue_timeout_s = p.queueTimeoutS;
      }
      // optionalAttrs (p.apiBase != null) {
        api_base = p.apiBase;
      }
    ) cfg.pools;
  }
  // optionalAttrs (cfg.remoteWorkers != [ ]) {
    workers = map (w: {
      inherit (w) id;
      comfyui_url = w.comfyuiUrl;
    }) cfg.remoteWorkers;
  };

  renderedConfig = tomlFormat.generate "comfy-multi.toml" cfg.settings;

  # The file every unit is started with. With checkConfig the binary itself
  # validates it at build time (unknown keys are an error), so a typo fails
  # `nixos-rebuild`, not the workshop.
  configFile =
    if cfg.checkConfig then
      pkgs.runCommand "comfy-multi-checked.toml" { nativeBuildInputs = [ cfg.package ]; } ''
        comfy-multi check-config --config ${renderedConfig}
        cp ${renderedConfig} $out
      ''
    else
      renderedConfig;

  bin = lib.getExe cfg.package;

  # Per-frontend overrides of the few config keys that name hub credentials.
  # Env overrides: COMFY_MULTI_<SECTION>__<KEY>; %d is the unit's credentials dir.
  frontendEnv = {
    COMFY_MULTI_PARTICIPANTS__CREDENTIALS_FILE = "%d/participant.toml";
    COMFY_MULTI_HUB__SESSION_SECRET_FILE = "%d/session-secret";
  };

  # ------------------------------------------------------------- sandbox --
  # Shared by the hub, frontends and workers: no privileges, no devices, read-only
  # system, nothing but sockets. Units add their writable paths.
  hardening = {
    User = "comfy-multi";
    Group = "comfy-multi";
    UMask = "0077";
    NoNewPrivileges = true;
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    DevicePolicy = "closed";
    ProtectClock = true;
    ProtectHostname = true;
    ProtectKernelLogs = true;
    ProtectKernelModules = true;
    ProtectKernelTunables = true;
    ProtectControlGroups = true;
    ProtectProc = "invisible";
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_INET"
      "AF_INET6"
    ];
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    RemoveIPC = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged @resources"
    ];
    SystemCallErrorNumber = "EPERM";
  };

  # -------------------------------------------------------------- scripts --
  secretsScript = pkgs.writeShellApplication {
    name = "comfy-multi-secrets";
    runtimeInputs = with pkgs; [
      coreutils
      gawk
      gnugrep
      gnused
    ];
    text = builtins.readFile ./scripts/comfy-multi-secrets.sh;
  };

  modelsManifest = pkgs.writeText "comfyui-models.json" (builtins.toJSON cfg.comfyui.models);
  fetchModelsScript = pkgs.writeShellApplication {
    name = "comfyui-fetch-models";
    runtimeInputs = with pkgs; [
      coreutils
      curl
      jq
    ];
    text = builtins.readFile ./scripts/comfyui-fetch-models.sh;
  };

  customNodesDir = pkgs.linkFarm "comfyui-custom-nodes" (
    map (n: {
      name = lib.removePrefix "comfyui-" (n.pname or (baseNameOf (toString n)));
      path = n;
    }) cfg.comfyui.customNodes
  );

  # Instructor convenience: `comfy-multi-admin status` as root, no flags to remember.
  adminWrapper = pkgs.writeShellScriptBin "comfy-multi-admin" ''
    exec ${bin} admin --hub ${hubUrl} --token-file ${lib.escapeShellArg adminPasswordFile} "$@"
  '';

  # ------------------------------------------------------------- services --
  frontendUnits = map (u: "comfy-multi-frontend@${u}.service") loginNames;
  gpuUnits = lib.concatMap (n: [
    "comfyui@${gpuId n}.service"
    "comfy-multi-worker@${gpuId n}.service"
  ]) cfg.gpus;

  comfyuiService =
    n:
    let
      id = gpuId n;
      base = "${comfyuiStateRoot}/${id}";
    in
    nameValuePair "comfyui@${id}" {
      description = "ComfyUI on GPU ${toString n} (${id}) for comfy-multi";
      wants = [ "comfyui-models.service" ];
      after = [
        "network.target"
        "comfyui-models.service"
      ];
      partOf = [ "comfy-multi.target" ];
      environment = {
        HOME = base;
        XDG_CACHE_HOME = "${base}/.cache";
        # Fewer "CUDA out of memory" errors from fragmentation on long sessions.
        PYTORCH_CUDA_ALLOC_CONF = "expandable_segments:True";
      }
      // optionalAttrs (!cfg.comfyui.cpu) { CUDA_VISIBLE_DEVICES = toString n; };
      # ComfyUI keeps everything it writes under --base-directory; models and
      # custom nodes are links into the shared models dir and the Nix store.
      preStart = ''
        for d in input output temp user; do mkdir -p ${base}/$d; done
        for link in models:${cfg.comfyui.modelsDir} custom_nodes:${customNodesDir}; do
          name=''${link%%:*}; target=''${link#*:}
          if [ -e ${base}/$name ] && [ ! -L ${base}/$name ]; then
            echo "${base}/$name is a real directory; leaving it (move it away to use $target)"
          else
            ln -sfn "$target" ${base}/$name
          fi
        done
      '';
      serviceConfig = {
        ExecStart = escapeShellArgs (
          [
            (lib.getExe cfg.comfyui.package)
            "--listen"
            "127.0.0.1"
            "--port"
            (toString (comfyPort n))
            "--base-directory"
            base
            "--disable-auto-launch"
            # Inputs a participant could upload must also fit through ComfyUI's own limit.
            "--max-upload-size"
            (toString (cfg.maxUploadBytes / (1024 * 1024) + 1))
          ]
          ++ optional cfg.comfyui.cpu "--cpu"
          ++ cfg.comfyui.extraArgs
        );
        User = "comfyui";
        Group = "comfyui";
        StateDirectory = "comfyui/${id}";
        StateDirectoryMode = "0750";
        WorkingDirectory = base;
        Restart = "always";
        RestartSec = "5s";
        TimeoutStartSec = "10min";
        UMask = "0077";
        # Sandboxing: like the other units, except for what CUDA needs (GPU device
        # nodes; W^X memory stays allowed because Python/torch extensions use it).
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectKernelLogs = true;
        ProtectKernelModules = true;
        ProtectKernelTunables = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
          "AF_NETLINK"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        SystemCallArchitectures = "native";
        DevicePolicy = "closed";
        DeviceAllow = [
          "char-nvidiactl rw"
          "char-nvidia-caps rw"
          "char-nvidia-frontend rw"
          "char-nvidia-uvm rw"
        ];
      };
    };

  workerService =
    n:
    let
      id = gpuId n;
    in
    nameValuePair "comfy-multi-worker@${id}" {
      description = "comfy-multi worker agent for ComfyUI on ${id}";
      wants = [
        "comfyui@${id}.service"
        "comfy-multi-secrets.service"
      ];
      after = [
        "comfyui@${id}.service"
        "comfy-multi.service"
        "comfy-multi-secrets.service"
      ];
      partOf = [ "comfy-multi.target" ];
      environment = cfg.environment;
      serviceConfig = hardening // {
        ExecStart = concatStringsSep " " [
          bin
          "worker"
          "--config"
          "${configFile}"
          "--comfyui"
          "http://127.0.0.1:${toString (comfyPort n)}"
          "--hub"
          hubUrl
          "--token-file"
          "%d/worker-token"
          "--id"
          id
        ];
        LoadCredential = [ "worker-token:${cfg.secretsDir}/workers/${id}" ];
        Restart = "always";
        RestartSec = "2s";
        # Talks to its ComfyUI and the hub, both on loopback.
        IPAddressDeny = "any";
        IPAddressAllow = "localhost";
      };
    };
in
{
  ###### interface

  options.services.comfy-multi = {
    enable = mkEnableOption "the comfy-multi ComfyUI workshop appliance (hub, per-participant frontends, GPU workers, Redis, nginx)";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./pkgs/comfy-multi.nix { };
      defaultText = literalExpression "pkgs.callPackage ./pkgs/comfy-multi.nix { } # built from this repository";
      description = "The comfy-multi package (provides `bin/comfy-multi`).";
    };

    frontendPackage = mkOption {
      type = types.package;
      default = pkgs.callPackage ./pkgs/comfyui-frontend.nix { };
      defaultText = literalExpression "the pinned comfyui-frontend-package wheel's static files";
      description = ''
        The ComfyUI web app served to participants; must contain `static/index.html`.
        The default ComfyUI package also installs its `passthru.wheel` into ComfyUI's
        own Python environment (set `comfyui.package` too when replacing this).
      '';
    };

    domain = mkOption {
      type = types.str;
      example = "workshop.example.org";
      description = "Public host name of the workshop. Participants open `https://<domain>/user07/`.";
    };

    tls = {
      acme = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Get the certificate from Let's Encrypt (needs `domain` to resolve to this
          host and port 80 reachable). Mutually exclusive with `tls.certificate`/`tls.key`.
        '';
      };
      acmeEmail = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "instructor@example.org";
        description = "Contact address for Let's Encrypt (required with `tls.acme`).";
      };
      certificate = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/var/lib/comfy-multi-tls/fullchain.pem";
        description = ''
          Absolute path ON THE HOST of an existing PEM certificate chain. A string, not a
          Nix path, so it is never copied into the world-readable Nix store. Must be
          readable by the nginx group.
        '';
      };
      key = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "/var/lib/comfy-multi-tls/key.pem";
        description = "Absolute path ON THE HOST of the certificate's private key (mode 0640, group nginx).";
      };
    };

    participants = mkOption {
      type = types.either types.ints.positive (
        types.listOf (types.strMatching "[a-z][a-z0-9_-]{0,31}")
      );
      default = 20;
      example = literalExpression ''[ "alice" "bob" ] # or a count: 40 → user01 … user40'';
      description = ''
        Who takes part: either a count N, giving `user01` … `userN` (three digits from
        100 on), or a list of names (lowercase, used in URLs, unit names and TOML keys).
      '';
    };

    participantNames = mkOption {
      type = types.listOf types.str;
      readOnly = true;
      default = participantNames;
      defaultText = literalExpression "names derived from `participants`";
      description = "The resolved participant names (read-only; handy for other modules).";
    };

    instructor = mkOption {
      type = types.nullOr (types.strMatching "[a-z][a-z0-9_-]{0,31}");
      default = "instructor";
      description = ''
        Name of the instructor's login. The instructor gets a frontend like everybody
        (`/instructor/`) and their jobs take the priority lane. `null`: no such login.
      '';
    };

    credentialsFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/comfy-multi-participants.toml";
      description = ''
        Existing participants credentials (TOML: `[user01]` `password = "…"` `token = "…"`)
        on the host, e.g. from sops-nix/agenix. Must have a section for every
        participant and the instructor. `null`: generated once into `secretsDir` and kept.
      '';
    };

    adminPasswordFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "File on the host with the admin password. `null`: generated into `secretsDir/admin-password`.";
    };

    secretsDir = mkOption {
      type = types.str;
      default = "/var/lib/comfy-multi-secrets";
      description = ''
        Root-only directory for generated secrets: `admin-password`, `session-secret`,
        `worker-tokens`, `workers/<id>`, `participants.toml`, `participants/<name>.toml`
        and the printable `join-cards.txt`.
      '';
    };

    queue = {
      mode = mkOption {
        type = types.enum [
          "fifo"
          "round_robin"
          "fair_share"
        ];
        default = "fair_share";
        description = "Scheduling policy at start-up (switchable at runtime: `comfy-multi-admin mode …`).";
      };
      maxPendingPerParticipant = mkOption {
        type = types.ints.positive;
        default = 8;
        description = "How many queued jobs one participant may have waiting.";
      };
    };

    maxUploadBytes = mkOption {
      type = types.ints.positive;
      default = 100 * 1024 * 1024;
      description = "Largest file a participant may upload; nginx's `client_max_body_size` follows it.";
    };

    hub.port = mkOption {
      type = types.port;
      default = 8189;
      description = "Loopback port of the hub (nginx proxies `/admin/` and `/worker/` to it).";
    };

    gpus = mkOption {
      type = types.listOf types.ints.unsigned;
      default = [ ];
      example = [
        0
        1
      ];
      description = ''
        GPU indices of this host. Each gets `comfyui@gpuN.service` (CUDA_VISIBLE_DEVICES=N,
        port `comfyui.basePort + N` on 127.0.0.1) and `comfy-multi-worker@gpuN.service`.
      '';
    };

    comfyui = {
      package = mkOption {
        type = types.package;
        default = pkgs.callPackage ./pkgs/comfyui.nix { comfyui-frontend = cfg.frontendPackage; };
        defaultText = literalExpression "ComfyUI v0.3.65 (nixos/pkgs/comfyui.nix); CUDA when nixpkgs.config.cudaSupport";
        description = "ComfyUI to run on each GPU; `bin/comfyui` must accept ComfyUI's command line.";
      };
      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [
          "--preview-method"
          "auto"
          "--lowvram"
        ];
        description = "Extra command-line arguments for every ComfyUI.";
      };
      cpu = mkOption {
        type = types.bool;
        default = false;
        description = "Run ComfyUI without a GPU (`--cpu`, no CUDA_VISIBLE_DEVICES). For tests and try-outs.";
      };
      basePort = mkOption {
        type = types.port;
        default = 8188;
        description = "ComfyUI on GPU N listens on 127.0.0.1:(basePort + N).";
      };
      modelsDir = mkOption {
        type = types.str;
        default = "${comfyuiStateRoot}/models";
        description = "Models directory shared by all ComfyUIs (`checkpoints/`, `loras/`, `vae/`, …). Not in the Nix store.";
      };
      models = mkOption {
        type = types.listOf (
          types.submodule {
            options = {
              folder = mkOption {
                type = types.strMatching "[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*";
                example = "checkpoints";
                description = "Subdirectory of `modelsDir` (ComfyUI's model folder name).";
              };
              name = mkOption {
                type = types.strMatching "[A-Za-z0-9_.+-]+";
                example = "sd_xl_base_1.0.safetensors";
                description = "File name inside the folder.";
              };
              url = mkOption {
                type = types.str;
                description = "Where to download it from (URLs under `tokenUrlPrefixes` get `huggingfaceTokenFile`).";
              };
              sha256 = mkOption {
                type = types.strMatching "[0-9a-f]{64}";
                description = "Expected SHA-256 (hex) of the file.";
              };
            };
          }
        );
        default = [ ];
        description = ''
          Model files fetched by `comfyui-models.service` into `modelsDir` before ComfyUI
          starts: resumable, hash-checked, skipped when present, progress in the journal.
        '';
      };
      huggingfaceTokenFile = mkOption {
        type = types.nullOr types.str;
        default = null;
        description = ''
          File on the host with a bearer token (a Hugging Face token, for gated model
          downloads). Sent only to URLs starting with one of `tokenUrlPrefixes`, never
          logged.
        '';
      };
      tokenUrlPrefixes = mkOption {
        type = types.listOf types.str;
        default = [ "https://huggingface.co/" ];
        example = [
          "https://huggingface.co/"
          "https://models.example.org/private/"
        ];
        description = "Model URLs starting with one of these get `huggingfaceTokenFile` as `Authorization: Bearer`.";
      };
      customNodes = mkOption {
        type = types.listOf (types.either types.package types.path);
        default = [ ];
        description = "Custom node directories/packages, linked into every ComfyUI's `custom_nodes/`.";
      };
    };

    remoteWorkers = mkOption {
      type = types.listOf (
        types.submodule {
          options = {
            id = mkOption {
              type = types.strMatching "[A-Za-z0-9_.-]+";
              description = "Worker id shown in the admin page.";
            };
            comfyuiUrl = mkOption {
              type = types.str;
              example = "http://10.0.0.12:8188";
              description = "URL of a ComfyUI the hub drives itself (nothing to install there).";
            };
          };
        }
      );
      default = [ ];
      description = "ComfyUIs on other hosts, driven by in-process workers of the hub (`[[workers]]`).";
    };

    pools = mkOption {
      type = types.listOf (
        types.submodule {
          options = {
            name = mkOption {
              type = types.strMatching "[A-Za-z0-9_-]+";
              description = "Pool name (agents join it with `comfy-multi worker --pool NAME`; `local` is the host's GPUs).";
            };
            kind = mkOption {
              type = types.enum [
                "agent"
                "comfyui_url"
                "runpod_serverless"
              ];
              default = "agent";
              description = "`agent`: workers that dial the hub; `comfyui_url`: ComfyUIs at `urls`, driven by the hub; `runpod_serverless`: a RunPod endpoint running worker-comfyui, driven by the hub.";
            };
            endpointId = mkOption {
              type = types.nullOr (types.strMatching "[a-z0-9_-]+");
              default = null;
              example = "abc123xyz";
              description = "`runpod_serverless` pools: the endpoint's id.";
            };
            apiKeyFile = mkOption {
              type = types.nullOr types.str;
              default = null;
              example = "/var/lib/comfy-multi-secrets/runpod-api-key";
              description = "`runpod_serverless` pools: file on the host holding the RunPod API key (LoadCredential; never in the store).";
            };
            objectInfoFile = mkOption {
              type = types.nullOr types.path;
              default = null;
              description = "`runpod_serverless` pools: the endpoint's ComfyUI catalogue (`GET /object_info` of its image, saved as JSON; see DEPLOY.md).";
            };
            apiBase = mkOption {
              type = types.nullOr types.str;
              default = null;
              description = "`runpod_serverless` pools: the API's address (default RunPod's `https://api.runpod.ai/v2`).";
            };
            timeoutS = mkOption {
              type = types.ints.positive;
              default = 600;
              description = "`runpod_serverless` pools: longest a job may run on the endpoint.";
            };
            queueTimeoutS = mkOption {
              type = types.ints.positive;
              default = 300;
              description = "`runpod_serverless` pools: longest a job may wait in RunPod's own queue (cold workers) before it is taken back.";
            };
            urls = mkOption {
              type = types.listOf types.str;
              default = [ ];
              example = [ "https://you--comfyui-serve.modal.run" ];
              description = "`comfyui_url` pools: one worker per URL (ids `<name>-1`, `<name>-2`, …).";
            };
            headersFile = mkOption {
              type = types.nullOr types.str;
              default = null;
              example = "/var/lib/comfy-multi-secrets/modal-headers";
              description = ''
                `comfyui_url` pools: file on the host with request headers for those URLs, one
                `Name: value` per line (a bearer token, Modal's `Modal-Key`/`Modal-Secret`).
                Passed to the hub with LoadCredential; never in the store.
              '';
            };
            capacity = mkOption {
              type = types.ints.positive;
              default = 2;
              description = "`comfyui_url` pools: jobs each URL holds at once.";
            };
            state = mkOption {
              type = types.enum [
                "enabled"
                "parked"
                "draining"
              ];
              default = "enabled";
              description = "State at first start; `comfy-multi-admin pool NAME enable|park|drain` switches it (persisted).";
            };
            burst = mkOption {
              type = types.strMatching "always|line_over:[0-9]+";
              default = "always";
              example = "line_over:20";
              description = "When an enabled pool takes jobs: `always`, or only while more than N jobs wait.";
            };
            maxConcurrency = mkOption {
              type = types.ints.unsigned;
              default = 0;
              description = "Most jobs the pool's workers hold at once, all together (0: no limit beyond each worker's capacity).";
            };
            pricePerGpuHour = mkOption {
              type = types.either types.int types.float;
              default = 0;
              description = "What one GPU-hour costs (any currency), for the cost on the dashboard and in /metrics.";
            };
          };
        }
      );
      default = [ ];
      description = "Worker pools by provider, switched at runtime by the instructor (see DEPLOY.md, \"Rented GPUs\").";
    };

    externalWorkers = mkOption {
      type = types.listOf (types.strMatching "[A-Za-z0-9_.-]+");
      default = [ ];
      example = [ "verda-2" ];
      description = ''
        Ids of `comfy-multi worker` agents running on OTHER hosts and connecting to
        `https://<domain>/worker/`. A token is generated for each in `secretsDir/workers/<id>`.
      '';
    };

    warmup = mkOption {
      type = types.listOf types.path;
      default = [ ];
      example = literalExpression "[ ./warmup/sdxl-txt2img.api.json ]";
      description = ''
        Warm-up workflows in ComfyUI's API format (Workflow → Export (API) in the
        editor). Every worker runs them when it connects — on this host that is
        after `comfyui-models.service` has finished — and on demand
        (`comfy-multi-admin warmup`), before any participant's job on that GPU.
      '';
    };

    workflowsDir = mkOption {
      type = types.nullOr types.path;
      default =
        let
          dir = ../workflows;
        in
        if builtins.pathExists dir then dir else null;
      defaultText = literalExpression "the repository's workflows/ directory, if it exists";
      description = "Workflows pre-loaded into every participant's workflow browser.";
    };

    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/comfy-multi";
      description = "Participants' files: `<stateDir>/users/<name>/{input,output,temp,user}`.";
    };

    environment = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        RUST_LOG = "comfy_multi=debug,info";
      };
      description = "Extra environment for the hub, frontends and workers (e.g. `COMFY_MULTI_<SECTION>__<KEY>` overrides).";
    };

    settings = mkOption {
      type = types.submodule { freeformType = tomlFormat.type; };
      default = { };
      example = literalExpression ''
        {
          queue.lease_ms = 30000;
          queue.default_job_seconds = 12.0;
        }
      '';
      description = ''
        The comfy-multi TOML configuration. Defaults are derived from the options above
        (each overridable here); any other key of the config file can be set too. The
        result is validated at build time with `comfy-multi check-config`.
      '';
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = "Validate the rendered config with `comfy-multi check-config` at build time.";
    };

    configFile = mkOption {
      type = types.path;
      readOnly = true;
      default = configFile;
      defaultText = literalExpression "the rendered (and checked) TOML";
      description = "The config file the units use (read-only; for inspection and tests).";
    };
  };

  ###### implementation

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.tls.acme != (cfg.tls.certificate != null && cfg.tls.key != null);
        message = "services.comfy-multi: set either tls.acme = true or both tls.certificate and tls.key.";
      }
      {
        assertion = cfg.tls.acme -> cfg.tls.acmeEmail != null;
        message = "services.comfy-multi: tls.acme needs tls.acmeEmail.";
      }
      {
        assertion = lib.all (p: p == null || lib.hasPrefix "/" p) [
          cfg.tls.certificate
          cfg.tls.key
          cfg.credentialsFile
          cfg.adminPasswordFile
        ];
        message = "services.comfy-multi: certificate, key and credential files must be absolute paths on the host.";
      }
      {
        assertion = lib.allUnique loginNames;
        message = "services.comfy-multi: participant names (and the instructor) must be unique.";
      }
      {
        assertion = lib.allUnique workerIds && lib.allUnique (map (w: w.id) cfg.remoteWorkers);
        message = "services.comfy-multi: worker ids must be unique.";
      }
      {
        assertion = cfg.gpus != [ ] || cfg.remoteWorkers != [ ] || cfg.externalWorkers != [ ];
        message = "services.comfy-multi: no workers: set gpus, remoteWorkers or externalWorkers.";
      }
      {
        assertion = lib.allUnique (map (p: p.name) cfg.pools);
        message = "services.comfy-multi: pool names must be unique.";
      }
      {
        assertion = lib.all (
          p: (p.kind == "comfyui_url") == (p.urls != [ ]) && (p.headersFile != null -> p.kind == "comfyui_url")
        ) cfg.pools;
        message = "services.comfy-multi: a comfyui_url pool needs urls (and only it takes urls or headersFile).";
      }
      {
        assertion = lib.all (
          p:
          (p.kind == "runpod_serverless")
          == (p.endpointId != null && p.apiKeyFile != null && p.objectInfoFile != null)
          && (p.kind == "runpod_serverless" -> p.maxConcurrency > 0 && lib.hasPrefix "/" p.apiKeyFile)
        ) cfg.pools;
        message = "services.comfy-multi: a runpod_serverless pool needs endpointId, apiKeyFile (an absolute path on the host), objectInfoFile and maxConcurrency > 0 (and only it takes them).";
      }
      {
        assertion = lib.all (p: p.headersFile == null || lib.hasPrefix "/" p.headersFile) cfg.pools;
        message = "services.comfy-multi: a pool's headersFile must be an absolute path on the host.";
      }
    ];

    services.comfy-multi.settings = lib.mapAttrsRecursive (_: mkDefault) defaultSettings;

    environment.systemPackages = [
      cfg.package
      adminWrapper
    ];

    users.users.comfy-multi = {
      isSystemUser = true;
      group = "comfy-multi";
      # Connects to Redis' unix socket (mode 660, group = the redis user's group).
      extraGroups = [ redisCfg.user ];
      home = cfg.stateDir;
    };
    users.groups.comfy-multi = { };
    users.users.comfyui = mkIf (cfg.gpus != [ ]) {
      isSystemUser = true;
      group = "comfyui";
      home = comfyuiStateRoot;
    };
    users.groups.comfyui = mkIf (cfg.gpus != [ ]) { };

    # ---------------------------------------------------------------- redis --
    services.redis.servers.${redisName} = {
      enable = true;
      port = 0; # unix socket only
      unixSocket = redisSocket;
      unixSocketPerm = 660;
      appendOnly = true;
      appendFsync = "always"; # a submit is acknowledged only once it is on disk
      settings = {
        maxmemory-policy = "noeviction"; # never drop queue state under memory pressure
        # A full disk makes Redis (fsync always) exit on a short AOF write; on the
        # next start it loads what is whole instead of refusing (Redis's default,
        # said here so no later default change can leave the workshop down).
        aof-load-truncated = "yes";
      };
    };

    # ---------------------------------------------------------- directories --
    systemd.tmpfiles.rules = [
      "d ${cfg.stateDir} 0750 comfy-multi comfy-multi -"
      "d ${cfg.stateDir}/users 0750 comfy-multi comfy-multi -"
      "d /run/comfy-multi 0755 root root -"
      # setgid + group nginx: the frontends' sockets (UMask 0007) are reachable by nginx only.
      "d ${frontendSocketDir} 2750 comfy-multi ${config.services.nginx.group} -"
    ]
    ++ lib.concatMap (
      u:
      map (sub: "d ${cfg.stateDir}/users/${u}${sub} 0750 comfy-multi comfy-multi -") [
        ""
        "/input"
        "/output"
        "/temp"
        "/user"
      ]
    ) loginNames
    # Existing certificate files: make them readable by nginx (which runs as its
    # own user), nothing more. `z` only adjusts files that exist.
    ++ optionals (
      !cfg.tls.acme
      && cfg.tls.certificate != null
      && cfg.tls.key != null
      && !lib.hasPrefix "${builtins.storeDir}/" cfg.tls.key # (tests: already world-readable)
    ) [
      "z ${cfg.tls.certificate} 0644 root ${config.services.nginx.group} -"
      "z ${cfg.tls.key} 0640 root ${config.services.nginx.group} -"
    ]
    ++ optionals (cfg.gpus != [ ]) [
      "d ${comfyuiStateRoot} 0755 root root -"
      "d ${cfg.comfyui.modelsDir} 0755 comfyui comfyui -"
    ];

    # -------------------------------------------------------------- units --
    systemd.targets.comfy-multi = {
      description = "comfy-multi workshop (hub, frontends, workers)";
      wantedBy = [ "multi-user.target" ];
      wants = [ "comfy-multi.service" ] ++ frontendUnits ++ gpuUnits;
    };

    systemd.services = {
      # nixpkgs' Redis unit does not restart by itself: it must, forever (the
      # hub, frontends and workers reconnect on their own while it is away).
      "redis-${redisName}" = {
        startLimitIntervalSec = 0;
        serviceConfig = {
          Restart = "always";
          RestartSec = "2s";
        };
      };

      comfy-multi-secrets = {
        description = "comfy-multi: create missing secrets and join cards";
        after = [ "local-fs.target" ];
        environment = {
          SECRETS_DIR = cfg.secretsDir;
          PARTICIPANTS = concatStringsSep " " loginNames;
          WORKER_IDS = concatStringsSep " " workerIds;
          PUBLIC_URL = "https://${cfg.domain}";
        }
        // optionalAttrs (cfg.credentialsFile != null) { CREDENTIALS_FILE = cfg.credentialsFile; };
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = lib.getExe secretsScript;
          UMask = "0077";
          ProtectSystem = "strict";
          ReadWritePaths = [ (builtins.dirOf cfg.secretsDir) ];
          ProtectHome = true;
          PrivateTmp = true;
          PrivateNetwork = true;
          NoNewPrivileges = true;
        };
      };

      comfy-multi = {
        description = "comfy-multi hub (queue, admin, worker gateway)";
        # Wants, not Requires, for the secrets: re-running that oneshot (a switch
        # that adds participants) must not restart every service. Missing secrets
        # still stop a unit: its LoadCredential= fails.
        # Wants, not Requires, for Redis too: when Redis restarts (a crash, a full
        # disk) the hub stays up, answers 503 meanwhile and reconnects by itself.
        wants = [
          "comfy-multi-secrets.service"
          "redis-${redisName}.service"
        ];
        after = [
          "network.target"
          "comfy-multi-secrets.service"
          "redis-${redisName}.service"
        ];
        partOf = [ "comfy-multi.target" ];
        environment = cfg.environment;
        serviceConfig = hardening // {
          Type = "notify";
          NotifyAccess = "main";
          ExecStart = "${bin} serve --config ${configFile}";
          WatchdogSec = "30s";
          Restart = "on-failure";
          RestartSec = "2s";
          TimeoutStartSec = "2min";
          LoadCredential = [
            "admin-password:${adminPasswordFile}"
            "session-secret:${cfg.secretsDir}/session-secret"
            "worker-tokens:${cfg.secretsDir}/worker-tokens"
            "participants.toml:${participantsFile}"
          ]
          ++ map (p: "pool-${p.name}-headers:${p.headersFile}") (
            lib.filter (p: p.headersFile != null) cfg.pools
          )
          ++ map (p: "pool-${p.name}-api-key:${p.apiKeyFile}") (
            lib.filter (p: p.apiKeyFile != null) cfg.pools
          );
          ReadWritePaths = [ cfg.stateDir ];
          LimitNOFILE = 65536; # a WebSocket per participant tab and per worker
        };
      };

      # Template: `systemctl restart comfy-multi-frontend@user07`. Instances are
      # pulled in by comfy-multi.target; starting one for a name that is not a
      # participant fails at its credential (no per-user file).
      "comfy-multi-frontend@" = {
        description = "comfy-multi frontend for participant %i";
        wants = [ "comfy-multi-secrets.service" ];
        after = [
          "comfy-multi-secrets.service"
          "comfy-multi.service"
          "redis-${redisName}.service"
        ];
        partOf = [ "comfy-multi.target" ];
        environment = cfg.environment // frontendEnv;
        serviceConfig = hardening // {
          ExecStartPre = "${pkgs.coreutils}/bin/rm -f ${frontendSocketDir}/%i.sock";
          ExecStart = "${bin} frontend --config ${configFile} --user %i --listen unix:${frontendSocketDir}/%i.sock";
          Restart = "always";
          RestartSec = "1s";
          # Socket must be connectable by nginx (group via the setgid directory).
          UMask = "0007";
          LoadCredential = [
            "participant.toml:${cfg.secretsDir}/participants/%i.toml"
            "session-secret:${cfg.secretsDir}/session-secret"
          ];
          # This participant's directory and nothing else of the others'.
          TemporaryFileSystem = "${cfg.stateDir}/users:ro";
          BindPaths = [ "${cfg.stateDir}/users/%i" ];
          ReadWritePaths = [ frontendSocketDir ];
          InaccessiblePaths = [ "-${cfg.secretsDir}" ];
          # Only the hub and Redis (unix socket) are on the other end.
          IPAddressDeny = "any";
          IPAddressAllow = "localhost";
        };
      };

      comfyui-models = mkIf (cfg.gpus != [ ]) {
        description = "Download ComfyUI models for the workshop";
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        environment = {
          MODELS_DIR = cfg.comfyui.modelsDir;
          MANIFEST = "${modelsManifest}";
          TOKEN_URL_PREFIXES = concatStringsSep " " cfg.comfyui.tokenUrlPrefixes;
        };
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = lib.getExe fetchModelsScript;
          User = "comfyui";
          Group = "comfyui";
          UMask = "0022";
          TimeoutStartSec = "infinity";
          ReadWritePaths = [ cfg.comfyui.modelsDir ];
          ProtectSystem = "strict";
          ProtectHome = true;
          PrivateTmp = true;
          PrivateDevices = true;
          NoNewPrivileges = true;
          LoadCredential = optional (
            cfg.comfyui.huggingfaceTokenFile != null
          ) "hf-token:${cfg.comfyui.huggingfaceTokenFile}";
        };
      };
    }
    // listToAttrs (map comfyuiService cfg.gpus)
    // listToAttrs (map workerService cfg.gpus);

    # -------------------------------------------------------------- nginx --
    services.nginx = {
      enable = true;
      recommendedTlsSettings = true;
      recommendedOptimisation = true;
      recommendedGzipSettings = true;
      recommendedProxySettings = true;

      virtualHosts.${cfg.domain} = {
        default = true;
        forceSSL = true; # port 80 only redirects to https (and serves ACME challenges)
        enableACME = cfg.tls.acme;
        sslCertificate = mkIf (!cfg.tls.acme) cfg.tls.certificate;
        sslCertificateKey = mkIf (!cfg.tls.acme) cfg.tls.key;

        # proxy_pass never has a URI part here: nginx then forwards the request URI
        # exactly as the browser sent it, so `/user07/api/userdata/workflows%2Fx.json`
        # reaches the frontend with its %2F intact.
        locations = {
          # The front door: name + password → that participant's editor.
          "= /".proxyPass = hubUrl;
          "= /admin".return = "301 /admin/";
          "/admin/" = {
            proxyPass = hubUrl;
            proxyWebsockets = true;
            extraConfig = ''
              proxy_read_timeout 1h;
            '';
          };
          "/worker/" = {
            proxyPass = hubUrl;
            proxyWebsockets = true;
            extraConfig = ''
              # Remote workers stream outputs (videos too) through here.
              client_max_body_size 0;
              proxy_request_buffering off;
              proxy_read_timeout 1h;
              proxy_send_timeout 1h;
            '';
          };
          "= /metrics" = {
            proxyPass = hubUrl;
            extraConfig = ''
              allow 127.0.0.1;
              allow ::1;
              deny all;
            '';
          };
        }
        // listToAttrs (
          lib.concatMap (u: [
            (nameValuePair "= /${u}" { return = "301 /${u}/$is_args$args"; })
            (nameValuePair "/${u}/" {
              proxyPass = "http://unix:${frontendSocketDir}/${u}.sock";
              proxyWebsockets = true;
              extraConfig = ''
                # Upload limit + room for the multipart framing; the frontend itself
                # answers oversized files with ComfyUI's own error.
                client_max_body_size ${toString (cfg.maxUploadBytes + 1024 * 1024)};
                proxy_request_buffering off;
                # The editor's WebSocket can be quiet for a long time between jobs.
                proxy_read_timeout 1h;
                proxy_send_timeout 1h;
              '';
            })
          ]) loginNames
        );
      };
    };

    security.acme = mkIf cfg.tls.acme {
      acceptTerms = true;
      defaults.email = cfg.tls.acmeEmail;
    };

    networking.firewall.allowedTCPPorts = [
      80
      443
    ];
  };
}
