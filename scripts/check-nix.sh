#!/usr/bin/env bash
# check-nix.sh — every Nix check of the appliance, in one CI entry point.
#
# Why this exists: the NixOS flake (flake.nix, nixos/**) is the product as much as
# the Rust binary. `nixos-rebuild switch --flake .#workshop` must not fail on the
# workshop's morning, so every CI run evaluates the real host with a real Nix and
# the real NixOS modules, renders its units and nginx config and checks them.
#
# Which Nix, in this order:
#   system  a Nix >= 2.18 on PATH that can fetch flake.lock's nixpkgs (a NixOS
#           user's machine): the real pinned nixos-25.11. CHECK_NIX_MODE=system
#           forces it, CHECK_NIX_MODE=kit skips the network probe.
#   kit     ../shared/nixeval's evaluation kit (scripts/test-deps.sh builds it into
#           ~/.cache/nixeval, NIXEVAL_KIT to change): Nix 2.26 in a Debian chroot
#           and a nixpkgs 26.11pre copy with every NixOS module, passed with
#           --override-input nixpkgs git+file://… (flake.lock is never touched).
#   none    only the parse step (Debian's nix-bin is installed for it when root);
#           everything else is reported as skipped, never failed.
#
# Steps:
#   1. parse     every tracked .nix file (nix-instantiate --parse)
#   2. evaluate  nixosConfigurations.workshop (toplevel drvPath, warnings == []),
#                checks.x86_64-linux.vm-test (drvPath, its node's warnings == []),
#                packages.x86_64-linux.{default,comfy-multi,comfyui,comfyui-frontend},
#                devShells.x86_64-linux.default; the module's refusals of broken
#                configurations (its own assertion messages); firewall and Redis
#   3. hashes    fixed-output sources that can be fetched here (PyPI wheels) are
#                downloaded and hashed with `nix hash file`; Cargo.lock has no git
#                dependency that would need cargoLock.outputHashes
#   4. render    the host's unit files and nginx.conf, from the evaluated config
#   5. verify    `systemd-analyze verify` (any warning fails; store programs are
#                replaced by a stub), `nginx -t`, `comfy-multi check-config` on the
#                rendered TOML (when a built binary exists)
#   6. shellcheck the scripts the module wraps with writeShellApplication
#   7. models    nixos/tests/fetch-models-test.py: the models unit's script against
#                a local HTTP server (needs python3, curl, jq; not Nix)
#
# A flake is read as git+file://, so only files git knows are seen: an untracked
# .nix file is reported. Exit status 0 when every check that could run passed.
# Env: CHECK_NIX_MODE, NIXEVAL_KIT, COMFY_MULTI_BIN (binary for check-config),
#      CHECK_NIX_KEEP=1 (keep the work dir and print its path).

# Style-level shellcheck notes that do not apply here: sed for indenting output,
# ls | wc for counting our own generated files, Nix code in single quotes.
# shellcheck disable=SC2001,SC2012,SC2016
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/check-nix.XXXXXX")"
WORK="$(cd "$WORK" && pwd -P)"
if [ "${CHECK_NIX_KEEP:-}" = 1 ]; then
  echo "(work dir kept: $WORK)"
else
  trap 'rm -rf "$WORK"' EXIT
fi
START=$SECONDS

failures=0
passed=0
skipped=0
step() { printf '\n== %s\n' "$*"; }
ok() {
  echo "   ok: $*"
  passed=$((passed + 1))
}
skip() {
  echo "   skipped: $*"
  skipped=$((skipped + 1))
}
bad() {
  echo "   FAILED: $*"
  failures=$((failures + 1))
}
have() { command -v "$1" >/dev/null 2>&1; }
indent() { sed 's/^/   | /'; }
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }
as_root_apt() { # as_root_apt PKG... — best effort, bounded in time
  [ "$(id -u)" = 0 ] && have apt-get || return 1
  timeout 300 env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "$@" >"$WORK/apt.log" 2>&1 ||
    { timeout 120 apt-get update -qq >>"$WORK/apt.log" 2>&1 &&
      timeout 300 env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "$@" >>"$WORK/apt.log" 2>&1; }
}

# Files of the project git knows (tracked or added), as the flake sees them.
list_files() { git -C "$ROOT" ls-files -c; }

