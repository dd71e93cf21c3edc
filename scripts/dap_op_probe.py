#!/usr/bin/env python3
"""Each op of one Evoformer block alone under DAP on P GPUs (NCCL), against one GPU's time for the
whole tensors divided by P (the ideal): which ops lose time to DAP, and how much per call. model_1
shapes (C_m = 256, C_z = 128), random weights and inputs, bf16, Triton backend, in place.
Wall-clock per call (ranks barriered, synchronised before and after), median of --reps calls;
gloo on CPU for a smoke test (`--world 2 --n-res 24 --n-seq 8 --reps 1`).

    python scripts/dap_op_probe.py --world 2 --n-res 2048 --json out.json

Prints one line per op: P-GPU ms, ideal ms, their ratio (1.0 = perfect scaling).

`--no-comm` replaces every collective by a no-op (outputs left uninitialised): the same schedule's
compute alone, to tell time lost to communication from time lost to smaller, split kernels.
`--trace DIR` also writes a torch.profiler chrome trace of two calls of each op on rank 0
(`DIR/<op>.json`: kernels with their streams, to see what overlaps what).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import dap  # noqa: E402
from model.config import Runtime  # noqa: E402
from model.dap_bench import median_call_ms  # noqa: E402


def _ops(blk, m, z, mm, pm, rt, shard):
    """(name, call) for each op of the block on these inputs (m: the row shard of the MSA, z: the
    row shard of the pair; column-wise MSA ops get the column shard)."""
    m_cols = dap.row_to_col(shard, m)
    col = blk.msa_column_attention
    return [
        ("msa_row_att (+ switch to columns)",
         lambda: blk.msa_row_attention_with_pair_bias(m, mm, z, rt, to_columns=True)),
        ("msa_col_att", lambda: col(m_cols, mm, rt)),
        ("msa_transition", lambda: blk.msa_transition(m_cols, rt)),
        ("outer_product_mean", lambda: blk.outer_product_mean(m_cols, mm, z, rt)),
        ("msa switch back (cols -> rows)", lambda: dap.col_to_row(shard, m_cols)),
        ("tri_mul_outgoing", lambda: blk.triangle_multiplication_outgoing(z, pm, rt)),
        ("tri_mul_incoming", lambda: blk.triangle_multiplication_incoming(z, pm, rt)),
        ("tri_att_start", lambda: blk.triangle_attention_starting_node(z, pm, rt)),
        ("tri_att_end", lambda: blk.triangle_attention_ending_node(z, pm, rt)),
        ("pair_transition", lambda: blk.pair_transition(z, rt)),
        ("whole block", lambda: blk(m, z, mm, pm, rt)),
    ]


def _picked(name: str, prefixes) -> bool:
    """An op selected by --only / --trace-only (None: every op)."""
    return not prefixes or any(name.startswith(p) for p in prefixes)


class _NoWork:
    def wait(self):
        return None


class _NoComm:
    """torch.distributed with every data-moving call a no-op (barriers and groups stay real)."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        if name in ("all_to_all_single", "broadcast", "all_gather_into_tensor", "reduce_scatter_tensor",
                    "all_gather_single", "reduce_scatter_single", "all_reduce", "isend", "irecv"):
            return lambda *a, **k: _NoWork()
        if name == "batch_isend_irecv":
            return lambda ops: [_NoWork()]
        if name == "P2POp":
            return lambda *a, **k: None
        return getattr(self._real, name)


def _no_comm():
    """Patch model.dap so that no collective moves data (the probe's --no-comm)."""
    dap.dist = _NoComm(dap.dist)
    dap._all_gather_single = lambda *a, **k: _NoWork()
    dap._reduce_scatter_single = lambda *a, **k: _NoWork()


def _trace(ops, shard, trace_dir, only=None):
    """Chrome traces of two calls of each op (rank 0 writes; every rank runs the calls); `only`: the
    ops whose name starts with one of these prefixes."""
    from torch.profiler import ProfilerActivity, profile
    Path(trace_dir).mkdir(parents=True, exist_ok=True)
    for name, fn in ops:
        if not _picked(name, only):
            continue
        dap.barrier(shard)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(2):
                fn()
            torch.cuda.synchronize()
        if shard is None or shard.rank == 0:
            tag = name.split(" (")[0].replace(" ", "_")
            prof.export_chrome_trace(str(Path(trace_dir) / f"{tag}.json"))


