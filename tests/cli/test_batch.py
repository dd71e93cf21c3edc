"""`fastfold predict` on many targets (fastfold_cli/batch.py) on a local multi-node Ray cluster:
a CPU-only head for the searches and two nodes with one fake GPU each (folding workers run on
their CPU), small random parameters in the official format (the reference fixtures' files),
real short sequences (the bundled example, pieces of LuxC), single-sequence MSAs for speed."""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "data" / "af_fixtures"
QUERY = "".join(ROOT.joinpath("examples", "query.fasta").read_text().splitlines()[1:])  # 73 residues
LUXC = "".join(ROOT.joinpath("tests", "data", "pipeline", "parity", "q.fa").read_text().splitlines()[1:])
SHORT = LUXC[:40]
LONG = LUXC[:130]
COMMON = ("--models", "model_3", "--num-recycles", "0", "--msa-mode", "single-sequence")


def run(*args, timeout=300, popen=False):
    env = dict(os.environ, RAY_AUTH_MODE="disabled", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "fastfold_cli", *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def fasta(path: Path, *records):
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in records))
    return path


def tree(d: Path):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                       "object_store_memory": 80 * 1024 ** 2})
    for _ in range(2):  # "GPU" nodes: one fake GPU and one CPU each
        c.add_node(num_cpus=1, num_gpus=1, object_store_memory=80 * 1024 ** 2)
    c.wait_for_nodes()
    yield c.address
    c.shutdown()


@pytest.fixture(scope="module")
def params_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("params")
    shutil.copy(FIXTURES / "model_3_gap" / "params_model_3.npz", d / "params_model_3.npz")
    return d


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("in")
    fasta(d / "query.fasta", ("query", QUERY))
    fasta(d / "short.fa", ("luxc_n40", SHORT))
    fasta(d / "twin.faa", ("twin of luxc_n40", SHORT))  # same sequence: searched once
    fasta(d / "bad.fasta", ("bad", "MKV1L"))
    fasta(d / "complex.fasta", ("A", SHORT), ("B", QUERY))
    (d / "notes.txt").write_text("not a FASTA file, ignored\n")
    return d


@pytest.fixture(scope="module")
def batch(tmp_path_factory, cluster, params_dir, inputs):
    out = tmp_path_factory.mktemp("batch") / "out"
    p = run("predict", inputs, "--out", out, "--params-dir", params_dir, "--ray-address", cluster, *COMMON)
    return out, p


def summary(out: Path):
    return json.loads((out / "batch_summary.json").read_text())


def test_batch_end_to_end_on_two_gpu_workers(batch):
    out, p = batch
    assert p.returncode == 1, p.stderr[-3000:]  # two bad targets
    assert "Traceback" not in p.stderr
    s = summary(out)
    t = s["targets"]
    assert set(t) == {"query", "short", "twin", "bad", "complex"}
    for name, length in (("query", 73), ("short", 40), ("twin", 40)):
        r = t[name]
        assert r["status"] == "ok" and r["length"] == length and r["attempts"] == 1, r
        assert 0 < r["mean_plddt"] < 100 and r["seconds"] > 0 and not r.get("error")
        assert r["mean_plddt"] == pytest.approx(
            json.loads((out / name / "ranking_debug.json").read_text())["plddts"]["model_3"], abs=1e-3)
        for f in ("ranked_0.pdb", "ranked_0.cif", "unrelaxed_model_3.pdb", "confidence_model_3.json",
                  "result_model_3.json", "ranking_debug.json", "timings.json", "features.pkl", "plddt.png",
                  "msa_coverage.png", "msas/chain_id_map.json"):
            assert (out / name / f).is_file(), (name, f)
    assert "invalid character '1' at position 4" in t["bad"]["error"] and t["bad"]["status"] == "failed"
    # a complex folds with AlphaFold-Multimer (tests/cli/test_batch_complex.py); --models model_3 has no
    # multimer preset, so it fails with single mode's reason and the others go on
    assert "(a complex): use AlphaFold-Multimer presets" in t["complex"]["error"]
    assert t["complex"]["length"] == 40 + 73 and t["complex"]["chains"] == 2
    assert s["counts"] == {"searching": 0, "queued": 0, "folding": 0, "ok": 3, "reused": 0, "failed": 2}
    # one folding worker per (fake) GPU, each with its own GPU, and both used
    assert len(s["workers"]) == 2 and sorted(len(w["gpu_ids"]) for w in s["workers"]) == [1, 1]
    assert len({t[n]["worker"] for n in ("query", "short", "twin")}) == 2
    # identical sequences searched once; each target keeps its own header
    assert s["searches"]["unique_sequences"] == 2
    for name, header in (("short", "luxc_n40"), ("twin", "twin of luxc_n40")):
        with open(out / name / "features.pkl", "rb") as fh:
            raw = pickle.load(fh)
        assert raw["domain_name"][0].decode() == header and raw["sequence"][0].decode() == SHORT
    # the summary table and a line per target
    assert "batch summary" in p.stderr and "3 done, 0 reused, 2 failed" in p.stderr
    assert (out / "batch_logs" / "query.log").is_file() and not list((out / "batch_logs").glob("*.running.json"))


