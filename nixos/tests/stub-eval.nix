# Evaluate nixos/module.nix WITHOUT nixpkgs: only nixpkgs' `lib` plus stand-ins.
#
# Why this file exists: a full NixOS evaluation needs a nixpkgs checkout (and a Nix
# new enough for it), which CI and developer machines often do not have. This file
# runs the module through the real NixOS module system (`lib.evalModules`, real
# option types) against small stand-ins for the NixOS options it sets (systemd,
# nginx, redis, users, …) and for `pkgs` (fake derivations). It catches Nix errors,
# type errors and assertion failures in the module, and it RENDERS what the module
# asks for — unit files in NixOS' layout and an nginx.conf shaped like the one the
# NixOS nginx module writes — so scripts/check-nix.sh can run
# `systemd-analyze verify` and `nginx -t` on them.
#
# It is an approximation of NixOS' rendering (the real one is checked by
# scripts/check-nix.sh when a nixpkgs copy is available). Used as:
#   nix-instantiate --eval --strict --json nixos/tests/stub-eval.nix \
#     --arg lib 'import <nixpkgs-lib>/lib' [--argstr case vm|workshop]
{
  lib,
  # "workshop": the example host's services.comfy-multi settings;
  # "vm": the VM test's (CPU ComfyUI, 2 participants);
  # "bad-tls", "bad-names", "bad-workers": misconfigurations the module must
  # refuse with an assertion (check-nix.sh expects these to fail).
  case ? "workshop",
}:

