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


def _attention_options(text, compare):
    """--attention-options: a JSON object of the attention kernel's options (needs --compare attention)."""
    if (text is None) != (compare != "attention"):
        fail("--compare attention and --attention-options go together")
    if text is None:
        return None
    from model.config import parse_attention_options
    try:
        return parse_attention_options(text)
    except ValueError as e:
        fail(f"--attention-options: {e}")


@click.command("bench")
@click.option("--lengths", default=None,
              help="Comma-separated sequence lengths [default: 256,512,1024]. With --find-max-length: the "
                   "search range LO,HI [default: 256,65536].")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16"]), default="bf16", show_default=True)
@click.option("--preset", default="model_1", show_default=True)
@click.option("--msa-depth", type=int, default=None, help="Clustered MSA rows (default: the preset's 508/512).")
@click.option("--extra-depth", type=int, default=None, help="Extra MSA rows (default: the preset's 5120/1024).")
@click.option("--templates", type=int, default=4, show_default=True)
@click.option("--recycles", type=int, default=None,
              help="Recycling iterations [default: 3; 0 (one pass) with --probe-blocks or --find-max-length].")
@click.option("--backend", type=click.Choice(["torch", "triton"]), default="torch", show_default=True)
@click.option("--device", default="cuda", show_default=True)
@click.option("--max-memory", type=float, default=None,
              help="The planner's memory budget in GiB (default: free GPU memory - 1.5). On CUDA the process's "
                   "allocator is also capped at this + 1.5 GiB (the default budget's margin), so a larger card "
                   "runs as one with that much free memory would: --max-memory 77 ~ an 80 GB H100.")
@click.option("--compare", type=click.Choice(["none", "plain", "fused", "masks", "residual", "bias", "gluon",
                                                   "templates", "qkv", "attention"]),
              default="none",
              show_default=True,
              help="plain: also run the unchunked, not-in-place, unfused PyTorch path in the same process; fused: "
                   "also run the planned path without the fused triangle-multiplication, transition, "
                   "residual-projection and pair-bias kernels (Runtime.fused_tri_mul, fused_transition, "
                   "fused_residual, fused_bias; on by default); masks: also run it with every attention "
                   "applying its key mask even where it is all ones (Runtime.skip_dense_masks); residual: also "
                   "run it with the attentions' output projections and residual adds as separate passes "
                   "(Runtime.fused_residual); bias: also run it with the pair biases' LayerNorm, projection "
                   "and transpose as separate passes (Runtime.fused_bias); gluon: also run it with the "
                   "attentions through the Gluon kernel for Hopper where it applies (Runtime.gluon_attention); templates: "
                   "also run it with the template pair stack recomputed in every recycling pass "
                   "(Runtime.keep_templates off); qkv: also run it with the pair attentions' input LayerNorm and "
                   "q/k/v/gate projection in one kernel (Runtime.fused_qkv, off by default); attention: also run "
                   "it with the attention kernel options of --attention-options (Runtime.attention_options).")
@click.option("--attention-options", default=None,
              help="--compare attention: the Triton attention kernel's options as a JSON object, e.g. "
                   "'{\"paired\": true}' or '{\"head_dims\": [32], \"rows\": 4, \"num_stages\": 2}' "
                   "(\"head_dims\" scopes the other keys to those head dims, \"sites\" to those of "
                   "msa_row_att, extra_row_att, msa_col_att, tri_att).")
@click.option("--find-max-length", is_flag=True,
              help="Search the longest N that fits: planner bisection, then isolated one-pass trials.")
@click.option("--probe-blocks", type=click.IntRange(min=1), default=None,
              help="Memory probe: run only the first K blocks of each stack (all parameters loaded); the peak "
                   "is the full network's, the time is not (reported as probe seconds, no TFLOP/s).")
@click.option("--step", type=click.IntRange(min=1), default=64, show_default=True,
              help="--find-max-length: resolution of the search in residues.")
@click.option("--max-trials", type=click.IntRange(min=1), default=6, show_default=True,
              help="--find-max-length: most isolated trials to run.")
@click.option("--trial-timeout", type=float, default=None,
              help="--find-max-length: seconds before a trial is stopped and counted as failed (timeout).")
