#!/usr/bin/env python3
"""Why do identical attention launches differ by up to 15% between timings? A diagnostic for #6
(session 17 saw triangle attention at N = 1,024 run at 166 and 200 TFLOP/s with the same
configuration, in one process, minutes apart). GPU only.

    python3 scripts/attention_spread_probe.py [--length 1024] [--repeats 6] [--json out.json]

Triangle attention as the network calls it (q/k/v/gate views of one fused projection [B, L, 4HD],
bias [1, H, L, L], no key mask) is timed three ways, each `--repeats` times:
  same      the same buffers every time (what is left is clocks, power and timing noise);
  fresh     a new projection buffer and bias for every timing, the old ones freed and the cache
            emptied first (as `kernel_bench.py`'s network calls did until session 17), so the operands
            land at new addresses;
  offset    one large buffer, the projection placed at a different 2 MiB-aligned offset each time
            (the same physical pages reused: placement without new allocations).
Each line prints the addresses' offsets (mod 2 MiB, mod 1 GiB), the SM clock, power and
temperature from nvidia-smi after the timing. If `same` is tight and `fresh`/`offset` spread, the
spread is placement; if `same` spreads too, it is the card.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from kernels.attention import attention_triton  # noqa: E402
from kernels.benchmark import network_views  # noqa: E402

H, D = 4, 32
MIB = 2 ** 20


def _smi() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,power.draw,temperature.gpu",
                               "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "n/a"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from triton.testing import do_bench
    L = a.length
    B = L
    flops = 4.0 * D * L * L * H * B
    scale = D ** -0.5
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = []

    def timed(kind, y, bias, i):
        q, k, v, g = network_views(y, H, D)
        fn = lambda: attention_triton(q, k, v, [bias], None, scale, gate=g)  # noqa: E731
        fn()
        torch.cuda.synchronize()
        ms = do_bench(fn, warmup=25, rep=100, return_mode="median")
        r = dict(kind=kind, i=i, ms=ms, tflops=flops / ms / 1e9,
                 y_mod_2mib=y.data_ptr() % (2 * MIB), y_mod_1gib=y.data_ptr() % 2 ** 30,
                 bias_mod_2mib=bias.data_ptr() % (2 * MIB), smi=_smi())
        rows.append(r)
        print(f"{kind:6s} {i}  {ms:7.3f} ms {r['tflops']:6.1f} TFLOP/s  y%1GiB {r['y_mod_1gib'] // MIB:5d} MiB"
              f"  y%2MiB {r['y_mod_2mib']:8d}  bias%2MiB {r['bias_mod_2mib']:8d}  [{r['smi']}]", flush=True)

    def new_operands():
        y = torch.randn(B, L, 4 * H * D, device="cuda", generator=gen, dtype=torch.bfloat16)
        bias = torch.randn(1, H, L, L, device="cuda", generator=gen, dtype=torch.bfloat16)
        return y, bias

    y, bias = new_operands()
    for i in range(a.repeats):
        timed("same", y, bias, i)
    for i in range(a.repeats):
        del y, bias
        torch.cuda.empty_cache()
        y, bias = new_operands()
        timed("fresh", y, bias, i)
    del y
    torch.cuda.empty_cache()
    n = B * L * 4 * H * D
    slack = 2 * MIB // 2 * (a.repeats + 1)  # elements: one 2 MiB step per repeat
    big = torch.randn(n + slack, device="cuda", generator=gen, dtype=torch.bfloat16)
    for i in range(a.repeats):
        off = i * (2 * MIB // 2)
        timed("offset", big[off:off + n].view(B, L, 4 * H * D), bias, i)
    for kind in ("same", "fresh", "offset"):
        t = [r["tflops"] for r in rows if r["kind"] == kind]
        print(f"{kind:6s} min {min(t):6.1f}  max {max(t):6.1f}  spread {100 * (max(t) / min(t) - 1):5.1f}%")
    if a.json:
        Path(a.json).write_text(json.dumps(dict(gpu=torch.cuda.get_device_name(), length=L, rows=rows), indent=1))


if __name__ == "__main__":
    main()
