#!/usr/bin/env python3
"""Session 13's two glue changes timed against the code they replaced, in one process (CUDA):

* the extra-MSA global column attention (`model.primitives.GlobalAttention`) at model_1's extra-MSA
  shape (N columns x 5,120 sequences x 64 channels, bf16), its input laid out as the column
  attention's LayerNorm writes it, the result added into the residual; against session 12's
  forward (copied below verbatim as the baseline) plus the residual add it was followed by;
* IPA's point-distance term of the logits at N residues (12 heads x 4 points, fp32): the float64
  product now in `InvariantPointAttention.forward` against the [H, N, N, P, 3] difference tensor;
* with --opm, the outer product mean (Evoformer 508 x N x 256 and extra-MSA 5,120 x N x 64, bf16):
  LN(m) once for both projections against once per projection.

    python3 scripts/glue_ab.py --lengths 1024 2048 [--json out.json]

Each variant is checked against the other before it is timed (relative error printed)."""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _time_ms(fn) -> float:
    """Median time of fn in ms, as `kernels.benchmark` times its kernels (triton.testing.do_bench)."""
    from triton.testing import do_bench
    fn()
    torch.cuda.synchronize()
    return do_bench(fn, return_mode="median")


def _old_global_attention(mod, x, mask):
    """Session 12's GlobalAttention.forward (commit 38cb516), verbatim."""
    dt = x.dtype
    m = mask.clamp(min=0).to(dt).unsqueeze(-1)
    v = torch.matmul(x, mod.value_w.to(dt))
    k = torch.matmul(x, mod.key_w.to(dt))
    q_avg = (m * x).sum(-2) / (m.sum(-2) + 1e-10)
    c, h, d = mod.query_w.shape
    q = torch.matmul(q_avg, mod.query_w.to(dt).reshape(c, h * d)).reshape(-1, h, d) * mod.key_dim ** -0.5
    logits = torch.matmul(q.float(), k.float().transpose(-1, -2))
    logits = logits + 1e9 * (mask.float()[:, None, :] - 1.0)
    w = torch.softmax(logits, dim=-1)
    avg = torch.matmul(w, v.float()).to(dt)
    hg, dv = mod.gating_b.shape
    g = torch.matmul(x, mod.gating_w.to(dt).reshape(c, hg * dv)).reshape(*x.shape[:-1], hg, dv)
    g = torch.sigmoid(g + mod.gating_b.to(dt))
    o = avg[:, None] * g
    out = torch.matmul(o.reshape(*o.shape[:-2], hg * dv), mod.output_w.to(dt).reshape(hg * dv, -1))
    return out + mod.output_b.to(dt)


def global_attention(n: int, s: int = 5120, c: int = 64) -> dict:
    from model.primitives import GlobalAttention
    dev, dt = "cuda", torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(0)
    mod = GlobalAttention(c, 8, 8, 8, c).to(dev)
    with torch.no_grad():
        for p in mod.parameters():
            p.copy_(torch.randn(p.shape, device=dev, generator=g) * (c ** -0.5 if p.dim() > 1 else 0.3))
    msa = torch.randn(s, n, c, device=dev, generator=g, dtype=dt)             # the residual, [S, N, C]
    x = torch.randn(s, n, c, device=dev, generator=g, dtype=dt).transpose(0, 1)  # LN output, [N, S, C] view
    mask = (torch.rand(n, s, device=dev, generator=g) > 0.1).float()
    want = msa.transpose(0, 1).float() + _old_global_attention(mod, x, mask).float()
    got = msa.clone()
    with torch.no_grad():
        mod(x, mask, add_to=got.transpose(0, 1), residual_backend="triton")
    err = ((got.transpose(0, 1).float() - want).norm() / want.norm()).item()
    res = msa.clone()

    def old():
        res.transpose(0, 1).add_(_old_global_attention(mod, x, mask))

    def new():
        mod(x, mask, add_to=res.transpose(0, 1), residual_backend="triton")

    with torch.no_grad():
        return {"shape": [n, s, c], "rel_err_new_vs_old": err, "old_ms": _time_ms(old), "new_ms": _time_ms(new)}


