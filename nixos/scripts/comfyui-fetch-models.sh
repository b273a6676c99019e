# comfyui-fetch-models: put the workshop's model files into the models directory.
#
# Why this exists: checkpoints are gigabytes; putting them in the Nix store would
# copy them on every change and needs the whole file before anything starts. This
# oneshot (comfyui-models.service) runs before ComfyUI and, for each model in the
# manifest, downloads it into $MODELS_DIR/<folder>/<name>:
#   - skipped when already there with the expected hash (a <name>.sha256 marker
#     avoids re-hashing gigabytes on every boot),
#   - resumable: a <name>.part file is continued with `curl -C -`,
#   - hash-checked before it is moved into place (a wrong file never appears
#     under the final name; a wrong .part is deleted, not resumed again),
#   - HTTP 401/403/404 fail at once (retrying cannot help), other errors are
#     retried up to 5 times,
#   - progress is printed to the journal every PROGRESS_INTERVAL_S seconds:
#       journalctl -fu comfyui-models
# One failed model does not stop the others; the exit status is 1 if any failed.
#
# Inputs (environment, set by nixos/module.nix):
#   MODELS_DIR           target directory (required)
#   MANIFEST             JSON list of { folder, name, url, sha256 } (required)
#   CREDENTIALS_DIRECTORY/hf-token
#                        optional token (e.g. Hugging Face) for gated models
#   TOKEN_URL_PREFIXES   space-separated URL prefixes that get the token as
#                        `Authorization: Bearer <token>`
#                        (default when unset: "https://huggingface.co/"; set
#                        but empty: no URL gets it). Plain prefix match. The
#                        token is handed to curl on stdin (`-H @-`), never on
#                        its command line, and never printed.
#   RETRY_DELAY_S        seconds between attempts (default: 10)
#   PROGRESS_INTERVAL_S  seconds between progress lines (default: 30)
# Needs bash, coreutils, curl, jq. writeShellApplication adds the shebang and
# `set -euo pipefail`.

models="${MODELS_DIR:?}"
manifest="${MANIFEST:?}"
read -ra token_prefixes <<<"${TOKEN_URL_PREFIXES-https://huggingface.co/}"
retry_delay="${RETRY_DELAY_S:-10}"
interval="${PROGRESS_INTERVAL_S:-30}"
token=""
if [ -n "${CREDENTIALS_DIRECTORY:-}" ] && [ -r "$CREDENTIALS_DIRECTORY/hf-token" ]; then
  token="$(tr -d '\r\n' <"$CREDENTIALS_DIRECTORY/hf-token")"
fi

failed=0
count="$(jq length "$manifest")"
echo "models: $count in manifest, target $models"

human() { numfmt --to=iec --suffix=B "$1" 2>/dev/null || echo "$1 bytes"; }

sha() { sha256sum "$1" | cut -d' ' -f1; }

hash_ok() { # file expected-hex
  [ "$(sha "$1")" = "$2" ]
}

wants_token() { # url
  local p
  for p in "${token_prefixes[@]}"; do
    [[ "$1" == "$p"* ]] && return 0
  done
  return 1
}

progress() { # part-file; prints its size every $interval s until killed
  local size
  # sleep gets no stdout/stderr, so an orphaned sleep holds no log pipe open.
  while sleep "$interval" >/dev/null 2>&1; do
    size="$(stat -c %s "$1" 2>/dev/null || echo 0)"
    echo "  … $(basename "$1" .part): $(human "$size") so far"
  done
}

# download url part-file: sets $code (HTTP status of the last response, 000 if
# none) and returns curl's exit status.
download() {
  local url="$1" part="$2" pid rc=0
  local -a curl_args=(
    --fail --location --silent --show-error
    --connect-timeout 30 --speed-limit 1024 --speed-time 120
    --write-out '%{http_code}'
    -C - -o "$part" "$url"
  )
  progress "$part" &
  pid=$!
  if [ -n "$token" ] && wants_token "$url"; then
    # The header comes from stdin, so the token is not in curl's argv.
    code="$(curl -H @- "${curl_args[@]}" <<<"Authorization: Bearer $token")" || rc=$?
  else
    code="$(curl "${curl_args[@]}" </dev/null)" || rc=$?
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return "$rc"
}

for i in $(seq 0 $((count - 1))); do
  folder="$(jq -r ".[$i].folder" "$manifest")"
  name="$(jq -r ".[$i].name" "$manifest")"
  url="$(jq -r ".[$i].url" "$manifest")"
  want="$(jq -r ".[$i].sha256" "$manifest")"
  dest="$models/$folder/$name"
  part="$dest.part"
  mark="$dest.sha256"
  mkdir -p "$models/$folder"

  if [ -f "$dest" ] && [ "$(cat "$mark" 2>/dev/null)" = "$want" ]; then
    echo "[$((i + 1))/$count] $folder/$name: present, skipped"
    continue
  fi
  if [ -f "$dest" ]; then
    echo "[$((i + 1))/$count] $folder/$name: present without marker, checking hash"
    if hash_ok "$dest" "$want"; then
      echo "$want" >"$mark"
      echo "  hash ok"
      continue
    fi
    echo "  hash mismatch: replacing it"
    rm -f "$dest" "$mark"
  fi

  echo "[$((i + 1))/$count] $folder/$name: downloading from $url"
  ok=0
  fatal=""
  for attempt in 1 2 3 4 5; do
    rc=0
    code=000
    download "$url" "$part" || rc=$?
    if [ "$rc" = 0 ]; then
      ok=1
      break
    fi
    case "$code" in
      401)
        if [ -n "$token" ] && wants_token "$url"; then
          fatal="answered 401: check the token file (hf-token credential)"
        else
          fatal="answered 401: no token was sent; provide the token file (hf-token credential) and make sure the URL matches TOKEN_URL_PREFIXES"
        fi
        ;;
      403) fatal="answered 403: check the token file; for a gated model, accept its terms on the website with the token's account" ;;
      404) fatal="answered 404: check the URL in the manifest" ;;
    esac
    [ -n "$fatal" ] && break
    # A complete .part makes the server answer 416 to the resume request.
    if [ -f "$part" ] && hash_ok "$part" "$want"; then
      ok=1
      break
    fi
    # 33: server refuses byte ranges; start over instead of resuming.
    [ "$rc" = 33 ] && rm -f "$part"
    if [ "$attempt" -lt 5 ]; then
      echo "  attempt $attempt failed (curl exit $rc, HTTP $code), retrying in $retry_delay s"
      sleep "$retry_delay"
    else
      echo "  attempt $attempt failed (curl exit $rc, HTTP $code), giving up"
    fi
  done
  if [ -n "$fatal" ]; then
    echo "  FAILED: $folder/$name: $url $fatal" >&2
    failed=$((failed + 1))
    continue
  fi
  if [ "$ok" != 1 ]; then
    echo "  FAILED: $folder/$name could not be downloaded (a later run resumes $name.part)" >&2
    failed=$((failed + 1))
    continue
  fi
  got="$(sha "$part")"
  if [ "$got" != "$want" ]; then
    echo "  FAILED: $folder/$name: wrong sha256: got $got, expected $want; download deleted" >&2
    rm -f "$part"
    failed=$((failed + 1))
    continue
  fi
  mv "$part" "$dest"
  echo "$want" >"$mark"
  echo "  done: $(human "$(stat -c %s "$dest")")"
done

if [ "$failed" -gt 0 ]; then
  echo "models: $failed of $count failed (see above); ComfyUI starts anyway" >&2
  exit 1
fi
echo "models: all $count present"
