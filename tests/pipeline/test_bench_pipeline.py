"""`python -m pipeline.bench` (DAG vs serial searches) at the smallest size: the replicated UniProt
stand-in keeps its species, and the multimer mode (4-chain heteromer, UniProt pairing searches, no
templates, no binaries) runs end to end on a local Ray with serial == Ray features."""
import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline import bench
from pipeline.parsers import species_identifier

ROOT = Path(__file__).resolve().parents[2]


def test_uniprot_copies_keep_species():
    h = "sp|P19841|LUXC_PHOPO Long-chain acyl-protein thioester reductase OS=Photobacterium phosphoreum"
    assert bench._uniprot_name(h, 0) == h
    assert bench._uniprot_name(h, 7).startswith("sp|P198410007|LUXC_PHOPO ")
    assert species_identifier(bench._uniprot_name(h, 123)) == "PHOPO"
    assert bench._uniprot_name("938293.PRJEB85.HG003688_1 # 204", 3) == "c3_938293.PRJEB85.HG003688_1 # 204"


def test_multimer_bench_end_to_end(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT))
    out = tmp_path / "mm.json"
    p = subprocess.run([sys.executable, "-m", "pipeline.bench", "--cpus", "2", "--copies", "1", "--work",
                        str(tmp_path / "w"), "--model-preset", "multimer", "--json", str(out)],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep["model_preset"] == "multimer" and rep["cpus"] == 2 and rep["copies"] == 1
    r = rep["results"]["4"]
    assert r["features_equal"] and r["serial_s"] > 0 and r["ray_s"] > 0 and r["speedup"] > 0
    # per chain: uniref90, mgnify, small_bfd and UniProt (pairing) jackhmmer searches, no templates
    for db in ("uniref90", "mgnify", "small_bfd", "uniprot"):
        assert r["serial_task_kinds"][f"{db} merge"] == 4 and r["ray_task_kinds"][f"{db} merge"] == 4
    assert not any("pdb" in k for k in r["ray_task_kinds"])
    assert r["serial_tasks"] == sum(r["serial_task_kinds"].values())
    assert r["merged"]["residues"] == sum(r["chain_lengths"].values())
    assert r["merged"]["rows_with_several_chains"] > 1  # the query row and species-paired rows
    assert set(rep["databases"]) == {"uniref90", "mgnify", "small_bfd", "uniprot"}