@click.option("--no-breakdown", is_flag=True, help="Skip the per-module timing hooks.")
@click.option("--no-warmup", is_flag=True, help="Skip the untimed warm-up pass (memory-only runs).")
@click.option("--gpus", type=click.IntRange(min=1), default=1, show_default=True,
              help="DAP: spread each prediction over this many GPUs, one process each (docs/DAP.md).")
@click.option("--kernels", is_flag=True,
              help="Instead of the network: the kernel micro-benchmark (kernels/benchmark.py): our Triton "
                   "kernels against the PyTorch reference, SDPA and FlexAttention in the same process, "
                   "TFLOP/s and GB/s per kernel (bf16, AlphaFold2 shapes; CUDA only).")
@click.option("--kernel-cases", default=None,
              help="--kernels: comma-separated cases of kernels/benchmark.py [default: all of them: ln, tri2048, "
                   "extra_msa, tri1024, msa_row, tmpl2048, msa_col, opm, trimul_out, transition, linres, gated, "
                   "qkv].")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def bench(lengths, precision, preset, msa_depth, extra_depth, templates, recycles, backend, device, max_memory,
          compare, attention_options, find_max_length, probe_blocks, step, max_trials, trial_timeout, no_breakdown,
          no_warmup, gpus, kernels, kernel_cases, json_path, plot_path):
    """Time and measure the whole network (random parameters) at each length."""
    import torch
    from rich.console import Console

    if kernels:
        from kernels.benchmark import CASES, check_cases, run as run_kernels
        cases = [c.strip() for c in (kernel_cases or ",".join(CASES)).split(",") if c.strip()]
        try:
            check_cases(cases)
        except ValueError as e:
            fail(f"--kernel-cases: {e}")
        if not torch.cuda.is_available():
            fail("--kernels needs a CUDA GPU (the micro-benchmark times compiled Triton kernels)")
        run_kernels(cases, json_path=str(json_path) if json_path else None)
        return

    import configs
    from model.benchmark import bench_one, make_bench_model
    from model.planner import GB

    lengths = _lengths(lengths or ("256,65536" if find_max_length else "256,512,1024"))
    attn_opts = _attention_options(attention_options, compare)
    if recycles is None:
        recycles = 0 if (probe_blocks or find_max_length) else 3
    if compare != "none" and (gpus > 1 or find_max_length):
        fail("--compare runs on one GPU without --find-max-length (drop --gpus / --find-max-length, or --compare)")
    if find_max_length and gpus > 1:
        fail("--find-max-length is not supported with --gpus > 1 yet (run --gpus P --probe-blocks K per length)")
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
                                     lengths, console, device=device, probe_blocks=probe_blocks, recycles=recycles,
                                     step=step, max_trials=max_trials, trial_timeout=trial_timeout))
        _report_search(rows[-1], console)
    elif gpus > 1:
        rows.extend(_bench_dap(gpus, lengths, preset, precision, backend, msa_depth, extra_depth, templates,
                               recycles, budget, console, probe_blocks))
        _table(rows, console)
    else:
        card = _cap_memory(max_memory) if device.startswith("cuda") else {}
        model = make_bench_model(preset, precision, device)
        # (label, bench_one options) of each run per length; the default path first
        default = ("planned", {})
        variants = {"plain": [default, ("plain", dict(plain=True))],
                    "fused": [default, ("planned, unfused tri-mul/transition/residual", dict(fused=False))],
                    "masks": [default, ("planned, every key mask applied",
                                        dict(overrides={"skip_dense_masks": False}))],
                    "residual": [default, ("planned, output projection and residual add apart",
                                           dict(overrides={"fused_residual": False}))],
                    "bias": [default, ("planned, pair-bias LayerNorm and projection apart",
                                       dict(overrides={"fused_bias": False}))],
                    "gluon": [("planned, Triton attention", dict(overrides={"gluon_attention": False})),
                              ("planned, Gluon attention", dict(overrides={"gluon_attention": True}))],
                    "templates": [default, ("planned, template stacks in every pass",
                                            dict(overrides={"keep_templates": False}))],
                    "qkv": [default, ("planned, attention input LayerNorm and projection fused",
                                      dict(overrides={"fused_qkv": True}))],
                    "attention": [default, ("planned, attention options " + json.dumps(attn_opts),
                                            dict(overrides={"attention_options": attn_opts}))]}
        for n in lengths:
            for label, opts in variants.get(compare, [default]):
                console.print(f"[bold]N={n}[/] {precision} {label} …")
                r = bench_one(model, n, precision=precision, backend=backend, n_seq=msa_depth, n_extra=extra_depth,
                              n_templ=templates, recycles=recycles, max_memory=budget,
                              breakdown=not no_breakdown, warmup=not no_warmup, probe_blocks=probe_blocks, **opts)
                r.update(preset=preset, device=torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
                         **card)
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
               console, probe_blocks=None):
    """--gpus P: each length on P ranks (model/dap_bench.py), chunks planned per rank; one row per
    length with the slowest rank's time, the largest per-rank peak and every rank's row.
    probe_blocks: the memory probe on every rank (probe_seconds, no TFLOP/s)."""
    from model import dap
    from model.dap_bench import bench_rank
    from model.planner import GB

    rows = []
    for n in lengths:
        console.print(f"[bold]N={n}[/] {precision} DAP on {gpus} GPUs …")
        ranks = dap.launch(bench_rank, gpus, args=(preset, n, precision, backend, recycles, msa_depth, extra_depth,
                                                   templates, budget, True, None, probe_blocks,
                                                   budget + MARGIN_GIB * GB if budget else None))
        r = {"n_res": n, "path": f"dap{gpus}", "precision": precision, "gpus": gpus, "preset": preset, "ranks": ranks}
        if budget:
            r.update(memory_cap_gib=budget / GB + MARGIN_GIB, planner_budget_gib=budget / GB)
        errors = [x["error"] for x in ranks if "error" in x]
        if errors:
            r["error"] = errors[0]
        elif probe_blocks:
            r.update(probe_blocks=probe_blocks, probe_seconds=max(x["probe_seconds"] for x in ranks),
                     probe_seconds_per_pass=ranks[0]["probe_seconds_per_pass"],
                     probe_heads_seconds=ranks[0]["probe_heads_seconds"],
                     predicted_peak_gib=ranks[0].get("predicted_peak_gib"))
        else:
            r.update(seconds=max(x["seconds"] for x in ranks), seconds_per_pass=ranks[0]["seconds_per_pass"],
                     tflops=ranks[0]["tflops_total"], predicted_peak_gib=ranks[0].get("predicted_peak_gib"))
            if "peak_allocated_gib" in ranks[0]:
                r["peak_allocated_gib"] = max(x["peak_allocated_gib"] for x in ranks)
        rows.append(r)
    return rows


