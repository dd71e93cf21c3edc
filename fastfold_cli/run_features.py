"""`fastfold run-features`: run the network on a processed feature batch (the reference fixtures'
`features.npz` layout) and write every output under the fixtures' key names.

Multimer presets take the raw multimer features (aatype, residue_index, asym_id, entity_id, sym_id,
seq_mask, msa, deletion_matrix, msa_mask, template_*); the network samples the MSA itself:
`--num-msa/--num-extra-msa` set the cluster / extra row counts (default: the preset's) and
`--msa-sampling first` takes rows [:S] as the cluster MSA without BERT masking (reproduces the
reference fixtures), `random` (default) is AlphaFold's Gumbel sampling and masking, seeded by --seed.

This is how any reference check is run; keep its interface stable. Needs only torch, numpy, click, rich.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import click

from fastfold_cli.errors import fail


@click.command("run-features")
@click.argument("features", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--params", "params_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Official AlphaFold parameter file, e.g. params_model_1_ptm.npz.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output .npz with every output array.")
@click.option("--preset", default=None, help="Model preset (default: from the parameter file name).")
@click.option("--num-recycles", type=int, default=None, help="Recycling passes after the first (default: preset's 3).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16"]), default="fp32", show_default=True)
@click.option("--backend", type=click.Choice(["torch", "triton"]), default="torch", show_default=True,
              help="Kernel backend for attention and LayerNorm.")
@click.option("--chunk-size", type=int, default=None, help="Chunk size for every chunked op (default: whole).")
@click.option("--num-msa", type=click.IntRange(min=1), default=None,
              help="Multimer: cluster MSA rows (default: the preset's 508).")
@click.option("--num-extra-msa", type=click.IntRange(min=0), default=None,
              help="Multimer: extra MSA rows (default: the preset's 2048 or 1152).")
@click.option("--msa-sampling", type=click.Choice(["random", "first"]), default=None,
              help="Multimer: 'random' (default) AlphaFold's Gumbel sampling + BERT masking; 'first' rows "
                   "[:num-msa] as the cluster MSA, no masking (the reference fixtures' choice).")
@click.option("--seed", type=int, default=0, show_default=True, help="Multimer: seed of the random MSA sampling.")
@click.option("--early-stop-tolerance", type=float, default=None,
              help="Stop recycling when the Cα distance change falls below this (default: the preset's; "
                   "0.5 Å for multimer, off for monomer).")
@click.option("--gpus", type=click.IntRange(min=1), default=1, show_default=True,
              help="DAP: spread the prediction over this many GPUs (one process each; with --device cpu, "
                   "processes on the CPU through gloo). Monomer and multimer presets (every rank draws the "
                   "same MSA sample).")
def run_features(features, params_path, out_path, preset, num_recycles, device, precision, backend, chunk_size,
                 num_msa, num_extra_msa, msa_sampling, seed, early_stop_tolerance, gpus=1):
    """Run the AlphaFold network on FEATURES (.npz) and write all outputs to --out."""
    import numpy as np
    import torch

    from model.config import Runtime
    from model.params import ParamsError, load_model

    if not features.is_file():
        fail(f"feature file not found: {features}")
    try:
        with np.load(features, allow_pickle=False) as f:
            batch = {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user error here
        fail(f"cannot read feature file {features}: {type(e).__name__}: {e}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda requested but no CUDA device is available")
    try:
        model = load_model(params_path, preset, device="cpu" if gpus > 1 else device)
    except ParamsError as e:
        fail(str(e))
    if model.multimer:
        from model.multimer import MsaSampling
        need = ("aatype", "residue_index", "asym_id", "entity_id", "sym_id", "seq_mask", "msa", "deletion_matrix",
                "msa_mask", "template_aatype", "template_all_atom_positions", "template_all_atom_mask")
        kind = "a multimer feature batch"
        sampling = MsaSampling(num_msa, num_extra_msa, msa_sampling or "random", seed)
        model.evoformer.sampling = sampling
    else:
        given = [o for o, v in (("--num-msa", num_msa), ("--num-extra-msa", num_extra_msa),
                                ("--msa-sampling", msa_sampling)) if v is not None]
        if given:
            fail(f"{', '.join(given)}: only for AlphaFold-Multimer presets (monomer batches are already sampled)")
        need, kind = ("aatype", "target_feat", "msa_feat", "seq_mask"), "a processed feature batch"
        sampling = None
    missing = [k for k in need if k not in batch]
    if missing:
        fail(f"{features} is not {kind}: missing {', '.join(missing)}")
    if gpus > 1:
        if device.startswith("cuda") and torch.cuda.device_count() < gpus:
            fail(f"--gpus {gpus}: only {torch.cuda.device_count()} CUDA devices visible")
        from model import dap
        t0 = time.perf_counter()
        arrays = dap.launch(_run_rank, gpus, "nccl" if device.startswith("cuda") else "gloo",
                            args=(params_path, preset, batch, num_recycles, precision, backend, chunk_size,
                                  early_stop_tolerance, device.startswith("cuda"), sampling))[0]
        _save(arrays, out_path)
        click.echo(f"wrote {len(arrays)} outputs to {out_path} ({time.perf_counter() - t0:.2f} s on {gpus} "
                   f"{'GPUs' if device.startswith('cuda') else 'CPU processes'}, {precision})", err=True)
        return
    rt = Runtime.chunked_all(chunk_size, precision=precision, backend=backend, inplace=bool(chunk_size))
    model.prepare(rt)
    t0 = time.perf_counter()
    out = model(batch, rt, num_recycle=num_recycles, early_stop_tolerance=early_stop_tolerance,
                return_prev_inputs=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    arrays = {k: v.detach().float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy()
              for k, v in out.items()}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out_path)
    click.echo(f"wrote {len(arrays)} outputs to {out_path} ({dt:.2f} s on {device}, {precision})", err=True)


def _run_rank(shard, params_path, preset, batch, num_recycles, precision, backend, chunk_size, early_stop_tolerance,
              cuda, sampling=None):
    """One DAP rank of --gpus (model/dap.py launches it): rank 0 returns the outputs as numpy.
    sampling: a multimer's MsaSampling (the same seed on every rank: the same MSA sample)."""
    import torch

    from model.config import Runtime
    from model.params import load_model
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    model = load_model(params_path, preset, device=device)
    if sampling is not None:
        model.evoformer.sampling = sampling
    rt = Runtime.chunked_all(chunk_size, precision=precision, backend=backend, inplace=bool(chunk_size), shard=shard)
    model.prepare(rt)
    out = model(batch, rt, num_recycle=num_recycles, early_stop_tolerance=early_stop_tolerance,
                return_prev_inputs=True, device=device)
    if shard is not None and shard.rank != 0:
        return None
    return {k: v.detach().float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy() for k, v in out.items()}


def _save(arrays, out_path):
    import numpy as np
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out_path)
