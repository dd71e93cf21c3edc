"""Preprocessing wall time of a 4-chain heteromer: Ray DAG vs serial (AlphaFold's order).

    python scripts/bench_multimer_preprocess.py --cpus 8 [--copies 1] [--repeats 3] [--work /tmp/ffmm]

What is timed: `pipeline.dag.run_pipeline` with `--model-preset multimer`, full_dbs, templates, on
the bundled example databases (examples/build_db.py), from an empty output directory (no cached
search) to the merged multimer features.pkl/features.npz. Per unique chain that is AlphaFold-
Multimer's work: jackhmmer UniRef90, jackhmmer MGnify, hhblits BFD+UniRef30, hmmbuild+hmmsearch
pdb_seqres, template featurization from mmCIF, jackhmmer UniProt (heteromer), then pairing and
merging (`pipeline.multimer`).

  serial: every task one after another in this process, unsharded, chain after chain (AlphaFold's
          order; jackhmmer single-threaded, hhblits with min(4, cpus) threads);
  ray:    all chains x databases x shards submitted at once to a local Ray of --cpus CPUs
          (started and warmed up before timing; its start-up time is reported separately).

Chains: A = examples/query.fasta (73 aa, real homologs in every example database), B/C/D = three
proteins of examples/data/background.faa (397, 263, 374 aa; each is in the UniRef90, MGnify and
UniProt stand-ins). `--copies K` repeats the FASTA databases (UniRef90, MGnify, UniProt, small BFD) K times (unique names; UniProt ids
keep their species) to make each search K times longer. Serial and Ray outputs are checked equal.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import shutil
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import numpy as np  # noqa: E402

from pipeline import dag, databases  # noqa: E402
from pipeline.fasta import Chain  # noqa: E402
from pipeline.parsers import parse_fasta  # noqa: E402

BACKGROUND = (1, 3, 5)  # records of examples/data/background.faa used as chains B, C, D


def chains() -> list[Chain]:
    query = open(os.path.join(ROOT, "examples", "query.fasta")).read().split("\n")[1].strip()
    seqs, _ = parse_fasta(open(os.path.join(ROOT, "examples", "data", "background.faa")).read())
    out = [Chain("A", "A example query", query)]
    for cid, i in zip("BCD", BACKGROUND):
        out.append(Chain(cid, f"{cid} background protein {i}", seqs[i].upper().rstrip("*")))
    return out


_UNIPROT = re.compile(r"^>(tr|sp)\|([A-Za-z0-9]+)\|(\S+)")


def _replicate(path: str, copies: int) -> None:
    """Repeat a FASTA database `copies` times with unique record names (copy 0 unchanged; UniProt
    accessions rewritten to 10 characters so the species id still parses)."""
    text = open(path).read()
    parts = [text]
    for k in range(1, copies):
        lines = []
        for line in text.splitlines():
            if line.startswith(">"):
                m = _UNIPROT.match(line)
                line = (f">{m.group(1)}|{m.group(2)[:6]}{k:04d}|{m.group(3)}" if m else f">c{k}_{line[1:]}")
            lines.append(line)
        parts.append("\n".join(lines) + "\n")
    with open(path + ".tmp", "w") as fh:
        fh.write("".join(parts))
    os.replace(path + ".tmp", path)


def build_databases(work: str, copies: int) -> str:
    root = os.path.join(work, f"db_x{copies}")
    if not os.path.exists(os.path.join(root, ".done")):
        shutil.rmtree(root, ignore_errors=True)
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        import build_db
        build_db.build(root)
        for field in ("uniref90_database_path", "mgnify_database_path", "uniprot_database_path",
                      "small_bfd_database_path"):
            _replicate(os.path.join(root, databases.DEFAULT_LAYOUT[field]), copies)
        open(os.path.join(root, ".done"), "w").close()
    return root


def _spin(n: int = 3_000_000) -> float:
    t0 = time.perf_counter()
    x = 0
    for i in range(n):
        x += i * i
    return time.perf_counter() - t0


def effective_cores(cpus: int) -> float:
    """How many cores this process really gets now: a fixed CPU-bound loop alone, then `cpus`
    copies at once (a shared machine gives fewer than its nominal count)."""
    import multiprocessing as mp
    alone = min(_spin() for _ in range(2))
    with mp.get_context("fork").Pool(cpus) as pool:
        t0 = time.perf_counter()
        pool.map(_spin, [3_000_000] * cpus)
        together = time.perf_counter() - t0
    return cpus * alone / together


def run_once(cs, root, work, executor, cpus, tag, db_preset="full_dbs"):
    out = os.path.join(work, f"out_{executor}_{tag}")
    shutil.rmtree(out, ignore_errors=True)
    opts = dag.Options(db_preset=db_preset, model_preset="multimer", use_templates=True,
                       max_template_date="2100-01-01", cpus=cpus, shards=1 if executor == "serial" else None)
    t0 = time.perf_counter()
    summary = dag.run_pipeline(cs, out, databases.resolve(root), opts, executor=executor)
    return time.perf_counter() - t0, summary, out


def _same_features(a: str, b: str) -> bool:
    fa = pickle.load(open(os.path.join(a, "features.pkl"), "rb"))
    fb = pickle.load(open(os.path.join(b, "features.pkl"), "rb"))
    return fa.keys() == fb.keys() and all(np.array_equal(fa[k], fb[k]) for k in fa)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--copies", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default="/tmp/ffmm")
    ap.add_argument("--db-preset", choices=["full_dbs", "reduced_dbs"], default="full_dbs",
                    help="reduced_dbs: jackhmmer on small BFD instead of hhblits on BFD+UniRef30")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    root = build_databases(args.work, args.copies)
    cs = chains()
    t0 = time.perf_counter()
    dag.init_ray(args.cpus)
    ray_start = time.perf_counter() - t0
    run_once(cs[:1], root, args.work, "ray", args.cpus, "warmup")  # Ray workers up, imports done
    res: dict[str, list[float]] = {"serial": [], "ray": []}
    summaries = {}
    load_before = [round(x, 1) for x in os.getloadavg()]
    cores_before = effective_cores(args.cpus)
    for r in range(args.repeats):
        for ex in ("serial", "ray"):
            t, s, out = run_once(cs, root, args.work, ex, args.cpus, str(r), args.db_preset)
            res[ex].append(t)
            summaries[ex] = (s, out)
            print(f"run {r}: {ex:6s} {t:7.2f} s ({s['tasks_run']} tasks, sum of task times "
                  f"{s['task_seconds_sum']:.2f} s, merge {s['multimer_merge_seconds']:.3f} s)", flush=True)
    same = _same_features(summaries["serial"][1], summaries["ray"][1])
    med = {k: statistics.median(v) for k, v in res.items()}
    s_serial = summaries["serial"][0]
    per_kind: dict[str, float] = {}
    for task, rec in s_serial["tasks"].items():
        kind = task.split("/")[1] if "/" in task else task
        per_kind[kind] = per_kind.get(kind, 0.0) + rec["seconds"]
    ex = pickle.load(open(os.path.join(summaries["ray"][1], "features.pkl"), "rb"))
    report = {
        "cpus": args.cpus, "os_cpu_count": os.cpu_count(), "db_preset": args.db_preset,
        "effective_cores_before_after": [round(cores_before, 2), round(effective_cores(args.cpus), 2)],
        "load_average_before": load_before, "load_average_after": [round(x, 1) for x in os.getloadavg()], "copies": args.copies, "repeats": args.repeats,
        "chains": {c.name: len(c.sequence) for c in cs},
        "serial_s": [round(x, 2) for x in res["serial"]], "ray_s": [round(x, 2) for x in res["ray"]],
        "median_serial_s": round(med["serial"], 2), "median_ray_s": round(med["ray"], 2),
        "speedup": round(med["serial"] / med["ray"], 2), "ray_start_s": round(ray_start, 2),
        "serial_seconds_by_task_kind": {k: round(v, 2) for k, v in sorted(per_kind.items())},
        "ray_tasks": summaries["ray"][0]["tasks_run"], "features_equal": same,
        "merged": {"residues": int(ex["seq_length"]), "msa_rows": int(ex["num_alignments"]),
                   "msa_shape": list(ex["msa"].shape)},
    }
    print(json.dumps(report, indent=2))
    if not same:
        raise SystemExit("serial and Ray features differ")


if __name__ == "__main__":
    main()