# ------------------------------------------------------------ which Nix --
KIT="${NIXEVAL_KIT:-${HOME:-/root}/.cache/nixeval}"
MODE=none
host_nix_ok() {
  have nix && version_ge "$(nix --version | grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n1)" 2.18
}
case "${CHECK_NIX_MODE:-auto}" in
  system) MODE=system ;;
  kit) [ -x "$KIT/bin/nixc" ] && [ -d "$KIT/nixpkgs/.git" ] && MODE=kit ;;
  auto)
    if host_nix_ok && timeout 120 nix --extra-experimental-features 'nix-command flakes' \
      flake archive --dry-run "git+file://$ROOT" >/dev/null 2>&1; then
      MODE=system
    elif [ -x "$KIT/bin/nixc" ] && [ -d "$KIT/nixpkgs/.git" ]; then
      MODE=kit
    fi
    ;;
  *)
    echo "check-nix.sh: CHECK_NIX_MODE must be system, kit or auto" >&2
    exit 2
    ;;
esac

# nixrun CMD...: CMD with the chosen Nix, in $ROOT (kit: inside the chroot, where
# $ROOT and the nixpkgs copy are mounted at their own paths).
# nixwork CMD...: the same, in $WORK (for the kit's systemd-analyze and nginx).
FLAKE="git+file://$ROOT"
OVERRIDE=()
case "$MODE" in
  system)
    nixrun() { (cd "$ROOT" && "$@"); }
    nixwork() { (cd "$WORK" && "$@"); }
    nixdesc="$(nix --version), nixpkgs from flake.lock"
    ;;
  kit)
    nixrun() { "$KIT/bin/nixc" --cd "$ROOT" "$@"; }
    nixwork() { "$KIT/bin/nixc" --cd "$WORK" "$@"; }
    OVERRIDE=(--override-input nixpkgs "git+file://$KIT/nixpkgs")
    nixdesc="$("$KIT/bin/nixc" nix --version) (evaluation kit), nixpkgs $(git -C "$KIT/nixpkgs" log -1 --format='%cs %h') instead of flake.lock's nixos-25.11"
    ;;
  none)
    nixdesc="none"
    ;;
esac
NIX=(nix --extra-experimental-features 'nix-command flakes')
EVAL=("${NIX[@]}" eval --no-write-lock-file "${OVERRIDE[@]}")
echo "check-nix: Nix: $nixdesc"

# ------------------------------------------------------------------ 1. parse --
step "parse: every .nix file"
mapfile -t nixfiles < <(list_files | grep '\.nix$')
untracked="$(git -C "$ROOT" ls-files -o --exclude-standard -- '*.nix')"
if [ -n "$untracked" ]; then
  bad "untracked .nix files the flake cannot see (git add them):"
  echo "$untracked" | indent
fi
parse_all() { # parse_all RUNNER... : prints the files that do not parse
  "$@" bash -c 'for f; do nix-instantiate --parse "$f" >/dev/null 2>"/tmp/parse.err" || { echo "== $f"; cat /tmp/parse.err; }; done' parse "${nixfiles[@]}"
}
if [ "$MODE" = none ] && ! have nix-instantiate; then
  echo "   installing Debian's nix-bin for the parse step"
  as_root_apt nix-bin || echo "   could not install nix-bin: $(tail -n 2 "$WORK/apt.log" 2>/dev/null)"
fi
if [ "$MODE" != none ] || have nix-instantiate; then
  if [ "$MODE" = none ]; then runner=(env -C "$ROOT"); else runner=(nixrun); fi
  out="$(parse_all "${runner[@]}" 2>&1)" || true
  if [ -z "$out" ]; then
    ok "${#nixfiles[@]} files parse"
  else
    bad "some files do not parse:"
    echo "$out" | indent
  fi
else
  skip "no Nix to parse with (apt-get install nix-bin, or build the kit: bash ../shared/nixeval/setup.sh --check-tools)"
fi

if [ "$MODE" = none ]; then
  step "evaluate, render, verify"
  skip "no Nix that can evaluate nixpkgs: a Nix >= 2.18 with network, or the evaluation kit (bash ../shared/nixeval/setup.sh --check-tools)"
fi

