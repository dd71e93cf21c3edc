#!/usr/bin/env bash
# Installs FastFold and runs it on the bundled example, offline.
# Until `fastfold predict` lands this runs the network on the bundled AlphaFold feature batch with
# small random parameters in the official format (a reference fixture): the numbers are real
# AlphaFold-network outputs, the structure is meaningless.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
FX=tests/data/af_fixtures/model_3_gap
mkdir -p out
fastfold run-features "$FX/features.npz" --params "$FX/params_model_3.npz" --out out/example_outputs.npz --num-recycles 2
python3 - <<'PY'
import numpy as np
o = np.load("out/example_outputs.npz")
print(f"mean pLDDT {o['plddt'].mean():.2f} over {o['plddt'].shape[0]} residues; outputs: out/example_outputs.npz")
PY
