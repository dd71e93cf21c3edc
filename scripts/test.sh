#!/usr/bin/env bash
# Installs FastFold with its test dependencies and runs the whole test suite (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 RAY_AUTH_MODE=disabled
${PYTHON:-python3} -m pytest -q tests "$@"
