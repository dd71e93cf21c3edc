"""`fastfold predict`: FASTA -> searches (Ray DAG, or reused alignments) -> AlphaFold features ->
the network for each requested model and seed -> ranked PDB/mmCIF, confidence and PAE json,
plots, timings.

A rerun into the same directory skips finished models (their scores are kept in
`result_<model>.json`); every file is written atomically; a failing model is reported and the
others still run, and the exit code is 1 if any failed.
"""
from __future__ import annotations

import datetime
import json
import os
import pickle
import sys
import time
import traceback
from pathlib import Path

import click

from fastfold_cli.msa import _db_options

DEFAULT_MODELS = ",".join(f"model_{i}_ptm" for i in range(1, 6))


def _fail(message: str, code: int = 2):
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


@click.command("predict")
@click.argument("fasta", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--models", default=DEFAULT_MODELS, show_default=True, help="Comma-separated model presets.")
@click.option("--num-recycles", type=int, default=None, help="Recycling passes after the first (default 3).")
@click.option("--recycle-early-stop-tolerance", type=float, default=0.0, show_default=True,
              help="Stop recycling when the Cα distance change falls below this (Å); 0 = never.")
@click.option("--seed", type=int, default=0, show_default=True, help="Feature-sampling seed.")
@click.option("--num-seeds", type=int, default=1, show_default=True, help="Predictions per model (seeds seed..).")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16"]), default=None,
              help="Default: bf16 on a GPU, fp32 on the CPU.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available).")
@click.option("--backend", type=click.Choice(["torch", "triton"]), default=None,
              help="Kernel backend (default: triton on a GPU, torch on the CPU).")
@click.option("--max-memory", type=float, default=None, help="GPU memory budget in GiB (default: free memory).")
@click.option("--params-dir", type=click.Path(file_okay=False), default=None,
              help="Directory of params_<model>.npz (default $FASTFOLD_PARAMS_DIR or ~/.cache/fastfold/params).")
@click.option("--random-params", is_flag=True,
              help="Random parameters of the full preset shapes: smoke runs and benchmarks only.")