def test_target_laid_out_as_single_mode(batch, cluster, params_dir, inputs, tmp_path):
    out, _ = batch
    single = tmp_path / "single"
    p = run("predict", inputs / "short.fa", "--out", single, "--params-dir", params_dir, "--ray-address", cluster,
            *COMMON)
    assert p.returncode == 0, p.stderr[-3000:]
    assert tree(out / "short") == tree(single)
    # same features and seed on the CPU: the same structure, byte for byte
    assert (out / "short" / "ranked_0.pdb").read_text() == (single / "ranked_0.pdb").read_text()


def test_rerun_does_no_finished_work(batch, cluster, params_dir, inputs):
    out, _ = batch
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "batch_summary.json"}
    t0 = time.time()
    p = run("predict", inputs, "--out", out, "--params-dir", params_dir, "--ray-address", cluster, *COMMON)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    s = summary(out)
    assert {n: r["status"] for n, r in s["targets"].items()} == {
        "query": "reused", "short": "reused", "twin": "reused", "bad": "failed", "complex": "failed"}
    assert s["workers"] == [] and s["searches"]["tasks"] == 0  # no search, no folding worker started
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "batch_summary.json"}
    assert after == before
    assert time.time() - t0 < 60


def test_unfinished_target_resumes_alone(batch, cluster, params_dir, inputs, tmp_path):
    """A target with features but no prediction (e.g. a run killed mid-batch) folds without a
    search; the finished ones are left alone."""
    out, _ = batch
    dest = tmp_path / "out"
    shutil.copytree(out, dest)
    for f in ("ranking_debug.json", "result_model_3.json", "unrelaxed_model_3.pdb"):
        (dest / "query" / f).unlink()
    keep = (dest / "short" / "ranked_0.pdb").stat().st_mtime_ns
    p = run("predict", inputs / "query.fasta", inputs / "short.fa", "--out", dest, "--params-dir", params_dir,
            "--ray-address", cluster, *COMMON)
    assert p.returncode == 0, p.stderr[-3000:]
    s = summary(dest)
    assert s["targets"]["query"]["status"] == "ok" and s["targets"]["short"]["status"] == "reused"
    assert s["searches"]["tasks"] == 0
    assert (dest / "query" / "ranked_0.pdb").is_file()
    assert (dest / "short" / "ranked_0.pdb").stat().st_mtime_ns == keep


def test_longest_first_on_one_cpu_worker_from_msa_dir(batch, cluster, params_dir, inputs, tmp_path):
    """--device cpu: one folding worker; features from --msa-dir (a previous batch) are all ready at
    once, so the worker takes the targets longest first."""
    out, _ = batch
    dest = tmp_path / "o"
    p = run("predict", inputs / "short.fa", inputs / "query.fasta", "--out", dest, "--params-dir", params_dir,
            "--ray-address", cluster, "--device", "cpu", "--msa-dir", out, "--progress", *COMMON)
    assert p.returncode == 0, p.stderr[-3000:]
    s = summary(dest)
    assert len(s["workers"]) == 1 and s["workers"][0]["device"] == "cpu" and s["searches"]["tasks"] == 0
    t = s["targets"]
    assert t["query"]["fold_started"] < t["short"]["fold_started"]  # 73 residues before 40
    assert t["query"]["worker"] == t["short"]["worker"]
    assert "targets" in p.stderr and "batch summary" in p.stderr  # the rich display ran


def test_killed_worker_target_is_retried(cluster, params_dir, tmp_path):
    library = fasta(tmp_path / "library.fasta", ("long", LONG), ("short", SHORT))
    out = tmp_path / "out"
    proc = run("predict", library, "--batch", "--out", out, "--params-dir", params_dir, "--ray-address", cluster,
               "--models", "model_3", "--num-recycles", "1", "--msa-mode", "single-sequence", popen=True)
    running = out / "batch_logs" / "long.running.json"
    deadline = time.time() + 240
    killed = None
    while time.time() < deadline and proc.poll() is None:
        try:
            info = json.loads(running.read_text())
        except (OSError, ValueError):
            time.sleep(0.05)
            continue
        os.kill(info["pid"], signal.SIGKILL)  # the folding worker dies mid-target
        killed = info
        break
    stdout, stderr = proc.communicate(timeout=240)
    assert killed is not None and killed["attempt"] == 1, stderr[-3000:]
    assert proc.returncode == 0, stderr[-3000:]
    r = summary(out)["targets"]["long"]
    assert r["status"] == "ok" and r["attempts"] == 2 and r["worker"] != killed["worker"]
    assert "retried_after" in r
    assert summary(out)["targets"]["short"]["status"] == "ok"
    assert (out / "long" / "ranked_0.pdb").is_file() and not running.exists()


