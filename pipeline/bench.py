"""Measure the DAG against the same searches run one after another (docs/BENCHMARKS.md).

    python -m pipeline.bench --cpus 8 --copies 60 --work /tmp/ffbench
    python -m pipeline.bench --cpus 16 --copies 200 --model-preset multimer --json /tmp/mm.json

Databases: the real 2,122-protein pyhmmer test database (tests/data/pipeline/pyhmmer/db.faa.gz)
replicated `--copies` times with unique names (uniref90), half as many for mgnify and small_bfd,
so that one search takes seconds; the multimer preset adds a UniProt stand-in replicated `--copies`
times whose UniProt entries (the database's LuxC and PKSI proteins, `sp|ACC|NAME_SPECIES`) keep
their species, so the 4 chains' UniProt hits really pair. Queries: real LuxC proteins of that
database (~480 aa). Preset reduced_dbs, no templates (no binaries needed: jackhmmer is pyhmmer).

  monomer (default): 1 chain, then 4 chains, 3 jackhmmer databases per chain (uniref90, mgnify,
          small_bfd), each chain its own monomer run.
  multimer: one 4-chain heteromer (4 different LuxC proteins) as AlphaFold-Multimer preprocesses
          it: per chain uniref90, mgnify, small_bfd and the UniProt search used for pairing, then
          per-chain features, pairing and merging (`pipeline.multimer`) into features.pkl/.npz.

Reports wall time of `serial` (one task after the other in this process, each single-threaded,
unsharded) and `ray` (all chains x databases x shards at once, shards = CPUs / unique chains,
Z = whole database) on a local Ray of `--cpus` CPUs, started and warmed up before timing (its
start-up time is reported apart). The features both runs wrote are checked equal.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import re
import shutil
import statistics
import time

from pipeline import dag, databases
from pipeline.fasta import Chain

HERE = os.path.dirname(os.path.abspath(__file__))
DB = os.path.join(HERE, "..", "tests", "data", "pipeline", "pyhmmer", "db.faa.gz")
LUXC = os.path.join(HERE, "..", "tests", "data", "pipeline", "pyhmmer", "LuxC.faa")
_UNIPROT = re.compile(r"^(tr|sp)\|([A-Za-z0-9]+)\|(\S+)")


def _uniprot_name(header: str, copy: int) -> str:
    """A unique record name for copy `copy`: UniProt entries keep a parseable accession (<= 10
    characters) and their species mnemonic (copy 0 unchanged), other records get a `c<copy>_` prefix."""
    m = _UNIPROT.match(header)
    if not m:
        return f"c{copy}_{header}"
    if copy == 0:
        return header
    return f"{m.group(1)}|{m.group(2)[:6]}{copy:04d}|{m.group(3)}{header[m.end():]}"


def make_databases(work: str, copies: int, multimer: bool = False) -> str:
    """AlphaFold layout under work/db_x<copies> with replicated real sequences (kept between runs)."""
    text = gzip.open(DB, "rt").read()
    records = [r for r in text.split(">")[1:]]
    root = os.path.join(work, f"db_x{copies}")
    sizes = {"uniref90_database_path": copies, "mgnify_database_path": max(1, copies // 2),
             "small_bfd_database_path": max(1, copies // 2)}
    if multimer:
        sizes["uniprot_database_path"] = copies
    for field, n in sizes.items():
        path = os.path.join(root, databases.DEFAULT_LAYOUT[field])
        if os.path.exists(path):
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as fh:
            for c in range(n):
                for r in records:
                    if field == "uniprot_database_path":
                        header, _, rest = r.partition("\n")
                        fh.write(f">{_uniprot_name(header, c)}\n{rest}")
                    else:
                        fh.write(f">c{c}_{r}")
        os.replace(path + ".tmp", path)
    return root


def database_sizes(root: str, multimer: bool) -> dict:
    """Sequences and MB of each database the run searches."""
    fields = ["uniref90_database_path", "mgnify_database_path", "small_bfd_database_path"]
    fields += ["uniprot_database_path"] if multimer else []
    out = {}
    for f in fields:
        path = os.path.join(root, databases.DEFAULT_LAYOUT[f])
        with open(path, "rb") as fh:
            n = sum(chunk.count(b">") for chunk in iter(lambda: fh.read(1 << 24), b""))
        out[f.replace("_database_path", "")] = {"sequences": n, "mb": round(os.path.getsize(path) / 1e6, 1)}
    return out


def queries(n: int) -> list[Chain]:
    from pipeline.parsers import parse_fasta
    seqs, descs = parse_fasta(open(LUXC).read())
    return [Chain(chr(ord("A") + i), chr(ord("A") + i), s.upper()) for i, s in enumerate(seqs[:n])]


def run(chains, root, work, executor, cpus, shards, model_preset="monomer"):
    out = os.path.join(work, f"out_{model_preset}_{executor}_{len(chains)}")
    shutil.rmtree(out, ignore_errors=True)
    opts = dag.Options(db_preset="reduced_dbs", use_templates=False, cpus=cpus, shards=shards,
                       model_preset=model_preset)
    t0 = time.time()
    summary = dag.run_pipeline(chains, out, databases.resolve(root), opts, executor=executor)
    return time.time() - t0, summary, out


def task_kinds(summary: dict) -> dict:
    """Tasks run, by kind: '<db> shard' (one jackhmmer shard), '<db> merge', 'count', 'features'."""
    kinds: dict[str, int] = {}
    for tid, rec in summary["tasks"].items():
        if rec.get("cached"):
            continue
        parts = tid.split("/")
        if parts[0] == "count":
            kind = "count"
        elif len(parts) == 3:
            kind = f"{parts[1]} shard"
        elif parts[1] == "features":
            kind = "features"
        else:
            kind = f"{parts[1]} merge"
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def seconds_by_database(summary: dict) -> dict:
    """Summed task seconds per database (serial run: each database's search time)."""
    out: dict[str, float] = {}
    for tid, rec in summary["tasks"].items():
        parts = tid.split("/")
        key = "count" if parts[0] == "count" else parts[1]
        out[key] = out.get(key, 0.0) + rec["seconds"]
    return {k: round(v, 2) for k, v in sorted(out.items())}


def same_features(a: str, b: str) -> bool:
    """Every features.pkl the two runs wrote (per chain, and the merged one) is equal."""
    import numpy as np

    def files(d):
        return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs
                      if f in ("features.pkl", "features.npz") and ".cache" not in r)

    if files(a) != files(b) or not files(a):
        return False
    for rel in files(a):
        if rel.endswith(".npz"):
            with np.load(os.path.join(a, rel)) as za, np.load(os.path.join(b, rel)) as zb:
                if za.files != zb.files or not all(np.array_equal(za[k], zb[k]) for k in za.files):
                    return False
            continue
        fa = pickle.load(open(os.path.join(a, rel), "rb"))
        fb = pickle.load(open(os.path.join(b, rel), "rb"))
        if fa.keys() != fb.keys() or not all(np.array_equal(fa[k], fb[k]) for k in fa):
            return False
    return True


