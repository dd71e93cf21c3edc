#!/usr/bin/env python3
"""GPU check of the Gluon attention kernel (kernels/_gl_attention.py): results against the float64
reference on odd shapes (and that the Gluon path really ran, or really declined), then timings against
the Triton kernel at the network's call sites, same process. Hopper only.

    python scripts/gluon_probe.py [--json FILE] [--quick]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from kernels.attention import attention_reference, attention_triton  # noqa: E402

GL = {"gluon": True}


def _count_launches():
    from kernels._triton_loader import load
    gla = load("_gl_attention", False)  # the module object the attention launcher calls
    calls = {"n": 0}
    orig = gla.launch

    def spy(*a, **kw):
        calls["n"] += 1
        return orig(*a, **kw)
    gla.launch = spy
    return calls


def _inputs(b, h, lq, lk, d, dtype, bias="shared", gate=True, views=True, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    if views:  # the network's fused projection: [B, L, 4HD] -> q/k/v/g [B, H, L, D] views
        lq = lk
        y = torch.randn(b, lq, 4 * h * d, device="cuda", generator=g, dtype=dtype)
        q, k, v, gt = [t.unflatten(-1, (h, d)).transpose(1, 2) for t in y.split(h * d, dim=-1)]
    else:
        q = torch.randn(b, h, lq, d, device="cuda", generator=g, dtype=dtype)
        k = torch.randn(b, h, lk, d, device="cuda", generator=g, dtype=dtype)
        v = torch.randn(b, h, lk, d, device="cuda", generator=g, dtype=dtype)
        gt = torch.randn(b, h, lq, d, device="cuda", generator=g, dtype=dtype)
    biases = []
    if bias == "shared":
        biases = [torch.randn(1, h, lq, lk, device="cuda", generator=g, dtype=dtype) * 2]
    elif bias == "per_row":
        biases = [torch.randn(b, h, lq, lk, device="cuda", generator=g, dtype=dtype) * 2]
    return q, k, v, biases, (gt if gate else None)


def check(results, calls, name, expect_gluon, cfg=GL, **kw):
    q, k, v, biases, gt = _inputs(**kw)
    scale = q.shape[-1] ** -0.5
    before = calls["n"]
    try:
        out = attention_triton(q, k, v, biases, None, scale, config=cfg, gate=gt)
        torch.cuda.synchronize()
    except Exception as e:
        results["checks"][name] = dict(error=f"{type(e).__name__}: {str(e)[:400]}")
        print(f"{name:34s} FAILED {type(e).__name__}: {str(e)[:400]}")
        return
    used = calls["n"] > before
    ref = attention_reference(q.double(), k.double(), v.double(), [b.double() for b in biases], None, scale,
                              gate=None if gt is None else gt.double())
    err = ((out.double() - ref).norm() / ref.norm()).item()
    # the Triton kernel on the same inputs: its error is the bar for a 16-bit kernel
    tri = attention_triton(q, k, v, biases, None, scale, gate=gt)
    err_tri = ((tri.double() - ref).norm() / ref.norm()).item()
    ok = used == expect_gluon and err <= max(2 * err_tri, 1e-3) and torch.isfinite(out).all().item()
    results["checks"][name] = dict(err=err, err_triton=err_tri, gluon=used, ok=ok)
    print(f"{name:34s} gluon={used!s:5s} err {err:.2e} (triton {err_tri:.2e}) {'ok' if ok else 'BAD'}")


def bench(results, name, b, h, l, d, variants, views=True):
    q, k, v, biases, gt = _inputs(b, h, l, l, d, torch.bfloat16, views=views, seed=1)
    scale = d ** -0.5
    flops = 4.0 * d * l * l * h * b
    import triton.testing
    row = {}
    for label, cfg in [("triton (default)", None)] + variants:
        try:
            fn = lambda cfg=cfg: attention_triton(q, k, v, biases, None, scale, config=cfg, gate=gt)  # noqa: E731
            fn()
            ms = triton.testing.do_bench(fn, warmup=25, rep=200)
            row[label] = dict(ms=ms, tflops=flops / ms / 1e9)
            print(f"{name:10s} {label:40s} {ms:8.3f} ms {flops / ms / 1e9:7.1f} TFLOP/s")
        except Exception as e:
            row[label] = dict(error=f"{type(e).__name__}: {str(e)[:300]}")
            print(f"{name:10s} {label:40s} FAILED {type(e).__name__}: {str(e)[:300]}")
    results["bench"][name] = row


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    calls = _count_launches()
    res = {"gpu": torch.cuda.get_device_name(), "checks": {}, "bench": {}}
    bf, fp = torch.bfloat16, torch.float16
    check(res, calls, "tri L=200 d32 views gate", True, b=3, h=4, lq=200, lk=200, d=32, dtype=bf)
    check(res, calls, "tri L=256 d32 views gate", True, b=5, h=4, lq=256, lk=256, d=32, dtype=bf)
    check(res, calls, "L=40 (one partial block)", True, b=2, h=2, lq=40, lk=40, d=32, dtype=bf, views=False)
    check(res, calls, "L=8", True, b=2, h=2, lq=8, lk=8, d=32, dtype=bf, views=False)
    check(res, calls, "Lq=72 Lk=136 no gate", True, b=3, h=2, lq=72, lk=136, d=32, dtype=bf, views=False,
          gate=False)
    check(res, calls, "d16 L=320 (template)", True, b=4, h=4, lq=320, lk=320, d=16, dtype=bf)
    check(res, calls, "d64 L=192", True, b=2, h=2, lq=192, lk=192, d=64, dtype=bf, views=False)
    check(res, calls, "fp16 L=200", True, b=3, h=4, lq=200, lk=200, d=32, dtype=fp)
    check(res, calls, "bias per batch row", True, b=3, h=2, lq=128, lk=136, d=32, dtype=bf, views=False,
          bias="per_row")
    check(res, calls, "no bias", True, b=3, h=2, lq=128, lk=200, d=32, dtype=bf, views=False, bias="none")
    check(res, calls, "many rows (grid groups) L=136", True, b=130, h=4, lq=136, lk=136, d=32, dtype=bf)
    check(res, calls, "L=517 (bias rows unaligned)", False, b=2, h=4, lq=517, lk=517, d=32, dtype=bf)
    check(res, calls, "d8 (extra MSA: Triton)", False, b=2, h=8, lq=64, lk=64, d=8, dtype=bf, views=False)
    # two rows a program taking turns (session 16, opt-in gluon_rows=2: slower than one row on an H100)
    check(res, calls, "two rows: tri L=200 d32 views gate", True, b=3, h=4, lq=200, lk=200, d=32, dtype=bf,
          cfg=dict(GL, gluon_rows=2))
    check(res, calls, "two rows: many rows L=136", True, b=130, h=4, lq=136, lk=136, d=32, dtype=bf,
          cfg=dict(GL, gluon_rows=2))
    check(res, calls, "p_smem: tri L=200 d32 views gate", True, b=3, h=4, lq=200, lk=200, d=32, dtype=bf,
          cfg=dict(GL, gluon_rows=2, p_smem=True))
    check(res, calls, "p_smem: L=40 one partial block", True, b=3, h=2, lq=40, lk=40, d=32, dtype=bf, views=False,
          cfg=dict(GL, gluon_rows=2, p_smem=True))
    variants = [("gluon one row BN64 st4", dict(GL, BLOCK_N=64, stages=4, gluon_rows=1)),
                ("gluon two rows BN64 st4", dict(GL, BLOCK_N=64, stages=4, gluon_rows=2)),
                ("gluon two rows BN64 st3", dict(GL, BLOCK_N=64, stages=3, gluon_rows=2)),
                ("gluon two rows BN64 st4 p_smem", dict(GL, BLOCK_N=64, stages=4, gluon_rows=2, p_smem=True))]
    bench(res, "tri1024", 1024, 4, 1024, 32, variants)
    if not a.quick:
        bench(res, "tri2048", 2048, 4, 2048, 32, variants)
        bench(res, "msa_row", 512, 8, 1024, 32, variants)
        bench(res, "tmpl1024", 1024, 4, 1024, 16, variants)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
