#!/usr/bin/env bash
# Installs FastFold and runs `fastfold predict` on the bundled example, offline:
# a real 73-residue query, searched (jackhmmer, hhblits, hhsearch as Ray tasks) against small real
# databases built from examples/data, then the full-size AlphaFold network (model_1_ptm).
# Real AlphaFold parameters cannot be bundled, so this runs with --random-params: the numbers are
# produced by the real network code, but the structure, pLDDT and PAE are MEANINGLESS.
# About 5 minutes on 2 CPU cores; a GPU is used when present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python3 examples/build_db.py examples/db
fastfold predict examples/query.fasta --out out/example --db-dir examples/db --max-template-date 2100-01-01 \
  --random-params --models model_1_ptm --num-recycles 0
echo "outputs in out/example: ranked_0.pdb/.cif, confidence_*.json, pae_*.json, plddt.png, pae.png, msa_coverage.png"
