"""`fastfold predict DIR` with a complex among the targets: a multi-record FASTA is folded with
AlphaFold-Multimer exactly as single mode folds it (fastfold_cli/batch.py), next to a monomer.
Cheap: small random parameters in the official format (the reference fixtures' files), one preset
of each kind, single-sequence MSAs, no recycling, a local Ray on the CPU."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
gemmi = pytest.importorskip("gemmi")

ROOT = Path(__file__).resolve().parents[2]
QUERY = "".join(ROOT.joinpath("examples", "query.fasta").read_text().splitlines()[1:])  # 73 residues
A, B = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "GSHMLEDPVDAFQLAKQ"  # 33 + 17 residues
MULTIMER = "model_1_multimer_v3"
COMMON = ("--num-recycles", "0", "--msa-mode", "single-sequence", "--device", "cpu", "--cpus", "2",
          "--no-progress")


def run(*args, timeout=300):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "fastfold_cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def tree(d: Path):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def params_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("params")
    shutil.copy(ROOT / "tests" / "data" / "af_fixtures" / "model_3_gap" / "params_model_3.npz", d)
    shutil.copy(next((ROOT / "tests" / "data" / "af_fixtures_multimer").glob(f"*/params_{MULTIMER}.npz")), d)
    return d


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    (d / "query.fasta").write_text(f">query\n{QUERY}\n")
    (d / "dimer.fasta").write_text(f">A\n{A}\n>B\n{B}\n")
    return d


@pytest.fixture(scope="module")
def batch(tmp_path_factory, params_dir, inputs):
    out = tmp_path_factory.mktemp("batch") / "out"
    p = run("predict", inputs, "--out", out, "--params-dir", params_dir, "--models", f"model_3,{MULTIMER}", *COMMON)
    return out, p


def test_complex_and_monomer_in_one_batch(batch):
    out, p = batch
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Traceback" not in p.stderr
    s = json.loads((out / "batch_summary.json").read_text())
    t = s["targets"]
    assert {n: r["status"] for n, r in t.items()} == {"query": "ok", "dimer": "ok"}
    assert t["query"]["length"] == 73 and t["dimer"]["length"] == 50 and t["dimer"]["chains"] == 2
    assert t["query"]["best_model"] == "model_3" and "iptm" not in t["query"]
    d = t["dimer"]
    assert d["best_model"] == MULTIMER and 0 < d["iptm"] < 1 and 0 < d["ptm"] < 1
    result = json.loads((out / "dimer" / f"result_{MULTIMER}.json").read_text())
    assert d["iptm"] == pytest.approx(result["iptm"]) and "ipTM" in p.stderr
    debug = json.loads((out / "dimer" / "ranking_debug.json").read_text())
    assert debug["order"] == [MULTIMER]
    assert debug["iptm+ptm"][MULTIMER] == pytest.approx(0.8 * result["iptm"] + 0.2 * result["ptm"])
    assert d["ranking_confidence"] == pytest.approx(debug["iptm+ptm"][MULTIMER], abs=1e-4)
    st = gemmi.read_structure(str(out / "dimer" / "ranked_0.pdb"))
    assert [(c.name, len(c)) for c in st[0]] == [("A", 33), ("B", 17)]
    for f in ("features.npz", "multimer_chain_map.json", "msas/A/features.pkl", "msas/B/features.pkl",
              "msas/chain_id_map.json", "ranked_0.cif", f"confidence_{MULTIMER}.json"):
        assert (out / "dimer" / f).is_file(), f
    assert not (out / "query" / "features.npz").exists() and (out / "query" / "ranked_0.pdb").is_file()
    assert sorted(s["models"]) == sorted(["model_3", MULTIMER])
    assert s["searches"]["unique_sequences"] == 3


def test_complex_laid_out_as_single_mode(batch, params_dir, inputs, tmp_path):
    out, _ = batch
    single = tmp_path / "single"
    p = run("predict", inputs / "dimer.fasta", "--out", single, "--params-dir", params_dir, "--models", MULTIMER,
            *COMMON)
    assert p.returncode == 0, p.stderr[-3000:]
    assert tree(out / "dimer") == [f for f in tree(single) if not f.startswith(".cache/")]
    # same features and seed on the CPU: the same structure, byte for byte
    assert (out / "dimer" / "ranked_0.pdb").read_text() == (single / "ranked_0.pdb").read_text()


def test_rerun_skips_both(batch, params_dir, inputs):
    out, _ = batch
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "batch_summary.json"}
    t0 = time.time()
    p = run("predict", inputs, "--out", out, "--params-dir", params_dir, "--models", f"model_3,{MULTIMER}", *COMMON)
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads((out / "batch_summary.json").read_text())
    assert {n: r["status"] for n, r in s["targets"].items()} == {"query": "reused", "dimer": "reused"}
    assert s["targets"]["dimer"]["iptm"] is not None
    assert s["workers"] == [] and s["searches"]["tasks"] == 0  # no search, no folding worker started
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "batch_summary.json"}
    assert after == before
    assert time.time() - t0 < 60


def test_presets_of_the_wrong_kind_fail_that_target_only(inputs, params_dir, tmp_path):
    """--models with monomer presets only: the complex fails with single mode's reason, the monomer
    is folded (and the reverse)."""
    dest = tmp_path / "o"
    p = run("predict", inputs, "--out", dest, "--params-dir", params_dir, "--models", "model_3", *COMMON)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    t = json.loads((dest / "batch_summary.json").read_text())["targets"]
    assert t["query"]["status"] == "ok"
    assert t["dimer"]["status"] == "failed" and "(a complex): use AlphaFold-Multimer presets" in t["dimer"]["error"]
    dest = tmp_path / "o2"
    p = run("predict", inputs / "query.fasta", inputs / "dimer.fasta", "--out", dest, "--params-dir", params_dir,
            "--models", MULTIMER, "--msa-dir", tmp_path / "nothing", *COMMON)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    t = json.loads((dest / "batch_summary.json").read_text())["targets"]
    assert t["query"]["status"] == "failed" and "a single chain needs a monomer preset" in t["query"]["error"]
    assert t["dimer"]["status"] == "failed" and "--model-preset multimer" in t["dimer"]["error"]


def test_real_searches_of_a_heteromer_as_single_mode(params_dir, tmp_path):
    """Real searches (the example's small databases, UniProt pairing and pdb_seqres templates for
    the heteromer) in one DAG with a monomer of the same sequence as chain A (its UniRef90 search
    shared): the complex's alignments and features byte for byte as `fastfold msa --model-preset
    multimer` writes them."""
    db = tmp_path / "db"
    subprocess.run([sys.executable, str(ROOT / "examples" / "build_db.py"), str(db)], check=True,
                   capture_output=True, timeout=300)
    d = tmp_path / "in"
    d.mkdir()
    (d / "query.fasta").write_text(f">query\n{QUERY}\n")
    (d / "het.fasta").write_text(f">A\n{QUERY}\n>B\n{A}\n")
    search = ("--db-dir", db, "--db-preset", "reduced_dbs", "--max-template-date", "2100-01-01", "--cpus", "2")
    out = tmp_path / "out"
    p = run("predict", d, "--out", out, "--params-dir", params_dir, "--models", f"model_3,{MULTIMER}",
            "--num-recycles", "0", "--device", "cpu", "--no-progress", *search)
    assert p.returncode == 0, p.stderr[-3000:]
    s = json.loads((out / "batch_summary.json").read_text())
    assert {n: r["status"] for n, r in s["targets"].items()} == {"query": "ok", "het": "ok"}
    assert s["searches"]["unique_sequences"] == 2
    single = tmp_path / "single"
    p = run("msa", d / "het.fasta", "--out", single, "--model-preset", "multimer", *search)
    assert p.returncode == 0, p.stderr[-3000:]
    for f in ("features.npz", "features.pkl", "multimer_chain_map.json", "msas/chain_id_map.json",
              "msas/A/features.pkl", "msas/B/features.pkl", "msas/A/uniprot_hits.sto", "msas/B/uniprot_hits.sto",
              "msas/A/pdb_hits.sto", "msas/B/small_bfd_hits.sto"):
        assert (out / "het" / f).read_bytes() == (single / f).read_bytes(), f
    st = gemmi.read_structure(str(out / "het" / "ranked_0.pdb"))
    assert [(c.name, len(c)) for c in st[0]] == [("A", 73), ("B", 33)]
