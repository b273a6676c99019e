#!/usr/bin/env bash
# check-nix.sh — every Nix check of the appliance, in one CI entry point.
#
# Why this exists: the NixOS flake (flake.nix, nixos/**) is the product as much as
# the Rust binary, but a full NixOS evaluation needs a nixpkgs checkout and a recent
# Nix, which CI machines usually lack. This script does everything the machine
# allows and says plainly what it skipped; it never fails just because nixpkgs is
# absent.
#
#   1. parse      every *.nix file with `nix-instantiate --parse`
#                 (with CI=true as root, Debian's nix-bin and nginx-core are
#                 installed first when missing)
#   2. evaluate   with a nixpkgs copy (NIXPKGS_PATH, or ~/.cache/comfy-multi/nixpkgs,
#                 or /var/cache/comfy-multi/nixpkgs) and Nix >= the copy's minimum:
#                   nixosConfigurations.workshop … toplevel.drvPath  (must succeed)
#                   checks.x86_64-linux.vm-test.drvPath               (must succeed)
#                 and render the REAL unit files and nginx.conf of the example host;
#                 otherwise "skipped: no nixpkgs copy".
#   3. stub-eval  with only nixpkgs' lib (the copy's lib/, NIXPKGS_LIB_PATH, or
#                 ~/.cache/comfy-multi/nixpkgs-lib): nixos/tests/stub-eval.nix runs
#                 the module through the real module system with stand-ins and
#                 renders approximate unit files / nginx.conf for the example host
#                 and the VM-test host (used when step 2 could not render).
#   4. verify     what was rendered: `systemd-analyze verify` (any warning fails;
#                 /nix/store programs are replaced by a stub), `nginx -t` (store
#                 includes and certificates replaced; `http2 on;` dropped for nginx
#                 older than 1.25.1, which cannot parse it), and, when a built
#                 comfy-multi binary exists, `comfy-multi check-config` on the TOML.
#
# Exit status: 0 when every check that could run passed. Env knobs:
#   NIXPKGS_PATH, NIXPKGS_LIB_PATH, COMFY_MULTI_BIN (binary for check-config),
#   CHECK_NIX_KEEP=1 (keep the work dir and print its path).
# The nixpkgs override is passed with --override-input on a temporary copy of the
# flake: flake.lock in the repository is never rewritten.

# Style-level shellcheck notes that do not apply here: sed for indenting output,
# ls | wc for counting our own generated files, Nix code in single quotes.
# shellcheck disable=SC2001,SC2012,SC2016
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/check-nix.XXXXXX")"
if [ "${CHECK_NIX_KEEP:-}" = 1 ]; then
  echo "(work dir kept: $WORK)"
else
  trap 'rm -rf "$WORK"' EXIT
fi

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
NIX_FLAGS=(--extra-experimental-features 'nix-command flakes')

# ------------------------------------------------------------------ 0. tools --
# In CI (root, Debian) install what the checks use when it is missing: Debian's Nix
# (parse, stub-eval) and nginx (nginx -t). One apt-get call, bounded in time.
missing=()
have nix-instantiate || missing+=(nix-bin)
have nginx || missing+=(nginx-core)
if [ ${#missing[@]} -gt 0 ] && [ "${CI:-}" = true ] && [ "$(id -u)" = 0 ] && have apt-get; then
  step "installing ${missing[*]} (CI)"
  # RUNLEVEL=1: the packages' scripts must not start services.
  if timeout 150 env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "${missing[@]}" >"$WORK/apt.log" 2>&1 ||
    { timeout 60 apt-get update -qq >>"$WORK/apt.log" 2>&1 &&
      timeout 150 env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq "${missing[@]}" >>"$WORK/apt.log" 2>&1; }; then
    echo "   installed ${missing[*]}"
  else
    echo "   could not install ${missing[*]}; the steps needing them will be skipped:"
    tail -n 5 "$WORK/apt.log" | sed 's/^/   | /'
  fi
fi

# Nix files of the project (tracked or not, but not ignored), excluding build output.
list_files() {
  if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$ROOT" ls-files -co --exclude-standard
  else
    (cd "$ROOT" && find . -path ./target -prune -o -path ./.git -prune -o -type f -print | sed 's|^\./||')
  fi
}

# ------------------------------------------------------------------ 1. parse --
step "parse: every .nix file"
if have nix-instantiate; then
  n=0
  parse_failed=0
  while IFS= read -r f; do
    case "$f" in *.nix) ;; *) continue ;; esac
    [ -f "$ROOT/$f" ] || continue
    n=$((n + 1))
    if ! out="$(nix-instantiate --parse "$ROOT/$f" 2>&1 >/dev/null)"; then
      bad "$f does not parse:"
      echo "$out" | sed 's/^/   | /'
      parse_failed=1
    fi
  done < <(list_files)
  [ "$parse_failed" = 0 ] && ok "$n files parse ($(nix-instantiate --version))"
