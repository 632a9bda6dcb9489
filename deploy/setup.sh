#!/usr/bin/env bash
# Installs everything ParkGate needs on Debian 12 / Raspberry Pi OS Bookworm, idempotently:
# system packages (apt-get), a virtualenv in .venv and the project in it.
#   deploy/setup.sh          runtime (broker, zbar, CJK font, OCR)
#   deploy/setup.sh --dev    plus test tools and Debian's Chromium for browser tests
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="${PARKGATE_VENV:-$here/.venv}"
dev=0
[ "${1:-}" = "--dev" ] && dev=1

log() { printf '[setup] %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    log "need root for: $*  (run as root or install sudo)"; exit 1; fi
}

apt_packages=(mosquitto libzbar0 fonts-wqy-zenhei sqlite3 ca-certificates)
[ "$dev" = 1 ] && apt_packages+=(chromium victoria-metrics postgresql wrk)

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
log "ready: $venv"
