"""Measure the DAG against the same searches run one after another (docs/BENCHMARKS.md).

    python -m pipeline.bench --cpus 8 --copies 60 --work /tmp/ffbench

Databases: the real 2,122-protein pyhmmer test database (tests/data/pipeline/pyhmmer/db.faa.gz)
replicated `--copies` times with unique names (uniref90), half as many for mgnify and small_bfd,
so that one search takes seconds. Queries: real LuxC proteins of that database. Preset reduced_dbs,
no templates (3 jackhmmer databases per chain). Reports wall time of `serial` (one task after the
other, each single-threaded, unsharded) and `ray` (all chains x databases x shards at once).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import time

from pipeline import dag, databases
from pipeline.fasta import Chain

HERE = os.path.dirname(os.path.abspath(__file__))
DB = os.path.join(HERE, "..", "tests", "data", "pipeline", "pyhmmer", "db.faa.gz")
LUXC = os.path.join(HERE, "..", "tests", "data", "pipeline", "pyhmmer", "LuxC.faa")


def make_databases(work: str, copies: int) -> str:
    """AlphaFold layout under work/db with replicated real sequences."""
    text = gzip.open(DB, "rt").read()
    records = [r for r in text.split(">")[1:]]
    root = os.path.join(work, "db")
    sizes = {"uniref90_database_path": copies, "mgnify_database_path": max(1, copies // 2),
             "small_bfd_database_path": max(1, copies // 2)}
    for field, n in sizes.items():
        path = os.path.join(root, databases.DEFAULT_LAYOUT[field])
        if os.path.exists(path):
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as fh:
            for c in range(n):
                for r in records:
                    fh.write(f">c{c}_{r}")
        os.replace(path + ".tmp", path)
    return root


def queries(n: int) -> list[Chain]:
    from pipeline.parsers import parse_fasta
    seqs, descs = parse_fasta(open(LUXC).read())
    return [Chain(chr(ord("A") + i), chr(ord("A") + i), s.upper()) for i, s in enumerate(seqs[:n])]


def run(chains, root, work, executor, cpus, shards):
    out = os.path.join(work, f"out_{executor}_{len(chains)}")
    shutil.rmtree(out, ignore_errors=True)
    opts = dag.Options(db_preset="reduced_dbs", use_templates=False, cpus=cpus, shards=shards)
    t0 = time.time()
    summary = dag.run_pipeline(chains, out, databases.resolve(root), opts, executor=executor)
    return time.time() - t0, summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--copies", type=int, default=60)
    ap.add_argument("--work", default="/tmp/ffbench")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = make_databases(args.work, args.copies)
    dag.init_ray(args.cpus)
    run([queries(1)[0]], root, args.work, "ray", args.cpus, None)  # warm up Ray workers
    results = {}
    for n in (1, 4):
        chains = queries(n)
        t_serial, s_serial = run(chains, root, args.work, "serial", args.cpus, 1)
        t_ray, s_ray = run(chains, root, args.work, "ray", args.cpus, None)
        longest = max(v["seconds"] for k, v in s_serial["tasks"].items() if "/shard-" in k)
        results[n] = {"serial_s": round(t_serial, 2), "ray_s": round(t_ray, 2),
                      "speedup": round(t_serial / t_ray, 2),
                      "longest_single_search_s": round(longest, 2),
                      "ray_tasks": s_ray["tasks_run"]}
        print(f"{n} chain(s) x 3 databases: serial {t_serial:.2f} s, ray {t_ray:.2f} s "
              f"({t_serial / t_ray:.2f}x), longest unsharded search {longest:.2f} s, "
              f"{s_ray['tasks_run']} ray tasks", flush=True)
    print(json.dumps({"cpus": args.cpus, "copies": args.copies, "results": results}, indent=2))


if __name__ == "__main__":
    main()