else
  skip "nix-instantiate not installed (apt-get install nix-bin)"
fi

# ----------------------------------------------------------- locate nixpkgs --
cache="${XDG_CACHE_HOME:-$HOME/.cache}/comfy-multi"
NIXPKGS=""
for c in "${NIXPKGS_PATH:-}" "$cache/nixpkgs" /var/cache/comfy-multi/nixpkgs; do
  if [ -n "$c" ] && [ -f "$c/lib/default.nix" ] && [ -d "$c/nixos/modules" ]; then
    NIXPKGS="$(cd "$c" && pwd)"
    break
  fi
done
LIBDIR=""
for c in "${NIXPKGS:+$NIXPKGS/lib}" "${NIXPKGS_LIB_PATH:-}" "${NIXPKGS_LIB_PATH:+$NIXPKGS_LIB_PATH/lib}" "$cache/nixpkgs-lib/lib"; do
  if [ -n "$c" ] && [ -f "$c/default.nix" ] && [ -f "$c/modules.nix" ]; then
    LIBDIR="$(cd "$c" && pwd)"
    break
  fi
done

RENDER_DIRS=() # each holds units/*.{service,target}, nginx.conf, settings.json, label

# `nix derivation show` (Nix >= 2.15), or its older name.
drvshow() {
  nix --extra-experimental-features 'nix-command flakes' derivation show "$@" 2>/dev/null ||
    nix --extra-experimental-features 'nix-command flakes' show-derivation "$@"
}
export -f drvshow

version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

# --------------------------------------------------------- 2. full evaluation --
step "evaluate: flake against a local nixpkgs copy"
if [ -z "$NIXPKGS" ]; then
  skip "no nixpkgs copy (set NIXPKGS_PATH=/path/to/nixpkgs, or put one at $cache/nixpkgs)"
elif ! have nix; then
  skip "nix not installed"
else
  nixver="$(nix --version | grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n1)"
  minver="$(sed -n 's/^"\(.*\)"$/\1/p' "$NIXPKGS/lib/minver.nix" 2>/dev/null | head -n1 || true)"
  if [ -n "$minver" ] && ! version_ge "$nixver" "$minver"; then
    skip "nix $nixver is older than this nixpkgs' minimum $minver (lib/minver.nix); use a newer Nix"
  else
    # Evaluate a copy of the flake (path: flakes see untracked files, and the
    # repository's flake.lock is never touched).
    mkdir -p "$WORK/flake"
    list_files | while IFS= read -r f; do
      [ -f "$ROOT/$f" ] || continue
      mkdir -p "$WORK/flake/$(dirname "$f")"
      cp -p "$ROOT/$f" "$WORK/flake/$f"
    done
    F="path:$WORK/flake"
    EV=(nix "${NIX_FLAGS[@]}" eval --no-write-lock-file --override-input nixpkgs "path:$NIXPKGS")
    HOST="$F#nixosConfigurations.workshop.config"
    if out="$("${EV[@]}" --raw "$HOST.system.build.toplevel.drvPath" 2>"$WORK/eval.err")"; then
      ok "nixosConfigurations.workshop evaluates: $out"
    else
      bad "nixosConfigurations.workshop does not evaluate:"
      tail -n 30 "$WORK/eval.err" | sed 's/^/   | /'
    fi
    if out="$("${EV[@]}" --raw "$F#checks.x86_64-linux.vm-test.drvPath" 2>"$WORK/eval.err")"; then
      ok "checks.x86_64-linux.vm-test evaluates: $out"
    else
      bad "checks.x86_64-linux.vm-test does not evaluate:"
      tail -n 30 "$WORK/eval.err" | sed 's/^/   | /'
    fi

    # Render the real unit files: systemd.units.<name>.text is plain evaluation.
    R="$WORK/real"
    mkdir -p "$R/units"
    if "${EV[@]}" --json "$HOST.systemd.units" --apply '
        us: builtins.listToAttrs (map (n: { name = n; value = us.${n}.text or ""; })
          (builtins.filter (n: builtins.match "(comfy|redis-comfy-multi).*" n != null)
            (builtins.attrNames us)))' >"$R/units.json" 2>"$WORK/eval.err" &&
      "${EV[@]}" --json "$HOST.services.comfy-multi.settings" >"$R/settings.json" 2>>"$WORK/eval.err"; then
      python3 - "$R" <<'PY'
