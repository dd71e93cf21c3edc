"""DAP benchmark: one prediction of random model_1-shaped features on P GPUs (one process each).

    python -m model.dap_bench --world 1 --n-res 2048 --precision bf16 --json /tmp/dap1.json
    python -m model.dap_bench --world 2 --n-res 2048 --precision bf16 --json /tmp/dap2.json
    python -m model.dap_bench --world 4 --n-res 2048 --precision bf16 --json /tmp/dap4.json

Run each world size as its own command (the 1-GPU baseline then holds no memory while the others
run). Every rank builds the same seeded random model and features; chunks come from the
planner's one-rank memory model (`Problem.world` = P: the rank's shards, gathered biases, collective
and all_to_all buffers), or with --plan-world 1 from the 1-GPU plan (the baseline's chunks).
Prints one JSON row: wall time, time per pass, per-rank peak memory (allocated / reserved).
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Optional

import torch

from model import dap


def median_call_ms(fn, reps: int, shard) -> float:
    """Median wall-clock milliseconds of `reps` calls of fn() after two warm-up calls (compilation,
    allocator): ranks barriered and the device synchronised before and after each call. The
    probes (scripts/dap_trimul_probe.py, scripts/dap_op_probe.py) time single ops with it."""
    import statistics
    times = []
    cuda = torch.cuda.is_available()
    for i in range(reps + 2):
        dap.barrier(shard)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_rank(shard, preset: str, n_res: int, precision: str, backend: str, recycles: int, n_seq: int,
               n_extra: int, n_templ: int, max_memory: Optional[float], plan: bool = True,
               plan_world: Optional[int] = None, probe_blocks: Optional[int] = None,
               memory_cap: Optional[float] = None, breakdown: bool = False) -> dict:
    """One rank's run (dap.launch). probe_blocks: a memory probe as `fastfold bench --probe-blocks`
    (only the first K blocks of each stack, every weight loaded, no warm-up): its peak is the full
    network's, its time is not (reported as probe_seconds). memory_cap: bytes this rank's CUDA
    allocator may hold (`bench --max-memory` on a larger card), as for one GPU. breakdown: this
    rank's per-module CUDA time (model.benchmark.ModuleTimer), to see which modules scale with P."""
    from model.benchmark import ModuleTimer, af2_flops, cap_allocator, make_bench_model, peak_allocated
    from model.config import Runtime
    from model.planner import GB
    from model.random_params import random_features
    from dataclasses import replace

    from model.planner import plan as make_chunk_plan
    from model.runner import default_budget, problem_for
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    cuda = device.type == "cuda"
    if cuda and memory_cap:
        cap_allocator(memory_cap, device)
    model = make_bench_model(preset, precision, device)
    batch = random_features(preset, n_res, n_seq, n_extra, n_templ, seed=0)
    row = {"world": dap.world(shard), "rank": shard.rank if shard else 0, "n_res": n_res, "precision": precision,
           "backend": backend, "n_seq": n_seq, "n_extra": n_extra, "n_templ": n_templ, "recycles": recycles}
    if plan:
        prob = replace(problem_for(model, batch, precision, backend),
                       world=plan_world if plan_world is not None else dap.world(shard))
        p = make_chunk_plan(prob, max_memory if max_memory is not None else default_budget(device))
        rt = p.runtime().with_(shard=shard)
        row["chunks"] = {k: v for k, v in p.chunks.items() if v}
        row["plan_world"] = prob.world
        row["predicted_peak_gib"] = p.predicted_peak / GB
    else:
        rt = Runtime(precision=precision, backend=backend, shard=shard, inplace=True)
    if probe_blocks:
        rt = rt.with_(max_blocks=probe_blocks)
        row["probe_blocks"] = probe_blocks
    try:
        if not probe_blocks:
            model(batch, rt, num_recycle=0, device=device, pair_outputs=False)  # warm-up: kernels, allocator
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        dap.barrier(shard)
        timer = ModuleTimer(model) if (breakdown and cuda) else None
        marks = []

        def on_pass(i, sm):
            if cuda:
                torch.cuda.synchronize()
            marks.append(time.perf_counter())

        t0 = time.perf_counter()
        out = model(batch, rt, num_recycle=recycles, callback=on_pass, device=device, pair_outputs=False)
        if cuda:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
    except torch.cuda.OutOfMemoryError:
        row["error"] = "out of memory"
        return row
    pre = "probe_" if probe_blocks else ""
    row.update({pre + "seconds": t1 - t0, pre + "seconds_per_pass": [b - a for a, b in zip([t0] + marks[:-1], marks)],
                pre + "heads_seconds": t1 - marks[-1], "mean_plddt": float(out["plddt"].mean())})
    if cuda:
        row["peak_allocated_gib"] = peak_allocated(timer) / GB
        row["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / GB
    if timer:
        row["modules_seconds"] = timer.totals()
        row["modules_peak_gib"] = {k: v / GB for k, v in sorted(timer.peaks.items(), key=lambda kv: -kv[1])}
        timer.close()
    if not probe_blocks:
        row["tflops_total"] = af2_flops(n_res, n_seq + n_templ, n_extra, n_templ, recycles + 1) / (t1 - t0) / 1e12
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=int, default=1, help="GPUs (one process each)")
    ap.add_argument("--backend-dist", default=None, help="nccl | gloo (default: nccl with CUDA)")
    ap.add_argument("--n-res", type=int, default=2048)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--backend", default="torch", help="kernel backend: torch | triton")
    ap.add_argument("--preset", default="model_1")
    ap.add_argument("--recycles", type=int, default=3)
    ap.add_argument("--msa-depth", type=int, default=508)
    ap.add_argument("--extra-depth", type=int, default=5120)
    ap.add_argument("--templates", type=int, default=4)
    ap.add_argument("--max-memory", type=float, default=None, help="GiB budget of the 1-GPU plan")
    ap.add_argument("--no-plan", action="store_true", help="no chunking (in place only)")
    ap.add_argument("--plan-world", type=int, default=None, help="plan chunks as for this many ranks "
                    "(default: --world; 1: the 1-GPU baseline's chunks)")
    ap.add_argument("--breakdown", action="store_true", help="per-module CUDA time on every rank "
                    "(forward hooks with CUDA events; adds a little time)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    mm = a.max_memory * 2 ** 30 if a.max_memory else None
    rows = dap.launch(bench_rank, a.world, a.backend_dist,
                      args=(a.preset, a.n_res, a.precision, a.backend, a.recycles, a.msa_depth, a.extra_depth,
                            a.templates, mm, not a.no_plan, a.plan_world, None, None, a.breakdown))
    summary = {"world": a.world, "n_res": a.n_res, "precision": a.precision,
               "seconds": max(r.get("seconds", float("nan")) for r in rows),
               "max_peak_allocated_gib": max(r.get("peak_allocated_gib", float("nan")) for r in rows),
               "ranks": rows}
    print(json.dumps(summary, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
