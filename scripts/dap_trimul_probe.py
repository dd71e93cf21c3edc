#!/usr/bin/env python3
"""DAP triangle multiplication alone, on P GPUs (NCCL): per-call time of each direction for several
collective block sizes (`Runtime.dap_tri_mul_rows`), the session-4 schedule (channel pieces of c/P,
each collective overlapped with the next piece's projections) as a baseline, the bare collectives,
and one GPU's time for the whole pair divided by P (the ideal). model_1 shapes: C_z = 128, c = 128.
Wall-clock per call (synchronised before and after); gloo on CPU for a smoke test.

    python scripts/dap_trimul_probe.py --world 2 --n-res 2048 --json out.json

Prints one line per measurement; times are medians of --reps calls (CUDA events, ranks barriered).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import dap  # noqa: E402
from model.config import Config, Runtime  # noqa: E402
from model.dap_bench import median_call_ms  # noqa: E402


def _op(outgoing: bool, device):
    import configs
    from model.evoformer import TriangleMultiplication
    from model.random_params import init_random_
    e = Config(configs.load_preset("model_1")).embeddings_and_evoformer.evoformer
    op = TriangleMultiplication(e.triangle_multiplication_outgoing if outgoing else e.triangle_multiplication_incoming,
                                128, outgoing)
    init_random_(op, seed=3)
    with torch.no_grad():
        for p in op.parameters():
            p.data = p.data.to(device=device, dtype=torch.bfloat16)
    return op


def session4_schedule(op, z, pair_mask, rt):
    """The session-4 DAP schedule (commit 8af9048), kept here as the baseline being measured."""
    from model.evoformer import _gated, tri_mul_rows
    sh = rt.shard
    n, n_all, dt = z.shape[0], z.shape[1], z.dtype
    norm_in, norm_center, sides = op._weights()
    c = sides[0][0].shape[1]
    cc = rt.chunk("tri_mul") or c
    piece = -(-cc // sh.world)
    rows = tri_mul_rows(n, rt.chunk("tri_mul"))
    mask = dap.mask_weights(sh, dap.scatter(sh, pair_mask, 0)).to(dt)
    p = z.new_empty(c, n, n_all)
    in_flight = None
    world = sh.world
    for c0 in range(0, c, piece):
        c1 = min(c, c0 + piece)
        ab = z.new_empty(2, c1 - c0, n, n_all)
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            x2d = norm_in(z[r0:r1], rt.backend).reshape(-1, z.shape[-1])
            for side in (0, 1):
                _gated(x2d, sides[side], c0, c1, mask[r0:r1], out=ab[side, :, r0:r1], backend=rt.backend)
        a, b = ab[0], ab[1]
        if op.outgoing:
            pending = dap.all_gather_async(sh, b)

            def nxt(a=a, pending=pending, c0=c0, c1=c1):
                every_b = pending.wait().unflatten(0, (world, c1 - c0))
                for r in range(world):
                    p[c0:c1, :, r * n:(r + 1) * n] = torch.matmul(a, every_b[r].transpose(1, 2))
        else:
            partial = a.new_empty(world, c1 - c0, n, n_all)
            for r in range(world):
                torch.matmul(b[:, :, r * n:(r + 1) * n].transpose(1, 2), a, out=partial[r])
            nxt = dap.reduce_scatter_async(sh, partial.view(-1, n, n_all), p[c0:c1]).wait
        del ab, a, b
        if in_flight is not None:
            in_flight()
        in_flight = nxt
    in_flight()
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        z[r0:r1] += op._output(p[:, r0:r1], z[r0:r1], norm_in, norm_center, rt)
    return z


@torch.no_grad()
def rank_fn(shard, n_res: int, qs, reps: int):
    dev = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    world = shard.world
    nl = -(-n_res // world)
    g = torch.Generator(device=dev).manual_seed(1 + shard.rank)
    z = torch.randn(nl, nl * world, 128, generator=g, device=dev).to(torch.bfloat16)
    mask = torch.ones(n_res, n_res, device=dev)
    rt = Runtime(precision="bf16", backend="triton", inplace=True, shard=shard)
    res = []
    for outgoing in (True, False):
        op = _op(outgoing, dev)
        name = "outgoing" if outgoing else "incoming"
        for q in qs:
            res.append((name, f"row blocks of {q}", median_call_ms(lambda: op(z, mask, rt.with_(dap_tri_mul_rows=q)), reps, shard)))
        res.append((name, "auto row blocks", median_call_ms(lambda: op(z, mask, rt), reps, shard)))
        res.append((name, "session-4 channel pieces", median_call_ms(lambda: session4_schedule(op, z, mask, rt), reps, shard)))
        if shard.rank == 0:  # the whole pair on one GPU, no collectives
            zf = torch.randn(nl * world, nl * world, 128, generator=g, device=dev).to(torch.bfloat16)
            one = Runtime(precision="bf16", backend="triton", inplace=True)
            t = median_call_ms(lambda: op(zf, mask, one), reps, None)
            res.append((name, f"one GPU, whole pair / {world}", t / world))
            del zf
        dap.barrier(shard)
    b = torch.randn(128, nl, nl * world, generator=g, device=dev).to(torch.bfloat16)
    res.append(("collective", "all_gather [128, N/P, N]",
                median_call_ms(lambda: dap.all_gather_async(shard, b).wait(), reps, shard)))
    part = torch.randn(world * 128, nl, nl * world, generator=g, device=dev).to(torch.bfloat16)
    out = torch.empty_like(b)
    res.append(("collective", "reduce_scatter [P*128, N/P, N]",
                median_call_ms(lambda: dap.reduce_scatter_async(shard, part, out).wait(), reps, shard)))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--n-res", type=int, default=2048)
    ap.add_argument("--rows", default="128,256,512", help="collective block sizes to time")
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    qs = [int(x) for x in a.rows.split(",") if x]
    out = dap.launch(rank_fn, a.world, None, args=(a.n_res, qs, a.reps))
    rows = []
    for rank, res in enumerate(out):
        for what, how, ms in res:
            rows.append(dict(rank=rank, what=what, how=how, ms=ms))
            if rank == 0:
                print(f"{what:10s} {how:34s} {ms:8.2f} ms")
    if a.json:
        Path(a.json).write_text(json.dumps(dict(world=a.world, n_res=a.n_res, device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                                                rows=rows), indent=1))


if __name__ == "__main__":
    main()