import json, os, sys
r = sys.argv[1]
for name, text in json.load(open(f"{r}/units.json")).items():
    if text:
        open(f"{r}/units/{name}", "w").write(text)
PY
      # nginx.conf: the derivation behind the -c argument of nginx's ExecStart
      # carries the text in its environment; included store files likewise.
      if drv="$("${EV[@]}" --json "$HOST.systemd.services.nginx.serviceConfig.ExecStart" \
        --apply 's: builtins.attrNames (builtins.getContext (toString s))' 2>>"$WORK/eval.err" |
        python3 -c 'import json,sys; print(next(d for d in json.load(sys.stdin) if d.endswith("nginx.conf.drv")))')"; then
        drvshow "$drv" >"$R/nginx-drv.json" 2>>"$WORK/eval.err" || true
        python3 - "$R" <<'PY' || true
import json, subprocess, sys
r = sys.argv[1]
def env_text(drvjson):
    (d,) = drvjson.values()
    env = d.get("env", {})
    if "text" in env:
        return env["text"]
    if "__json" in env:
        return json.loads(env["__json"]).get("text")
    return None
top = json.load(open(f"{r}/nginx-drv.json"))
open(f"{r}/nginx.conf", "w").write(env_text(top) or "")
# included store files (e.g. recommended proxy headers): text of input derivations
(d,) = top.values()
os = {}
for inp in d.get("inputDrvs", {}):
    try:
        j = json.loads(subprocess.run(["bash", "-c", 'drvshow "$1"', "drvshow", inp],
                                      capture_output=True, text=True).stdout)
    except ValueError:
        continue
    t = env_text(j)
    if t is not None:
        (dd,) = j.values()
        for o in dd.get("outputs", {}).values():
            if o.get("path"):
                os[o["path"]] = t
json.dump(os, open(f"{r}/includes.json", "w"))
PY
      fi
      echo "real (nixpkgs $(basename "$NIXPKGS")) workshop host" >"$R/label"
      RENDER_DIRS+=("$R")
      ok "rendered $(ls "$R/units" | wc -l) unit files$([ -s "$R/nginx.conf" ] && echo ' and nginx.conf') from the real NixOS modules"
    else
      bad "could not render units from the real NixOS evaluation:"
      tail -n 20 "$WORK/eval.err" | sed 's/^/   | /'
    fi
  fi
fi

# --------------------------------------------------------------- 3. stub-eval --
step "stub-eval: module through lib.evalModules with stand-ins"
if [ -z "$LIBDIR" ]; then
  skip "no nixpkgs lib (a nixpkgs copy, NIXPKGS_LIB_PATH, or $cache/nixpkgs-lib)"
elif ! have nix-instantiate; then
  skip "nix-instantiate not installed"
elif ! have python3; then
  skip "python3 not installed (needed to unpack the rendering)"