def _table(rows, console):
    from rich.table import Table

    probe = any("probe_blocks" in r for r in rows)
    title = "fastfold bench"
    if probe:
        title += (" - MEMORY PROBE: only the first probe_blocks block(s) of each stack ran; peaks are the full "
                  "network's, times are not")
    t = Table(title=title)
    for col in ("N", "path", "prec", "total s", "s/pass", "TFLOP/s", "peak alloc GiB", "predicted GiB", "top modules"):
        t.add_column(col)
    for r in rows:
        if "error" in r:
            t.add_row(str(r["n_res"]), r["path"], r["precision"], "[red]" + r["error"], "", "", "", "", "")
            continue
        mods = ", ".join(f"{k} {v:.2f}" for k, v in list(r.get("modules_seconds", {}).items())[:3])
        pred = r.get("predicted_peak_gib")
        pre = "probe_" if "probe_blocks" in r else ""
        per_pass = r[pre + "seconds_per_pass"]
        path = r["path"] + (f" probe{r['probe_blocks']}" if pre else "")
        t.add_row(str(r["n_res"]), path, r["precision"], f"{r[pre + 'seconds']:.2f}" + (" (probe)" if pre else ""),
                  f"{sum(per_pass) / len(per_pass):.2f}", f"{r['tflops']:.0f}" if "tflops" in r else "-",
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
        ax[0].plot([r["n_res"] for r in rs], [r.get("seconds", r.get("probe_seconds")) for r in rs], "o-",
                   label=pathname)
        ax[1].plot([r["n_res"] for r in rs], [r.get("peak_allocated_gib", 0) for r in rs], "o-", label=pathname)
    ax[0].set(xlabel="residues", ylabel="seconds", title="wall time")
    ax[1].set(xlabel="residues", ylabel="GiB", title="peak allocated")
    ax[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


# The margin default_budget (model/runner.py) leaves between the free memory and the planner's budget.
MARGIN_GIB = 1.5


def _cap_memory(max_memory):
    """--max-memory M on CUDA: cap this process's allocator at M + MARGIN_GIB GiB, so that a larger
    card (an H200) runs as a card with that much free memory would. Returns the JSON fields that
    record the card and the cap."""
    import torch

    from model.benchmark import cap_allocator
    from model.planner import GB

    total = torch.cuda.get_device_properties(0).total_memory
    out = {"card": torch.cuda.get_device_name(), "card_total_gib": total / GB}
    if max_memory:
        cap = cap_allocator((max_memory + MARGIN_GIB) * GB, 0)
        out.update(memory_cap_gib=cap / GB, planner_budget_gib=max_memory)
    return out


def _card_info(device):
    """Name, total and free memory of the GPU, read in a child process so that this one holds no
    CUDA context (which would take memory from the trials)."""
    if not device.startswith("cuda"):
        return {"card": "cpu"}
    code = ("import json, torch; f, t = torch.cuda.mem_get_info(); "
            "print(json.dumps({'card': torch.cuda.get_device_name(), 'total': t, 'free': f}))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    try:
        return json.loads(p.stdout.strip().splitlines()[-1])
    except Exception:  # noqa: BLE001
        fail("could not read the GPU's memory: " + (p.stderr.strip().splitlines() or ["no output"])[-1])


def failure_reason(res):
    """'CUDA OOM', 'planner refusal', 'timeout' or 'crash' for a failed trial's row."""
    err = str(res.get("error", ""))
    if res.get("timeout"):
        return "timeout"
    if "out of memory" in err.lower():
        return "CUDA OOM"
    if res.get("plan_error") or "does not fit" in err or "before any op runs" in err:
        return "planner refusal"
    return "crash"


def search_max_length(lo, hi, planner, trial, step=64, max_trials=6, log=lambda msg: None):
    """The longest N in [lo, hi] (on a grid of `step`) whose trial fits, and the first N that did not.

    planner(n) -> None when the planner fits N, else its refusal (one line); cheap.
    trial(n) -> the trial's row (a failed trial has "error"); expensive, at most `max_trials` calls.
    The planner's limit L is bisected first; a trial at L that fits ends the search (the planner
    refuses the next grid point); one that fails starts a bisection of trials below L."""
    def grid(n):
        return lo + (n - lo) // step * step

    out = {"search_range": [lo, hi], "step": step, "trials": {}, "find_max_length": None, "first_failed": None}
    refusal = planner(lo)
    if refusal is not None:
        out.update(planner_limit=None, first_failed={"n_res": lo, "reason": "planner refusal", "error": refusal})
        return out
    a, b, b_msg = lo, None, None
    refusal = planner(hi)
    if refusal is None:
        a = hi
    else:
        b, b_msg = hi, refusal
        while b - a > step:  # a fits, b does not
            mid = grid((a + b) // 2)
            if mid <= a:
                mid = a + step
            if mid >= b:
                break
            m_msg = planner(mid)
            if m_msg is None:
                a = mid
            else:
                b, b_msg = mid, m_msg
    out["planner_limit"] = a
    out["planner_first_refused"] = b
    log(f"planner: fits N={a}" + (f", refuses N={b}" if b else " (the top of the range)"))
    first_failed = None if b is None else {"n_res": b, "reason": "planner refusal", "error": b_msg}

    def run(n):
        res = trial(n)
        out["trials"][n] = res
        ok = "error" not in res
        log(f"trial N={n}: " + ("ok" if ok else f"{failure_reason(res)}: {res['error']}"))
        return ok

    best = None
    if run(a):
        best = a
    else:
        res = out["trials"][a]
        first_failed = {"n_res": a, "reason": failure_reason(res), "error": res["error"]}
        good, bad = lo, a  # bisect the trials below the planner's limit; `good` not yet confirmed
        while len(out["trials"]) < max_trials and bad - good > step:
            mid = grid((good + bad) // 2)
            if mid <= good:
                mid = good + step
            if mid >= bad:
                break
            if run(mid):
                good = best = mid
            else:
                res = out["trials"][mid]
                bad, first_failed = mid, {"n_res": mid, "reason": failure_reason(res), "error": res["error"]}
        if best is None and good == lo and lo < bad and len(out["trials"]) < max_trials and run(lo):
            best = lo
    out["find_max_length"] = best
    out["first_failed"] = first_failed
    out["trials_run"] = len(out["trials"])
    return out


def _find_max_length(preset, precision, backend, msa_depth, extra_depth, templates, max_memory, lengths, console,
                     device="cuda", probe_blocks=None, recycles=0, step=64, max_trials=6, trial_timeout=None):
    """--find-max-length: the planner's limit by bisection, then isolated trials (each its own
    process, so an OOM cannot poison the next) to confirm it or bisect below it."""
    from model.planner import GB, PlanError, Problem, plan

    info = _card_info(device)
    if max_memory:
        budget = max_memory * GB
    elif device.startswith("cuda"):
        budget = info["free"] - MARGIN_GIB * GB
    else:
        budget = 1e15  # no practical limit on the host (model/runner.py default_budget)
    lo, hi = min(lengths), max(lengths)

    def planner(n):
        try:
            plan(Problem(n, msa_depth + (templates if templates else 0), extra_depth, templates, precision, backend),
                 budget)
            return None
        except PlanError as e:
            return str(e)

    def trial(n):
        cmd = [sys.executable, "-m", "fastfold_cli", "bench", "--lengths", str(n), "--precision", precision,
               "--preset", preset, "--msa-depth", str(msa_depth), "--extra-depth", str(extra_depth), "--templates",
               str(templates), "--recycles", str(recycles), "--backend", backend, "--device", device,
               "--no-breakdown", "--no-warmup"]
        if budget < 1e15:  # the parent's budget, so each trial plans as the search did (a trial's own default
            # would see free memory after its weights are loaded and count them twice)
            cmd += ["--max-memory", f"{budget / GB:.3f}"]
        if probe_blocks:
            cmd += ["--probe-blocks", str(probe_blocks)]
        console.print(f"trial N={n} …")
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=trial_timeout)
        except subprocess.TimeoutExpired:
            return {"n_res": n, "error": f"no result within {trial_timeout:g} s", "timeout": True}
        try:
            res = json.loads(p.stdout.strip().splitlines()[-1])[0]
        except Exception:  # noqa: BLE001 - a crashed trial is a failed trial
            res = {"n_res": n, "error": (p.stderr.strip().splitlines() or ["crashed"])[-1]}
        return res

    out = search_max_length(lo, hi, planner, trial, step=step, max_trials=max_trials, log=console.print)
    out.update(precision=precision, backend=backend, preset=preset, recycles=recycles, passes=recycles + 1,
               n_seq=msa_depth, n_extra=extra_depth, n_templ=templates, card=info.get("card"),
               planner_budget_gib=budget / GB if budget < 1e15 else None)
    if "total" in info:
        out["card_total_gib"] = info["total"] / GB
        out["card_free_gib"] = info["free"] / GB
    if device.startswith("cuda"):  # each trial's allocator cap (_cap_memory)
        out["memory_cap_gib"] = min(budget / GB + MARGIN_GIB, info["total"] / GB)
    if probe_blocks:
        out["probe_blocks"] = probe_blocks
        out["note"] = (f"memory probe: each trial ran only the first {probe_blocks} block(s) of each stack with all "
                       "parameters loaded; a stack's peak is one block's, so the fit is the full network's")
    return out


def _report_search(r, console):
    best, ff = r["find_max_length"], r["first_failed"]
    probe = f", probe {r['probe_blocks']} block(s)" if r.get("probe_blocks") else ""
    cap = f", allocator capped at {r['memory_cap_gib']:.1f} GiB" if r.get("memory_cap_gib") else ""
    console.print(f"[bold]longest N that ran: {best}[/] ({r['precision']}, {r['passes']} pass(es){probe}{cap}; "
                  f"card {r.get('card')}); planner limit {r.get('planner_limit')}")
    if ff:
        console.print(f"first N that failed: {ff['n_res']} ({ff['reason']}: {ff['error']})")
