"""Targets per hour of one `fastfold predict DIR` batch against the same targets run one after
another with single-mode `fastfold predict` (issue 10: a batch of 20 small proteins on the GPU
machine, 16 cores and 1 GPU).

    python3 scripts/batch_throughput.py --work /tmp/ffbatch --device cuda --json /tmp/ffbatch/report.json

Targets: the first `--n-targets` proteins of examples/data/background.faa (real proteins of a
proGenomes proteome, see examples/SOURCE.md) of 50-200 residues made only of the 20 standard amino
acids, written as WORK/targets/t01.fasta ... (record names t01, t02, ...).
Databases: reduced_dbs in AlphaFold's layout under WORK/db_x<K>, built by `pipeline.bench`
from the real 2,122-protein pyhmmer test database (which holds that proteome, so each query finds
itself and its homologs): UniRef90 = K copies, MGnify and small BFD = K/2 copies (`--db-copies K`,
default 1). jackhmmer runs in pyhmmer: no HMMER/HH-suite binaries needed, no templates.

Both modes run the same command-line options, each from empty output directories:
  sequential: `python3 -m fastfold_cli predict WORK/targets/tNN.fasta --out WORK/sequential/tNN ...`
              for every target, one after another, each a fresh process (its own local Ray for the
              searches, its own model load and kernel warm-up);
  batch:      one `python3 -m fastfold_cli predict WORK/targets --out WORK/batch ...`.
Options of both: --db-dir WORK/db_x<K> --db-preset reduced_dbs --no-templates --random-params
--models MODELS --num-recycles R [--device D] --max-template-date 2100-01-01.

Reports wall seconds and targets/hour (finished targets x 3600 / wall) of each mode, their ratio,
every target's status and seconds, and whether both modes wrote the same ranked_0.pdb coordinates
(max |difference|, Å; same features, seed and random parameters, so equal up to GPU nondeterminism).
Exits 1 (after writing the report) when a target failed or lacks ranked_0.pdb in either mode.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BACKGROUND = os.path.join(ROOT, "examples", "data", "background.faa")
STANDARD = re.compile(r"[ACDEFGHIKLMNPQRSTVWY]+")


def pick_sequences(n: int, min_len: int, max_len: int) -> list[tuple[str, str]]:
    """(source record id, sequence) of the first n proteins of the background proteome in range."""
    from pipeline.parsers import parse_fasta
    seqs, descs = parse_fasta(open(BACKGROUND).read())
    picked = []
    for s, d in zip(seqs, descs):
        s = s.upper().rstrip("*")
        if min_len <= len(s) <= max_len and STANDARD.fullmatch(s):
            picked.append((d.split()[0], s))
        if len(picked) == n:
            return picked
    raise SystemExit(f"only {len(picked)} proteins of {min_len}-{max_len} residues in {BACKGROUND}")


def write_targets(work: str, picked) -> tuple[str, list[str]]:
    """WORK/targets/tNN.fasta; a file already holding the same record is left alone, so runs of
    the same targets may start side by side (batch and sequential halves on separate GPUs)."""
    tdir = os.path.join(work, "targets")
    os.makedirs(tdir, exist_ok=True)
    names = []
    for i, (_, seq) in enumerate(picked, 1):
        name = f"t{i:02d}"
        path, text = os.path.join(tdir, f"{name}.fasta"), f">{name}\n{seq}\n"
        if not (os.path.isfile(path) and open(path).read() == text):
            with open(path + f".{os.getpid()}.tmp", "w") as fh:
                fh.write(text)
            os.replace(path + f".{os.getpid()}.tmp", path)
        names.append(name)
    stale = [f for f in os.listdir(tdir) if f.endswith(".fasta") and f not in {f"{n}.fasta" for n in names}]
    for f in stale:  # a batch folds every FASTA of the folder
        os.remove(os.path.join(tdir, f))
    return tdir, names


def env() -> dict:
    e = dict(os.environ, RAY_AUTH_MODE=os.environ.get("RAY_AUTH_MODE", "disabled"))
    e["PYTHONPATH"] = os.pathsep.join(x for x in (ROOT, os.environ.get("PYTHONPATH")) if x)
    return e


def predict_cmd(inp: str, out: str, args, db_root: str) -> list[str]:
    cmd = [sys.executable, "-m", "fastfold_cli", "predict", inp, "--out", out, "--db-dir", db_root,
           "--db-preset", "reduced_dbs", "--no-templates", "--max-template-date", "2100-01-01",
           "--random-params", "--models", args.models, "--num-recycles", str(args.num_recycles)]
    if args.device:
        cmd += ["--device", args.device]
    if args.cpus:
        cmd += ["--cpus", str(args.cpus)]
    return cmd


def ca_coords(path: str) -> list[tuple[float, float, float]]:
    out = []
    for line in open(path):
        if line.startswith("ATOM") and line[12:16].strip() == "CA":
            out.append((float(line[30:38]), float(line[38:46]), float(line[46:54])))
    return out


def max_ca_diff(a: str, b: str):
    if not (os.path.isfile(a) and os.path.isfile(b)):
        return None
    ca, cb = ca_coords(a), ca_coords(b)
    if len(ca) != len(cb) or not ca:
        return None
    return round(max(abs(x - y) for p, q in zip(ca, cb) for x, y in zip(p, q)), 3)


def has_ranked(d: str) -> bool:
    p = os.path.join(d, "ranked_0.pdb")
    return os.path.isfile(p) and os.path.getsize(p) > 0


def run_sequential(args, tdir, names, db_root) -> dict:
    out_root = os.path.join(args.work, "sequential")
    logs = os.path.join(args.work, "logs")
    os.makedirs(logs, exist_ok=True)
    targets = {}
    t0 = time.time()
    for i, name in enumerate(names, 1):
        shutil.rmtree(os.path.join(out_root, name), ignore_errors=True)  # from empty, as the batch
        t1 = time.time()
        log = os.path.join(logs, f"sequential_{name}.log")
        with open(log, "w") as fh:
            rc = subprocess.call(predict_cmd(os.path.join(tdir, f"{name}.fasta"), os.path.join(out_root, name),
                                             args, db_root), stdout=fh, stderr=subprocess.STDOUT, env=env(), cwd=ROOT)
        sec = time.time() - t1
        ok = rc == 0 and has_ranked(os.path.join(out_root, name))
        rec = {"status": "ok" if ok else "failed", "seconds": round(sec, 2), "returncode": rc}
        if not ok:
            rec["error"] = (f"exit code {rc}" if rc else "no ranked_0.pdb") + f": {_last_error(log)} (log: {log})"
        tim = _load(os.path.join(out_root, name, "timings.json")) or {}
        if "features" in tim:
            rec["search_seconds"] = round(tim["features"], 2)
        targets[name] = rec
        print(f"sequential [{i}/{len(names)}] {name}: {rec['status']} ({sec:.1f} s)", file=sys.stderr, flush=True)
    wall = time.time() - t0
    return _mode(targets, wall)


def run_batch(args, tdir, names, db_root) -> dict:
    out = os.path.join(args.work, "batch")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(args.work, "logs"), exist_ok=True)
    log = os.path.join(args.work, "logs", "batch.log")
    t0 = time.time()
    with open(log, "w") as fh:
        rc = subprocess.call(predict_cmd(tdir, out, args, db_root) + ["--no-progress"], stdout=fh,
                             stderr=subprocess.STDOUT, env=env(), cwd=ROOT)
    wall = time.time() - t0
    summary = _load(os.path.join(out, "batch_summary.json")) or {}
    recs = summary.get("targets", {})
    targets = {}
    for name in names:
        r = recs.get(name, {})
        ok = r.get("status") == "ok" and has_ranked(os.path.join(out, name))
        rec = {"status": "ok" if ok else "failed"}
        for k in ("seconds", "search_seconds", "fold_seconds"):
            if r.get(k) is not None:
                rec[k] = round(r[k], 2)
        if not ok:
            why = r.get("error") or ("no ranked_0.pdb" if r.get("status") == "ok"
                                     else f"status {r.get('status', 'missing')}: {_last_error(log)}")
            rec["error"] = f"{why} (log: {log})"
        targets[name] = rec
    res = _mode(targets, wall)
    res.update(returncode=rc, batch_summary_wall_seconds=summary.get("wall_seconds"),
               batch_summary_targets_per_hour=summary.get("targets_per_hour"), workers=summary.get("workers"),
               searches=summary.get("searches"))
    print(f"batch: {res['ok']}/{len(names)} ok in {wall:.1f} s (exit code {rc})", file=sys.stderr, flush=True)
    return res


def _last_error(log: str) -> str:
    """The last 'Error:' line of a predict log (else its last line)."""
    try:
        lines = [l.strip() for l in open(log, errors="replace") if l.strip()]
    except OSError:
        return ""
    errs = [l for l in lines if l.startswith("Error:")]
    return (errs or lines or [""])[-1][:300]


def _mode(targets: dict, wall: float) -> dict:
    ok = sum(1 for r in targets.values() if r["status"] == "ok")
    return {"wall_seconds": round(wall, 2), "ok": ok, "failed": [n for n, r in targets.items() if r["status"] != "ok"],
            "targets_per_hour": round(ok * 3600.0 / max(wall, 1e-9), 2), "targets": targets}


def _load(path: str):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


def machine() -> dict:
    info = {"hostname": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    try:
        import torch
        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    try:
        info["commit"] = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                                                 stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return info


def finish(report: dict, path: str, work: str) -> None:
    """Ratio and structure check, the report file, one printed line; exit 1 on any failed target
    (or, for a merged report, a target the sequential parts did not run)."""
    names = list(report["targets"])
    seq, bat = report.get("sequential"), report.get("batch")
    if seq and bat:
        report["ratio_batch_over_sequential"] = (round(bat["targets_per_hour"] / seq["targets_per_hour"], 2)
                                                 if seq["targets_per_hour"] else None)
        report["ranked_0_max_ca_diff_A"] = {
            n: max_ca_diff(os.path.join(work, "sequential", n, "ranked_0.pdb"),
                           os.path.join(work, "batch", n, "ranked_0.pdb")) for n in names}
    with open(path + ".tmp", "w") as fh:
        json.dump(report, fh, indent=2)
    os.replace(path + ".tmp", path)
    lens = [t["length"] for t in report["targets"].values()]
    st = report["settings"]
    parts = [f"{len(names)} targets ({min(lens)}-{max(lens)} aa, {','.join(st['models'])}, "
             f"{st['num_recycles']} recycles)"]
    for mode, r in (("sequential", seq), ("batch", bat)):
        if r:
            parts.append(f"{mode} {r['wall_seconds']:.1f} s = {r['targets_per_hour']:.1f} targets/h "
                         f"({r['ok']}/{len(r['targets'])} ok)")
    if report.get("ratio_batch_over_sequential") is not None:
        parts.append(f"batch/sequential {report['ratio_batch_over_sequential']:.2f}x")
    print("; ".join(parts) + f" -> {path}", flush=True)
    bad = False
    for m, r in (("sequential", seq), ("batch", bat)):
        for n in (r["failed"] if r else []):
            print(f"FAILED {m} {n}: {r['targets'][n].get('error')}", file=sys.stderr)
            bad = True
    if seq and "parts" in seq and set(seq["targets"]) != set(names):
        print(f"FAILED sequential: targets not run: {sorted(set(names) - set(seq['targets']))}", file=sys.stderr)
        bad = True
    if bad:
        sys.exit(1)


def merge(paths: list[str], out: str) -> None:
    """One report from several runs of the same targets and settings: sequential parts
    (--seq-range) added up (walls summed: they ran one after another), the batch from the run that
    has one."""
    reports = [json.load(open(p)) for p in paths]
    base = dict(reports[0])
    for r in reports[1:]:
        if r["targets"] != base["targets"] or r["settings"] != base["settings"]:
            raise SystemExit(f"cannot merge: different targets or settings in {paths}")
    seqs = [r["sequential"] for r in reports if r.get("sequential")]
    bats = [r["batch"] for r in reports if r.get("batch")]
    if len(bats) > 1:
        raise SystemExit("cannot merge: more than one batch run")
    targets: dict = {}
    for s in seqs:
        if set(s["targets"]) & set(targets):
            raise SystemExit("cannot merge: a target was run sequentially twice")
        targets.update(s["targets"])
    base.pop("sequential", None)
    base.pop("batch", None)
    if seqs:
        merged = _mode({n: targets[n] for n in base["targets"] if n in targets}, sum(s["wall_seconds"] for s in seqs))
        merged["parts"] = [{"range": s.get("range"), "wall_seconds": s["wall_seconds"]} for s in seqs]
        base["sequential"] = merged
    if bats:
        base["batch"] = bats[0]
    base["merged_from"] = paths
    finish(base, out, base["work"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-targets", type=int, default=20)
    ap.add_argument("--work", default="/tmp/ffbatch", help="targets, databases, outputs and logs go here")
    ap.add_argument("--num-recycles", type=int, default=3)
    ap.add_argument("--models", default="model_1_ptm", help="comma-separated presets (random parameters)")
    ap.add_argument("--device", default=None, help="cpu, cuda (default: predict's, cuda when available)")
    ap.add_argument("--cpus", type=int, default=None, help="--cpus of every predict (default: all)")
    ap.add_argument("--db-copies", type=int, default=1, help="copies of the 2,122-protein database (UniRef90)")
    ap.add_argument("--min-length", type=int, default=50)
    ap.add_argument("--max-length", type=int, default=200)
    ap.add_argument("--json", default=None, help="also write the report here (default: WORK/report.json)")
    ap.add_argument("--skip-sequential", action="store_true", help="run the batch only")
    ap.add_argument("--skip-batch", action="store_true", help="run the sequential loop only")
    ap.add_argument("--seq-range", default=None, metavar="A:B",
                    help="run only targets A..B (1-based, inclusive) one after another, so the sequential loop "
                         "can be split over several calls; join the reports with --merge")
    ap.add_argument("--merge", nargs="+", default=None, metavar="REPORT",
                    help="only combine these reports (sequential parts summed, the batch) into --json")
    args = ap.parse_args()
    if args.merge:
        merge(args.merge, args.json or os.path.join(args.work, "report.json"))
        return
    os.makedirs(args.work, exist_ok=True)

    from pipeline import bench
    picked = pick_sequences(args.n_targets, args.min_length, args.max_length)
    tdir, names = write_targets(args.work, picked)
    db_root = bench.make_databases(args.work, args.db_copies)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(), "n_targets": len(names), "work": os.path.abspath(args.work),
        "settings": {"models": args.models.split(","), "num_recycles": args.num_recycles, "device": args.device,
                     "db_preset": "reduced_dbs", "templates": False, "random_params": True,
                     "db_copies": args.db_copies, "cpus": args.cpus},
        "databases": bench.database_sizes(db_root, False),
        "targets": {n: {"source": src, "length": len(s)} for n, (src, s) in zip(names, picked)},
        "command_sequential": " ".join(predict_cmd(os.path.join(tdir, "tNN.fasta"),
                                                   os.path.join(args.work, "sequential", "tNN"), args, db_root)),
        "command_batch": " ".join(predict_cmd(tdir, os.path.join(args.work, "batch"), args, db_root)
                                  + ["--no-progress"]),
    }
    if not args.skip_sequential:
        seq_names = names
        if args.seq_range:
            a, b = (int(x) for x in args.seq_range.split(":"))
            seq_names = names[a - 1:b]
        report["sequential"] = run_sequential(args, tdir, seq_names, db_root)
        if args.seq_range:
            report["sequential"]["range"] = args.seq_range
    if not args.skip_batch:
        report["batch"] = run_batch(args, tdir, names, db_root)
    finish(report, args.json or os.path.join(args.work, "report.json"), args.work)


if __name__ == "__main__":
    main()