else
  for case in workshop vm; do
    S="$WORK/stub-$case"
    mkdir -p "$S/units"
    if nix-instantiate --readonly-mode --eval --strict --json "$ROOT/nixos/tests/stub-eval.nix" \
      --arg lib "import $LIBDIR" --argstr case "$case" >"$S/out.json" 2>"$WORK/stub.err"; then
      python3 - "$S" <<'PY'
import json, sys
s = sys.argv[1]
d = json.load(open(f"{s}/out.json"))
for name, text in d["units"].items():
    open(f"{s}/units/{name}", "w").write(text)
open(f"{s}/nginx.conf", "w").write(d["nginx"])
json.dump(d["includes"], open(f"{s}/includes.json", "w"))
json.dump(d["settings"], open(f"{s}/settings.json", "w"), indent=1)
assert d["firewall"] == [80, 443], d["firewall"]
r = d["redis"]
assert r["appendOnly"] and r["appendFsync"] == "always" and r["port"] == 0, r
assert r["settings"]["maxmemory-policy"] == "noeviction", r
# The VM test's Python must at least compile; the flake must expose what the docs promise.
compile(d["vmTestScript"], "vm-test testScript", "exec")
f = d["flake"]
for k, want in [("packages", {"default", "comfy-multi", "comfyui-frontend"}),
                ("checks", {"vm-test"}), ("devShells", {"default"}),
                ("nixosConfigurations", {"workshop"}), ("outputs", {"nixosModules"})]:
    assert want <= set(f[k]), (k, f[k])
PY
      echo "stub-rendered ($case host)" >"$S/label"
      ok "$case host: module evaluates, $(ls "$S/units" | wc -l) units + nginx.conf rendered (firewall 80/443 only, Redis AOF always/noeviction/socket only; flake outputs wired; VM test script compiles)"
      # The real rendering, when there is one, is what gets verified for the
      # workshop host; the stub one still covers the VM-test host.
      if [ "$case" = vm ] || [ ${#RENDER_DIRS[@]} = 0 ]; then RENDER_DIRS+=("$S"); fi
    else
      bad "$case host: stub evaluation failed:"
      tail -n 30 "$WORK/stub.err" | sed 's/^/   | /'
    fi
  done
  # Misconfigurations must be refused with the module's own message.
  for pair in "bad-tls:set either tls.acme" "bad-names:must be unique" "bad-workers:no workers"; do
    case="${pair%%:*}"
    want="${pair#*:}"
    if nix-instantiate --readonly-mode --eval --strict --json "$ROOT/nixos/tests/stub-eval.nix" \
      --arg lib "import $LIBDIR" --argstr case "$case" >/dev/null 2>"$WORK/stub.err"; then
      bad "$case: the module accepted a configuration it must refuse"
    elif grep -qF "$want" "$WORK/stub.err"; then
      ok "$case: refused (\"…$want…\")"
    else
      bad "$case: failed, but not with the expected assertion:"
      tail -n 10 "$WORK/stub.err" | sed 's/^/   | /'
    fi
  done
fi

# ------------------------------------------------------------------ 4. verify --
STUB="$WORK/bin/stub"
mkdir -p "$WORK/bin"
printf '#!/bin/sh\nexit 0\n' >"$STUB"
chmod +x "$STUB"

# A self-signed certificate stands in for the host's certificate files.
CERT="$WORK/cert.pem"
KEY="$WORK/key.pem"
if have openssl; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=check-nix \
    -keyout "$KEY" -out "$CERT" >/dev/null 2>&1 || true
fi

for R in "${RENDER_DIRS[@]}"; do
  label="$(cat "$R/label")"

  step "systemd-analyze verify: $label"
  if ! have systemd-analyze; then
    skip "systemd-analyze not installed"
  elif [ -z "$(ls "$R/units" 2>/dev/null)" ]; then
    skip "no unit files rendered"
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
          cp "$u" "$V/$inst" # a concrete instance file: %i expands to user01
          targets+=("$V/$inst")
          ;;
        redis-comfy-multi.service | nginx.service) ;;
        *) targets+=("$u") ;;
      esac
    done
    if out="$(cd "$V" && SYSTEMD_UNIT_PATH="$V:" systemd-analyze verify --man=no "${targets[@]}" 2>&1)" &&
      [ -z "$out" ]; then
      ok "${#targets[@]} units verify without a warning"
    else
      bad "systemd-analyze verify reported:"
      echo "$out" | sed 's/^/   | /'
    fi
  fi

  step "nginx -t: $label"
  if ! have nginx; then
    skip "nginx not installed (apt-get install nginx-core)"
  elif [ ! -s "$R/nginx.conf" ]; then
    skip "no nginx.conf rendered"
  elif [ ! -s "$CERT" ]; then
    skip "openssl missing: no stand-in certificate"
  else
    N="$R/nginx"
    mkdir -p "$N/logs" "$N/inc"
    ngxver="$(nginx -v 2>&1 | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -n1)"
    NGINX_VER="$ngxver" CERT="$CERT" KEY="$KEY" N="$N" R="$R" python3 - <<'PY'