# --------------------------------------------------------------- 2. evaluate --
RENDERED=0
if [ "$MODE" != none ]; then
  step "evaluate: the example host, with the module's refusals"
  # One evaluation of the host gives everything read from it below.
  if nixrun "${EVAL[@]}" --json "$FLAKE#nixosConfigurations.workshop" --apply '
    h:
    let
      c = h.config;
      lib = h.pkgs.lib;
      us = c.systemd.units;
      ours = builtins.filter (n: builtins.match "(comfy|redis-comfy-multi).*" n != null) (builtins.attrNames us);
      # The messages of the assertions a broken variant of the host fails.
      refused = m: map (a: a.message) (builtins.filter (a: !a.assertion)
        (h.extendModules { modules = [ { services.comfy-multi = m; } ]; }).config.assertions);
    in {
      drvPath = c.system.build.toplevel.drvPath;
      warnings = c.warnings;
      units = lib.genAttrs ours (n: us.${n}.text or "");
      settings = c.services.comfy-multi.settings;
      nginxConfDrvs = builtins.filter (d: lib.hasSuffix "nginx.conf.drv" d)
        (builtins.attrNames (builtins.getContext (toString c.systemd.services.nginx.serviceConfig.ExecStart)));
      firewall = c.networking.firewall.allowedTCPPorts;
      sshPorts = lib.optionals (c.services.openssh.enable && c.services.openssh.openFirewall) c.services.openssh.ports;
      redis = {
        inherit (c.services.redis.servers.comfy-multi) appendOnly appendFsync port;
        policy = c.services.redis.servers.comfy-multi.settings.maxmemory-policy;
        truncated = c.services.redis.servers.comfy-multi.settings.aof-load-truncated or null;
        restart = c.systemd.services.redis-comfy-multi.serviceConfig.Restart or null;
      };
      refusals = {
        bad-tls = refused { tls.acme = lib.mkForce true; };
        bad-names = refused { participants = lib.mkForce [ "alice" "alice" ]; };
        bad-workers = refused { gpus = lib.mkForce [ ]; };
        bad-pools = refused { pools = [ { name = "modal"; kind = "comfyui_url"; } ]; };
        bad-runpod = refused { pools = [ { name = "rp"; kind = "runpod_serverless"; endpointId = "abc"; } ]; };
      };
      # A rented pool behind an auth header: its settings and the hub unit
      # that hands it the secret.
      pools = let
        v = (h.extendModules { modules = [ { services.comfy-multi.pools = [
          { name = "modal"; kind = "comfyui_url"; urls = [ "https://x.modal.run" ];
            headersFile = "/var/lib/comfy-multi-secrets/modal-headers"; burst = "line_over:12";
            pricePerGpuHour = 2.5; state = "parked"; }
          { name = "runpod"; kind = "runpod_serverless"; endpointId = "abc123xyz";
            apiKeyFile = "/var/lib/comfy-multi-secrets/runpod-api-key";
            objectInfoFile = "/etc/comfy-multi/runpod-object_info.json";
            maxConcurrency = 4; burst = "line_over:20"; pricePerGpuHour = 1.9; } ]; } ]; }).config;
      in {
        settings = v.services.comfy-multi.settings.pools;
        credentials = v.systemd.services.comfy-multi.serviceConfig.LoadCredential;
      };
    }' >"$WORK/host.json" 2>"$WORK/eval.err"; then
    python3 - "$WORK" <<'PY' && RENDERED=1
import json, os, sys
w = sys.argv[1]
h = json.load(open(f"{w}/host.json"))
print(h["drvPath"], file=open(f"{w}/host.drv", "w"))
os.makedirs(f"{w}/real/units", exist_ok=True)
for name, text in h["units"].items():
    if text:
        open(f"{w}/real/units/{name}", "w").write(text)
json.dump(h["settings"], open(f"{w}/real/settings.json", "w"), indent=1)
open(f"{w}/real/nginx-drvs", "w").write("".join(d + "\n" for d in h["nginxConfDrvs"]))
PY
    ok "nixosConfigurations.workshop evaluates: $(cat "$WORK/host.drv")"
    out="$(python3 - "$WORK/host.json" <<'PY'
import json, sys
h = json.load(open(sys.argv[1]))
def check(cond, good, badmsg):
    print(f"   ok: {good}" if cond else f"   FAILED: {badmsg}")
