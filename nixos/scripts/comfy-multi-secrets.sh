# comfy-multi-secrets: create the workshop's secrets once, keep them across rebuilds.
#
# Why this exists: the appliance must come up with working logins without anyone
# typing secrets into Nix (whose store is world-readable). This oneshot runs as root
# before the hub, frontends and workers; every secret it makes lives under
# $SECRETS_DIR (root-only) and reaches the services through systemd's
# LoadCredential=. Existing secrets are never changed, so re-running it (every
# `nixos-rebuild switch` that changes the participant list) only ADDS what is new.
#
# Inputs (environment, set by nixos/module.nix):
#   SECRETS_DIR        where to keep everything (e.g. /var/lib/comfy-multi-secrets)
#   PARTICIPANTS       space-separated names that get a login (participants + instructor)
#   WORKER_IDS         space-separated worker agent ids that get a token (gpu0 … + external)
#   PUBLIC_URL         https://<domain>, for the join cards
#   CREDENTIALS_FILE   optional: an existing participants TOML to use instead of generating
# Outputs under $SECRETS_DIR:
#   session-secret, admin-password, worker-tokens (one per line), workers/<id>,
#   participants.toml (all), participants/<name>.toml (one section each),
#   join-cards.txt (print and cut).
# writeShellApplication adds the shebang and `set -euo pipefail`.

umask 077
dir="${SECRETS_DIR:?}"
install -d -m 0700 "$dir" "$dir/workers" "$dir/participants"

# A password people can type from a printed card: no 0/O/1/l/i look-alikes.
friendly() {
  local s
  s="$(LC_ALL=C tr -dc 'abcdefghjkmnpqrstuvwxyz23456789' </dev/urandom | head -c 12 || true)"
  printf '%s-%s-%s' "${s:0:4}" "${s:4:4}" "${s:8:4}"
}
hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# Write $2 to $1 only if $1 is missing or empty; atomically.
keep_or_make() {
  if [ ! -s "$1" ]; then
    printf '%s\n' "$2" >"$1.tmp"
    mv "$1.tmp" "$1"
    echo "created $1"
  fi
}

keep_or_make "$dir/session-secret" "$(hex 32)"
keep_or_make "$dir/admin-password" "$(friendly)"

# Worker tokens: one file per agent (its LoadCredential), and the hub's list.
for id in ${WORKER_IDS:-}; do
  keep_or_make "$dir/workers/$id" "$(hex 32)"
done
: >"$dir/worker-tokens.tmp"
for id in ${WORKER_IDS:-}; do
  cat "$dir/workers/$id" >>"$dir/worker-tokens.tmp"
done
mv "$dir/worker-tokens.tmp" "$dir/worker-tokens"

# Participants: [name] password = "…" token = "…"
if [ -n "${CREDENTIALS_FILE:-}" ]; then
  creds="$CREDENTIALS_FILE"
  if [ ! -r "$creds" ]; then
    echo "credentialsFile $creds is not readable" >&2
    exit 1
  fi
else
  creds="$dir/participants.toml"
  touch "$creds"
fi

for name in ${PARTICIPANTS:-}; do
  if ! grep -qxF "[$name]" "$creds"; then
    if [ -n "${CREDENTIALS_FILE:-}" ]; then
      echo "credentialsFile $creds has no [$name] section" >&2
      exit 1
    fi
    printf '[%s]\npassword = "%s"\ntoken = "%s"\n\n' "$name" "$(friendly)" "$(hex 24)" >>"$creds"
    echo "created login for $name"
  fi
done

# One file per participant, holding only that participant's section: the frontend
# of user07 gets user07's credentials and nobody else's.
section() {
  awk -v want="[$1]" '
    /^\[/ { on = ($0 == want) }
    on { print }
  ' "$creds"
}
value() { section "$1" | sed -n "s/^$2[[:space:]]*=[[:space:]]*\"\(.*\)\"[[:space:]]*$/\1/p" | head -n1; }

cards="$dir/join-cards.txt.tmp"
{
  echo "ComfyUI workshop: ${PUBLIC_URL:-}"
  echo
} >"$cards"
for name in ${PARTICIPANTS:-}; do
  section "$name" >"$dir/participants/$name.toml.tmp"
  mv "$dir/participants/$name.toml.tmp" "$dir/participants/$name.toml"
  {
    echo "------------------------------------------------------------"
    echo "  $name"
    echo "  open:      ${PUBLIC_URL:-}/$name/"
    echo "  password:  $(value "$name" password)"
    echo
  } >>"$cards"
done
mv "$cards" "$dir/join-cards.txt"

# Participants removed from the configuration lose their per-user file (and with
# it their frontend's credential); their section stays in participants.toml so a
# re-added participant keeps the same password.
for f in "$dir"/participants/*.toml; do
  [ -e "$f" ] || continue
  n="$(basename "$f" .toml)"
  case " ${PARTICIPANTS:-} " in
    *" $n "*) ;;
    *) rm -f "$f" && echo "removed per-user credentials of $n" ;;
  esac
done

chmod -R go-rwx "$dir"
echo "secrets ready in $dir ($(echo "${PARTICIPANTS:-}" | wc -w) logins, $(echo "${WORKER_IDS:-}" | wc -w) worker tokens)"