def ipa_distances(n: int, h: int = 12, p: int = 4) -> dict:
    dev = "cuda"
    g = torch.Generator(device=dev).manual_seed(1)
    qp = torch.randn(h, n, p, 3, device=dev, generator=g) * 3 + 1.5   # [H, N, P, 3], nm-scale coordinates
    kp = torch.randn(h, n, p, 3, device=dev, generator=g) * 3 + 1.5
    w = torch.rand(h, device=dev, generator=g)

    def old():
        d2 = ((qp[:, :, None] - kp[:, None]) ** 2).sum(-1)
        return 0.5 * (w[:, None, None, None] * d2).sum(-1)

    kp64 = kp.reshape(h, n, p * 3).double()
    kk = (kp64 ** 2).sum(-1)

    def new():
        qp64 = qp.reshape(h, n, p * 3).double()
        d2 = torch.baddbmm((qp64 ** 2).sum(-1)[:, :, None] + kk[:, None, :], qp64, kp64.transpose(1, 2), alpha=-2.0)
        return (0.5 * w.double()[:, None, None] * d2).float()

    ref = old().double()
    err = ((new().double() - ref).norm() / ref.norm()).item()
    return {"n": n, "rel_err_new_vs_old": err, "old_ms": _time_ms(old), "new_ms": _time_ms(new)}


def outer_product_mean(n: int, s: int, c_m: int) -> dict:
    """The outer product mean at the network's shapes (S x N x C_m MSA -> N x N x 128 pair, bf16,
    Triton backend), LN(m) once for both projections (unchunked: the session-13 path) against once per
    projection (a chunk size that covers every sequence runs the per-projection path, as before)."""
    import types

    from model.config import Runtime
    from model.evoformer import OuterProductMean
    dev, dt = "cuda", torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(2)
    op = OuterProductMean(types.SimpleNamespace(num_outer_channel=32), c_m, 128).to(dev)
    with torch.no_grad():
        for p in op.parameters():
            p.copy_(torch.randn(p.shape, device=dev, generator=g) * (p.shape[0] ** -0.5 if p.dim() > 1 else 0.2))
    op = op.to(dt)
    m = torch.randn(s, n, c_m, device=dev, generator=g, dtype=dt)
    mask = (torch.rand(s, n, device=dev, generator=g) > 0.1).to(dt)
    z = torch.randn(n, n, 128, device=dev, generator=g, dtype=dt)
    new_rt = Runtime(precision="bf16", backend="triton", inplace=True)
    old_rt = new_rt.with_(chunks={"transition": 1 << 30})
    with torch.no_grad():
        a, b = op(m, mask, z.clone(), new_rt), op(m, mask, z.clone(), old_rt)
        err = ((a.float() - b.float()).norm() / b.float().norm()).item()
        zz = z.clone()
        return {"shape": [s, n, c_m], "rel_err_new_vs_old": err,
                "old_ms": _time_ms(lambda: op(m, mask, zz, old_rt)), "new_ms": _time_ms(lambda: op(m, mask, zz, new_rt))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--json")
    ap.add_argument("--opm", action="store_true", help="also the outer product mean's single LayerNorm")
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("glue_ab.py needs a CUDA device")
    out = {"device": torch.cuda.get_device_name(), "global_attention": [], "ipa_distances": [],
           "outer_product_mean": []}
    for n in a.lengths:
        r = global_attention(n)
        out["global_attention"].append(r)
        print(f"global attention N={n}: {r['old_ms']:.3f} ms -> {r['new_ms']:.3f} ms (rel err {r['rel_err_new_vs_old']:.1e})")
        torch.cuda.empty_cache()
        r = ipa_distances(n)
        out["ipa_distances"].append(r)
        print(f"IPA distances N={n}: {r['old_ms']:.3f} ms -> {r['new_ms']:.3f} ms (rel err {r['rel_err_new_vs_old']:.1e})")
        torch.cuda.empty_cache()
        if a.opm:
            for s_, c_m in ((508, 256), (5120, 64)):
                r = outer_product_mean(n, s_, c_m)
                out["outer_product_mean"].append(r)
                print(f"outer product mean {s_}x{n}x{c_m}: {r['old_ms']:.3f} ms -> {r['new_ms']:.3f} ms "
                      f"(rel err {r['rel_err_new_vs_old']:.1e})")
                torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