def test_multi_record_file_without_batch_is_a_complex(tmp_path, inputs):
    # A complex runs AlphaFold-Multimer (tests/cli/test_predict.py); with a monomer preset the
    # one-line error points to --batch.
    p = run("predict", inputs / "complex.fasta", "--out", tmp_path / "o", "--msa-mode", "single-sequence",
            "--random-params", "--device", "cpu", "--models", "model_3")
    assert p.returncode == 2 and "complex" in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("Error:") and "--batch" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("case", ["missing_path", "empty_dir", "duplicate_names", "no_databases", "no_ray"])
def test_bad_batch_input_one_line(tmp_path, case, params_dir, inputs):
    args = [inputs / "query.fasta"]
    extra = []
    if case == "missing_path":
        args.append(tmp_path / "nope.fasta")
    elif case == "empty_dir":
        (tmp_path / "empty").mkdir()
        args = [tmp_path / "empty"]
    elif case == "duplicate_names":
        (tmp_path / "d").mkdir()
        fasta(tmp_path / "d" / "query.fa", ("x", SHORT))
        args.append(tmp_path / "d")
    elif case == "no_databases":
        args.append(inputs / "short.fa")
        extra = ["--msa-mode", "full"]  # searches, but no --db-dir
    else:
        args.append(inputs / "short.fa")
        extra = ["--ray-address", "127.0.0.1:1"]
    p = run("predict", *args, "--out", tmp_path / "o", "--params-dir", params_dir, *COMMON, *extra, timeout=120)
    assert p.returncode == 2, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), p.stderr
    if case == "duplicate_names":
        assert "two targets named 'query'" in lines[0]


def test_real_searches_shared_by_identical_targets(cluster, params_dir, tmp_path):
    """Real jackhmmer searches (the example's small databases) as Ray tasks: two targets with the
    same sequence get the same alignments from one search; each target's msas/ as single mode's."""
    db = tmp_path / "db"
    subprocess.run([sys.executable, str(ROOT / "examples" / "build_db.py"), str(db)], check=True,
                   capture_output=True, timeout=300)
    library = fasta(tmp_path / "lib.fasta", ("query", QUERY), ("query_again", QUERY))
    out = tmp_path / "out"
    p = run("predict", library, "--batch", "--out", out, "--params-dir", params_dir, "--ray-address", cluster,
            "--db-dir", db, "--db-preset", "reduced_dbs", "--no-templates", "--models", "model_3",
            "--num-recycles", "0")
    assert p.returncode == 0, p.stderr[-3000:]
    s = summary(out)
    assert s["searches"]["unique_sequences"] == 1
    a, b = (out / "query" / "msas" / "query"), (out / "query_again" / "msas" / "query_again")
    for f in ("uniref90_hits.sto", "mgnify_hits.sto", "small_bfd_hits.sto"):
        assert (a / f).read_text() == (b / f).read_text() and (a / f).stat().st_size > 1000, f
    with open(out / "query" / "features.pkl", "rb") as fh:
        raw = pickle.load(fh)
    assert raw["msa"].shape[0] > 100  # real homologs, not a single-sequence MSA
    assert (out / "query" / "ranked_0.pdb").read_text() == (out / "query_again" / "ranked_0.pdb").read_text()


def test_target_failing_in_the_network_does_not_stop_the_others(batch, cluster, params_dir, inputs, tmp_path):
    """A target whose features break the network (here: a features.pkl with its sequence but no
    MSA) fails on its worker with the model's error; the other target is folded, exit code 1."""
    out, _ = batch
    msas = tmp_path / "msas"
    (msas / "short").mkdir(parents=True)
    shutil.copy(out / "short" / "features.pkl", msas / "short" / "features.pkl")
    (msas / "query").mkdir()
    with open(out / "query" / "features.pkl", "rb") as fh:
        raw = pickle.load(fh)
    (msas / "query" / "features.pkl").write_bytes(pickle.dumps({"sequence": raw["sequence"]}))
    dest = tmp_path / "o"
    p = run("predict", inputs / "query.fasta", inputs / "short.fa", "--out", dest, "--params-dir", params_dir,
            "--ray-address", cluster, "--msa-dir", msas, *COMMON)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    t = summary(dest)["targets"]
    assert t["short"]["status"] == "ok" and (dest / "short" / "ranked_0.pdb").is_file()
    assert t["query"]["status"] == "failed" and "model_3 failed" in t["query"]["error"]
    assert (dest / "query" / "logs" / "model_3.traceback.txt").is_file()  # as single mode writes it
    assert "query: failed" in p.stderr