import json, os, re
R, N = os.environ["R"], os.environ["N"]
conf = open(f"{R}/nginx.conf").read()
includes = {}
if os.path.exists(f"{R}/includes.json"):
    includes = json.load(open(f"{R}/includes.json"))
ver = tuple(int(x) for x in os.environ["NGINX_VER"].split("."))
notes = []

def include(m):
    path = m.group(1)
    base = os.path.basename(path)
    if base == "mime.types" and os.path.exists("/etc/nginx/mime.types"):
        return "include /etc/nginx/mime.types;"
    dest = f"{N}/inc/{len(os.listdir(N + '/inc'))}-{base}"
    if path in includes:
        open(dest, "w").write(includes[path])
    elif base in ("fastcgi.conf", "fastcgi_params", "uwsgi_params", "scgi_params") and os.path.exists(f"/etc/nginx/{base}"):
        return f"include /etc/nginx/{base};"
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
if ver < (1, 25, 1):
    n = len(re.findall(r"(?<![\w-])http2\s+on\s*;", conf))
    conf = re.sub(r"(?<![\w-])http2\s+on\s*;", "", conf)
    if n:
        notes.append(f"dropped {n} 'http2 on;' (nginx {os.environ['NGINX_VER']} predates it; NixOS' nginx accepts it)")
if ver < (1, 25, 0):
    conf = re.sub(r"(?m)^\s*(http3|quic_\w+)\s+[^;]*;", "", conf)
open(f"{N}/nginx.conf", "w").write(conf)
open(f"{N}/notes", "w").write("".join(n + "\n" for n in dict.fromkeys(notes)))
PY
    [ -s "$N/notes" ] && sed 's/^/   note: /' "$N/notes"
    if out="$(nginx -t -p "$N/" -c "$N/nginx.conf" -e stderr 2>&1)" && ! grep -qi '\[warn\]\|\[emerg\]' <<<"$out"; then
      ok "nginx $ngxver accepts the configuration (nginx -t)"
    else
      bad "nginx -t:"
      echo "$out" | sed 's/^/   | /'
    fi
  fi

  step "comfy-multi check-config: $label"
  BIN="${COMFY_MULTI_BIN:-}"
  if [ -z "$BIN" ]; then
    for c in "$ROOT/target/release/comfy-multi" "$ROOT/target/debug/comfy-multi"; do
      [ -x "$c" ] && BIN="$c" && break
    done
  fi
  if [ ! -s "$R/settings.json" ]; then
    skip "no settings rendered"
  elif [ -z "$BIN" ]; then
    skip "no built comfy-multi binary (cargo build, or COMFY_MULTI_BIN=…)"
  else
    C="$R/config"
    mkdir -p "$C/static"
    echo '<html></html>' >"$C/static/index.html"
    C="$C" R="$R" python3 - <<'PY'
import json, os, re
C, R = os.environ["C"], os.environ["R"]
settings = json.load(open(f"{R}/settings.json"))

def fix(v):
    # store paths do not exist here: point them at a stand-in directory
    if isinstance(v, str) and v.startswith("/nix/store/"):
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
      echo "$out" | sed 's/^/   | /'
    fi
  fi
done

echo
echo "check-nix: $passed passed, $failures failed, $skipped skipped"
[ "$failures" = 0 ]
