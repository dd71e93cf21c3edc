"""Where one pass of the network spends its GPU time, kernel by kernel (torch.profiler).

    python3 scripts/profile_pass.py --length 1024 --precision bf16 --backend triton --json prof.json

model_1 shapes (508 clusters, 5,120 extra rows, 4 templates), random parameters and features, the
planner's plan for the free memory (what `fastfold bench` runs). One untimed pass first (Triton
compilation, cuBLAS heuristics), then one profiled pass (num_recycle=0). Prints the kernels with the
most CUDA time and the share of each; the JSON holds the top 60 with call counts. For reading where
time goes (issue 6), not a benchmark: the profiler adds its own overhead to short kernels.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _device_us(e) -> float:
    """An event's own GPU time in microseconds (the attribute's name differs across torch versions)."""
    us = getattr(e, "self_device_time_total", None)
    return getattr(e, "self_cuda_time_total", 0) if us is None else us


def _scope_hooks(model):
    """Forward pre/post hooks that open and close a record_function scope named after each module."""
    from torch.autograd.profiler import record_function
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue

        def pre(m, args, _name=name):
            m._ff_scope = record_function("mod:" + _name)
            m._ff_scope.__enter__()

        def post(m, args, out):
            m._ff_scope.__exit__(None, None, None)

        handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    return handles


def _by_module(prof, cuda: bool) -> list:
    """Self time of every aten operator summed per (innermost module scope, operator). Block
    indices are folded (evoformer_iteration.17 -> evoformer_iteration.*)."""
    import re
    from collections import defaultdict
    tot, calls = defaultdict(float), defaultdict(int)
    for e in prof.events():
        if not e.name.startswith("aten::"):
            continue
        us = _device_us(e) if cuda else e.self_cpu_time_total
        if not us:
            continue
        p, scope = e.cpu_parent, "(outside modules)"
        while p is not None:
            if p.name.startswith("mod:"):
                scope = re.sub(r"\.\d+(?=\.|$)", ".*", p.name[4:])
                break
            p = p.cpu_parent
        tot[scope, e.name] += us / 1e3
        calls[scope, e.name] += 1
    rows = [{"module": k[0], "op": k[1], "ms": v, "calls": calls[k]} for k, v in tot.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--precision", default="bf16", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--backend", default="triton", choices=["torch", "triton"])
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--by-module", action="store_true",
                    help="also attribute each operator's time to the innermost network module that ran it "
                         "(record_function scopes from forward hooks): where the copies and glue come from")
    ap.add_argument("--attention-options", default=None, metavar="JSON",
                    help="the attention kernel's options for this pass (Runtime.attention_options, as "
                         "`fastfold bench --attention-options`), e.g. '{\"sites\": [\"tri_att\"], \"BLOCK_M\": 128}'")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    opts = None
    if args.attention_options is not None:
        from model.config import parse_attention_options
        try:
            opts = parse_attention_options(args.attention_options)
        except ValueError as e:
            ap.error(f"--attention-options: {e}")

    import torch
    from torch.profiler import ProfilerActivity, profile

    from model.benchmark import make_bench_model
    from model.random_params import random_features
    from model.runner import make_plan

    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    model = make_bench_model("model_1", args.precision, dev)
    batch = random_features("model_1", args.length, 508, 5120, 4, seed=0)
    p = make_plan(model, batch, args.precision, args.backend, None, dev)
    rt = p.runtime().with_(attention_options=opts)
    model(batch, rt, num_recycle=0, pair_outputs=False)
    sync()
    t0 = time.perf_counter()
    model(batch, rt, num_recycle=0, pair_outputs=False)
    sync()
    plain_s = time.perf_counter() - t0
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    handles = _scope_hooks(model) if args.by_module else []
    with profile(activities=acts) as prof:
        model(batch, rt, num_recycle=0, pair_outputs=False)
        sync()
    for h in handles:
        h.remove()
    rows = []
    for e in prof.key_averages():
        cuda_us = _device_us(e)
        if cuda_us > 0:
            rows.append({"name": e.key[:160], "cuda_ms": cuda_us / 1e3, "calls": e.count})
    rows.sort(key=lambda r: -r["cuda_ms"])
    total = sum(r["cuda_ms"] for r in rows)
    print(f"N={args.length} {args.precision} {args.backend}: one pass {plain_s:.3f} s unprofiled; "
          f"GPU kernel time {total / 1e3:.3f} s in the profiled pass; chunks {dict((k, v) for k, v in p.chunks.items() if v)}")
    for r in rows[:args.top]:
        print(f"{r['cuda_ms']:9.2f} ms {100 * r['cuda_ms'] / total:5.1f}% {r['calls']:6d}x  {r['name'][:110]}")
    by_site = _by_module(prof, dev.type == "cuda") if args.by_module else []
    if by_site:
        print("\nby innermost module and operator (self time):")
        for r in by_site[:args.top]:
            print(f"{r['ms']:9.2f} ms {r['calls']:6d}x  {r['module'][:60]:60s} {r['op']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"n_res": args.length, "precision": args.precision, "backend": args.backend, "attention_options": opts,
                       "pass_seconds": plain_s, "kernel_ms_total": total, "gpu": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
                       "top": rows[:60], "by_site": by_site[:80]}, fh, indent=1)


if __name__ == "__main__":
    main()