check(h["warnings"] == [], "the host evaluates without a warning", f"config.warnings: {h['warnings']}")
want = sorted(set([80, 443] + h["sshPorts"]))
check(sorted(h["firewall"]) == want, f"firewall opens 80 and 443 only (+ the host's sshd: {h['sshPorts']})", f"firewall: {h['firewall']}, expected {want}")
r = h["redis"]
check(r["appendOnly"] and r["appendFsync"] == "always" and r["port"] == 0 and r["policy"] == "noeviction",
      "Redis: AOF fsync always, unix socket only, noeviction", f"redis: {r}")
check(r["restart"] == "always" and r["truncated"] in ("yes", True),
      "Redis restarts by itself and loads a short-written AOF", f"redis: {r}")
p = h["pools"]
check(p["settings"][0] == {"name": "modal", "kind": "comfyui_url", "burst": "line_over:12", "state": "parked",
                         "price_per_gpu_hour": 2.5, "max_concurrency": 0, "urls": ["https://x.modal.run"], "capacity": 2,
                         "headers_file": "/run/credentials/comfy-multi.service/pool-modal-headers"}
      and "pool-modal-headers:/var/lib/comfy-multi-secrets/modal-headers" in p["credentials"],
      "a comfyui_url pool renders to [[pools]], its headers file reaches the hub as a credential", f"pools: {p}")
check(p["settings"][1] == {"name": "runpod", "kind": "runpod_serverless", "burst": "line_over:20", "state": "enabled",
                         "price_per_gpu_hour": 1.9, "max_concurrency": 4, "endpoint_id": "abc123xyz",
                         "api_key_file": "/run/credentials/comfy-multi.service/pool-runpod-api-key",
                         "object_info_file": "/etc/comfy-multi/runpod-object_info.json", "timeout_s": 600, "queue_timeout_s": 300}
      and "pool-runpod-api-key:/var/lib/comfy-multi-secrets/runpod-api-key" in p["credentials"],
      "a runpod_serverless pool renders to [[pools]], its API key reaches the hub as a credential", f"pools: {p}")
for case, want in [("bad-tls", "set either tls.acme"), ("bad-names", "must be unique"), ("bad-workers", "no workers"),
                   ("bad-pools", "comfyui_url pool needs urls"), ("bad-runpod", "runpod_serverless pool needs endpointId")]:
    got = h["refusals"][case]
    check(any(want in m for m in got), f"{case}: refused (\"…{want}…\")", f"{case}: not refused with \"{want}\": {got}")