@torch.no_grad()
def rank_fn(shard, n_res: int, n_seq: int, reps: int, no_comm: bool = False, trace_dir=None, trace_only=None,
            only=None, with_ideal=True):
    if no_comm:
        _no_comm()
    from model.random_params import random_model
    dev = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    world = dap.world(shard)
    blk = random_model("model_1", seed=0, num_evoformer=1, num_extra=1).evoformer.evoformer_iteration[0]
    blk = blk.to(device=dev, dtype=torch.bfloat16)
    n, s = dap.padded(shard, n_res), dap.padded(shard, n_seq)
    g = torch.Generator(device=dev).manual_seed(1 + (shard.rank if shard else 0))
    m = torch.randn(s // world, n, 256, generator=g, device=dev).to(torch.bfloat16)
    z = torch.randn(n // world, n, 128, generator=g, device=dev).to(torch.bfloat16)
    mm, pm = torch.ones(s, n, device=dev), torch.ones(n, n, device=dev)
    rt = Runtime(precision="bf16", backend="triton", inplace=True, shard=shard)
    ops = [(k, f) for k, f in _ops(blk, m, z, mm, pm, rt, shard) if _picked(k, only)]
    res = {name: median_call_ms(fn, reps, shard) for name, fn in ops}
    if trace_dir and torch.cuda.is_available():
        _trace(ops, shard, trace_dir, trace_only)
    del ops
    ideal = {}
    if with_ideal and (shard is None or shard.rank == 0):  # the whole tensors on one GPU, no collectives
        del m, z
        mf = torch.randn(s, n, 256, generator=g, device=dev).to(torch.bfloat16)
        zf = torch.randn(n, n, 128, generator=g, device=dev).to(torch.bfloat16)
        one = Runtime(precision="bf16", backend="triton", inplace=True)
        ideal = {name: median_call_ms(fn, reps, None) / world for name, fn in _ops(blk, mf, zf, mm, pm, one, None)
                 if name in res}
    dap.barrier(shard)
    return {"dap_ms": res, "ideal_ms": ideal}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--n-res", type=int, default=2048)
    ap.add_argument("--n-seq", type=int, default=512, help="MSA rows (clusters + template rows)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-comm", action="store_true", help="every collective a no-op (compute alone)")
    ap.add_argument("--trace", default=None, help="directory for rank 0's chrome traces of each op")
    ap.add_argument("--trace-only", default=None, help="comma-separated op name prefixes to trace")
    ap.add_argument("--only", default=None, help="comma-separated op name prefixes to time")
    ap.add_argument("--no-ideal", dest="ideal", action="store_false", help="skip the one-GPU baseline")
    a = ap.parse_args()
    split = lambda v: v.split(",") if v else None  # noqa: E731
    out = dap.launch(rank_fn, a.world, None, args=(a.n_res, a.n_seq, a.reps, a.no_comm, a.trace,
                                                   split(a.trace_only), split(a.only), a.ideal))
    r0 = out[0]
    rows = []
    for name, ms in r0["dap_ms"].items():
        ideal = r0["ideal_ms"].get(name, float("nan"))
        slowest = max(r["dap_ms"][name] for r in out)
        rows.append(dict(op=name, dap_ms=slowest, no_comm=a.no_comm, ideal_ms=ideal, ratio=slowest / ideal if ideal else float("nan")))
        print(f"{name:36s} {slowest:9.2f} ms  ideal {ideal:8.2f} ms  x{rows[-1]['ratio']:.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps(dict(world=a.world, n_res=a.n_res, n_seq=a.n_seq, rows=rows,
                                                device=torch.cuda.get_device_name(0) if torch.cuda.is_available()
                                                else "cpu"), indent=1))


if __name__ == "__main__":
    main()
