"""`fastfold predict` on many targets, on a Ray cluster (local, or `--ray-address`).

    fastfold predict a.fasta b.fasta ... --out OUT          # one target per file
    fastfold predict proteome/ --out OUT                    # every *.fasta/*.fa/*.faa/*.fas in it
    fastfold predict library.fasta --batch --out OUT        # one target per record

- A multi-record file (without --batch) is a complex, folded with AlphaFold-Multimer as single mode
  folds it (the five multimer_v3 presets unless --models names some; features.npz, chains A, B, ...,
  ranked by 0.8 ipTM + 0.2 pTM) on one GPU (no DAP for complexes in a batch). --models may mix
  monomer and multimer presets: each target runs those of its kind, and a target with none of its
  kind fails with single mode's reason.

- Searches: one search DAG (`pipeline.batch`, built on `pipeline.dag`) over the distinct sequences
  of every target, so identical sequences are searched once; its tasks run wherever CPUs are free.
- Folding: one `FoldWorker` actor per GPU of the cluster (`num_gpus=1`, one CPU; CPU-only clusters,
  or `--device cpu`: one actor holding half a node's CPUs as torch threads). Each loads each
  preset's parameters once (kept between targets), and takes the longest target whose features
  are ready next; the memory planner is sized to its own GPU's free memory (or `--max-memory`). A target runs exactly as single mode (`predict.predict_target`), so
  OUT/<target>/ is laid out as a single `fastfold predict --out OUT/<target>`.
- A target that does not fit one worker's GPU (the planner, world 1) but fits P = 2, 4, ... GPUs
  (`Problem(world=P)`) is folded with DAP on P GPUs of one node, as `predict --gpus P` folds it: the
  driver holds that node's workers as they finish, replaces P of them by one `FoldWorker` actor of
  `num_gpus=P` (which launches the P DAP processes), and restarts them afterwards. A target that
  needs more GPUs than any node has fails with that reason; the others go on.
- A failing target (bad FASTA, failed search, every model failed) is reported and the others go on;
  a target whose worker died is retried on the restarted worker (up to MAX_ATTEMPTS); a rerun skips
  finished targets and resumes unfinished ones model by model; exit code 1 if any target failed.
- Progress for the whole batch (rich), a summary table, and OUT/batch_summary.json.

OUT and the databases must be at the same paths on every node (a shared file system).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import click

from pipeline.errors import InputError
from pipeline.fasta import Chain

FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fas")
MAX_ATTEMPTS = 3          # a target whose worker dies is tried this many times in all
SEARCH_CACHE = ".search_cache"
MAX_PROBE_FAILURES = 120  # a worker that has not come back after ~2 minutes of restarting is lost
DAP_MAX_GPUS = 64         # the most GPUs the planner is asked about for one target (P = 2, 4, ..., 64)
BATCH_LOGS = "batch_logs"  # OUT/batch_logs/<target>.log and <target>.running.json


@dataclasses.dataclass
class Target:
    name: str
    source: str
    chains: Optional[list[Chain]] = None  # one; several: a complex (AlphaFold-Multimer)
    error: Optional[str] = None    # a target that cannot run (bad FASTA, no preset of its kind)

    @property
    def is_complex(self) -> bool:
        return bool(self.chains) and len(self.chains) > 1

    @property
    def length(self) -> int:
        """Total residues (of every chain of a complex)."""
        return sum(len(c.sequence) for c in self.chains) if self.chains else 0


# --- inputs ------------------------------------------------------------------------------------

def collect_targets(paths, per_record: bool = False) -> list[Target]:
    """Targets from FASTA files and directories of them (sorted). per_record: every record of a file
    is a target named by its record; else a file is a target named by its stem, and a multi-record
    file is a complex (AlphaFold-Multimer). A FASTA that does not parse is a failed target too, so one
    bad file does not stop a proteome. Raises InputError for a missing path, a directory without
    FASTA files, two targets of the same name."""
    from pipeline.fasta import read_fasta

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in FASTA_SUFFIXES)
            if not found:
                raise InputError(f"{p}: no FASTA files ({', '.join('*' + s for s in FASTA_SUFFIXES)})")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{p}: no such file or directory")
    targets: list[Target] = []
    for f in files:
        try:
            chains = read_fasta(f)
        except InputError as e:
            targets.append(Target(f.stem, str(f), error=str(e)))
            continue
        if per_record:
            targets += [Target(c.name, str(f), chains=[c]) for c in chains]
        else:
            targets.append(Target(f.stem, str(f), chains=chains))
    seen: dict[str, str] = {}
    for t in targets:
        if t.name in seen:
            raise InputError(f"two targets named '{t.name}' ({seen[t.name]} and {t.source}); "
                             "target names must be unique")
        if t.name.startswith(".") or t.name == BATCH_LOGS:
            raise InputError(f"{t.source}: '{t.name}' cannot be a target name (OUT/{t.name} is the batch's own)")
        seen[t.name] = t.source
    return targets


def has_features(d: Path, chains) -> bool:
    """`d` holds the features single mode would fold for these chains: features.pkl of this
    sequence; a complex: features.npz and multimer_chain_map.json of these sequences."""
    from fastfold_cli.predict import _read_features
    from pipeline.batch import features_sequence

    if len(chains) == 1:
        return features_sequence(str(Path(d) / "features.pkl")) == chains[0].sequence
    try:
        return _read_features(Path(d), chains, True) is not None
    except Exception:  # noqa: BLE001 - a damaged or foreign file is simply not reusable
        return False


def finished_scores(target_dir: Path, settings, chains) -> Optional[dict]:
    """Scores of a target a previous run finished with these settings (every model and seed has its
    result, the ranking is written, features are for these chains' sequences), else None."""
    debug = _load_json(target_dir / "ranking_debug.json")
    if not debug or not debug.get("order"):
        return None
    names = [n for n, _, _ in settings.names()]
    if set(debug["order"]) != set(names):
        return None
    for n in names:
        if not (target_dir / f"unrelaxed_{n}.pdb").is_file() or not (target_dir / f"result_{n}.json").is_file():
            return None
        if settings.relax and not (target_dir / f"relaxed_{n}.pdb").is_file():
            return None
    if not (target_dir / "ranked_0.pdb").is_file() or not has_features(target_dir, chains):
        return None
    return _scores(target_dir, debug["order"])


def _scores(target_dir: Path, order) -> dict:
    best = _load_json(target_dir / f"result_{order[0]}.json") or {}
    scores = {"best_model": order[0], "mean_plddt": best.get("mean_plddt"), "ptm": best.get("ptm")}
    if "iptm" in best:  # a complex: ranked by 0.8 ipTM + 0.2 pTM
        scores.update(iptm=best["iptm"], ranking_confidence=best.get("ranking_confidence"))
    return scores


def _load_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# --- the folding worker (a Ray actor) ------------------------------------------------------------

class FoldWorker:
    """Folds targets one at a time on its own device (Ray gives it one GPU: cuda:0 here), keeping
    every preset's loaded model between targets. `multimer_settings`: what a complex runs."""

    def __init__(self, settings, device: Optional[str], multimer_settings=None):
        from fastfold_cli.predict import ModelCache, resolve_device
        self.settings = settings
        self.multimer_settings = multimer_settings
        # device None: this worker's GPU when it has a usable one (Ray sets CUDA_VISIBLE_DEVICES), else the CPU
        self.device = device if device in ("cpu", "cuda") else resolve_device(None)
        random = settings.param_paths is None
        presets = len(settings.model_names) + (len(multimer_settings.model_names) if multimer_settings else 0)
        self.models = ModelCache(presets * (settings.num_seeds if random else 1))
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        if self.device == "cpu":  # as many torch threads as CPUs Ray gave this worker
            import ray
            import torch
            torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))

    def info(self) -> dict:
        import ray
        import torch
        return {"worker": self.worker, "device": self.device, "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                "torch_threads": torch.get_num_threads(), "node_id": ray.get_runtime_context().get_node_id()}

    def fold(self, name: str, batch_dir: str, attempt: int, search_seconds: Optional[float],
             chains: Optional[list] = None) -> dict:
        """Fold target `name` in batch_dir/name/ (its features.pkl is there; a complex of `chains`:
        its features.npz, folded with the multimer settings on this one device) as single mode does.
        While it runs, batch_dir/batch_logs/<name>.running.json says which worker has it; its log lines
        go to batch_dir/batch_logs/<name>.log. Returns the target's summary record; on a one-GPU
        worker, status "needs_gpus" (nothing folded) when the target fits only P > 1 GPUs."""
        import pickle

        import torch

        from fastfold_cli.outputs import write_atomic
        from fastfold_cli.predict import TargetError, _read_features, predict_target

        out = Path(batch_dir) / name
        logs = Path(batch_dir) / BATCH_LOGS
        logs.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        running = logs / f"{name}.running.json"
        write_atomic(running, json.dumps({"worker": self.worker, "pid": os.getpid(), "attempt": attempt,
                                          "device": self.device, "start": t0}))
        lines: list[str] = []

        def log(line: str) -> None:
            lines.append(line)
            with open(logs / f"{name}.log", "a") as fh:
                fh.write(f"{datetime.datetime.now().isoformat(timespec='seconds')} [{self.worker}] {line}\n")

        complex_ = bool(chains) and len(chains) > 1
        settings = self.multimer_settings if complex_ else self.settings
        res: dict[str, Any] = {"worker": self.worker, "device": self.device, "attempt": attempt, "fold_started": t0,
                               "gpus": settings.gpus}
        try:
            if self.device.startswith("cuda") and not torch.cuda.is_available():
                raise RuntimeError("this folding worker has no usable CUDA device")
            if complex_:
                raw = _read_features(out, chains, True)
                if raw is None:
                    raise RuntimeError(f"{out / 'features.npz'}: missing or for other sequences")
            else:
                with open(out / "features.pkl", "rb") as fh:
                    raw = pickle.load(fh)
            need, why = 1, None
            if settings.gpus == 1 and not complex_:  # a complex folds on this one GPU
                try:
                    need, why = gpus_needed(out, raw, settings, self.device, self.models)
                except Exception:  # noqa: BLE001 - e.g. features the network cannot take: reported per model below
                    pass
            if need == 0:
                res.update(status="failed", error=f"too large even for DAP over {DAP_MAX_GPUS} GPUs: {why}")
            elif need > 1:  # the driver folds it on `need` GPUs
                log(f"does not fit this worker's GPU ({why}); fits {need} GPUs (DAP)")
                res.update(status="needs_gpus", gpus=need, why=why)
            else:
                timings = _load_json(out / "timings.json") or {}
                if search_seconds is not None:
                    timings["features"] = search_seconds
                done = predict_target(out, raw, settings, self.device, self.models, timings, log=log)
                res.update(_scores(out, done["order"]))
                if done["failed"]:
                    res.update(status="failed", error=f"{len(done['failed'])} model(s) failed: "
                                                      f"{', '.join(done['failed'])}")
                else:
                    res["status"] = "ok"
        except TargetError as e:
            errs = [line[len("Error: "):] for line in lines if line.startswith("Error: ")]
            res.update(status="failed", error=errs[0] if len(errs) == 1 else f"{e} ({'; '.join(errs)})")
        except Exception as e:  # noqa: BLE001 - reported per target, the worker goes on
            first = str(e).strip().splitlines()
            res.update(status="failed", error=f"{type(e).__name__}: {first[0] if first else ''}".rstrip(": "))
            log(traceback.format_exc())
        finally:
            _empty_cache(self.device)
            try:
                running.unlink()
            except OSError:
                pass
        res["fold_seconds"] = time.time() - t0
        return res


def _empty_cache(device: str) -> None:
    if str(device).startswith("cuda"):
        import torch
        torch.cuda.empty_cache()


def gpus_needed(out: Path, raw, settings, device: str, models) -> tuple[int, Optional[str]]:
    """The fewest GPUs P (1, 2, 4, ..., DAP_MAX_GPUS) on which every unfinished model of this
    target fits this worker's memory budget (--max-memory, else its device's free memory), as the
    planner sees it (`Problem(world=P)`: one DAP rank's memory); 0 when none does. Also the
    planner's one line for the largest model at P = 1 (at DAP_MAX_GPUS when 0), else None."""
    from dataclasses import replace

    from fastfold_cli.predict import _monomer_batch
    from model.planner import GB, PlanError, plan
    from model.runner import default_budget, problem_for

    on_gpu = device.startswith("cuda")
    precision = settings.precision or ("bf16" if on_gpu else "fp32")
    backend = settings.backend or ("triton" if on_gpu else "torch")
    need, why, seen = 1, None, set()
    for name, model_name, seed in settings.names():
        if (out / f"result_{name}.json").is_file() and (out / f"unrelaxed_{name}.pdb").is_file():
            continue  # finished: reused, not run
        if model_name in seen:
            continue  # every seed of a preset has the same sizes
        seen.add(model_name)
        model = models.get(model_name, seed, settings, device, precision)
        budget = settings.max_memory * GB if settings.max_memory else default_budget(device)
        problem = problem_for(model, _monomer_batch(model_name, raw, seed, settings)[0], precision, backend)
        p, first = 1, None
        while True:
            try:
                # DAP, not the slower host offload of the pair, for targets one GPU cannot hold
                plan(replace(problem, world=p), budget, offload=False)
                break
            except PlanError as e:
                first = first or f"{name}: {e}"
                if p >= DAP_MAX_GPUS:
                    return 0, f"{name}: {e}"
                p *= 2
        if p > need:
            need, why = p, first
    return need, why


# --- the driver --------------------------------------------------------------------------------

def _ray_error(exc: BaseException) -> str:
    """One line for an error that came through Ray (a task's error wraps the original as `cause`)."""
    cause = getattr(exc, "cause", None)
    e = cause if isinstance(cause, BaseException) else exc
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


class _Display:
    """Rich progress of the whole batch on stderr (or one line per finished target without it)."""

    def __init__(self, total: int, enabled: bool):
        from rich.console import Console
        self.console = Console(stderr=True, highlight=False)
        self.enabled = enabled
        self.total = total
        self.done = 0
        if enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                       TimeElapsedColumn)
            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), console=self.console)
            self.row = self.progress.add_task("targets", total=total)
            self.progress.start()

    def status(self, counts: dict) -> None:
        if self.enabled:
            text = " · ".join(f"{k} {v}" for k, v in counts.items() if v)
            self.progress.update(self.row, description=f"targets: {text}")

    def finished(self, name: str, rec: dict) -> None:
        self.done += 1
        line = f"[{self.done}/{self.total}] {name}: {rec['status']}"
        if rec.get("mean_plddt") is not None:
            line += f", mean pLDDT {rec['mean_plddt']:.2f}"
        if rec.get("ptm") is not None:
            line += f", pTM {rec['ptm']:.3f}"
        if rec.get("iptm") is not None:
            line += f", ipTM {rec['iptm']:.3f}"
        if rec.get("seconds"):
            line += f" ({rec['seconds']:.1f} s)"
        if rec.get("error"):
            line += f": {rec['error']}"
        if self.enabled:
            self.progress.console.print(line, markup=False)
            self.progress.advance(self.row)
        else:
            click.echo(line, err=True)

    def stop(self) -> None:
        if self.enabled:
            self.progress.stop()

    def table(self, records: dict) -> None:
        from rich.table import Table
        t = Table(title="fastfold predict: batch summary")
        for col in ("target", "length", "status", "time (s)", "mean pLDDT", "pTM", "ipTM", "worker / error"):
            if col == "worker / error":
                t.add_column(col, no_wrap=True, overflow="ellipsis", max_width=32)
            else:
                t.add_column(col, justify="right" if col != "status" and col != "target" else "left", no_wrap=True,
                             min_width=max(len(col), 5 if "pTM" in col else 0))
        for name, r in records.items():
            t.add_row(name, str(r.get("length") or ""), r["status"],
                      f"{r['seconds']:.1f}" if r.get("seconds") else "",
                      f"{r['mean_plddt']:.2f}" if r.get("mean_plddt") is not None else "",
                      f"{r['ptm']:.3f}" if r.get("ptm") is not None else "",
                      f"{r['iptm']:.3f}" if r.get("iptm") is not None else "",
                      r.get("error") or r.get("worker") or "")
        self.console.print(t)