PY
)"
    echo "$out"
    passed=$((passed + $(grep -c '^   ok:' <<<"$out" || true)))
    failures=$((failures + $(grep -c '^   FAILED:' <<<"$out" || true)))
  else
    bad "nixosConfigurations.workshop does not evaluate:"
    tail -n 30 "$WORK/eval.err" | indent
  fi

  step "evaluate: the VM test, the packages, the dev shell"
  if out="$(nixrun "${EVAL[@]}" --json "$FLAKE#checks.x86_64-linux.vm-test" --apply '
      t: let m = t.nodes.machine; c = if m ? warnings then m else m.config; in
      { drvPath = t.drvPath; warnings = c.warnings; script = t.config.testScript; }' 2>"$WORK/eval.err")"; then
    # The test script is Python the driver runs in the VM: it must at least compile.
    if ! python3 -c 'import json,sys; compile(json.loads(sys.argv[1])["script"], "vm-test testScript", "exec")' "$out" 2>"$WORK/py.err"; then
      bad "the VM test's Python script does not compile:"
      indent <"$WORK/py.err"
    elif [ "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["warnings"])' "$out")" = "[]" ]; then
      ok "checks.x86_64-linux.vm-test evaluates without a warning, its script compiles: $(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["drvPath"])' "$out")"
    else
      bad "checks.x86_64-linux.vm-test: warnings: $out"
    fi
  else
    bad "checks.x86_64-linux.vm-test does not evaluate:"
    tail -n 30 "$WORK/eval.err" | indent
  fi
  for attr in packages.x86_64-linux.default packages.x86_64-linux.comfy-multi packages.x86_64-linux.comfyui \
    packages.x86_64-linux.comfyui-frontend devShells.x86_64-linux.default; do
    if out="$(nixrun "${EVAL[@]}" --raw "$FLAKE#$attr.drvPath" 2>"$WORK/eval.err")"; then
      ok "$attr evaluates: $out"
    else
      bad "$attr does not evaluate:"
      tail -n 20 "$WORK/eval.err" | indent
    fi
  done

  # --------------------------------------------------------------- 3. hashes --
  step "hashes: fixed-output sources that can be fetched here"
  # PyPI wheels the packages pin: URL and hash as evaluated, file from PyPI.
  if nixrun "${EVAL[@]}" --json "$FLAKE#packages.x86_64-linux.comfyui" --apply '
      c: map (s: { url = builtins.head s.urls; hash = s.outputHash; }) c.passthru.pypiSources' \
    >"$WORK/pypi.json" 2>"$WORK/eval.err"; then
    mkdir -p "$WORK/pypi"
    while IFS=' ' read -r url want; do
      file="$(basename "$url")"
      dist="${file%%-*}"
      ver="$(echo "$file" | cut -d- -f2)"
      if ! python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$WORK/pypi" "$dist==$ver" >"$WORK/pip.log" 2>&1 ||
        [ ! -f "$WORK/pypi/$file" ]; then
        skip "$file: not downloadable here ($(tail -n 1 "$WORK/pip.log"))"
        continue
      fi
      got="$(nixwork "${NIX[@]}" hash file --sri "$WORK/pypi/$file")"
      if [ "$got" = "$want" ]; then
        ok "$file: the pinned hash is PyPI's ($got)"
      else
        bad "$file: pinned $want, PyPI's file hashes to $got"
      fi
    done < <(python3 -c 'import json,sys; [print(s["url"], s["hash"]) for s in json.load(open(sys.argv[1]))]' "$WORK/pypi.json")
  else
    bad "could not read the packages' PyPI sources:"
    tail -n 20 "$WORK/eval.err" | indent
  fi
  if grep -q '^source = "git+' "$ROOT/Cargo.lock"; then
    bad "Cargo.lock has git dependencies: add their hashes to cargoLock.outputHashes in nixos/pkgs/comfy-multi.nix"
  else
    ok "cargoLock.lockFile is Cargo.lock itself (cargo --locked checks it against Cargo.toml); no git dependency needs outputHashes"
  fi
  echo "   note: ComfyUI's GitHub source hash cannot be fetched here (see nixos/pkgs/comfyui.nix for where it comes from)"

  # ---------------------------------------------------- 4. render: nginx.conf --
  if [ "$RENDERED" = 1 ]; then
    step "render: unit files and nginx.conf of the host"
    R="$WORK/real"
    # nginx.conf: the derivation behind nginx's -c carries the text in its
    # environment; included store files (proxy headers) likewise.
    drv="$(head -n1 "$R/nginx-drvs")"
    if [ -n "$drv" ] && nixrun "${NIX[@]}" derivation show -r "$drv" >"$R/nginx-drv.json" 2>"$WORK/eval.err"; then
      python3 - "$R" "$drv" <<'PY'
import json, sys
r, top = sys.argv[1], sys.argv[2]
drvs = json.load(open(f"{r}/nginx-drv.json"))
def env_text(d):
    env = d.get("env", {})
    if "text" in env:
        return env["text"]
    if "__json" in env:
        return json.loads(env["__json"]).get("text")
    return None
open(f"{r}/nginx.conf", "w").write(env_text(drvs[top]) or "")
includes = {}
for path, d in drvs.items():
    t = env_text(d)
    if t is not None and path != top:
        for o in d.get("outputs", {}).values():
            if o.get("path"):
                includes[o["path"]] = t
