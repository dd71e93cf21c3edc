"""Where the peak GPU memory of one forward pass goes (a tool for the memory planner's model).

    python3 scripts/mem_snapshot.py --length 1024 --precision bf16 [--max-memory GiB] [--json F]

Records the CUDA caching allocator's history for one pass (random parameters, model_1 shapes),
replays it to the moment of the peak and lists the live allocations there, grouped by the line of
model/ or kernels/ that made them; plus the memory live at the entry of each stack/module, to
compare with model/planner.py's persistent and per-op bytes. CUDA only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from model.benchmark import make_bench_model  # noqa: E402
from model.planner import GB, PlanError  # noqa: E402
from model.random_params import random_features  # noqa: E402
from model.runner import make_plan  # noqa: E402

OURS = ("/model/", "/kernels/")


def site(frames) -> str:
    for f in frames:
        fn = f.get("filename", "")
        if any(o in fn for o in OURS):
            return f"{fn.split('/')[-2]}/{fn.split('/')[-1]}:{f.get('line')} {f.get('name')}"
    return "other"


def peak_breakdown(snapshot) -> dict:
    trace = snapshot["device_traces"][0]
    live, total, best, best_i = {}, 0, 0, -1
    for i, ev in enumerate(trace):
        a = ev["action"]
        if a == "alloc":
            live[ev["addr"]] = ev["size"]
            total += ev["size"]
            if total > best:
                best, best_i = total, i
        elif a == "free_completed" and ev["addr"] in live:
            total -= live.pop(ev["addr"])
    live = {}
    for ev in trace[:best_i + 1]:
        if ev["action"] == "alloc":
            live[ev["addr"]] = (ev["size"], site(ev.get("frames", [])))
        elif ev["action"] == "free_completed":
            live.pop(ev["addr"], None)
    groups = defaultdict(lambda: [0, 0])
    for size, s in live.values():
        groups[s][0] += size
        groups[s][1] += 1
    at = site(trace[best_i].get("frames", [])) if best_i >= 0 else "?"
    return {"traced_peak_gib": best / GB, "peak_at": at,
            "live": [(s, v[0] / GB, v[1]) for s, v in sorted(groups.items(), key=lambda kv: -kv[1][0])[:30]]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--backend", default="triton")
    ap.add_argument("--max-memory", type=float, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dev = torch.device("cuda")
    model = make_bench_model("model_1", args.precision, dev)
    batch = random_features("model_1", args.length, 508, 5120, 4)
    budget = None if args.max_memory is None else args.max_memory * GB
    try:
        p = make_plan(model, batch, args.precision, args.backend, budget, dev)
    except PlanError as e:
        print("plan refused:", e)
        p = make_plan(model, batch, args.precision, args.backend, None, dev)
    rt = p.runtime()
    entry = []
    for name, mod in model.named_modules():
        depth = name.count(".")
        if name and (depth <= 1 or (depth == 2 and name.endswith(".0"))):
            mod.register_forward_pre_hook(lambda m, a, name=name: entry.append((name, torch.cuda.memory_allocated() / GB)))
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() / GB
    torch.cuda.memory._record_memory_history(enabled="all", context="alloc", stacks="python", max_entries=2_000_000)
    model(batch, rt, num_recycle=0, pair_outputs=False)  # what predict keeps
    torch.cuda.synchronize()
    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    res = {"n_res": args.length, "precision": args.precision, "budget_gib": args.max_memory,
           "chunks": p.chunks, "predicted_peak_gib": p.predicted_peak / GB, "persistent_gib": p.persistent / GB,
           "planner_op_gib": {k: v / GB for k, v in p.transients.items()},
           "allocated_before_pass_gib": base, "peak_allocated_gib": torch.cuda.max_memory_allocated() / GB,
           "entry_gib": entry, **peak_breakdown(snap)}
    print(f"N={args.length} {args.precision} budget={args.max_memory}: measured peak {res['peak_allocated_gib']:.2f} GiB, "
          f"predicted {res['predicted_peak_gib']:.2f}, persistent(pred) {res['persistent_gib']:.2f}, before pass {base:.2f}")
    print("chunks", {k: v for k, v in p.chunks.items() if v})
    print("peak at", res["peak_at"])
    for s, g, c in res["live"]:
        print(f"  {g:7.3f} GiB  x{c:<4d} {s}")
    for name, g in entry:
        print(f"  entry {g:7.3f}  {name}")
    if args.json:
        json.dump(res, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
