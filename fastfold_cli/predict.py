"""`fastfold predict`: FASTA -> searches (Ray DAG, or reused alignments) -> AlphaFold features ->
the network for each requested model and seed -> ranked PDB/mmCIF, confidence and PAE json,
plots, timings.

A rerun into the same directory skips finished models (their scores are kept in
`result_<model>.json`); every file is written atomically; a failing model is reported and the
others still run, and the exit code is 1 if any failed.

Several FASTA files, a directory of them, or a multi-record file with `--batch` (one target per
record) run as a batch on a Ray cluster (`fastfold_cli.batch`): OUT/<target>/ as in single mode,
plus OUT/batch_summary.json.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pickle
import sys
import time
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional

import click

from fastfold_cli.msa import _db_options

DEFAULT_MODELS = ",".join(f"model_{i}_ptm" for i in range(1, 6))
DEFAULT_MULTIMER_MODELS = ",".join(f"model_{i}_multimer_v3" for i in range(1, 6))


def _fail(message: str, code: int = 2):
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def _split(models: str) -> list:
    return [m.strip() for m in models.split(",") if m.strip()]


def preset_error(model_names, source, n_chains: int) -> Optional[str]:
    """Why these presets cannot fold the input `source` of n_chains records (more than one: a
    complex, AlphaFold-Multimer presets only; one: monomer presets only), else None."""
    import configs

    complex_ = n_chains > 1
    known = configs.MULTIMER_PRESETS if complex_ else configs.MONOMER_PRESETS
    for m in model_names:
        if m not in known:
            if complex_ and m in configs.MONOMER_PRESETS:
                return (f"{source} has {n_chains} records (a complex): use AlphaFold-Multimer presets "
                        f"({', '.join(configs.MULTIMER_PRESETS)}), or --batch for one target per record")
            if m in configs.MULTIMER_PRESETS:
                return f"{m} is an AlphaFold-Multimer preset; a single chain needs a monomer preset"
            return f"unknown model {m!r}; known: {', '.join(known)}"
    return None


@dataclasses.dataclass
class Settings:
    """What to run for each target (picklable: a batch sends it to its folding workers).
    `precision`/`backend`/`device` None = chosen per device (bf16/triton on a GPU, fp32/torch on the CPU)."""
    model_names: list
    seed: int = 0
    num_seeds: int = 1
    num_recycles: Optional[int] = None
    early_stop: Optional[float] = None
    precision: Optional[str] = None
    backend: Optional[str] = None
    max_memory: Optional[float] = None
    param_paths: Optional[dict] = None    # preset -> params file; None = random parameters
    relax: bool = False
    gpus: int = 1                         # DAP: one prediction spread over this many GPUs (processes)

    def names(self) -> list:
        """(output name, preset, seed) of every prediction, in run order."""
        return [(m if self.num_seeds == 1 else f"{m}_seed_{s}", m, s)
                for m in self.model_names for s in range(self.seed, self.seed + self.num_seeds)]


class TargetError(Exception):
    """A target that produced nothing (every model failed)."""


@click.command("predict")
@click.argument("fasta", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--batch", is_flag=True,
              help="Each record of a multi-record FASTA is its own target (without it, a multi-record file is "
                   "one complex). Several FASTA files or a directory are always a batch: OUT/<target>/ each.")
@click.option("--models", default=None,
              help="Comma-separated model presets (default: the five _ptm presets; for a complex the five "
                   "multimer_v3 presets; a batch: each target those of its kind).")
@click.option("--num-recycles", type=int, default=None, help="Recycling passes after the first (default 3).")
@click.option("--recycle-early-stop-tolerance", type=float, default=None,
              help="Stop recycling when the Cα distance change falls below this (Å); 0 = never "
                   "(default: the preset's, 0 for monomers and 0.5 for AlphaFold-Multimer).")
@click.option("--seed", type=int, default=0, show_default=True, help="Feature-sampling seed.")
@click.option("--num-seeds", type=int, default=1, show_default=True, help="Predictions per model (seeds seed..).")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16"]), default=None,
              help="Default: bf16 on a GPU, fp32 on the CPU.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available). "
                                             "Batch: cuda = one folding worker per GPU of the cluster.")
@click.option("--backend", type=click.Choice(["torch", "triton"]), default=None,
              help="Kernel backend (default: triton on a GPU, torch on the CPU).")
@click.option("--max-memory", type=float, default=None,
              help="GPU memory budget in GiB (default: free memory; batch: of each worker's own GPU).")
@click.option("--params-dir", type=click.Path(file_okay=False), default=None,
              help="Directory of params_<model>.npz (default $FASTFOLD_PARAMS_DIR or ~/.cache/fastfold/params).")
@click.option("--random-params", is_flag=True,
              help="Random parameters of the full preset shapes: smoke runs and benchmarks only.")
@click.option("--msa-dir", type=click.Path(file_okay=False), default=None,
              help="Reuse alignments from a `fastfold msa` output directory (batch: DIR/<target>/).")
@click.option("--db-dir", type=click.Path(file_okay=False), default=None)
@click.option("--db-config", type=click.Path(dir_okay=False), default=None)
@_db_options
@click.option("--db-preset", type=click.Choice(["full_dbs", "reduced_dbs"]), default="full_dbs", show_default=True)
@click.option("--templates/--no-templates", default=True, show_default=True)
@click.option("--max-template-date", default=None, help="YYYY-MM-DD (default: today).")
@click.option("--msa-mode", type=click.Choice(["full", "single-sequence"]), default="full", show_default=True)
@click.option("--cpus", type=int, default=None, help="CPUs for the searches (default: all).")
@click.option("--ray-address", default=None, help="Join an existing Ray cluster.")
@click.option("--relax/--no-relax", default=False, show_default=True, help="Amber relaxation of the ranked models.")
@click.option("--gpus", type=click.IntRange(min=1), default=1, show_default=True,
              help="Spread each prediction over this many GPUs (Dynamic Axial Parallelism, one process per GPU; "
                   "with --device cpu: that many CPU processes over gloo).")
@click.option("--progress/--no-progress", default=None, help="Batch: rich progress display (default: on a terminal).")
def predict(fasta, out_dir, batch, models, num_recycles, recycle_early_stop_tolerance, seed, num_seeds, precision,
            device, backend, max_memory, params_dir, random_params, msa_dir, db_dir, db_config, db_preset, templates,
            max_template_date, msa_mode, cpus, ray_address, relax, progress, gpus, **db_paths):
    """Predict the structure of the protein in FASTA with AlphaFold2 (several FASTA files, a
    directory of them, or --batch: one target each, on a Ray cluster)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from pipeline.errors import InputError
    from pipeline.fasta import read_fasta

    import configs

    out = Path(out_dir)
    is_batch = batch or len(fasta) > 1 or Path(fasta[0]).is_dir()
    chains = None
    if not is_batch:
        try:
            chains = read_fasta(fasta[0])
        except InputError as e:
            _fail(str(e))
    complex_ = chains is not None and len(chains) > 1
    requested = _split(models) if models else None
    if is_batch:  # each target runs the requested presets of its kind (fastfold_cli.batch)
        for m in requested or []:
            if m not in configs.MONOMER_PRESETS + configs.MULTIMER_PRESETS:
                _fail(f"unknown model {m!r}; known: {', '.join(configs.MONOMER_PRESETS + configs.MULTIMER_PRESETS)}")
        model_names = []  # per kind, once the targets are known
    else:
        model_names = requested or _split(DEFAULT_MULTIMER_MODELS if complex_ else DEFAULT_MODELS)
        why = preset_error(model_names, fasta[0], len(chains))
        if why:
            _fail(why)
    if num_seeds < 1:
        _fail("--num-seeds must be >= 1")
    if cpus is not None and cpus < 1:
        _fail("--cpus must be >= 1")
    if max_memory is not None and max_memory <= 0:
        _fail("--max-memory must be > 0")
    if gpus > 1 and is_batch:
        _fail("--gpus (DAP) is for one target: a batch folds a target that does not fit one GPU on several GPUs "
              "of one node by itself")
    settings = Settings(model_names=model_names, seed=seed, num_seeds=num_seeds, num_recycles=num_recycles,
                        early_stop=recycle_early_stop_tolerance, precision=precision, backend=backend,
                        max_memory=max_memory, relax=relax, gpus=gpus)
    multimer_settings = None
    if is_batch:
        from fastfold_cli import batch as batchmod
        try:
            targets = batchmod.collect_targets(fasta, per_record=batch)
        except InputError as e:
            _fail(str(e))
        # presets of each kind for the targets of that kind (none asked for: the defaults); a
        # target with none of its kind fails with single mode's reason
        kinds = {t.is_complex for t in targets if not t.error}
        names = {c: [m for m in (requested or _split(DEFAULT_MULTIMER_MODELS if c else DEFAULT_MODELS))
                     if m in (configs.MULTIMER_PRESETS if c else configs.MONOMER_PRESETS)] if c in kinds else []
                 for c in (False, True)}
        for t in targets:
            if not t.error and not names[t.is_complex]:
                t.error = preset_error(requested, t.source, len(t.chains))
        settings.model_names = names[False]
        model_names = names[False] + names[True]
        if names[True]:
            multimer_settings = dataclasses.replace(settings, model_names=names[True])
    if device is not None and not (device == "cpu" or device == "cuda" or device.startswith("cuda:")):
        _fail(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if not is_batch:
        import torch
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            _fail("--device cuda requested but no CUDA device is available")
        if gpus > 1 and device.startswith("cuda") and torch.cuda.device_count() < gpus:
            _fail(f"--gpus {gpus}: only {torch.cuda.device_count()} CUDA device(s) visible")
    settings.param_paths = _param_paths(model_names, params_dir, random_params)
    if multimer_settings is not None and settings.param_paths is not None:
        multimer_settings.param_paths = {m: settings.param_paths[m] for m in multimer_settings.model_names}
        settings.param_paths = {m: settings.param_paths[m] for m in settings.model_names}
    if ray_address:
        from fastfold_cli.batch import _check_address
        try:
            _check_address(ray_address)
        except InputError as e:
            _fail(str(e))
    search = dict(msa_dir=msa_dir, db_dir=db_dir, db_config=db_config, db_paths=db_paths, db_preset=db_preset,
                  templates=templates, max_template_date=max_template_date, msa_mode=msa_mode)
    if is_batch:
        code = batchmod.run_batch(targets, out, settings, search, device=device, cpus=cpus, ray_address=ray_address,
                                  progress=sys.stderr.isatty() if progress is None else progress,
                                  multimer_settings=multimer_settings)
        sys.exit(code)

    timings = _load_json(out / "timings.json") or {}
    # 1. Features: reuse out/features.pkl, or alignments from --msa-dir, or search.
    t0 = time.time()
    raw = _features(chains, out, msa_dir, db_dir, db_config, db_paths, db_preset, templates, max_template_date,
                    msa_mode, cpus, ray_address, multimer=complex_)
    timings["features"] = time.time() - t0

    # 2. Models, ranking, plots (the same function a batch's folding workers run).
    try:
        done = predict_target(out, raw, settings, device, ModelCache(1), timings,
                              log=lambda line: click.echo(line, err=True))
    except TargetError as e:
        _fail(str(e), 1)
    if done["failed"]:
        _fail(f"{len(done['failed'])} model(s) failed: {', '.join(done['failed'])}", 1)


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _features(chains, out, msa_dir, db_dir, db_config, db_paths, db_preset, templates, max_template_date, msa_mode,
              cpus, ray_address, multimer: bool = False):
    """The features of one target: out/features.pkl (complexes: the network batch features.npz)
    if it matches the sequences, else from --msa-dir, else run the search DAG into `out` (which
    itself reuses finished searches)."""
    from pipeline import dag, databases
    from pipeline.errors import InputError, ToolError

    for d in [out] + ([Path(msa_dir)] if msa_dir else []):
        found = _read_features(Path(d), chains, multimer)
        if found is not None:
            if Path(d) != out:
                from fastfold_cli.outputs import write_atomic
                for name in ("features.pkl", "features.npz", "multimer_chain_map.json"):
                    if (Path(d) / name).is_file():
                        write_atomic(out / name, (Path(d) / name).read_bytes())
            return found
        if msa_dir and Path(d) == Path(msa_dir) and (Path(d) / "features.pkl").is_file():
            _fail(f"{Path(d) / 'features.pkl'} is for other sequences")
    if msa_dir:
        _fail(f"{msa_dir} has no features for this input (run `fastfold msa"
              f"{' --model-preset multimer' if multimer else ''}` into it first)")
    try:
        max_template_date = max_template_date or datetime.date.today().isoformat()
        try:
            datetime.date.fromisoformat(max_template_date)
        except ValueError:
            raise InputError(f"--max-template-date must be YYYY-MM-DD, got '{max_template_date}'") from None
        dbs = databases.resolve(db_dir, db_paths, db_config)
        opts = dag.Options(db_preset=db_preset, use_templates=templates, msa_mode=msa_mode,
                           max_template_date=max_template_date, cpus=cpus or os.cpu_count() or 1,
                           model_preset="multimer" if multimer else "monomer")
        databases.check(dbs, db_preset, templates, msa_mode, multimer)
        dag.run_pipeline(chains, str(out), dbs, opts, executor="ray", ray_address=ray_address,
                         progress=sys.stderr.isatty())
    except InputError as exc:
        _fail(str(exc), 2)
    except ToolError as exc:
        _fail(str(exc), 1)
    return _read_features(out, chains, multimer)


def _read_features(d: Path, chains, multimer: bool):
    """Features saved in `d` for exactly these chains, or None. Monomer: AlphaFold's raw
    features.pkl. Complex: the network batch features.npz with the FASTA records' sequences (from
    multimer_chain_map.json)."""
    if not multimer:
        f = d / "features.pkl"
        if not f.is_file():
            return None
        with open(f, "rb") as fh:
            raw = pickle.load(fh)
        return raw if raw["sequence"][0].decode() == chains[0].sequence else None
    f, m = d / "features.npz", d / "multimer_chain_map.json"
    if not (f.is_file() and m.is_file()):
        return None
    import numpy as np

    from model import residue_constants as rc
    with np.load(f) as z:
        batch = {k: z[k] for k in z.files}
    letters = np.array(rc.restypes_with_x)
    aatype = batch["aatype"].astype(int)
    have = sorted("".join(letters[aatype[c["start"]:c["end"]]]) for c in json.loads(m.read_text()))
    return batch if have == sorted(c.sequence for c in chains) else None


def _param_paths(model_names, params_dir, random_params):
    """preset -> params file (a missing one is a one-line error), or None with --random-params."""
    if random_params:
        click.echo("WARNING: --random-params: the network runs with RANDOM parameters. The structures, pLDDT "
                   "and PAE are meaningless; use this for smoke runs and benchmarks only.", err=True)
        return None
    from fastfold_cli.params import ParamsError, find_params
    try:
        return {m: find_params(m, params_dir) for m in model_names}
    except ParamsError as e:
        _fail(str(e))


def resolve_device(device: Optional[str]) -> str:
    import torch
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


class ModelCache:
    """Loaded, prepared models, at most `size` of them (least recently used dropped first): single
    mode keeps one, a batch worker one per preset so each parameter file is read once."""

    def __init__(self, size: int = 1):
        self.size = max(1, size)
        self.models: OrderedDict = OrderedDict()

    def get(self, model_name: str, seed: int, settings: Settings, device: str, precision: str):
        from model.config import Runtime
        key = (model_name, precision, device, None if settings.param_paths else seed)
        if key in self.models:
            self.models.move_to_end(key)
            return self.models[key]
        while len(self.models) >= self.size:
            self.models.popitem(last=False)
            _empty_cache(device)
        if settings.param_paths is None:
            from model.random_params import random_model
            model = random_model(model_name, seed=seed, device=device)
        else:
            from model.params import load_model
            model = load_model(settings.param_paths[model_name], model_name, device=device)
        model.prepare(Runtime(precision=precision))
        self.models[key] = model
        return model

    def clear(self, device: str = "cpu"):
        self.models.clear()
        _empty_cache(device)


def _empty_cache(device: str):
    if str(device).startswith("cuda"):
        import torch
        torch.cuda.empty_cache()


def _echo(line: str):
    click.echo(line, err=True)


def predict_target(out: Path, raw, settings: Settings, device: str, models: ModelCache, timings: dict,
                   log: Callable[[str], None] = _echo) -> dict:
    """Every model and seed of one target from its raw features into `out` (finished ones reused),
    then relaxation, ranking, plots, timings.json. A failing model is logged and the others run.

    Returns {"results": name -> result summary, "failed": [names], "order": ranked names}; raises
    TargetError when every model failed."""
    import numpy as np

    from fastfold_cli.outputs import write_atomic, write_prediction_outputs, write_ranked

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    on_gpu = device.startswith("cuda")
    precision = settings.precision or ("bf16" if on_gpu else "fp32")
    backend = settings.backend or ("triton" if on_gpu else "torch")
    results, failed = {}, []
    for name, model_name, s in settings.names():
        done = _load_json(out / f"result_{name}.json")
        if done is not None and (out / f"unrelaxed_{name}.pdb").is_file():
            results[name] = done
            log(f"{name}: reusing finished result")
            continue
        try:
            t1 = time.time()
            model = None if settings.gpus > 1 else models.get(model_name, s, settings, device, precision)
            result, processed, info = _run_model(model, model_name, raw, s, device, precision, backend, settings)
            write_prediction_outputs(out, name, processed, result)
            summary = {"plddt": result["plddt"].tolist(), "mean_plddt": float(result["plddt"].mean()),
                       **({"ptm": float(result["ptm"])} if "ptm" in result else {}),
                       **({"iptm": float(result["iptm"]), "ranking_confidence": float(result["ranking_confidence"])}
                          if "iptm" in result else {}),
                       **({"chain_scores": result["chain_scores"]} if "chain_scores" in result else {}),
                       **({"predicted_aligned_error": result["predicted_aligned_error"].tolist(),
                           "max_predicted_aligned_error": float(result["max_predicted_aligned_error"])}
                          if "predicted_aligned_error" in result else {}),
                       "num_recycles": int(result["num_recycles_run"]), **info}
            write_atomic(out / f"result_{name}.json", json.dumps(summary))
            results[name] = summary
            timings[f"predict_{name}"] = time.time() - t1
            log(f"{name}: mean pLDDT {summary['mean_plddt']:.2f}"
                + (f", pTM {summary['ptm']:.3f}" if "ptm" in summary else "")
                + (f", ipTM {summary['iptm']:.3f}" if "iptm" in summary else "")
                + f" ({timings[f'predict_{name}']:.1f} s)")
        except Exception as e:  # noqa: BLE001 - one failing model must not stop the others
            failed.append(name)
            log(f"Error: {name} failed: {type(e).__name__}: {e}")
            (out / "logs").mkdir(parents=True, exist_ok=True)
            write_atomic(out / "logs" / f"{name}.traceback.txt", traceback.format_exc())
        write_atomic(out / "timings.json", json.dumps(timings, indent=2))
    if not results:
        raise TargetError("every model failed; see the errors above")

    res_np = {k: {kk: np.asarray(vv) for kk, vv in v.items() if kk in ("plddt", "ptm", "iptm", "predicted_aligned_error")}
              for k, v in results.items()}
    relaxed = {}
    if settings.relax:
        relaxed = _relax(out, results, on_gpu, timings, log)
    t2 = time.time()
    order = write_ranked(out, res_np, relaxed)
    from fastfold_cli.plots import write_plots
    write_plots(out, res_np, raw)
    timings["ranking_and_plots"] = time.time() - t2
    write_atomic(out / "timings.json", json.dumps(timings, indent=2))
    log(f"ranked: {', '.join(order)} -> {out}")
    return {"results": results, "failed": failed, "order": order}


def _run_model(model, model_name, raw, seed, device, precision, backend, settings: Settings):
    """Process features for this preset and seed, run the (loaded, prepared) model within the
    memory budget. Returns (numpy result, processed features, info)."""
    from model.runner import run_planned

    budget = settings.max_memory * 1024 ** 3 if settings.max_memory else None
    if model is None:  # DAP: settings.gpus processes, each loads the model and runs its shard
        return _run_model_dap(model_name, raw, seed, device, precision, backend, settings, budget)
    if getattr(model, "multimer", False):
        # The multimer network samples and masks its MSA itself, from this seed (AlphaFold's way).
        from model.multimer import MsaSampling
        model.evoformer.sampling = MsaSampling(mode="random", seed=seed)
        processed, num_recycle = raw, settings.num_recycles
    else:
        processed, num_recycle = _monomer_batch(model_name, raw, seed, settings)
    out, plan = run_planned(model, processed, precision, backend, budget, num_recycle=num_recycle, pair_outputs=False,
                            early_stop_tolerance=settings.early_stop)
    result = _result(model, out, processed)
    del out
    info = {"precision": precision, "backend": backend, "device": device,
            "chunks": {k: v for k, v in plan.chunks.items() if v}}
    if processed is raw:  # multimer: the batch has no pass axis
        return result, raw, info
    return result, _first_sample(processed), info


def _result(model, out, processed):
    """The numpy result of one prediction (_RESULT_KEYS), with per-chain / interface scores for a
    multimer."""
    chain_scores = None
    if getattr(model, "multimer", False) and "predicted_aligned_error_logits" in out:
        import torch

        from fastfold_cli.outputs import PDB_CHAIN_IDS
        from model.heads import chain_scores as _chain_scores
        cs = _chain_scores(out["predicted_aligned_error_logits"], out["predicted_aligned_error_breaks"],
                           out["plddt"], torch.as_tensor(processed["asym_id"]).to(out["plddt"].device))
        letter = lambda a: PDB_CHAIN_IDS[int(a) - 1]  # noqa: E731 - asym_id 1 -> chain A
        chain_scores = {"chains": {letter(a): v for a, v in cs["chains"].items()},
                        "interfaces": {"-".join(letter(x) for x in k.split("-")): v
                                       for k, v in cs["interfaces"].items()}}
    result = {k: v.detach().float().cpu().numpy() for k, v in out.items() if k in _RESULT_KEYS}
    if chain_scores is not None:
        result["chain_scores"] = chain_scores
    return result


def _monomer_batch(model_name, raw, seed, settings: Settings):
    """The processed monomer batch (one MSA sample per pass) and the number of recycles."""
    from pipeline.features import preset_config, process_features
    cfg = preset_config(model_name)
    if settings.num_recycles is not None:
        cfg = dataclasses.replace(cfg, num_recycle=settings.num_recycles)
    return process_features(raw, cfg, seed=seed, ensemble_axis=True, pad=False), cfg.num_recycle


def _first_sample(processed):
    """The first pass's features of a batch with a leading pass axis (for the output writers)."""
    return {k: v[0] if k != "seq_length" and getattr(v, "ndim", 0) >= 1 else v for k, v in processed.items()}


_RESULT_KEYS = ("final_atom_positions", "final_atom_mask", "plddt", "ptm", "iptm", "ranking_confidence",
                "predicted_aligned_error", "max_predicted_aligned_error", "num_recycles_run")


def _run_model_dap(model_name, raw, seed, device, precision, backend, settings: Settings, budget):
    """One prediction spread over settings.gpus processes (model/dap.py): NCCL over GPUs, or gloo
    over CPU processes with --device cpu. Returns what `_run_model` returns. A multimer preset
    gets the raw features (each rank draws the same MSA sample from `seed`)."""
    from model import dap

    if "multimer" in model_name:
        processed, num_recycle = raw, settings.num_recycles
    else:
        processed, num_recycle = _monomer_batch(model_name, raw, seed, settings)
    cuda = device.startswith("cuda")
    params = None if settings.param_paths is None else settings.param_paths[model_name]
    rows = dap.launch(_predict_rank, settings.gpus, "nccl" if cuda else "gloo",
                      args=(model_name, params, seed, processed, precision, backend, budget, num_recycle,
                            settings.early_stop, cuda))
    result, chunks = rows[0]
    info = {"precision": precision, "backend": backend, "device": device, "gpus": settings.gpus, "chunks": chunks}
    return result, (raw if processed is raw else _first_sample(processed)), info


def _predict_rank(shard, model_name, params, seed, processed, precision, backend, budget, num_recycle, early_stop,
                  cuda):
    """One DAP rank of `predict --gpus` (spawned by dap.launch): rank 0 returns (result, chunks)."""
    import torch

    from model.config import Runtime
    from model.runner import run_planned
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    if params is None:
        from model.random_params import random_model
        model = random_model(model_name, seed=seed, device=device)
    else:
        from model.params import load_model
        model = load_model(params, model_name, device=device)
    model.prepare(Runtime(precision=precision))
    if getattr(model, "multimer", False):  # the same sample on every rank: the same seeded draws
        from model.multimer import MsaSampling
        model.evoformer.sampling = MsaSampling(mode="random", seed=seed)
    out, plan = run_planned(model, processed, precision, backend, budget, shard=shard, num_recycle=num_recycle,
                            pair_outputs=False,
                            early_stop_tolerance=early_stop)
    if shard is not None and shard.rank != 0:
        return None
    return _result(model, out, processed), {k: v for k, v in plan.chunks.items() if v}


def _relax(out: Path, results, on_gpu, timings, log: Callable[[str], None] = _echo):
    from fastfold_cli.outputs import write_atomic
    from pipeline.relax import relax_pdb

    relaxed = {}
    for name in results:
        t = time.time()
        pdb = (out / f"unrelaxed_{name}.pdb").read_text()
        path = out / f"relaxed_{name}.pdb"
        if path.is_file():
            relaxed[name] = path.read_text()
            continue
        try:
            r, _ = relax_pdb(pdb, use_gpu=on_gpu)
        except Exception as e:  # noqa: BLE001
            log(f"warning: relaxation of {name} failed: {e}")
            continue
        write_atomic(path, r)
        relaxed[name] = r
        timings[f"relax_{name}"] = time.time() - t
    return relaxed
