#!/usr/bin/env bash
# Installs FastFold and everything it needs on a fresh Debian machine with Python >= 3.10 (CPU).
# Usage: bash scripts/install.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if command -v apt-get >/dev/null 2>&1 && { ! command -v hhblits >/dev/null || ! command -v kalign >/dev/null || ! command -v jackhmmer >/dev/null; }; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq hhsuite hmmer kalign >/dev/null
fi
# torch 2.13.0 first: the CPU wheel on disk; an unpinned torch would pull CUDA builds.
$PY -m pip install -q "torch==2.13.0" || $PY -m pip install -q torch
# The Triton that matches torch 2.13 (kernel tests run it in interpreter mode on the CPU).
$PY -m pip install -q "triton==3.7.1" || true
extras="pipeline,triton,relax"
[ "${1:-}" = "--test" ] && extras="$extras,test"
$PY -m pip install -q -e ".[${extras}]"
