"""A batch target too large for one folding worker's GPU is folded with DAP over 2 GPUs of one node
(fastfold_cli/batch.py), on a local Ray cluster with one node of two fake GPUs: the folding runs on
the CPU, DAP over 2 gloo processes (as `predict --gpus 2 --device cpu`). A --max-memory budget, chosen
here with the planner, makes one target fit 1 GPU, one need 2 and one need more than the node has."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PARAMS = ROOT / "tests" / "data" / "af_fixtures" / "model_3_gap" / "params_model_3.npz"
QUERY = "".join(ROOT.joinpath("examples", "query.fasta").read_text().splitlines()[1:])  # 73 residues
LUXC = "".join(ROOT.joinpath("tests", "data", "pipeline", "parity", "q.fa").read_text().splitlines()[1:])
SEQS = {"short": LUXC[:40], "query": QUERY, "long": LUXC[:130]}
COMMON = ("--models", "model_3", "--num-recycles", "0", "--msa-mode", "single-sequence")
MiB = 1024 ** 2


def run(*args, timeout=400):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "fastfold_cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def _budget(tmp: Path):
    """A budget (GiB) in which, by the planner, short fits 1 GPU, query needs 2 and long more than 2,
    with the GPUs each needs (asked as a folding worker asks: batch.gpus_needed)."""
    from fastfold_cli.batch import gpus_needed
    from fastfold_cli.predict import ModelCache, Settings
    from pipeline.features import make_raw_features, single_sequence_msa

    raws = {n: make_raw_features(s, n, [single_sequence_msa(s)]) for n, s in SEQS.items()}
    settings = Settings(model_names=["model_3"], num_recycles=0, param_paths={"model_3": str(PARAMS)})
    models = ModelCache(1)
    for mib in np.arange(10.0, 200.0, 0.5):
        settings.max_memory = float(mib) * MiB / 1024 ** 3
        need = {n: gpus_needed(tmp, raw, settings, "cpu", models)[0] for n, raw in raws.items()}
        if need["short"] == 1 and need["query"] == 2 and need["long"] > 2:
            return settings.max_memory, need
    pytest.fail("no budget separates the three targets")


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                       "object_store_memory": 80 * 1024 ** 2})
    c.add_node(num_cpus=2, num_gpus=2, object_store_memory=80 * 1024 ** 2)  # one node, two (fake) GPUs
    c.wait_for_nodes()
    yield c.address
    c.shutdown()


def test_target_too_large_for_one_gpu_folds_on_two(cluster, tmp_path):
    budget, need = _budget(tmp_path)
    params = tmp_path / "params"
    params.mkdir()
    shutil.copy(PARAMS, params / "params_model_3.npz")
    library = tmp_path / "lib.fasta"
    library.write_text("".join(f">{n}\n{s}\n" for n, s in SEQS.items()))
    out = tmp_path / "out"
    p = run("predict", library, "--batch", "--out", out, "--params-dir", params, "--ray-address", cluster,
            "--max-memory", repr(budget), *COMMON)
    assert p.returncode == 1, p.stderr[-3000:]  # `long` fails
    assert "Traceback" not in p.stderr
    s = json.loads((out / "batch_summary.json").read_text())
    t = s["targets"]
    # short: one GPU worker as before
    assert t["short"]["status"] == "ok" and t["short"]["gpus"] == 1, t["short"]
    # query: does not fit one GPU's budget, folded with DAP on the node's 2 GPUs, once
    q = t["query"]
    assert q["status"] == "ok" and q["gpus"] == 2 and q["attempts"] == 1, q
    assert "does not fit" in q["gpus_reason"]
    result = json.loads((out / "query" / "result_model_3.json").read_text())
    assert result["gpus"] == 2
    for f in ("ranked_0.pdb", "ranked_0.cif", "unrelaxed_model_3.pdb", "confidence_model_3.json",
              "ranking_debug.json", "timings.json", "features.pkl"):
        assert (out / "query" / f).is_file(), f
    # long: needs more GPUs than any node has: one line, the others went on
    lg = t["long"]
    assert lg["status"] == "failed" and lg["gpus"] == need["long"], lg
    assert lg["error"].startswith(f"needs {need['long']} GPUs of one node (DAP) and the largest node has 2: "), lg
    assert "\n" not in lg["error"] and not (out / "long" / "ranked_0.pdb").exists()
    assert s["counts"]["ok"] == 2 and s["counts"]["failed"] == 1

    # the same target on one process, no budget: the same prediction (fp32)
    single = tmp_path / "single"
    p1 = run("predict", ROOT / "examples" / "query.fasta", "--out", single, "--params-dir", params,
             "--msa-dir", out / "query", "--device", "cpu", *COMMON)
    assert p1.returncode == 0, p1.stderr[-3000:]
    one = json.loads((single / "result_model_3.json").read_text())
    assert "gpus" not in one
    np.testing.assert_allclose(result["plddt"], one["plddt"], rtol=1e-5)
    coords = lambda path: np.array([[float(x[30:38]), float(x[38:46]), float(x[46:54])]  # noqa: E731
                                    for x in path.read_text().splitlines() if x.startswith("ATOM")])
    np.testing.assert_allclose(coords(out / "query" / "unrelaxed_model_3.pdb"),
                               coords(single / "unrelaxed_model_3.pdb"), atol=1.5e-3)
