#!/usr/bin/env bash
# System libraries theremin needs: libfluidsynth (pyfluidsynth renders audio with it).
# Installs with apt-get when missing (as root, or with sudo); otherwise says what to install.
set -euo pipefail
if ldconfig -p 2>/dev/null | grep -q 'libfluidsynth\.so'; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq libfluidsynth3 >/dev/null
elif command -v brew >/dev/null 2>&1; then
  brew install fluid-synth
else
  echo "theremin: install the FluidSynth library (libfluidsynth) with your package manager for audio rendering" >&2
fi