let
  inherit (lib) mkOption types;

  # ----------------------------------------------------------- fake pkgs --
  fakeHash = name: builtins.substring 0 32 (builtins.hashString "sha256" name);
  fakeDrv =
    name: extra:
    {
      type = "derivation";
      inherit name;
      pname = name;
      outPath = "/nix/store/${fakeHash name}-${name}";
      drvPath = "/nix/store/${fakeHash "drv-${name}"}-${name}.drv";
      meta.mainProgram = name;
    }
    // extra;

  pkgs = {
    callPackage =
      fn: args:
      let
        file = toString fn;
        base = lib.removeSuffix ".nix" (baseNameOf file);
      in
      fakeDrv base (
        {
          meta.mainProgram = if base == "comfy-multi" then "comfy-multi" else base;
        }
        // lib.optionalAttrs (base == "comfyui-frontend") { wheel = fakeDrv "frontend-wheel" { }; }
      );
    formats.toml =
      { }:
      {
        type = types.attrsOf types.anything;
        generate = name: value: fakeDrv name { passthru.value = value; };
      };
    writeShellApplication =
      { name, text, ... }:
      fakeDrv name {
        inherit text;
        meta.mainProgram = name;
      };
    writeShellScriptBin = name: text: fakeDrv name { meta.mainProgram = name; };
    writeText = name: text: fakeDrv name { inherit text; };
    linkFarm = name: entries: fakeDrv name { };
    runCommand = name: env: script: fakeDrv name { };
    coreutils = fakeDrv "coreutils" { };
    gawk = fakeDrv "gawk" { };
    gnugrep = fakeDrv "gnugrep" { };
    gnused = fakeDrv "gnused" { };
    curl = fakeDrv "curl" { };
    jq = fakeDrv "jq" { };
    findutils = fakeDrv "findutils" { };
    systemd = fakeDrv "systemd" { };
  };

  # --------------------------------------- stand-ins for NixOS' options --
  listOfStr = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };
  anyAttrs = mkOption {
    type = types.attrsOf types.anything;
    default = { };
  };
  unitValue = types.oneOf [
    types.bool
    types.int
    types.str
    types.path
    (types.listOf (
      types.oneOf [
        types.str
        types.int
        types.path
      ]
    ))
  ];

  serviceType = types.submodule {
    options = {
      description = mkOption {
        type = types.str;
        default = "";
      };
      wants = listOfStr;
      requires = listOfStr;
      after = listOfStr;
      before = listOfStr;
      partOf = listOfStr;
      bindsTo = listOfStr;
      wantedBy = listOfStr;
      requiredBy = listOfStr;
      path = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      environment = mkOption {
        type = types.attrsOf (
          types.nullOr (
            types.oneOf [
              types.str
              types.path
              types.package
            ]
          )
        );
        default = { };
      };
      preStart = mkOption {
        type = types.lines;
        default = "";
      };
      script = mkOption {
        type = types.lines;
        default = "";
      };
      unitConfig = mkOption {
        type = types.attrsOf unitValue;
        default = { };
      };
      serviceConfig = mkOption {
        type = types.attrsOf unitValue;
        default = { };
      };
    };
  };

  targetType = types.submodule {
    options = {
      description = mkOption {
        type = types.str;
        default = "";
      };
      wants = listOfStr;
      wantedBy = listOfStr;
      after = listOfStr;
    };
  };

  locationType = types.submodule {
    options = {
      proxyPass = mkOption {
        type = types.nullOr types.str;
        default = null;
      };
      proxyWebsockets = mkOption {
        type = types.bool;
        default = false;
      };
      return = mkOption {
        type = types.nullOr (types.either types.str types.int);
        default = null;
      };
      extraConfig = mkOption {
        type = types.lines;
        default = "";
      };
      recommendedProxySettings = mkOption {
        type = types.bool;
        default = true;
      };
    };
  };

  vhostType = types.submodule {
    options = {
      default = mkOption {
        type = types.bool;
        default = false;
      };
      forceSSL = mkOption {
        type = types.bool;
        default = false;
      };
      enableACME = mkOption {
        type = types.bool;
        default = false;
      };
      http2 = mkOption {
        type = types.bool;
        default = true;
      };
      sslCertificate = mkOption { type = types.path; };
      sslCertificateKey = mkOption { type = types.path; };
      locations = mkOption {
        type = types.attrsOf locationType;
        default = { };
      };
    };
  };

  redisServerType = types.submodule (
    { name, ... }:
    {
      options = {
        enable = mkOption {
          type = types.bool;
          default = false;
        };
        user = mkOption {
          type = types.str;
          default = "redis-${name}";
        };
        port = mkOption {
          type = types.port;
          default = 0;
        };
        unixSocket = mkOption {
          type = types.nullOr types.path;
          default = null;
        };
        unixSocketPerm = mkOption {
          type = types.int;
          default = 660;
        };
        appendOnly = mkOption {
          type = types.bool;
          default = false;
        };
        appendFsync = mkOption {
          type = types.str;
          default = "everysec";
        };
        settings = mkOption {
          type = types.attrsOf (
            types.oneOf [
              types.bool
              types.int
              types.str
              (types.listOf types.str)
            ]
          );
          default = { };
        };
      };
    }
  );

  nixosStubs = {
    options = {
      assertions = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      warnings = listOfStr;
      environment.systemPackages = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      users.users = anyAttrs;
      users.groups = anyAttrs;
      services.redis.servers = mkOption {
        type = types.attrsOf redisServerType;
        default = { };
      };
      services.nginx = {
        enable = mkOption {
          type = types.bool;
          default = false;
        };
        group = mkOption {
          type = types.str;
          default = "nginx";
        };
        recommendedTlsSettings = mkOption {
          type = types.bool;
          default = false;
        };
        recommendedOptimisation = mkOption {
          type = types.bool;
          default = false;
        };
        recommendedGzipSettings = mkOption {
          type = types.bool;
          default = false;
        };
        recommendedProxySettings = mkOption {
          type = types.bool;
          default = false;
        };
        virtualHosts = mkOption {
          type = types.attrsOf vhostType;
          default = { };
        };
      };
      security.acme = anyAttrs;
      networking.firewall.allowedTCPPorts = mkOption {
        type = types.listOf types.port;
        default = [ ];
      };
      systemd.tmpfiles.rules = listOfStr;
      systemd.services = mkOption {
        type = types.attrsOf serviceType;
        default = { };
      };
      systemd.targets = mkOption {
        type = types.attrsOf targetType;
        default = { };
      };
    };
  };

  # ------------------------------------------------------------ the cases --
  # The example host's services.comfy-multi, read from the real host file.
  workshopHost =
    (import ../hosts/workshop.nix {
      inherit lib pkgs;
      config.boot.kernelPackages.nvidiaPackages.stable = fakeDrv "nvidia" { };
    }).services.comfy-multi;

  # The VM test's node, read from the real test file (its testScript is returned
  # too, so check-nix.sh can syntax-check the Python).
  vmTest = import ./vm-test.nix {
    pkgs = pkgs // {
      testers.runNixOSTest = args: args;
      openssl = fakeDrv "openssl" { };
    };
    module = ../module.nix;
  };
  vmHost = (vmTest.nodes.machine { }).services.comfy-multi;

  # flake.nix's outputs, called with a stand-in nixpkgs input: catches mistakes in
  # the flake's own wiring (names, paths, arguments).
  flakeOutputs =
    let
      flake = import ../../flake.nix;
      stubPkgs = pkgs // {
        testers.runNixOSTest = args: fakeDrv "vm-test" { };
        mkShell = args: fakeDrv "shell" { };
        nixfmt = fakeDrv "nixfmt" { };
      };
      self = flake.outputs {
        inherit self;
        nixpkgs = {
          lib = lib // {
            nixosSystem = args: { inherit (args) modules; };
          };
          legacyPackages.x86_64-linux = stubPkgs;
        };
      };
    in
    {
      description = flake.description;
      inputs = builtins.attrNames flake.inputs;
      outputs = builtins.attrNames self;
      packages = builtins.attrNames self.packages.x86_64-linux;
      checks = builtins.attrNames self.checks.x86_64-linux;
      devShells = builtins.attrNames self.devShells.x86_64-linux;
      nixosConfigurations = builtins.attrNames self.nixosConfigurations;
      workshopModules = map toString self.nixosConfigurations.workshop.modules;
      nixosModule = toString self.nixosModules.default;
    };

  hosts = {
    workshop = workshopHost;
    vm = vmHost;
    bad-tls = vmHost // {
      tls = { };
    };
    bad-names = vmHost // {
      participants = [
        "amy"
        "instructor"
      ];
    };
    bad-workers = vmHost // {
      gpus = [ ];
    };
  };

  eval = lib.evalModules {
    modules = [
      nixosStubs
      ../module.nix
      {
        _module.args.pkgs = pkgs;
        services.comfy-multi = hosts.${case};
      }
    ];
  };
  cfg = eval.config;

  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) cfg.assertions);

  # ------------------------------------------------------------ rendering --
  # Mirrors nixos/lib/systemd-lib.nix: [Unit] from the dependency lists and
  # unitConfig, [Service] with Environment= lines (PATH from `path`) and
  # serviceConfig; no [Install] (NixOS links units into *.wants/ instead).
  render =
    v:
    if builtins.isBool v then
      lib.boolToString v
    else if builtins.isList v then
      throw "lists are rendered line by line"
    else
      toString v;
  section =
    attrs:
    lib.concatStrings (
      lib.mapAttrsToList (
        k: v:
        if builtins.isList v then lib.concatMapStrings (x: "${k}=${render x}\n") v else "${k}=${render v}\n"
      ) attrs
    );
  depLines =
    u:
    lib.concatStrings (
      lib.mapAttrsToList (k: v: lib.optionalString (v != [ ]) "${k}=${lib.concatStringsSep " " v}\n") {
        Wants = u.wants or [ ];
        Requires = u.requires or [ ];
        After = u.after or [ ];
        Before = u.before or [ ];
        PartOf = u.partOf or [ ];
        BindsTo = u.bindsTo or [ ];
      }
    );
  serviceText =
    name: s:
    let
      pathDirs = s.path ++ [
        pkgs.coreutils
        pkgs.findutils
        pkgs.gnugrep
        pkgs.gnused
        pkgs.systemd
      ];
      env = s.environment // {
        PATH = lib.concatMapStringsSep ":" (p: "${p}/bin:${p}/sbin") pathDirs;
      };
      preStart = lib.optionalAttrs (s.preStart != "") {
        ExecStartPre = "/nix/store/${fakeHash "${name}-pre-start"}-unit-script-${
          lib.replaceStrings [ "@" ] [ "_" ] name
        }-pre-start/bin/${lib.replaceStrings [ "@" ] [ "_" ] name}-pre-start";
      };
    in
    "[Unit]\n"
    + lib.optionalString (s.description != "") "Description=${s.description}\n"
    + depLines s
    + section s.unitConfig
    + "\n[Service]\n"
    + lib.concatStrings (
      lib.mapAttrsToList (k: v: "Environment=${builtins.toJSON "${k}=${toString v}"}\n") (
        lib.filterAttrs (_: v: v != null) env
      )
    )
    + section (preStart // s.serviceConfig);
  targetText =
    t:
    "[Unit]\n" + lib.optionalString (t.description != "") "Description=${t.description}\n" + depLines t;

  units =
    lib.mapAttrs' (n: s: lib.nameValuePair "${n}.service" (serviceText n s)) cfg.systemd.services
    // lib.mapAttrs' (n: t: lib.nameValuePair "${n}.target" (targetText t)) cfg.systemd.targets;

  # Shaped like the NixOS nginx module's output for these vhost options.
  nginx = cfg.services.nginx;
  locationText =
    path: l:
    ''
      location ${path} {
    ''
    + lib.optionalString (l.proxyPass != null) ''
      proxy_pass ${l.proxyPass};
    ''
    + lib.optionalString (l.proxyWebsockets) ''
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
    ''
    + lib.optionalString (l.proxyPass != null && l.recommendedProxySettings && nginx.recommendedProxySettings) ''
      include ${recommendedProxyConf};
    ''
    + lib.optionalString (l.return != null) ''
      return ${toString l.return};
    ''
    + l.extraConfig
    + ''
      }
    '';
  recommendedProxyConf = "/nix/store/${fakeHash "proxy"}-nginx-recommended-proxy_set_header-headers.conf";
  vhostText =
    name: v:
    let
      ssl = v.forceSSL;
      locs = lib.concatStrings (lib.mapAttrsToList locationText v.locations);
    in
    lib.optionalString v.forceSSL ''
      server {
      listen 0.0.0.0:80 ${lib.optionalString v.default "default_server"};
      listen [::]:80 ${lib.optionalString v.default "default_server"};
      server_name ${name};
      location /.well-known/acme-challenge {
      root /var/lib/acme/acme-challenge;
      auth_basic off;
      }
      location / {
      return 301 https://$host$request_uri;
      }
      }
    ''
    + ''
      server {
      listen 0.0.0.0:443 ssl ${lib.optionalString v.default "default_server"};
      listen [::]:443 ssl ${lib.optionalString v.default "default_server"};
      server_name ${name};
    ''
    + lib.optionalString v.http2 ''
      http2 on;
    ''
    + lib.optionalString ssl ''
      ssl_certificate ${
        if v.enableACME then "/var/lib/acme/${name}/fullchain.pem" else toString v.sslCertificate
      };
      ssl_certificate_key ${
        if v.enableACME then "/var/lib/acme/${name}/key.pem" else toString v.sslCertificateKey
      };
    ''
    + locs
    + ''
      }
    '';
  nginxConf = ''
    pid /run/nginx/nginx.pid;
    error_log stderr;
    daemon off;
    events {
    }
    http {
    include /nix/store/${fakeHash "mailcap"}-mailcap/etc/nginx/mime.types;
    include /nix/store/${fakeHash "nginx"}-nginx/conf/fastcgi.conf;
    include /nix/store/${fakeHash "nginx"}-nginx/conf/uwsgi_params;
    default_type application/octet-stream;
    ${lib.optionalString nginx.recommendedOptimisation ''
      sendfile on;
      tcp_nopush on;
      tcp_nodelay on;
      keepalive_timeout 65;
    ''}
    ${lib.optionalString nginx.recommendedTlsSettings ''
      ssl_session_timeout 1d;
      ssl_session_cache shared:SSL:10m;
      ssl_session_tickets off;
      ssl_prefer_server_ciphers off;
    ''}
    ${lib.optionalString nginx.recommendedGzipSettings ''
      gzip on;
      gzip_static on;
      gzip_vary on;
      gzip_comp_level 5;
      gzip_min_length 256;
      gzip_proxied expired no-cache no-store private auth;
    ''}
    ${lib.optionalString nginx.recommendedProxySettings ''
      proxy_redirect off;
      proxy_connect_timeout 60s;
      proxy_send_timeout 60s;
      proxy_read_timeout 60s;
      proxy_http_version 1.1;
      proxy_set_header "Connection" "";
      include ${recommendedProxyConf};
    ''}
    client_max_body_size 10m;
    server_tokens off;
    map $http_upgrade $connection_upgrade {
    default upgrade;
    ''' close;
    }
    client_body_temp_path /tmp/nginx_client_body 1 2;
    proxy_temp_path /tmp/nginx_proxy 1 2;
    fastcgi_temp_path /tmp/nginx_fastcgi 1 2;
    uwsgi_temp_path /tmp/nginx_uwsgi 1 2;
    scgi_temp_path /tmp/nginx_scgi 1 2;
    ${lib.concatStrings (lib.mapAttrsToList vhostText nginx.virtualHosts)}
    }
  '';
in
if failedAssertions != [ ] then
  throw "failed assertions:\n- ${lib.concatStringsSep "\n- " failedAssertions}"
else
  {
    inherit units;
    nginx = nginxConf;
    # Content of the store files nginxConf includes (as NixOS writes them).
    includes.${recommendedProxyConf} = ''
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Server $host;
    '';
    # Plain data: check-nix.sh renders it to TOML for `comfy-multi check-config`.
    settings = cfg.services.comfy-multi.settings;
    participants = cfg.services.comfy-multi.participantNames;
    configFile = toString cfg.services.comfy-multi.configFile; # forces its type check
    vmTestScript = vmTest.testScript;
    flake = flakeOutputs;
    tmpfiles = cfg.systemd.tmpfiles.rules;
    firewall = cfg.networking.firewall.allowedTCPPorts;
    redis = builtins.removeAttrs cfg.services.redis.servers.comfy-multi [ ];
  }
