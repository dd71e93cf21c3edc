"""`fastfold run-features`: run the network on a processed feature batch (the reference fixtures'
`features.npz` layout) and write every output under the fixtures' key names.

This is how any reference check is run; keep its interface stable. Needs only torch, numpy, click, rich.
"""
from __future__ import annotations

import os
import sys
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
def run_features(features, params_path, out_path, preset, num_recycles, device, precision, backend, chunk_size):
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
    missing = [k for k in ("aatype", "target_feat", "msa_feat", "seq_mask") if k not in batch]
    if missing:
        fail(f"{features} is not a processed feature batch: missing {', '.join(missing)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("--device cuda requested but no CUDA device is available")
    try:
        model = load_model(params_path, preset, device=device)
    except ParamsError as e:
        fail(str(e))
    rt = Runtime.chunked_all(chunk_size, precision=precision, backend=backend, inplace=bool(chunk_size))
    model.prepare(rt)
    t0 = time.perf_counter()
    out = model(batch, rt, num_recycle=num_recycles, return_prev_inputs=True)
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
