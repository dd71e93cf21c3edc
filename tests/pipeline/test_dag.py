"""The DAG and `fastfold msa` end to end on the bundled example database (real homologs of
OpenFold's short.fasta, real mmCIF templates): Ray on 2 CPUs, serial == Ray, shards, identical
chains, cache reuse, resume after a killed run, bad input."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest


ROOT = Path(__file__).resolve().parents[2]
QUERY = (ROOT / "examples" / "query.fasta").read_text().split("\n")[1].strip()
ENV = dict(os.environ, OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled", PYTHONPATH=str(ROOT))
CLI = [sys.executable, "-c", "from fastfold_cli.main import cli; cli()", "msa"]


def run_cli(*args, timeout=300):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, env=ENV,
                          cwd=ROOT, timeout=timeout)


def write_fasta(path: Path, records: dict) -> Path:
    path.write_text("".join(f">{k}\n{v}\n" for k, v in records.items()))
    return path


def _content(p: Path) -> bytes:
    data = p.read_bytes()
    if p.suffix == ".hhr":  # hhsearch stamps its run date and temporary paths into the header
        data = b"\n".join(l for l in data.split(b"\n") if not l.startswith((b"Date", b"Command")))
    return data


def tree(out: Path) -> dict:
    """Output files (not the cache, not timings) -> bytes."""
    return {str(p.relative_to(out)): _content(p) for p in sorted(out.rglob("*"))
            if p.is_file() and ".cache" not in p.parts and p.name != "timings.json"}


def test_cli_full_dbs_templates_on_ray(example_db, tmp_path):
    out = tmp_path / "out"
    r = run_cli(ROOT / "examples" / "query.fasta", "--out", out, "--db-dir", example_db,
                "--max-template-date", "2100-01-01", "--cpus", "2", "--shards", "2")
    assert r.returncode == 0, r.stderr
    msas = out / "msas" / "query"
    for f in ("uniref90_hits.sto", "mgnify_hits.sto", "bfd_uniref_hits.a3m", "pdb_hits.hhr", "features.pkl"):
        assert (msas / f).stat().st_size > 0, f
    raw = pickle.loads((out / "features.pkl").read_bytes())
    assert raw["aatype"].shape == (73, 21) and raw["msa"].shape[1] == 73
    assert raw["msa"].shape[0] > 300  # uniref90 + bfd + mgnify homologs, deduplicated
    assert raw["template_aatype"].shape[0] >= 1 and raw["template_all_atom_positions"].shape[1:] == (73, 37, 3)
    timings = json.loads((out / "timings.json").read_text())
    assert timings["executor"] == "ray" and timings["tasks_cached"] == 0
    names = set(timings["tasks"])
    assert sum("/uniref90/shard-" in n for n in names) == 2 and sum("/mgnify/shard-" in n for n in names) == 2
    assert all(t["num_cpus"] >= 1 and t["seconds"] >= 0 for t in timings["tasks"].values())
    # the rerun reuses every search: only the (uncached) feature task runs
    before = tree(out)
    r2 = run_cli(ROOT / "examples" / "query.fasta", "--out", out, "--db-dir", example_db,
                 "--max-template-date", "2100-01-01", "--cpus", "2", "--executor", "serial")
    assert r2.returncode == 0, r2.stderr
    t2 = json.loads((out / "timings.json").read_text())
    assert t2["tasks_run"] == 1 and t2["tasks_cached"] >= 4
    assert tree(out) == before


def test_serial_equals_ray_identical_chains_once_and_shards(example_db, tmp_path):
    from pipeline import dag, databases
    from pipeline.fasta import read_fasta
    half = QUERY[:40] + "GSGS" + QUERY[50:]
    fasta = write_fasta(tmp_path / "three.fasta", {"A": QUERY, "B": half, "C": QUERY.lower()})
    chains = read_fasta(fasta)
    dbs = databases.resolve(str(example_db))
    outs = {}
    for name, executor, shards in (("serial1", "serial", 1), ("serial3", "serial", 3), ("ray", "ray", 2)):
        opts = dag.Options(db_preset="reduced_dbs", use_templates=False, cpus=2, shards=shards)
        summary = dag.run_pipeline(chains, str(tmp_path / name), dbs, opts, executor=executor)
        assert summary["unique_sequences"] == 2
        # A and C are identical: searched once (3 jackhmmer databases x 2 sequences merges)
        assert sum(n.endswith("/uniref90") for n in summary["tasks"]) == 2
        outs[name] = tree(tmp_path / name)
    assert outs["serial1"].keys() == outs["ray"].keys()
    for k in outs["serial1"]:
        if k.endswith(".pkl"):
            a, b, c = (pickle.loads(outs[n][k]) for n in ("serial1", "serial3", "ray"))
            for key in a:
                np.testing.assert_array_equal(a[key], b[key])
                np.testing.assert_array_equal(a[key], c[key])
        else:
            assert outs["serial1"][k] == outs["serial3"][k] == outs["ray"][k], k
    assert outs["ray"]["msas/A/uniref90_hits.sto"] == outs["ray"]["msas/C/uniref90_hits.sto"]
    assert (tmp_path / "ray" / "features.pkl").exists() is False  # several chains: per-chain only


def test_missing_search_output_redone_alone(example_db, tmp_path):
    from pipeline import dag, databases
    from pipeline.fasta import read_fasta
    chains = read_fasta(ROOT / "examples" / "query.fasta")
    dbs = databases.resolve(str(example_db))
    opts = dag.Options(db_preset="reduced_dbs", use_templates=True, cpus=2, shards=3)
    out = tmp_path / "o"
    dag.run_pipeline(chains, str(out), dbs, opts, executor="serial", progress=True)  # rich display
    before = tree(out)
    p = dag.plan(chains, dbs, opts, str(out / ".cache"))
    sid = next(iter(p.seq_ids.values()))
    os.remove(p.tasks[f"{sid}/mgnify"].cache)  # the merged MGnify result is lost
    s = dag.run_pipeline(chains, str(out), dbs, opts, executor="serial")
    run = sorted(k for k, t in s["tasks"].items() if not t["cached"])
    assert run == sorted([f"{sid}/mgnify", f"{sid}/features"])  # shards reused from the cache
    assert tree(out) == before


def test_resume_after_killed_run(example_db, tmp_path):
    """SIGKILL mid-run; finished task results survive (atomic writes) and are not recomputed."""
    out = tmp_path / "o"
    args = [ROOT / "examples" / "query.fasta", "--out", out, "--db-dir", example_db, "--db-preset",
            "reduced_dbs", "--max-template-date", "2100-01-01", "--executor", "serial", "--shards", "6"]
    proc = subprocess.Popen(CLI + [str(a) for a in args], env=ENV, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = out / ".cache"
    deadline = time.time() + 120
    while time.time() < deadline and not list(cache.rglob("*.pkl")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = {p: p.stat().st_mtime_ns for p in cache.rglob("*.pkl")}
    assert done
    for p in done:
        pickle.loads(p.read_bytes())  # every visible result is complete
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert all(p.stat().st_mtime_ns == m for p, m in done.items())
    t = json.loads((out / "timings.json").read_text())
    clean = tmp_path / "clean"
    assert run_cli(*[a if a != out else clean for a in args]).returncode == 0
    assert tree(out) == tree(clean)
    # whatever finished before the kill was loaded, not searched again
    assert t["tasks_cached"] >= 1


@pytest.mark.parametrize("content, fragment", [
    ("", "no FASTA records"),
    (">A\n>B\nMKV\n", "record 'A' has no sequence"),
    (">A\nMKV\n>B\nMKJV\n", "record 'B': invalid character 'J' at position 3"),
    (">A\nMKV\n>A\nMKV\n", "duplicate record name 'A'"),
])
def test_cli_bad_fasta_exit_2(tmp_path, content, fragment):
    f = tmp_path / "in.fasta"
    f.write_text(content)
    r = run_cli(f, "--out", tmp_path / "o", "--msa-mode", "single-sequence")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in r.stderr


def test_cli_missing_databases_before_any_search(tmp_path):
    f = write_fasta(tmp_path / "q.fasta", {"A": QUERY})
    r = run_cli(f, "--out", tmp_path / "o", "--db-dir", tmp_path / "nodb")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    msg = r.stderr.strip()
    assert len(msg.splitlines()) == 1
    for flag in ("--uniref90-database-path", "--mgnify-database-path", "--bfd-database-path",
                 "--uniref30-database-path", "--pdb70-database-path", "--template-mmcif-dir"):
        assert flag in msg
    assert not (tmp_path / "o").exists()
    r = run_cli(f, "--out", tmp_path / "o", "--msa-mode", "single-sequence", "--max-template-date", "2020-13-01")
    assert r.returncode == 2 and "--max-template-date" in r.stderr


def test_cli_single_sequence_needs_no_database(tmp_path):
    f = write_fasta(tmp_path / "q.fasta", {"A": QUERY})
    r = run_cli(f, "--out", tmp_path / "o", "--msa-mode", "single-sequence", "--executor", "serial")
    assert r.returncode == 0, r.stderr
    raw = pickle.loads((tmp_path / "o" / "features.pkl").read_bytes())
    assert raw["msa"].shape == (1, 73) and raw["template_aatype"].shape == (0,)


def test_cli_multimer_heteromer(example_db, tmp_path):
    """--model-preset multimer: templates by hmmsearch on pdb_seqres (pdb_hits.sto) and, for a
    heteromer, UniProt hits with species ids for pairing (`*_all_seq` features)."""
    variant = QUERY[:40] + "GSGS" + QUERY[50:]
    fasta = write_fasta(tmp_path / "ab.fasta", {"A": QUERY, "B": variant})
    out = tmp_path / "o"
    r = run_cli(fasta, "--out", out, "--db-dir", example_db, "--model-preset", "multimer",
                "--max-template-date", "2100-01-01", "--executor", "serial")
    assert r.returncode == 0, r.stderr
    for chain in ("A", "B"):
        d = out / "msas" / chain
        assert (d / "pdb_hits.sto").exists() and (d / "uniprot_hits.sto").exists()
        assert not (d / "pdb_hits.hhr").exists()
        raw = pickle.loads((d / "features.pkl").read_bytes())
        assert raw["msa_all_seq"].shape[1] == len(raw["sequence"][0])
        species = set(raw["msa_species_identifiers_all_seq"].tolist())
        assert b"" in species and len(species) > 5  # the query has none; UniProt rows have mnemonics
        assert raw["template_aatype"].shape[0] >= 1
        names = [n.decode() for n in raw["template_domain_names"]]
        assert len(set(raw["template_sequence"].tolist())) == len(names)  # dedup by template sequence


def test_cli_joins_existing_ray_cluster(example_db, tmp_path):
    """--ray-address: the searches run as tasks of a Ray cluster started elsewhere."""
    import ray
    from pipeline import dag
    dag.init_ray(2)  # this test process owns the cluster; the CLI process joins it
    address = ray.get_runtime_context().gcs_address
    out = tmp_path / "o"
    r = run_cli(ROOT / "examples" / "query.fasta", "--out", out, "--db-dir", example_db, "--db-preset",
                "reduced_dbs", "--no-templates", "--ray-address", address)
    assert r.returncode == 0, r.stderr
    t = json.loads((out / "timings.json").read_text())
    assert t["executor"] == "ray" and t["tasks_run"] >= 7
    assert (out / "msas" / "query" / "small_bfd_hits.sto").stat().st_size > 0


def test_database_paths_from_dir_config_and_flags(tmp_path):
    from pipeline import databases
    from pipeline.errors import InputError
    cfg = tmp_path / "dbs.json"
    cfg.write_text(json.dumps({"mgnify-database-path": "/c/mgnify.fa", "pdb70_database_path": "/c/pdb70"}))
    dbs = databases.resolve("/d", {"pdb70_database_path": "/flag/pdb70"}, str(cfg))
    assert dbs.uniref90_database_path == "/d/uniref90/uniref90.fasta"   # --db-dir layout
    assert dbs.mgnify_database_path == "/c/mgnify.fa"                   # config file
    assert dbs.pdb70_database_path == "/flag/pdb70"                     # flag wins
    cfg.write_text(json.dumps({"bogus_path": "/x"}))
    with pytest.raises(InputError, match="unknown database key 'bogus_path'"):
        databases.resolve(None, None, str(cfg))
    assert databases.required("reduced_dbs", False, "full") == [
        "uniref90_database_path", "mgnify_database_path", "small_bfd_database_path"]
    assert databases.required("full_dbs", True, "single-sequence") == []


def test_cli_tool_failure_one_line_exit_1(example_db, tmp_path):
    """A broken HH-suite database fails hhblits inside a Ray task: one stderr line, exit 1."""
    import shutil
    db = tmp_path / "db"
    shutil.copytree(example_db, db)
    for f in (db / "bfd").iterdir():
        f.write_text("garbage\n")
    out = tmp_path / "o"
    r = run_cli(ROOT / "examples" / "query.fasta", "--out", out, "--db-dir", db, "--cpus", "2", "--no-templates")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: hhblits failed") and "Traceback" not in r.stderr


def test_auto_shards_cut_every_database_to_one_shard_size():
    from pipeline import dag

    """Search time follows bytes: shards of every database of a run come out about the same size,
    none above the target, about `waves` per CPU in all, never under SHARD_MIN_BYTES."""
    mb = 1 << 20
    sizes = {"uniref90": 203 * mb, "mgnify": 101 * mb, "small_bfd": 101 * mb}
    for chains, cpus in ((1, 16), (4, 16), (3, 7), (1, 2)):
        total = chains * sum(sizes.values())
        target = total / (2 * cpus)
        n = {k: dag.auto_shards(v, total, cpus) for k, v in sizes.items()}
        per_shard = [v / n[k] for k, v in sizes.items()]
        assert max(per_shard) <= target * 1.0001
        assert min(per_shard) >= target / 2  # ceil never halves a shard below half the target
        tasks = chains * sum(n.values())
        assert 2 * cpus <= tasks <= 2 * cpus + chains * len(sizes)
    assert dag.auto_shards(3 * mb, 3 * mb, 64) == 3  # 1 MiB minimum shard
    assert dag.auto_shards(100, 100, 16) == 1
    assert dag.auto_shards(0, 0, 16) == 1


def test_shard_counts_for_the_whole_run():
    """Shard numbers chosen together for all of a run's searches: shards about one size across
    databases, and a schedule no longer than the per-database rounding's (auto_shards) nor than any
    fixed number of shards per CPU; never under SHARD_MIN_BYTES."""
    from pipeline import dag

    mb = 1 << 20
    sizes = {"uniref90": 58.2 * mb, "mgnify": 29.0 * mb, "small_bfd": 29.0 * mb}  # the 16-core benchmark's
    for chains, cpus in ((1, 16), (4, 16), (3, 7), (1, 2), (4, 64)):
        n = dag.shard_counts(sizes, chains, cpus)
        tasks = [v / n[k] for k, v in sizes.items() for _ in range(n[k])] * chains
        span = dag.lpt_makespan(tasks, cpus)
        ideal = sum(tasks) / cpus
        old = {k: dag.auto_shards(v, chains * sum(sizes.values()), cpus) for k, v in sizes.items()}
        old_tasks = [v / old[k] for k, v in sizes.items() for _ in range(old[k])] * chains
        assert span <= dag.lpt_makespan(old_tasks, cpus) * 1.0001
        assert span <= 1.35 * max(ideal, max(tasks))
        assert max(tasks) <= 1.6 * min(tasks)  # one shard size across databases, up to rounding
    # 4 chains on 16 cores (measured with per-database ceil: 44 tasks, 2.75 waves): 2 equal waves now
    n = dag.shard_counts(sizes, 4, 16)
    assert 4 * sum(n.values()) % 16 == 0 and n["uniref90"] == 2 * n["mgnify"] == 2 * n["small_bfd"]
    assert dag.shard_counts({"a": 3 * mb}, 1, 64) == {"a": 3}  # 1 MiB minimum shard
    assert dag.shard_counts({"a": 100}, 1, 16) == {"a": 1}
    assert dag.shard_counts({"a": 0}, 1, 16) == {"a": 1}
    assert dag.lpt_makespan([4, 3, 3, 2], 2) == 6 and dag.lpt_makespan([3, 3, 2, 2, 2], 2) == 7  # LPT, not optimal
