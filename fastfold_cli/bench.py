"""`fastfold bench`: memory and latency of the whole network per length and precision, with random
parameters of a preset's full shapes on random features. Needs only torch, numpy, click, rich."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click

from fastfold_cli.errors import fail


def _lengths(value: str):
    try:
        out = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter("comma-separated integers, e.g. 256,512,1024")
    if not out or min(out) < 1:
        raise click.BadParameter("lengths must be positive integers")
    return out


@click.command("bench")
@click.option("--lengths", default="256,512,1024", show_default=True, help="Comma-separated sequence lengths.")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16"]), default="bf16", show_default=True)
@click.option("--preset", default="model_1", show_default=True)
@click.option("--msa-depth", type=int, default=None, help="Clustered MSA rows (default: the preset's 508/512).")
@click.option("--extra-depth", type=int, default=None, help="Extra MSA rows (default: the preset's 5120/1024).")
@click.option("--templates", type=int, default=4, show_default=True)
@click.option("--recycles", type=int, default=3, show_default=True)
@click.option("--backend", type=click.Choice(["torch", "triton"]), default="torch", show_default=True)
@click.option("--device", default="cuda", show_default=True)
@click.option("--max-memory", type=float, default=None, help="Memory budget in GiB (default: free GPU memory).")
@click.option("--compare", type=click.Choice(["none", "plain"]), default="none", show_default=True,
              help="plain: also run the unchunked, not-in-place PyTorch path in the same process.")
@click.option("--find-max-length", is_flag=True, help="Search the longest N that fits (one pass, isolated trials).")
@click.option("--no-breakdown", is_flag=True, help="Skip the per-module timing hooks.")
@click.option("--no-warmup", is_flag=True, help="Skip the untimed warm-up pass (memory-only runs).")
@click.option("--gpus", type=click.IntRange(min=1), default=1, show_default=True,
              help="DAP: spread each prediction over this many GPUs, one process each (docs/DAP.md).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def bench(lengths, precision, preset, msa_depth, extra_depth, templates, recycles, backend, device, max_memory,
          compare, find_max_length, no_breakdown, no_warmup, gpus, json_path, plot_path):
    """Time and measure the whole network (random parameters) at each length."""
    import torch
    from rich.console import Console
    from rich.table import Table

    import configs
    from model.benchmark import bench_one, make_bench_model
    from model.planner import GB

    lengths = _lengths(lengths)
    if device.startswith("cuda") and not torch.cuda.is_available():
        fail("no CUDA device available (use --device cpu for a slow CPU run)")
    try:
        cfg = configs.load_preset(preset)
    except ValueError as e:
        fail(str(e))
    data = cfg["data"]
    if msa_depth is None:
        msa_depth = data["max_msa_clusters"] - (4 if data["reduce_msa_clusters_by_max_templates"] else 0)
    if extra_depth is None:
        extra_depth = data["max_extra_msa"]
    console = Console(stderr=True)
    budget = max_memory * GB if max_memory else None
    rows = []
    if find_max_length:
        rows.append(_find_max_length(preset, precision, backend, msa_depth, extra_depth, templates, max_memory,
                                     lengths, console))
    elif gpus > 1:
        rows.extend(_bench_dap(gpus, lengths, preset, precision, backend, msa_depth, extra_depth, templates,
                               recycles, budget, console))
        _table(rows, console)
    else:
        model = make_bench_model(preset, precision, device)
        for n in lengths:
            for plain in ([False, True] if compare == "plain" else [False]):
                console.print(f"[bold]N={n}[/] {precision} {'plain' if plain else 'planned'} …")
                r = bench_one(model, n, precision=precision, backend=backend, n_seq=msa_depth, n_extra=extra_depth,
                              n_templ=templates, recycles=recycles, plain=plain, max_memory=budget,
                              breakdown=not no_breakdown, warmup=not no_warmup)
                r.update(preset=preset, device=torch.cuda.get_device_name() if device.startswith("cuda") else "cpu")
                rows.append(r)
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
        _table(rows, console)
    if json_path:
        json_path.write_text(json.dumps(rows, indent=1))
    if plot_path and not find_max_length:
        _plot(rows, plot_path)
    click.echo(json.dumps(rows))


def _bench_dap(gpus, lengths, preset, precision, backend, msa_depth, extra_depth, templates, recycles, budget,
               console):
    """--gpus P: each length on P ranks (model/dap_bench.py), chunks planned per rank; one row per
    length with the slowest rank's time, the largest per-rank peak and every rank's row."""
    from model import dap
    from model.dap_bench import bench_rank

    rows = []
    for n in lengths:
        console.print(f"[bold]N={n}[/] {precision} DAP on {gpus} GPUs …")
        ranks = dap.launch(bench_rank, gpus, args=(preset, n, precision, backend, recycles, msa_depth, extra_depth,
                                                   templates, budget))
        r = {"n_res": n, "path": f"dap{gpus}", "precision": precision, "gpus": gpus, "preset": preset, "ranks": ranks}
        errors = [x["error"] for x in ranks if "error" in x]
        if errors:
            r["error"] = errors[0]
        else:
            r.update(seconds=max(x["seconds"] for x in ranks), seconds_per_pass=ranks[0]["seconds_per_pass"],
                     tflops=ranks[0]["tflops_total"], predicted_peak_gib=ranks[0].get("predicted_peak_gib"))
            if "peak_allocated_gib" in ranks[0]:
                r["peak_allocated_gib"] = max(x["peak_allocated_gib"] for x in ranks)
        rows.append(r)
    return rows


def _table(rows, console):
    from rich.table import Table

    t = Table(title="fastfold bench")
    for col in ("N", "path", "prec", "total s", "s/pass", "TFLOP/s", "peak alloc GiB", "predicted GiB", "top modules"):
        t.add_column(col)
    for r in rows:
        if "error" in r:
            t.add_row(str(r["n_res"]), r["path"], r["precision"], "[red]" + r["error"], "", "", "", "", "")
            continue
        mods = ", ".join(f"{k} {v:.2f}" for k, v in list(r.get("modules_seconds", {}).items())[:3])
        pred = r.get("predicted_peak_gib")
        t.add_row(str(r["n_res"]), r["path"], r["precision"], f"{r['seconds']:.2f}",
                  f"{sum(r['seconds_per_pass']) / len(r['seconds_per_pass']):.2f}", f"{r['tflops']:.0f}",
                  f"{r.get('peak_allocated_gib', float('nan')):.2f}", "-" if pred is None else f"{pred:.2f}", mods)
    console.print(t)


def _plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if "error" not in r]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for pathname in sorted({r["path"] for r in ok}):
        rs = [r for r in ok if r["path"] == pathname]
        ax[0].plot([r["n_res"] for r in rs], [r["seconds"] for r in rs], "o-", label=pathname)
        ax[1].plot([r["n_res"] for r in rs], [r.get("peak_allocated_gib", 0) for r in rs], "o-", label=pathname)
    ax[0].set(xlabel="residues", ylabel="seconds", title="wall time")
    ax[1].set(xlabel="residues", ylabel="GiB", title="peak allocated")
    ax[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _find_max_length(preset, precision, backend, msa_depth, extra_depth, templates, max_memory, lengths, console):
    """Bisect the longest N whose one-pass forward fits, each trial in its own process so an OOM
    cannot poison the next. Starts from the planner's own limit."""
    import torch

    from model.planner import GB, PlanError, Problem, plan

    budget = max_memory * GB if max_memory else torch.cuda.mem_get_info()[0] - 1.5 * GB
    lo, hi = 256, 65536

    def predicted_ok(n):
        try:
            plan(Problem(n, msa_depth + (templates if templates else 0), extra_depth, templates, precision, backend),
                 budget)
            return True
        except PlanError:
            return False

    while hi - lo > 64:  # the planner's limit, cheaply
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if predicted_ok(mid) else (lo, mid)
    trials = {}

    def trial(n):
        cmd = [sys.executable, "-m", "fastfold_cli", "bench", "--lengths", str(n), "--precision", precision,
               "--preset", preset, "--msa-depth", str(msa_depth), "--extra-depth", str(extra_depth), "--templates",
               str(templates), "--recycles", "0", "--backend", backend, "--no-breakdown"]
        if max_memory:
            cmd += ["--max-memory", str(max_memory)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        try:
            res = json.loads(p.stdout.strip().splitlines()[-1])[0]
        except Exception:  # noqa: BLE001 - a crashed trial is a failed trial
            res = {"error": (p.stderr.strip().splitlines() or ["crashed"])[-1]}
        trials[n] = res
        console.print(f"trial N={n}: {'ok' if 'error' not in res else res['error']}")
        return "error" not in res

    n = lo
    while n > 256 and not trial(n):
        n = int(n * 0.9)
    best = n
    step = max(64, n // 20)
    while trial(best + step):
        best += step
    return {"find_max_length": best, "planner_limit": lo, "precision": precision, "trials": trials}
