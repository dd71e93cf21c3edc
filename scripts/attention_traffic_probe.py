#!/usr/bin/env python3
"""Is the attention kernel's key loop bound by its operand stream (L2 -> SM traffic) or by its own
latency? A diagnostic for #6, GPU only, not a benchmark of AlphaFold semantics.

    python3 scripts/attention_traffic_probe.py [--lengths 1024 2048] [--json out.json]
    ncu -k regex:_attn_fwd --launch-skip 1 --launch-count 1 --section WarpStateStats ... \
        python3 scripts/attention_traffic_probe.py --once [CONFIG_JSON] --lengths 2048

Triangle attention as the network calls it (q/k/v/gate views of one fused projection, bias
[1, H, N, N], no key mask) is timed four ways that run the *same instructions* but stream less data:
the bias read with a zero row stride (every query row of a tile reads the same 64 columns, so the
L2 serves one row instead of 64), K and V read with a zero key stride (every key of a block the same vector), and both. If the
loop were bound by its operand stream, the stride-0 variants would be much faster; if it is bound
by its MMA -> softmax -> MMA latency, they would not. A plain streaming kernel reads an L2-resident
buffer to give the card's L2 read bandwidth beside it, and the default call's traffic (K and V
tiles per key block per batch row, the bias tile per key block per two rows) is reported in TB/s.
Two grid groupings (`group_ctas`, how many programs share K/V rows and bias strips in L2) are timed
beside the default (1,024) at the same operands.

`--once [CONFIG]` only launches the kernel twice at the first length (with kernel config keys
CONFIG, JSON, if given), for a profiler such as Nsight Compute to read the second launch's stall
reasons and pipe use: the direct answer to the same question.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402


@triton.jit
def _stream(X, out, n_tiles, iters, TILE: tl.constexpr):
    """Each program sums `iters` tiles of X (spread over the buffer): pure read traffic."""
    pid = tl.program_id(0)
    offs = tl.arange(0, TILE)
    acc = tl.zeros([TILE], dtype=tl.float32)
    for i in range(iters):
        t = (pid * 7919 + i * 104729) % n_tiles
        acc += tl.load(X + t * TILE + offs).to(tl.float32)
    tl.store(out + pid * TILE + offs, acc)


def l2_bandwidth(mb: int) -> float:
    """TB/s reading a `mb`-MiB bf16 buffer that stays in L2 (after the warm-up)."""
    from triton.testing import do_bench
    tile = 4096
    n = mb * 2 ** 20 // 2
    x = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    n_tiles = n // tile
    progs = torch.cuda.get_device_properties(0).multi_processor_count * 8
    iters = 256
    out = torch.empty(progs * tile, device="cuda", dtype=torch.float32)
    fn = lambda: _stream[(progs,)](x, out, n_tiles, iters, TILE=tile, num_warps=8)  # noqa: E731
    ms = do_bench(fn, warmup=50, rep=300, return_mode="median")
    return progs * iters * tile * 2 / ms / 1e9


def _triangle_operands(L: int):
    """Triangle attention's operands as the network passes them at length L: q/k/v/gate views of
    one fused projection [L, L, 4 H D] (H = 4, D = 32) and a bias [1, H, L, L], bf16."""
    H, D = 4, 32
    g = torch.Generator(device="cuda").manual_seed(0)
    y = torch.randn(L, L, 4 * H * D, device="cuda", generator=g, dtype=torch.bfloat16)
    q, k, v, gt = [t.unflatten(-1, (H, D)).transpose(1, 2) for t in y.split(H * D, dim=-1)]
    bias = torch.randn(1, H, L, L, device="cuda", generator=g, dtype=torch.bfloat16)
    return q, k, v, gt, bias


def _once(tri, L: int, config) -> int:
    q, k, v, gt, bias = _triangle_operands(L)
    for _ in range(2):
        tri.attention(q, k, v, [bias], None, q.shape[-1] ** -0.5, gate=gt, config=config)
    torch.cuda.synchronize()
    print(f"N={L}: two launches, config {config}", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--json", type=Path)
    ap.add_argument("--once", nargs="?", const="{}", default=None, metavar="CONFIG",
                    help="launch the default call (or with these kernel config keys, JSON) twice at the first "
                         "length and exit: for a profiler")
    args = ap.parse_args()
    from triton.testing import do_bench

    from kernels.attention import attention_reference
    from kernels._triton_loader import load
    tri = load("_tri_attention", False)
    if args.once is not None:
        return _once(tri, args.lengths[0], json.loads(args.once) or None)
    res = dict(device=torch.cuda.get_device_name(0), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               triton=triton.__version__, l2={}, runs={})
    for mb in (8, 24):
        res["l2"][f"{mb}MiB"] = bw = l2_bandwidth(mb)
        print(f"L2-resident stream, {mb} MiB buffer: {bw:.2f} TB/s", flush=True)
    for L in args.lengths:
        B, H, D = L, 4, 32
        q, k, v, gt, bias = _triangle_operands(L)
        # row stride 0 (not a zero key stride: the launcher would copy that to a dense bias)
        bias0 = bias[:, :, :1].expand(1, H, L, L)
        k0, v0 = k[:, :, :1].expand(B, H, L, D), v[:, :, :1].expand(B, H, L, D)
        scale = D ** -0.5
        flops = 4.0 * D * L * L * H * B
        # the default call checked against the reference on a few rows: the probe times the real kernel
        o = tri.attention(q[:4], k[:4], v[:4], [bias], None, scale, gate=gt[:4]).float()
        ref = attention_reference(q[:4], k[:4], v[:4], [bias], None, scale, gate=gt[:4]).float()
        err = ((o - ref).norm() / ref.norm()).item()
        cfg = tri.default_config(L, L, D, torch.bfloat16, True, True)
        n_blocks = B * H * triton.cdiv(L, cfg["BLOCK_M"]) * triton.cdiv(L, cfg["BLOCK_N"])  # (row, q block, k block)
        kv_bytes = n_blocks * cfg["BLOCK_N"] * D * 2 * 2
        bias_bytes = n_blocks * cfg["BLOCK_M"] * cfg["BLOCK_N"] * 2 / cfg["rows"]
        for label, kk, vv, bb, var in (("default", k, v, bias, None), ("bias stride 0", k, v, bias0, None),
                                       ("K/V key stride 0", k0, v0, bias, None), ("both stride 0", k0, v0, bias0, None),
                                       ("group_ctas 256", k, v, bias, {"group_ctas": 256}),
                                       ("group_ctas 4096", k, v, bias, {"group_ctas": 4096})):
            fn = lambda: tri.attention(q, kk, vv, [bb], None, scale, gate=gt, config=var)  # noqa: E731
            fn()
            torch.cuda.synchronize()
            ms = do_bench(fn, warmup=10, rep=100, return_mode="median")
            r = dict(ms=ms, tflops=flops / ms / 1e9)
            if label == "default":
                r.update(rel_err=err, kv_tb_s=kv_bytes / ms / 1e9, bias_tb_s=bias_bytes / ms / 1e9,
                         l2_tb_s=(kv_bytes + bias_bytes) / ms / 1e9, config=cfg)
            res["runs"][f"N={L} {label}"] = r
            print(f"N={L:5d} {label:18s} {ms:8.3f} ms {r['tflops']:6.1f} TFLOP/s"
                  + (f"  err {err:.1e}; operand stream K/V {r['kv_tb_s']:.2f} + bias {r['bias_tb_s']:.2f}"
                     f" = {r['l2_tb_s']:.2f} TB/s" if label == "default" else ""), flush=True)
        del q, k, v, gt, bias, bias0, k0, v0
        torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