@click.option("--msa-dir", type=click.Path(file_okay=False), default=None,
              help="Reuse alignments from a `fastfold msa` output directory.")
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
def predict(fasta, out_dir, models, num_recycles, recycle_early_stop_tolerance, seed, num_seeds, precision, device,
            backend, max_memory, params_dir, random_params, msa_dir, db_dir, db_config, db_preset, templates,
            max_template_date, msa_mode, cpus, ray_address, relax, **db_paths):
    """Predict the structure of the protein in FASTA with AlphaFold2."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from pipeline.errors import InputError, ToolError
    from pipeline.fasta import read_fasta

    import configs

    out = Path(out_dir)
    model_names = [m.strip() for m in models.split(",") if m.strip()]
    for m in model_names:
        if m not in configs.MONOMER_PRESETS:
            if m in configs.MULTIMER_PRESETS:
                _fail(f"{m}: AlphaFold-Multimer is not supported yet")
            _fail(f"unknown model {m!r}; known: {', '.join(configs.MONOMER_PRESETS)}")
    if num_seeds < 1:
        _fail("--num-seeds must be >= 1")
    try:
        chains = read_fasta(fasta)
    except InputError as e:
        _fail(str(e))
    if len(chains) > 1:
        _fail(f"{fasta} has {len(chains)} records: complexes need AlphaFold-Multimer, not supported yet")

    import torch
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        _fail("--device cuda requested but no CUDA device is available")
    on_gpu = device.startswith("cuda")
    precision = precision or ("bf16" if on_gpu else "fp32")
    backend = backend or ("triton" if on_gpu else "torch")
    if not random_params:
        from fastfold_cli.params import ParamsError, find_params
        try:
            param_paths = {m: find_params(m, params_dir) for m in model_names}
        except ParamsError as e:
            _fail(str(e))
    else:
        click.echo("WARNING: --random-params: the network runs with RANDOM parameters. The structures, pLDDT "
                   "and PAE are meaningless; use this for smoke runs and benchmarks only.", err=True)

    timings = _load_json(out / "timings.json") or {}
    # 1. Features: reuse out/features.pkl, or alignments from --msa-dir, or search.
    t0 = time.time()
    raw = _features(chains, out, msa_dir, db_dir, db_config, db_paths, db_preset, templates, max_template_date,
                    msa_mode, cpus, ray_address)
    timings["features"] = time.time() - t0

    # 2. Models.
    from fastfold_cli.outputs import write_atomic, write_prediction_outputs, write_ranked
    results, failed = {}, []
    for model_name in model_names:
        for s in range(seed, seed + num_seeds):
            name = model_name if num_seeds == 1 else f"{model_name}_seed_{s}"
            done = _load_json(out / f"result_{name}.json")
            if done is not None and (out / f"unrelaxed_{name}.pdb").is_file():
                results[name] = done
                click.echo(f"{name}: reusing finished result", err=True)
                continue
            try:
                t1 = time.time()
                result, processed, info = _run_model(model_name, raw, s, device, precision, backend, max_memory,
                                                     None if random_params else param_paths[model_name],
                                                     num_recycles, recycle_early_stop_tolerance)
                write_prediction_outputs(out, name, processed, result)
                summary = {"plddt": result["plddt"].tolist(), "mean_plddt": float(result["plddt"].mean()),
                           **({"ptm": float(result["ptm"])} if "ptm" in result else {}),
                           **({"predicted_aligned_error": result["predicted_aligned_error"].tolist(),
                               "max_predicted_aligned_error": float(result["max_predicted_aligned_error"])}
                              if "predicted_aligned_error" in result else {}),
                           "num_recycles": int(result["num_recycles_run"]), **info}
                write_atomic(out / f"result_{name}.json", json.dumps(summary))
                results[name] = summary
                timings[f"predict_{name}"] = time.time() - t1
                click.echo(f"{name}: mean pLDDT {summary['mean_plddt']:.2f}"
                           + (f", pTM {summary['ptm']:.3f}" if "ptm" in summary else "")
                           + f" ({timings[f'predict_{name}']:.1f} s)", err=True)
            except Exception as e:  # noqa: BLE001 - one failing model must not stop the others
                failed.append(name)
                click.echo(f"Error: {name} failed: {type(e).__name__}: {e}", err=True)
                (out / "logs").mkdir(parents=True, exist_ok=True)
                write_atomic(out / "logs" / f"{name}.traceback.txt", traceback.format_exc())
            write_atomic(out / "timings.json", json.dumps(timings, indent=2))
    if not results:
        _fail("every model failed; see the errors above", 1)

    import numpy as np
    res_np = {k: {kk: np.asarray(vv) for kk, vv in v.items() if kk in ("plddt", "ptm", "predicted_aligned_error")}
              for k, v in results.items()}
    relaxed = {}
    if relax:
        relaxed = _relax(out, results, on_gpu, timings)
    t2 = time.time()
    order = write_ranked(out, res_np, relaxed)
    from fastfold_cli.plots import write_plots
    write_plots(out, res_np, raw)
    timings["ranking_and_plots"] = time.time() - t2
    write_atomic(out / "timings.json", json.dumps(timings, indent=2))
    click.echo(f"ranked: {', '.join(order)} -> {out}", err=True)
    if failed:
        _fail(f"{len(failed)} model(s) failed: {', '.join(failed)}", 1)


def _load_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _features(chains, out, msa_dir, db_dir, db_config, db_paths, db_preset, templates, max_template_date, msa_mode,
              cpus, ray_address):
    """The raw feature dict: out/features.pkl if it matches the sequence, else from --msa-dir's
    features.pkl, else run the search DAG into `out` (which itself reuses finished searches)."""
    from pipeline import dag, databases
    from pipeline.errors import InputError, ToolError

    seq = chains[0].sequence
    for d in [out] + ([Path(msa_dir)] if msa_dir else []):
        f = Path(d) / "features.pkl"
        if f.is_file():
            with open(f, "rb") as fh:
                raw = pickle.load(fh)
            if raw["sequence"][0].decode() == seq:
                if Path(d) != out:
                    from fastfold_cli.outputs import write_atomic
                    write_atomic(out / "features.pkl", pickle.dumps(raw, protocol=4))
                return raw
            if Path(d) == Path(msa_dir or "") and d != out:
                _fail(f"{f} is for another sequence")
    if msa_dir:
        _fail(f"{msa_dir} has no features.pkl (run `fastfold msa` into it first)")
    try:
        max_template_date = max_template_date or datetime.date.today().isoformat()
        try:
            datetime.date.fromisoformat(max_template_date)
        except ValueError:
            raise InputError(f"--max-template-date must be YYYY-MM-DD, got '{max_template_date}'") from None
        dbs = databases.resolve(db_dir, db_paths, db_config)
        opts = dag.Options(db_preset=db_preset, use_templates=templates, msa_mode=msa_mode,
                           max_template_date=max_template_date, cpus=cpus or os.cpu_count() or 1)
        databases.check(dbs, db_preset, templates, msa_mode)
        dag.run_pipeline(chains, str(out), dbs, opts, executor="ray", ray_address=ray_address,
                         progress=sys.stderr.isatty())
    except InputError as exc:
        _fail(str(exc), 2)
    except ToolError as exc:
        _fail(str(exc), 1)
    with open(out / "features.pkl", "rb") as fh:
        return pickle.load(fh)


def _run_model(model_name, raw, seed, device, precision, backend, max_memory, params_path, num_recycles,
               early_stop):
    """Process features for this preset and seed, load (or randomise) the model, run it within the
    memory budget. Returns (numpy result, processed features, info)."""
    import numpy as np

    from model.params import load_model
    from model.random_params import random_model
    from model.runner import run_planned
    from pipeline.features import preset_config, process_features

    cfg = preset_config(model_name)
    if num_recycles is not None:
        import dataclasses
        cfg = dataclasses.replace(cfg, num_recycle=num_recycles)
    processed = process_features(raw, cfg, seed=seed, ensemble_axis=True, pad=False)
    model = (random_model(model_name, seed=seed, device=device) if params_path is None
             else load_model(params_path, model_name, device=device))
    from model.config import Runtime
    model.prepare(Runtime(precision=precision))
    budget = max_memory * 1024 ** 3 if max_memory else None
    out, plan = run_planned(model, processed, precision, backend, budget, num_recycle=cfg.num_recycle,
                            early_stop_tolerance=early_stop)
    result = {k: v.detach().float().cpu().numpy() for k, v in out.items()
              if k in ("final_atom_positions", "final_atom_mask", "plddt", "ptm", "predicted_aligned_error",
                       "max_predicted_aligned_error", "num_recycles_run")}
    del model, out
    info = {"precision": precision, "backend": backend, "device": device,
            "chunks": {k: v for k, v in plan.chunks.items() if v}}
    first = {k: v[0] if k not in ("seq_length",) and getattr(v, "ndim", 0) >= 1 else v for k, v in processed.items()}
    return result, first, info


def _relax(out: Path, results, on_gpu, timings):
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
            click.echo(f"warning: relaxation of {name} failed: {e}", err=True)
            continue
        write_atomic(path, r)
        relaxed[name] = r
        timings[f"relax_{name}"] = time.time() - t
    return relaxed
