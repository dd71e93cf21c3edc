"""`fastfold predict` end to end on the bundled example (real query, small real databases built by
examples/build_db.py), with small random parameters in the official format (the reference
fixtures' parameter files), checking every output file a user looks at."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "data" / "af_fixtures"
MODELS = ("model_1_ptm", "model_3")
PNG = b"\x89PNG\r\n\x1a\n"


def run(*args, timeout=900):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "fastfold_cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def params_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("params")
    for m in MODELS:
        shutil.copy(next(FIXTURES.glob(f"*/params_{m}.npz")), d / f"params_{m}.npz")
    return d


@pytest.fixture(scope="module")
def example_db(tmp_path_factory):
    dest = tmp_path_factory.mktemp("db") / "db"
    subprocess.run([sys.executable, str(ROOT / "examples" / "build_db.py"), str(dest)], check=True,
                   capture_output=True, timeout=300)
    return dest


@pytest.fixture(scope="module")
def prediction(tmp_path_factory, params_dir, example_db):
    out = tmp_path_factory.mktemp("pred") / "out"
    p = run("predict", ROOT / "examples" / "query.fasta", "--out", out, "--db-dir", example_db, "--params-dir",
            params_dir, "--models", ",".join(MODELS), "--num-recycles", "1", "--max-template-date", "2100-01-01",
            "--cpus", "2", "--device", "cpu")
    assert p.returncode == 0, p.stderr[-3000:]
    return out, p


def test_every_output_file(prediction):
    out, _ = prediction
    for m in MODELS:
        for f in (f"unrelaxed_{m}.pdb", f"confidence_{m}.json", f"result_{m}.json"):
            assert (out / f).is_file(), f
    assert (out / "pae_model_1_ptm.json").is_file() and not (out / "pae_model_3.json").exists()
    for f in ("ranked_0.pdb", "ranked_1.pdb", "ranked_0.cif", "ranked_1.cif", "ranking_debug.json",
              "timings.json", "features.pkl", "msas/query/uniref90_hits.sto", "msas/query/pdb_hits.hhr"):
        assert (out / f).is_file(), f
    for f in ("plddt.png", "pae.png", "msa_coverage.png"):
        data = (out / f).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, f
    timings = json.loads((out / "timings.json").read_text())
    assert {"features", "predict_model_1_ptm", "predict_model_3"} <= set(timings)


def test_structures_parse_and_carry_plddt(prediction):
    gemmi = pytest.importorskip("gemmi")
    out, _ = prediction
    seq = "".join(l.strip() for l in (ROOT / "examples" / "query.fasta").read_text().splitlines()[1:])
    order = json.loads((out / "ranking_debug.json").read_text())["order"]
    for i, m in enumerate(order):
        conf = json.loads((out / f"confidence_{m}.json").read_text())
        plddt = np.asarray(conf["confidenceScore"])
        for path in (out / f"ranked_{i}.pdb", out / f"ranked_{i}.cif"):
            st = gemmi.read_structure(str(path))
            chain = st[0][0]
            assert gemmi.one_letter_code([r.name for r in chain]) == seq
            bf = np.array([r[0].b_iso for r in chain])
            np.testing.assert_allclose(bf, plddt, atol=0.01)
        assert len(plddt) == len(seq)


def test_pae_and_ranking(prediction):
    out, _ = prediction
    n = 73
    pae = json.loads((out / "pae_model_1_ptm.json").read_text())[0]
    assert np.asarray(pae["predicted_aligned_error"]).shape == (n, n)
    assert 0 < pae["max_predicted_aligned_error"] <= 32
    debug = json.loads((out / "ranking_debug.json").read_text())
    means = {m: np.mean(json.loads((out / f"confidence_{m}.json").read_text())["confidenceScore"]) for m in MODELS}
    assert debug["order"] == sorted(MODELS, key=lambda m: -debug["plddts"][m])
    for m in MODELS:
        assert debug["plddts"][m] == pytest.approx(means[m], abs=0.01)
    # ranked_0 is the best model, byte for byte
    assert (out / "ranked_0.pdb").read_text() == (out / f"unrelaxed_{debug['order'][0]}.pdb").read_text()


def test_second_run_reuses_everything(prediction, params_dir, example_db):
    out, _ = prediction
    before = {m: (out / f"unrelaxed_{m}.pdb").stat().st_mtime_ns for m in MODELS}
    p = run("predict", ROOT / "examples" / "query.fasta", "--out", out, "--db-dir", example_db, "--params-dir",
            params_dir, "--models", ",".join(MODELS), "--num-recycles", "1", "--device", "cpu")
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stderr.count("reusing finished result") == len(MODELS)
    assert {m: (out / f"unrelaxed_{m}.pdb").stat().st_mtime_ns for m in MODELS} == before


def test_failing_model_does_not_stop_the_others(tmp_path, params_dir, prediction):
    out, _ = prediction
    broken = tmp_path / "params"
    shutil.copytree(params_dir, broken)
    (broken / "params_model_3.npz").write_bytes(b"PK\x03\x04 damaged")
    dest = tmp_path / "out"
    dest.mkdir()
    shutil.copy(out / "features.pkl", dest / "features.pkl")  # reuse the searches
    p = run("predict", ROOT / "examples" / "query.fasta", "--out", dest, "--params-dir", broken, "--models",
            ",".join(MODELS), "--num-recycles", "0", "--device", "cpu", "--msa-mode", "single-sequence")
    assert p.returncode == 1
    assert "model_3 failed" in p.stderr and "Traceback" not in p.stderr
    assert (dest / "unrelaxed_model_1_ptm.pdb").is_file() and (dest / "ranked_0.pdb").is_file()


@pytest.mark.parametrize("case", ["missing_params", "bad_fasta", "unknown_model"])
def test_bad_input_one_line_exit_2(tmp_path, case):
    fasta = ROOT / "examples" / "query.fasta"
    args = ["--params-dir", tmp_path / "none", "--msa-mode", "single-sequence", "--device", "cpu"]
    if case == "bad_fasta":
        fasta = tmp_path / "bad.fasta"
        fasta.write_text(">A\nMKV1L\n")
    if case == "unknown_model":
        args += ["--models", "model_9"]
    p = run("predict", fasta, "--out", tmp_path / "o", *args)
    assert p.returncode == 2, p.stderr
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), p.stderr
    if case == "missing_params":
        assert "fastfold params download" in lines[0]


def test_relax_writes_relaxed_and_ranks_them(tmp_path, prediction, params_dir):
    pytest.importorskip("openmm")
    out, _ = prediction
    dest = tmp_path / "out"
    shutil.copytree(out, dest)
    p = run("predict", ROOT / "examples" / "query.fasta", "--out", dest, "--params-dir", params_dir, "--models",
            "model_3", "--num-recycles", "1", "--device", "cpu", "--relax")
    assert p.returncode == 0, p.stderr[-2000:]
    relaxed = (dest / "relaxed_model_3.pdb").read_text()
    assert relaxed == (dest / "ranked_0.pdb").read_text()
    unrelaxed = (dest / "unrelaxed_model_3.pdb").read_text()
    heavy = lambda s: [l for l in s.splitlines() if l.startswith("ATOM") and l[76:78].strip() != "H"]  # noqa: E731
    assert len(heavy(relaxed)) >= len(heavy(unrelaxed))
    assert "relax_model_3" in json.loads((dest / "timings.json").read_text())


def test_complex_runs_alphafold_multimer(tmp_path):
    """A two-record FASTA is a complex: AlphaFold-Multimer presets, chains A and B in the
    structures, ranking by 0.8 ipTM + 0.2 pTM."""
    gemmi = pytest.importorskip("gemmi")
    params = tmp_path / "params"
    params.mkdir()
    src = next((ROOT / "tests" / "data" / "af_fixtures_multimer").glob("*/params_model_1_multimer_v3.npz"))
    shutil.copy(src, params / src.name)
    fasta = tmp_path / "complex.fasta"
    fasta.write_text(">A\nMKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ\n>B\nGSHMLEDPVDAFQLAKQ\n")
    out = tmp_path / "out"
    p = run("predict", fasta, "--out", out, "--params-dir", params, "--models", "model_1_multimer_v3",
            "--msa-mode", "single-sequence", "--num-recycles", "1", "--device", "cpu")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "ipTM" in p.stderr
    debug = json.loads((out / "ranking_debug.json").read_text())
    result = json.loads((out / "result_model_1_multimer_v3.json").read_text())
    assert debug["order"] == ["model_1_multimer_v3"]
    assert debug["iptm+ptm"]["model_1_multimer_v3"] == pytest.approx(0.8 * result["iptm"] + 0.2 * result["ptm"])
    for path in (out / "ranked_0.pdb", out / "ranked_0.cif"):
        st = gemmi.read_structure(str(path))
        assert [(c.name, len(c)) for c in st[0]] == [("A", 33), ("B", 17)]
    pae = json.loads((out / "pae_model_1_multimer_v3.json").read_text())[0]["predicted_aligned_error"]
    assert np.asarray(pae).shape == (50, 50)
    conf = json.loads((out / "confidence_model_1_multimer_v3.json").read_text())
    assert set(conf["chains"]) == {"A", "B"} and list(conf["interfaces"]) == ["A-B"]
    # two chains: the A-B interface score is the complex's ipTM itself
    assert conf["interfaces"]["A-B"] == pytest.approx(result["iptm"], abs=1e-4)
    scores = np.asarray(conf["confidenceScore"])
    assert conf["chains"]["A"]["mean_plddt"] == pytest.approx(scores[:33].mean(), abs=0.01)
    assert all(0 < c["ptm"] < 1 for c in conf["chains"].values())
    bad = run("predict", fasta, "--out", tmp_path / "o2", "--params-dir", params, "--models", "model_1_ptm",
              "--msa-mode", "single-sequence", "--device", "cpu")
    assert bad.returncode == 2 and "complex" in bad.stderr and "Traceback" not in bad.stderr


def test_gpus_2_on_cpu_processes_equals_one_process(tmp_path, prediction, params_dir):
    """`--gpus 2 --device cpu`: the same prediction spread over two gloo processes (DAP)."""
    out, _ = prediction
    dest = tmp_path / "out"
    dest.mkdir()
    shutil.copy(out / "features.pkl", dest / "features.pkl")
    p = run("predict", ROOT / "examples" / "query.fasta", "--out", dest, "--params-dir", params_dir, "--models",
            "model_3", "--num-recycles", "1", "--device", "cpu", "--gpus", "2")
    assert p.returncode == 0, p.stderr[-3000:]
    one = json.loads((out / "result_model_3.json").read_text())
    two = json.loads((dest / "result_model_3.json").read_text())
    assert two["gpus"] == 2
    np.testing.assert_allclose(two["plddt"], one["plddt"], atol=1e-3)
    a = (out / "unrelaxed_model_3.pdb").read_text().splitlines()
    b = (dest / "unrelaxed_model_3.pdb").read_text().splitlines()
    coords = lambda lines: np.array([[float(l[30:38]), float(l[38:46]), float(l[46:54])]  # noqa: E731
                                     for l in lines if l.startswith("ATOM")])
    np.testing.assert_allclose(coords(b), coords(a), atol=2e-3)
