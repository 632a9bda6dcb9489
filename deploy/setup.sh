#!/usr/bin/env bash
# Installs everything ParkGate needs on Debian 12 / Raspberry Pi OS Bookworm, idempotently:
# system packages (apt-get), a virtualenv in .venv and the project in it.
#   deploy/setup.sh          runtime (broker, zbar, CJK font, OCR)
#   deploy/setup.sh --dev    plus test tools and Debian's Chromium for browser tests
#   deploy/setup.sh --edge   a gate node (Raspberry Pi): no dashboard front-end assets, no Node.js
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="${PARKGATE_VENV:-$here/.venv}"
dev=0
edge=0
case "${1:-}" in
  --dev) dev=1 ;;
  --edge) edge=1 ;;
  "") ;;
  *) echo "usage: deploy/setup.sh [--dev|--edge]" >&2; exit 2 ;;
esac

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*  (run as root or install sudo)"; exit 1; fi
}

apt_packages=(mosquitto libzbar0 fonts-wqy-zenhei sqlite3 ca-certificates)
[ "$dev" = 1 ] && apt_packages+=(chromium victoria-metrics postgresql wrk)

# The dashboard's front-end libraries come from the npm registry (dashboard/frontend/package-lock.json)
[ "$edge" = 0 ] && ! command -v npm >/dev/null && apt_packages+=(npm)

missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=(python3-venv); fi
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "system packages present"
fi

if [ ! -x "$venv/bin/python" ]; then
  log "creating virtualenv $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"

# Re-install only when the project's requirements changed since the last run.
stamp="$venv/.parkgate-installed"
want=$(cat "$here/pyproject.toml" "$here/deploy/setup.sh" | sha256sum | cut -d' ' -f1)-$dev
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  log "virtualenv up to date"
else
  log "installing the project into $venv (log: $venv/pip.log)"
  extras=""
  [ "$dev" = 1 ] && extras="[dev]"
  {
    "$py" -m pip install --upgrade pip &&
    "$py" -m pip install -e "$here$extras" &&
    # rapidocr-onnxruntime pins the non-headless opencv-python; its real requirements are in
    # pyproject.toml, so install it alone and keep opencv-python-headless.
    "$py" -m pip install --no-deps "rapidocr-onnxruntime==1.4.4"
  } > "$venv/pip.log" 2>&1 || { tail -30 "$venv/pip.log" >&2; log "pip install failed"; exit 1; }
  echo "$want" > "$stamp"
fi
"$py" -c 'import cv2, rapidocr_onnxruntime, pyzbar.pyzbar, zxingcpp, cryptography, paho.mqtt' || { log "import check failed"; exit 1; }

# Dashboard assets: the pinned npm packages, their files copied to dashboard/static/vendor/ (served
# by the dashboard itself: no CDN). Re-done only when the lock file or the asset list changed.
if [ "$edge" = 0 ]; then
  front="$here/dashboard/frontend"
  vendor="$here/dashboard/static/vendor"
  assets_want=$(cat "$front/package-lock.json" "$front/assets.txt" | sha256sum | cut -d' ' -f1)
  if [ -f "$vendor/.installed" ] && [ "$(cat "$vendor/.installed")" = "$assets_want" ]; then
    log "dashboard assets up to date"
  else
    log "installing dashboard assets (npm ci in dashboard/frontend)"
    (cd "$front" && npm ci --omit=dev --no-audit --no-fund --loglevel=error) >&2
    mkdir -p "$vendor"
    grep -v '^#' "$front/assets.txt" | while read -r from to; do
      [ -n "$from" ] && cp "$front/node_modules/$from" "$vendor/$to"
    done
    echo "$assets_want" > "$vendor/.installed"
  fi
fi
log "ready: $venv"
