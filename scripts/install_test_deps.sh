#!/usr/bin/env bash
# System packages for the headless napari test (tests/test_napari.py): an X virtual framebuffer
# and the xcb/GL libraries Qt6 + vispy need. Idempotent: installs only what is missing.
# Never fails the build: without root or apt the napari test skips with a clear reason.
set -u
PKGS=(xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xinerama0
      libxkbcommon-x11-0 libxcb-cursor0 libgl1 libegl1 libgl1-mesa-dri libfontconfig1 libdbus-1-3)

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
else
  echo "install_test_deps: dpkg not available; skipping system packages (the napari test will skip)." >&2
  exit 0
fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "install_test_deps: system packages already present."
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "install_test_deps: not root and no passwordless sudo; missing ${missing[*]} (the napari test will skip)." >&2
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install_test_deps: apt-get not available; missing ${missing[*]} (the napari test will skip)." >&2
  exit 0
fi
echo "install_test_deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
{ $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
  || echo "install_test_deps: apt-get failed; the napari test will skip." >&2
exit 0