def merged_stats(merged: dict) -> dict:
    """Size of the merged multimer MSA and its rows holding residues of more than one chain (the
    query row and the species-paired rows)."""
    import numpy as np
    rows = int(np.asarray(merged["num_alignments"]).reshape(-1)[0])
    msa = np.asarray(merged["msa"])[:rows]
    asym = np.asarray(merged["asym_id"]).reshape(-1)
    present = np.stack([(msa[:, asym == a] != 21).any(-1) for a in np.unique(asym)], -1)
    return {"residues": int(msa.shape[1]), "msa_rows": rows, "rows_with_several_chains": int((present.sum(-1) > 1).sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpus", type=int, default=os.cpu_count())
    ap.add_argument("--copies", type=int, default=60)
    ap.add_argument("--work", default="/tmp/ffbench")
    ap.add_argument("--model-preset", choices=["monomer", "multimer"], default="monomer",
                    help="multimer: one 4-chain heteromer with UniProt pairing searches")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each mode (serial_s/ray_s: the medians)")
    ap.add_argument("--json", default=None, help="also write the JSON report to this file")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    multimer = args.model_preset == "multimer"
    t0 = time.time()
    root = make_databases(args.work, args.copies, multimer)
    db_build = time.time() - t0
    t0 = time.time()
    dag.init_ray(args.cpus)
    run([queries(1)[0]], root, args.work, "ray", args.cpus, None)  # warm up Ray workers
    ray_start = time.time() - t0
    results = {}
    for n in ((4,) if multimer else (1, 4)):
        chains = queries(n)
        runs: dict[str, list[float]] = {"serial": [], "ray": []}
        for _ in range(args.repeats):
            t_serial, s_serial, out_serial = run(chains, root, args.work, "serial", args.cpus, 1, args.model_preset)
            t_ray, s_ray, out_ray = run(chains, root, args.work, "ray", args.cpus, None, args.model_preset)
            runs["serial"].append(t_serial)
            runs["ray"].append(t_ray)
        t_serial, t_ray = statistics.median(runs["serial"]), statistics.median(runs["ray"])
        longest = max(v["seconds"] for k, v in s_serial["tasks"].items() if "/shard-" in k)
        rec = {"serial_s": round(t_serial, 2), "ray_s": round(t_ray, 2),
               "speedup": round(t_serial / t_ray, 2),
               "longest_single_search_s": round(longest, 2),
               "ray_tasks": s_ray["tasks_run"]}
        rec.update({
            "serial_runs_s": [round(x, 2) for x in runs["serial"]], "ray_runs_s": [round(x, 2) for x in runs["ray"]],
            "serial_tasks": s_serial["tasks_run"], "serial_task_kinds": task_kinds(s_serial),
            "ray_task_kinds": task_kinds(s_ray),
            "ray_max_shards_per_database": 1 + max(int(k.rsplit("-", 1)[1]) for k in s_ray["tasks"] if "/shard-" in k),
            "ray_task_seconds_sum": round(s_ray["task_seconds_sum"], 2),
            "serial_seconds_by_database": seconds_by_database(s_serial),
            "chain_lengths": {c.name: len(c.sequence) for c in chains},
            "features_equal": same_features(out_serial, out_ray),
        })
        if multimer:
            rec["multimer_merge_s"] = {"serial": round(s_serial["multimer_merge_seconds"], 3),
                                       "ray": round(s_ray["multimer_merge_seconds"], 3)}
            merged = pickle.load(open(os.path.join(out_ray, "features.pkl"), "rb"))
            rec["merged"] = merged_stats(merged)
        results[n] = rec
        what = "heteromer, 4 databases per chain" if multimer else "x 3 databases"
        print(f"{n} chain(s) {what}: serial {t_serial:.2f} s, ray {t_ray:.2f} s "
              f"({t_serial / t_ray:.2f}x), longest unsharded search {longest:.2f} s, "
              f"{s_ray['tasks_run']} ray tasks", flush=True)
    report = {"cpus": args.cpus, "copies": args.copies, "results": results}
    report.update({"model_preset": args.model_preset, "db_preset": "reduced_dbs", "templates": False,
                   "os_cpu_count": os.cpu_count(), "repeats": args.repeats,
                   "load_average_after": [round(x, 1) for x in os.getloadavg()],
                   "databases": database_sizes(root, multimer), "db_build_s": round(db_build, 1),
                   "ray_start_and_warmup_s": round(ray_start, 2)})
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        dag.atomic_write(args.json, text + "\n")
    if not all(r["features_equal"] for r in results.values()):
        raise SystemExit("serial and Ray features differ")


if __name__ == "__main__":
    main()
