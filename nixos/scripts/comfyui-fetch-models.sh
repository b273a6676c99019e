# comfyui-fetch-models: put the workshop's model files into the models directory.
#
# Why this exists: checkpoints are gigabytes; putting them in the Nix store would
# copy them on every change and needs the whole file before anything starts. This
# oneshot (comfyui-models.service) runs before ComfyUI and, for each model in the
# manifest, downloads it into $MODELS_DIR/<folder>/<name>:
#   - skipped when already there with the expected hash (a <name>.sha256 marker
#     avoids re-hashing gigabytes on every boot),
#   - resumable: a <name>.part file is continued with `curl -C -`,
#   - hash-checked before it is moved into place (a wrong file never appears),
#   - progress is printed to the journal every 30 s:
#       journalctl -fu comfyui-models
#
# Inputs (environment, set by nixos/module.nix):
#   MODELS_DIR     target directory
#   MANIFEST       JSON list of { folder, name, url, sha256 }
#   CREDENTIALS_DIRECTORY/hf-token   optional Hugging Face token for gated models
# writeShellApplication adds the shebang and `set -euo pipefail`.

models="${MODELS_DIR:?}"
manifest="${MANIFEST:?}"
token=""
if [ -n "${CREDENTIALS_DIRECTORY:-}" ] && [ -r "$CREDENTIALS_DIRECTORY/hf-token" ]; then
  token="$(tr -d '\n' <"$CREDENTIALS_DIRECTORY/hf-token")"
fi

failed=0
count="$(jq length "$manifest")"
echo "models: $count in manifest, target $models"

human() { numfmt --to=iec --suffix=B "$1" 2>/dev/null || echo "$1 bytes"; }

hash_ok() { # file expected-hex
  [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

download() { # url part-file
  local url="$1" part="$2" pid size
  local -a auth=()
  case "$url" in
    https://huggingface.co/*) [ -n "$token" ] && auth=(-H "Authorization: Bearer $token") ;;
  esac
  curl --fail --location --silent --show-error \
    --connect-timeout 30 --speed-limit 1024 --speed-time 120 \
    -C - "${auth[@]}" -o "$part" "$url" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30
    if kill -0 "$pid" 2>/dev/null; then
      size="$(stat -c %s "$part" 2>/dev/null || echo 0)"
      echo "  … $(basename "$part" .part): $(human "$size") so far"
    fi
  done
  wait "$pid"
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
  for attempt in 1 2 3 4 5; do
    rc=0
    download "$url" "$part" || rc=$?
    if [ "$rc" = 0 ]; then
      ok=1
      break
    fi
    # A complete .part makes the server answer 416 to the resume request.
    if [ -f "$part" ] && hash_ok "$part" "$want"; then
      ok=1
      break
    fi
    # 33: server refuses byte ranges; start over instead of resuming.
    [ "$rc" = 33 ] && rm -f "$part"
    echo "  attempt $attempt failed (curl exit $rc), retrying in 10 s"
    sleep 10
  done
  if [ "$ok" != 1 ]; then
    echo "  FAILED: $folder/$name could not be downloaded" >&2
    failed=$((failed + 1))
    continue
  fi
  if ! hash_ok "$part" "$want"; then
    echo "  FAILED: $folder/$name has sha256 $(sha256sum "$part" | cut -d' ' -f1), expected $want; deleted" >&2
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