def _check_address(address: Optional[str]) -> None:
    """Fail fast on a --ray-address nobody answers at (ray.init would retry for minutes)."""
    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except ValueError:
        raise InputError(f"--ray-address must be HOST:PORT, got '{address}'") from None
    except OSError as e:
        raise InputError(f"--ray-address {address}: no Ray cluster answers there ({e.strerror or e})") from None


def _cluster(device: Optional[str]) -> dict:
    """Folding workers to start and the CPUs a search task may ask for, from the cluster's nodes."""
    import ray
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    gpus = int(sum(n["Resources"].get("GPU", 0) for n in nodes))
    cpus = int(sum(n["Resources"].get("CPU", 0) for n in nodes))
    on_gpu = device != "cpu" and gpus > 0
    if device is not None and device.startswith("cuda") and gpus == 0:
        raise InputError(f"--device {device}: the Ray cluster has no GPU")
    workers = gpus if on_gpu else 1
    per_node = max((int(n["Resources"].get("CPU", 0)) for n in nodes), default=1)
    # a GPU folding worker holds one CPU when the cluster has enough for the searches besides; the
    # CPU folding worker half of a node (its torch threads)
    fold_cpus = (1 if on_gpu else max(1, per_node // 2)) if cpus > workers else 0
    node_gpus = {n["NodeID"]: int(n["Resources"].get("GPU", 0)) for n in nodes} if on_gpu else {}
    return {"gpus": gpus, "cpus": cpus, "on_gpu": on_gpu, "workers": workers, "fold_cpus": fold_cpus,
            "max_task_cpus": max(1, per_node - fold_cpus), "node_gpus": node_gpus}


def _search_options(search: dict, cpus: int, max_task_cpus: int):
    from pipeline import dag
    max_template_date = search["max_template_date"] or datetime.date.today().isoformat()
    try:
        datetime.date.fromisoformat(max_template_date)
    except ValueError:
        raise InputError(f"--max-template-date must be YYYY-MM-DD, got '{max_template_date}'") from None
    return dag.Options(db_preset=search["db_preset"], use_templates=search["templates"],
                       msa_mode=search["msa_mode"], max_template_date=max_template_date, cpus=max(1, cpus),
                       hhblits_cpus=min(4, max_task_cpus), hhsearch_cpus=1)


def run_batch(targets: list[Target], out: Path, settings, search: dict, device: Optional[str] = None,
              cpus: Optional[int] = None, ray_address: Optional[str] = None, progress: bool = False,
              multimer_settings=None) -> int:
    """Run every target (`settings`; a complex: `multimer_settings`); write OUT/<target>/ and
    OUT/batch_summary.json. Returns the exit code (0, or 1 when any target failed). Bad options
    raise nothing: one 'Error:' line, exit 2."""
    import ray

    from fastfold_cli.outputs import write_atomic
    from fastfold_cli.predict import _fail
    from pipeline import batch as pbatch
    from pipeline import dag
    from pipeline.errors import ToolError

    t_start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {t.name: {"status": "pending", "length": t.length or None, "source": t.source,
                                         **({"chains": len(t.chains)} if t.is_complex else {})}
                                for t in targets}
    by_name = {t.name: t for t in targets}

    def finish(name: str, display: Optional[_Display] = None, **rec) -> None:
        records[name].update(rec)
        if display is not None:
            display.finished(name, records[name])
        write_summary()

    def write_summary() -> None:
        counts = _counts(records)
        write_atomic(out / "batch_summary.json", json.dumps({
            "targets": records, "wall_seconds": time.time() - t_start,
            "targets_per_hour": counts["ok"] * 3600.0 / max(time.time() - t_start, 1e-9),
            "counts": counts, "workers": [workers_info[k] for k in sorted(workers_info)], "searches": search_stats,
            "models": settings.model_names + (multimer_settings.model_names if multimer_settings else []),
            "num_seeds": settings.num_seeds,
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}, indent=2))

    workers_info: dict[int, dict] = {}
    search_stats = {"unique_sequences": 0, "tasks": 0}
    # 1. What is already done, what has features, what needs searching.
    need_search: dict[str, Target] = {}
    have_features: list[str] = []
    for t in targets:
        if t.error:
            records[t.name].update(status="failed", error=t.error)
            continue
        tdir = out / t.name
        scores = finished_scores(tdir, multimer_settings if t.is_complex else settings, t.chains)
        if scores is not None:
            records[t.name].update(status="reused", seconds=0.0, **scores)
            continue
        if has_features(tdir, t.chains):
            have_features.append(t.name)
            continue
        if search["msa_dir"]:
            src = Path(search["msa_dir"]) / t.name
            if has_features(src, t.chains):  # copied as single mode's --msa-dir copies them
                tdir.mkdir(parents=True, exist_ok=True)
                for f in ("features.pkl", "features.npz", "multimer_chain_map.json"):
                    if (src / f).is_file():
                        write_atomic(tdir / f, (src / f).read_bytes())
                have_features.append(t.name)
            else:
                what = "features.npz" if t.is_complex else "features.pkl"
                msa = "fastfold msa --model-preset multimer" if t.is_complex else "fastfold msa"
                records[t.name].update(status="failed", error=f"{src / what}: missing or for other sequences "
                                                              f"(run `{msa}` into it first)")
            continue
        need_search[t.name] = t
    todo = have_features + list(need_search)
    display = None
    if not todo:  # nothing left to run: no Ray at all
        display = _Display(len(targets), progress)
        for name, rec in records.items():
            display.finished(name, rec)
        write_summary()
        return _report(display, records, out, t_start)
    # 2. Ray, the folding workers, the searches (bad options fail before Ray starts).
    dbs = None
    try:
        if need_search:
            from pipeline import databases
            _search_options(search, 1, 1)  # the flags alone
            dbs = databases.resolve(search["db_dir"], search["db_paths"], search["db_config"])
            databases.check(dbs, search["db_preset"], search["templates"], search["msa_mode"],
                            any(t.is_complex for t in need_search.values()))
        _check_address(ray_address)
    except InputError as e:
        _fail(str(e))
    try:
        dag.init_ray(cpus, ray_address)
    except Exception as e:  # noqa: BLE001 - e.g. no cluster at --ray-address
        _fail(f"cannot start or join Ray{f' at {ray_address}' if ray_address else ''}: {_ray_error(e)}")
    try:
        try:
            cl = _cluster(device)
            opts = _search_options(search, cl["cpus"], cl["max_task_cpus"]) if need_search else None
        except InputError as e:
            ray.shutdown()
            _fail(str(e))
        display = _Display(len(targets), progress)
        for name, rec in records.items():
            if rec["status"] in ("failed", "reused"):
                display.finished(name, rec)
        write_summary()
        actor_cls = ray.remote(FoldWorker).options(
            num_gpus=1 if cl["on_gpu"] else 0, num_cpus=cl["fold_cpus"], max_restarts=-1, max_task_retries=0)
        fold_device = None if cl["on_gpu"] else "cpu"
        if cl["on_gpu"] and device and device.startswith("cuda"):
            fold_device = "cuda"
        actors = [actor_cls.remote(settings, fold_device, multimer_settings)
                  for _ in range(min(cl["workers"], len(todo)))]
        # New workers take targets at once (calls wait while they start, so the first targets spread
        # over every worker). After a worker died it takes targets again only once it answers a
        # probe: a call sent to a restarting actor fails at once and would burn an attempt.
        probes = {a.info.remote(): (i, False) for i, a in enumerate(actors)}  # ref -> (worker, gating)
        reprobe: list[tuple[float, int]] = []

        t_search = time.time()
        pending: dict[Any, str] = {}  # writer ref -> target
        if need_search:
            # the monomer targets' chains in one group, each complex's in its own (multimer) group:
            # one merged DAG, identical sequences' searches shared
            monomers = [t for t in need_search.values() if not t.is_complex]
            groups = [([t.chains[0] for t in monomers], opts)] if monomers else []
            group_of = {t.name: 0 for t in monomers}
            for t in need_search.values():
                if t.is_complex:
                    group_of[t.name] = len(groups)
                    groups.append((t.chains, dataclasses.replace(opts, model_preset="multimer")))
            p, order = pbatch.plan_searches(groups, dbs, str(out / SEARCH_CACHE))
            refs = pbatch.submit_searches(p, order, {n: (str(out / n), t.chains, group_of[n])
                                                     for n, t in need_search.items()})
            pending = {ref: n for n, ref in refs.items()}
            search_stats.update(unique_sequences=len({seq for _, seq in p.seq_ids}), tasks=len(order))
        for n in need_search:
            records[n]["status"] = "searching"
        ready: list[str] = list(have_features)
        for n in ready:
            records[n]["status"] = "queued"
        search_seconds = {n: None for n in have_features}
        attempts = {n: 0 for n in todo}
        idle: list[int] = list(range(len(actors)))
        probe_failures: dict[int, int] = {}
        lost: dict[int, str] = {}
        running: dict[Any, tuple[int, str, float]] = {}  # fold ref -> (actor, target, start)
        # DAP: targets that need P > 1 GPUs wait in dap_wait; the longest one reserves a node (its
        # idle workers get no new targets) until P of its GPUs are free, then P workers there are
        # retired for one FoldWorker of num_gpus=P, and replaced when it is done.
        dap_wait: list[str] = []
        dap_need: dict[str, int] = {}
        dap_node: Optional[str] = None
        retired: set[int] = set()
        # fold ref -> (DAP actor, target, start, node, P, workers retired for it)
        dap_running: dict[Any, tuple[Any, str, float, str, int, int]] = {}
        dap_cls = ray.remote(FoldWorker)
        node_gpus = cl["node_gpus"]
        max_node_gpus = max(node_gpus.values(), default=0)

        def node_of(i: int) -> Optional[str]:
            return workers_info.get(i, {}).get("node_id")

        def start_dap() -> None:
            """Reserve a node for the longest waiting DAP target; start it once P GPUs there are free."""
            nonlocal dap_node
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
            dap_wait.sort(key=lambda n: (-by_name[n].length, n))
            n = dap_wait[0]
            p = dap_need[n]
            live = [i for i in range(len(actors)) if i not in retired]
            if any(node_of(i) is None for i in live if i not in lost):
                return  # a worker not placed yet: its node's free GPUs are unknown
            spare = {x: [i for i in live if node_of(i) == x and (i in idle or i in lost)] for x in node_gpus}
            free = {x: node_gpus[x] - sum(1 for i in live if node_of(i) == x)
                    - sum(d[4] for d in dap_running.values() if d[3] == x) for x in node_gpus}
            if dap_node is None or node_gpus[dap_node] < p:  # the node with P GPUs closest to having P free
                fits = [x for x in node_gpus if node_gpus[x] >= p]
                dap_node = max(fits, key=lambda x: (free[x] + len(spare[x]), x))
            x = dap_node
            if free[x] + len(spare[x]) < p:
                return
            kill = spare[x][:max(0, p - free[x])]
            for i in kill:
                ray.kill(actors[i], no_restart=True)
                retired.add(i)
                lost.pop(i, None)
                if i in idle:
                    idle.remove(i)
            dap_wait.pop(0)
            dap_node = None
            attempts[n] += 1
            records[n]["status"] = "folding"
            actor = dap_cls.options(num_gpus=p, num_cpus=cl["fold_cpus"], max_restarts=0, max_task_retries=0,
                                    scheduling_strategy=NodeAffinitySchedulingStrategy(x, soft=False)
                                    ).remote(dataclasses.replace(settings, gpus=p), fold_device)
            ref = actor.fold.remote(n, str(out), attempts[n], search_seconds.get(n), by_name[n].chains)
            dap_running[ref] = (actor, n, time.time(), x, p, len(kill))

        def add_workers(k: int) -> None:
            for _ in range(k):
                actors.append(actor_cls.remote(settings, fold_device, multimer_settings))
                i = len(actors) - 1
                probes[actors[i].info.remote()] = (i, False)
                idle.append(i)

        while pending or ready or running or dap_wait or dap_running:
            now = time.time()
            for due, i in [x for x in reprobe if x[0] <= now]:
                reprobe.remove((due, i))
                if i not in retired:
                    probes[actors[i].info.remote()] = (i, True)
            if dap_wait:
                start_dap()
            # the longest ready target to each idle worker (not to those of a node reserved for DAP)
            ready.sort(key=lambda n: (-by_name[n].length, n))
            for i in [i for i in idle if dap_node is None or node_of(i) != dap_node]:
                if not ready:
                    break
                idle.remove(i)
                n = ready.pop(0)
                attempts[n] += 1
                records[n]["status"] = "folding"
                ref = actors[i].fold.remote(n, str(out), attempts[n], search_seconds.get(n), by_name[n].chains)
                running[ref] = (i, n, time.time())
            display.status(_counts(records))
            if all(i in lost or i in retired for i in range(len(actors))) and not dap_running:
                # no folding worker left: the rest cannot fold
                why = next(iter(lost.values()), "every worker was lost")
                for n in ready + list(pending.values()) + dap_wait:
                    finish(n, display, status="failed", error=f"no folding worker left: {why}")
                ready, pending, dap_wait = [], {}, []
                break
            waitable = list(pending) + list(running) + list(probes) + list(dap_running)
            if not waitable:
                time.sleep(0.2)
                continue
            done_refs, _ = ray.wait(waitable, num_returns=1, timeout=0.5)
            for r in done_refs:
                if r in probes and probes[r][0] in retired:
                    probes.pop(r)
                elif r in probes:
                    i, gating = probes.pop(r)
                    try:
                        workers_info[i] = ray.get(r)
                        if gating:
                            idle.append(i)
                    except Exception as e:  # noqa: BLE001 - not up (yet): ask again in a moment
                        workers_info.setdefault(i, {"worker": f"#{i}", "error": _ray_error(e)})
                        if not gating:
                            continue  # its targets' calls fail too, and a gating probe follows
                        probe_failures[i] = probe_failures.get(i, 0) + 1
                        if probe_failures[i] < MAX_PROBE_FAILURES:
                            reprobe.append((time.time() + 1.0, i))
                        else:  # dead for good (e.g. its constructor fails): no more targets for it
                            lost[i] = _ray_error(e)
                            workers_info[i] = {"worker": f"#{i}", "error": lost[i]}
                    else:
                        probe_failures[i] = 0
                elif r in pending:
                    n = pending.pop(r)
                    try:
                        ray.get(r)
                        search_seconds[n] = time.time() - t_search
                        records[n]["status"] = "queued"
                        records[n]["search_seconds"] = search_seconds[n]
                        ready.append(n)
                    except Exception as e:  # noqa: BLE001 - a failed search fails its target only
                        finish(n, display, status="failed", error=f"search: {_ray_error(e)}",
                               search_seconds=time.time() - t_search)
                elif r in dap_running:
                    actor, n, t1, x, p, k = dap_running.pop(r)
                    try:
                        res = ray.get(r)
                    except Exception as e:  # noqa: BLE001 - its actor died, or could not start
                        res = {"status": "failed", "attempt": attempts[n], "gpus": p, "error": _ray_error(e)}
                        if isinstance(e, ray.exceptions.RayActorError) and attempts[n] < MAX_ATTEMPTS:
                            records[n].update(status="queued", retried_after=_ray_error(e))
                            dap_wait.append(n)
                            res = None
                    ray.kill(actor)
                    if k and (ready or pending or running or dap_wait):  # its GPUs back to one-GPU workers
                        add_workers(k)
                    if res is not None:
                        res["attempts"] = res.pop("attempt", attempts[n])
                        res["seconds"] = (search_seconds.get(n) or 0.0) + res.get("fold_seconds", time.time() - t1)
                        finish(n, display, **res)
                else:
                    i, n, t1 = running.pop(r)
                    try:
                        res = ray.get(r)
                        idle.append(i)
                        if res.get("status") == "needs_gpus":  # a check, not an attempt: to DAP
                            attempts[n] -= 1
                            p, why = res["gpus"], res["why"]
                            records[n].update(gpus=p, gpus_reason=why)
                            limit = ("this batch folds on the CPU (--device cpu or no GPU)" if not cl["on_gpu"]
                                     else f"the largest node has {max_node_gpus}" if p > max_node_gpus else None)
                            if limit is None:
                                records[n]["status"] = "queued"
                                dap_need[n] = p
                                dap_wait.append(n)
                                continue
                            res = {"status": "failed", "attempt": attempts[n], "gpus": p,
                                   "error": f"needs {p} GPUs of one node (DAP) and {limit}: {why}"}
                    except ray.exceptions.RayActorError as e:
                        probes[actors[i].info.remote()] = (i, True)  # back to work once restarted
                        if attempts[n] < MAX_ATTEMPTS:  # its worker died: again, on the restarted one
                            records[n].update(status="queued", retried_after=_ray_error(e))
                            ready.append(n)
                            continue
                        res = {"status": "failed", "attempt": attempts[n],
                               "error": f"folding worker died {attempts[n]} times: {_ray_error(e)}"}
                    except Exception as e:  # noqa: BLE001
                        idle.append(i)
                        res = {"status": "failed", "attempt": attempts[n], "error": _ray_error(e)}
                    res["attempts"] = res.pop("attempt", attempts[n])
                    res["seconds"] = (search_seconds.get(n) or 0.0) + res.get("fold_seconds", time.time() - t1)
                    finish(n, display, **res)
        write_summary()
        return _report(display, records, out, t_start)
    except KeyboardInterrupt:
        if display:
            display.stop()
        ray.shutdown()
        write_summary()
        click.echo("Error: interrupted; rerun the same command to resume", err=True)
        return 130
    except ToolError as e:
        if display:
            display.stop()
        ray.shutdown()
        _fail(str(e), 1)
    except Exception as e:  # noqa: BLE001 - a bug or a broken cluster: one line, details in a file
        if display:
            display.stop()
        (out / BATCH_LOGS).mkdir(parents=True, exist_ok=True)
        (out / BATCH_LOGS / "driver.traceback.txt").write_text(traceback.format_exc())
        write_summary()
        click.echo(f"Error: the batch stopped: {type(e).__name__}: {_ray_error(e)} "
                   f"(traceback in {out / BATCH_LOGS / 'driver.traceback.txt'}; rerun to resume)", err=True)
        return 1
    finally:
        if ray.is_initialized():
            ray.shutdown()


def _counts(records: dict) -> dict:
    c = {k: 0 for k in ("searching", "queued", "folding", "ok", "reused", "failed")}
    for r in records.values():
        if r["status"] in c:
            c[r["status"]] += 1
    return c


def _report(display: _Display, records: dict, out: Path, t_start: float) -> int:
    display.stop()
    display.table(records)
    c = _counts(records)
    wall = time.time() - t_start
    click.echo(f"{len(records)} target(s): {c['ok']} done, {c['reused']} reused, {c['failed']} failed in {wall:.1f} s "
               f"({c['ok'] * 3600.0 / max(wall, 1e-9):.1f} targets/hour) -> {out / 'batch_summary.json'}", err=True)
    return 1 if c["failed"] else 0
