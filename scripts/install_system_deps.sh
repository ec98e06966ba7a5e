#!/usr/bin/env bash
# System packages theremin needs, installed when missing (idempotent: a no-op once they are there):
#   libfluidsynth  pyfluidsynth renders audio with it
#   chromium       the real-browser test of the web page (tests/test_browser.py drives it with Playwright;
#                  Playwright's own browser downloads are never used)
# With apt-get (as root, or with sudo); with Homebrew, FluidSynth only (point THEREMIN_CHROMIUM at a Chrome or
# Chromium binary for the browser test); otherwise says what to install.
set -euo pipefail
need=()
ldconfig -p 2>/dev/null | grep -q 'libfluidsynth\.so' || need+=(libfluidsynth3)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
elif command -v brew >/dev/null 2>&1; then
  if [[ " ${need[*]} " == *" libfluidsynth3 "* ]]; then brew install fluid-synth; fi
else
  echo "theremin: install with your package manager: ${need[*]} (FluidSynth library, Chromium)" >&2
fi