json.dump(includes, open(f"{r}/includes.json", "w"))
PY
    fi
    if [ -s "$R/nginx.conf" ]; then
      ok "rendered $(ls "$R/units" | wc -l) unit files and nginx.conf"
    else
      bad "rendered $(ls "$R/units" | wc -l) unit files but no nginx.conf:"
      tail -n 10 "$WORK/eval.err" | indent
    fi

    # -------------------------------------------------------- 5. verify --
    step "systemd-analyze verify: the host's units"
    STUB="$WORK/bin/stub"
    mkdir -p "$WORK/bin"
    printf '#!/bin/sh\nexit 0\n' >"$STUB"
    chmod +x "$STUB"
    if [ "$MODE" = system ] && ! have systemd-analyze; then
      skip "systemd-analyze not installed"
    else
      V="$R/verify"
      mkdir -p "$V"
      # Store paths → the stub program (systemd checks that Exec* programs exist).
      for u in "$R"/units/*; do
        sed -E "s#/nix/store/[a-z0-9]{32}-[^[:space:]\"';:]*#$STUB#g" "$u" >"$V/$(basename "$u")"
      done
      # Units the module depends on but does not define.
      for ext in redis-comfy-multi.service nginx.service; do
        [ -e "$V/$ext" ] || printf '[Unit]\nDescription=stand-in for %s\n[Service]\nExecStart=%s\n' "$ext" "$STUB" >"$V/$ext"
      done
      # Templates are verified through an instance of each.
      targets=()
      for u in "$V"/*; do
        b="$(basename "$u")"
        case "$b" in
          *@.service)
            inst="${b%@.service}@user01.service"
            cp "$u" "$V/$inst"
            targets+=("$V/$inst")
            ;;
          redis-comfy-multi.service | nginx.service) ;;
          *) targets+=("$u") ;;
        esac
      done
      runner=(nixwork)
      [ "$MODE" = system ] && runner=(env -C "$V")
      if out="$("${runner[@]}" env SYSTEMD_UNIT_PATH="$V:" systemd-analyze verify --man=no "${targets[@]}" 2>&1)" &&
        [ -z "$out" ]; then
        ok "${#targets[@]} units verify without a warning ($("${runner[@]}" systemd-analyze --version | head -n1))"
      else
        bad "systemd-analyze verify reported:"
        echo "$out" | indent
      fi
    fi

    step "nginx -t: the host's nginx.conf"
    CERT="$WORK/cert.pem"
    KEY="$WORK/key.pem"
    runner=(nixwork)
    [ "$MODE" = system ] && runner=(env -C "$WORK")
    if [ ! -s "$R/nginx.conf" ]; then
      skip "no nginx.conf rendered"
    elif ! "${runner[@]}" openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=check-nix \
      -keyout "$KEY" -out "$CERT" >/dev/null 2>&1; then
      skip "openssl missing: no stand-in certificate"
    elif ! "${runner[@]}" nginx -v >/dev/null 2>&1; then
      skip "nginx not installed"
    else
      N="$R/nginx"
      mkdir -p "$N/logs" "$N/inc"
      CERT="$CERT" KEY="$KEY" N="$N" R="$R" python3 - <<'PY'
import json, os, re
R, N = os.environ["R"], os.environ["N"]
conf = open(f"{R}/nginx.conf").read()
includes = json.load(open(f"{R}/includes.json")) if os.path.exists(f"{R}/includes.json") else {}
notes = []
def include(m):
    path = m.group(1)
    base = os.path.basename(path)
    if base == "mime.types":
        return "include /etc/nginx/mime.types;"
    dest = f"{N}/inc/{len(os.listdir(N + '/inc'))}-{base}"
    if path in includes:
        open(dest, "w").write(includes[path])
    elif base in ("fastcgi.conf", "fastcgi_params", "uwsgi_params", "scgi_params"):
        return f"include /etc/nginx/{base};"  # nginx's own files, as packaged
    else:
        open(dest, "w").write(f"# stand-in for {path}\n")
        notes.append(f"include {path}: content not available here, replaced by an empty file")
    return f"include {dest};"
conf = re.sub(r"include\s+(/nix/store/[^;\s]+)\s*;", include, conf)
conf = re.sub(r"(?m)^\s*user\s+[^;]+;", "", conf)          # runs as the invoking user
conf = re.sub(r"(?m)^\s*pid\s+[^;]+;", f"pid {N}/nginx.pid;", conf)
conf = re.sub(r"ssl_certificate\s+[^;]+;", f"ssl_certificate {os.environ['CERT']};", conf)
conf = re.sub(r"ssl_certificate_key\s+[^;]+;", f"ssl_certificate_key {os.environ['KEY']};", conf)
conf = re.sub(r"ssl_trusted_certificate\s+[^;]+;", f"ssl_trusted_certificate {os.environ['CERT']};", conf)
conf = re.sub(r"/tmp/nginx_", f"{N}/tmp_", conf)
open(f"{N}/nginx.conf", "w").write(conf)
open(f"{N}/notes", "w").write("".join(n + "\n" for n in dict.fromkeys(notes)))
PY
      [ -s "$N/notes" ] && sed 's/^/   note: /' "$N/notes"
      if out="$("${runner[@]}" nginx -t -p "$N/" -c "$N/nginx.conf" -e stderr 2>&1)" && ! grep -qi '\[warn\]\|\[emerg\]' <<<"$out"; then
        ok "$("${runner[@]}" nginx -v 2>&1 | sed 's/.*: //') accepts the configuration (nginx -t)"
      else
        bad "nginx -t:"
        echo "$out" | indent
      fi
    fi

    step "comfy-multi check-config: the host's rendered TOML"
    BIN="${COMFY_MULTI_BIN:-}"
    if [ -z "$BIN" ]; then
      for c in "$ROOT/target/release/comfy-multi" "$ROOT/target/debug/comfy-multi"; do
        [ -x "$c" ] && BIN="$c" && break
      done
    fi
    if [ -z "$BIN" ]; then
      skip "no built comfy-multi binary (cargo build, or COMFY_MULTI_BIN=…)"
    else
      C="$R/config"
      mkdir -p "$C/static"
      echo '<html></html>' >"$C/static/index.html"
      STORE_ROOT="$([ "$MODE" = kit ] && echo "$KIT/root")" C="$C" R="$R" python3 - <<'PY'
import json, os
C, R = os.environ["C"], os.environ["R"]
store_root = os.environ.get("STORE_ROOT", "")
settings = json.load(open(f"{R}/settings.json"))
def fix(v):
    # Store paths the evaluation copied (source files such as warm-up
    # workflows) are read where they are; built ones do not exist here and
    # point at a stand-in directory.
    if isinstance(v, str) and v.startswith("/nix/store/"):
        if os.path.isfile(store_root + v):
            return store_root + v
        return f"{C}/static" if v.endswith("/static") else C
    if isinstance(v, dict):
        return {k: fix(x) for k, x in v.items()}
    if isinstance(v, list):
        return [fix(x) for x in v]
    return v
def scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(scalar(x) for x in v) + "]"
    raise TypeError(v)
def table(prefix, d, out):
    plain = {k: v for k, v in d.items() if not isinstance(v, dict)
             and not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v))}
    if prefix and plain:
        out.append(f"[{prefix}]")
    for k, v in plain.items():
        out.append(f"{k} = {scalar(v)}")
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict):
            table(key, v, out)
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                out.append(f"[[{key}]]")
                for ik, iv in item.items():
                    out.append(f"{ik} = {scalar(iv)}")
    return out
open(f"{C}/comfy-multi.toml", "w").write("\n".join(table("", fix(settings), [])) + "\n")
PY
      if out="$("$BIN" check-config --config "$C/comfy-multi.toml" 2>&1)"; then
        ok "the rendered TOML is accepted ($BIN)"
      else
        bad "check-config rejected the rendered TOML (adjust defaultSettings in nixos/module.nix, or the binary):"
        echo "$out" | indent
      fi
    fi
  fi
fi

# ------------------------------------------------- 6. scripts the host builds --
step "shellcheck: nixos/scripts/*.sh (writeShellApplication fails the build on any finding)"
if ! have shellcheck; then
  skip "shellcheck not installed (apt-get install shellcheck)"
elif out="$(shellcheck -s bash "$ROOT"/nixos/scripts/*.sh 2>&1)"; then
  ok "$(ls "$ROOT"/nixos/scripts/*.sh | wc -l) scripts are shellcheck-clean"
else
  bad "shellcheck:"
  echo "$out" | indent
fi

# ------------------------------------------------------------ 7. models unit --
step "models unit: nixos/scripts/comfyui-fetch-models.sh against a local HTTP server"
if ! have curl || ! have jq; then
  as_root_apt curl jq || true
fi
if ! have python3 || ! have curl || ! have jq; then
  skip "needs python3, curl and jq"
elif out="$(python3 "$ROOT/nixos/tests/fetch-models-test.py" 2>&1)"; then
  ok "$(tail -n 1 <<<"$out")"
else
  bad "the models script test failed:"
  echo "$out" | indent
fi

echo
echo "check-nix: took $((SECONDS - START)) s with Nix: $nixdesc"
echo "check-nix: $passed passed, $failures failed, $skipped skipped"
[ "$failures" = 0 ]
