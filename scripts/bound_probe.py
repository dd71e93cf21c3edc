#!/usr/bin/env python3
"""How often does the attention option `bound` fall back to the online softmax in the network? (#6)

    python3 scripts/bound_probe.py --length 1024 [--precision bf16] [--json out.json]

One pass of the network (model_1 shapes: 508 clusters, 5,120 extra rows, 4 templates; random
parameters and features, the planner's plan, as `fastfold bench` runs it) with
Runtime.attention_options {"bound": true}: every attention's tiles whose sum underflowed against the
precomputed logit bound are counted (the kernel's flags, kept through the private config key
`_probe`). Then the same pass without the option: the outputs' largest difference. Random parameters
say nothing of the official weights' logits: run it with real parameters (--params) where you have
them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--params", default=None, help="an official parameter file (.npz) instead of random ones")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from model.benchmark import make_bench_model
    from model.params import load_model
    from model.random_params import random_features
    from model.runner import make_plan

    dev = torch.device(args.device)
    model = load_model(args.params, device=dev) if args.params else make_bench_model("model_1", args.precision, dev)
    batch = random_features("model_1", args.length, 508, 5120, 4, seed=0)
    rt = make_plan(model, batch, args.precision, "triton", None, dev).runtime()
    probe: list = []
    rt_bound = dataclasses.replace(rt, attention_options={"bound": True, "_probe": probe})
    out_b = model(batch, rt_bound, num_recycle=0, pair_outputs=False)
    flagged = [int(f.sum()) for f in probe]
    tiles = [f.numel() for f in probe]
    out_o = model(batch, rt, num_recycle=0, pair_outputs=False)
    diffs = {}
    for key in ("plddt", "final_atom_positions"):
        if key in out_b and key in out_o:
            a, b = out_b[key].float(), out_o[key].float()
            diffs[key] = float((a - b).abs().max())
    res = dict(n_res=args.length, precision=args.precision, params=args.params or "random",
               calls=len(probe), calls_with_fallback=sum(1 for f in flagged if f),
               tiles=sum(tiles), tiles_flagged=sum(flagged), max_abs_diff_vs_online=diffs)
    print(json.dumps(res))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
