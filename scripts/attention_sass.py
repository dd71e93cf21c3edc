#!/usr/bin/env python3
"""Compile the attention kernel for sm_90 (H100/H200) on any machine, no GPU needed, and count the
SASS instructions of its key loop per score: a quick proxy for the kernel's per-score work before
spending device time.

    python scripts/attention_sass.py extra_msa [--config '{"spare": false}'] [--sync]
    python scripts/attention_sass.py tri2048 [--no-mask]
    python scripts/attention_sass.py msa_col --no-mask [--config '{"BLOCK_N": 64}']

The call sites are the network's (kernels/benchmark.py "network call"): the strides, and so the
JIT's specialisations (stride 1 -> constant, multiples of 16 -> divisibility hints), are those of
q/k/v/gate as views of one fused projection, the bias [1, H, L, L] dense (msa_col, MSA column
attention at N = 2,048: none), a key mask per batch row
(--no-mask: none, as for a stack whose mask is all ones); the tiles are the kernel's default_config
for the shape unless --config overrides them.
--sync lists the loop's tensor-core issues and waits (HGMMA, WARPGROUP.DEPBAR), to see what overlaps.
Uses Triton's bundled ptxas and cuobjdump.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# triangle attention sites: the Evoformer's (head dim 32) and the template pair stack's (16)
TRIANGLE_HEAD_DIM = {"tri2048": 32, "tmpl2048": 16}


def _site(name: str, masked: bool = True) -> dict:
    """Call-site shapes and strides (after the launcher merges the outer dims: n1 = heads,
    n2 = batch rows sharing the bias)."""
    import torch

    from kernels._triton_loader import load
    if name == "extra_msa":  # 5,120 rows, 8 heads x 8, L = 1,024; feature-major q/k/v/gate
        L, H, D, B = 1024, 8, 8, 5120
        qs = dict(s0=0, s1=D * L, s2=4 * H * D * L, sm=1, sd=L)
    elif name in TRIANGLE_HEAD_DIM:  # 2,048 rows, 4 heads, L = 2,048; position-major q/k/v/gate
        L, H, D, B = 2048, 4, TRIANGLE_HEAD_DIM[name], 2048
        qs = dict(s0=0, s1=D, s2=L * 4 * H * D, sm=4 * H * D, sd=1)
    elif name == "msa_col":  # MSA column attention at N = 2,048: 2,048 columns, 8 heads x 32, 512 sequences
        L, H, D, B = 512, 8, 32, 2048
        qs = dict(s0=0, s1=D, s2=L * 4 * H * D, sm=4 * H * D, sd=1)
    else:
        raise SystemExit(f"unknown call site {name!r} (extra_msa, msa_col, {', '.join(TRIANGLE_HEAD_DIM)})")
    n_bias = 0 if name == "msa_col" else 1  # column attention has no pair bias
    # the kernel's own default for this shape (bf16, rows sharing the bias, with or without the key
    # mask), as the network runs it
    cfg = dict(load("_tri_attention", False).default_config(L, L, D, torch.bfloat16, n_bias > 0, True, masked))
    vals = dict(n1=H, n2=B, n_sets=H * B // cfg["rows"], Lq=L, Lk=L, group=16,
                n_tiles=H * B // cfg["rows"] * L // cfg["BLOCK_M"], sx0=0, sx1=L, sx2=0,
                so0=0, so1=D, so2=L * H * D, som=H * D, sod=1,
                sa0=0, sa1=L * L, sa2=0, sam=L, san=1, sb0=0, sb1=0, sb2=0, sbm=0, sbn=0,
                sm0=0, sm1=0, sm2=L, smm=0, smn=1)
    for p in "qkvg":
        vals.update({f"s{p}0": qs["s0"], f"s{p}1": qs["s1"], f"s{p}2": qs["s2"],
                     f"s{p}{'m' if p in 'qg' else 'n'}": qs["sm"], f"s{p}d": qs["sd"]})
    if not n_bias:
        vals.update({k: 0 for k in ("sa0", "sa1", "sa2", "sam", "san")})
    return dict(D=D, cfg=cfg, vals=vals, n_bias=n_bias)


def compile_site(name: str, overrides: dict):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import torch

    from kernels._triton_loader import load
    tri = load("_tri_attention", False)
    fn = tri._attn_fwd_kernel
    names = fn.arg_names
    site = _site(name, not overrides.get("no_mask"))
    cfg = dict(site["cfg"])
    cfg.update({k: v for k, v in overrides.items() if k not in ("no_mask", "mode")})
    d = site["D"]
    # the options as the launcher applies them (bf16, a nonzero scale, one bias shared by the rows)
    bound, opts = tri.option_flags(cfg, torch.bfloat16, 1.0, cfg["rows"], site["n_bias"])
    const = dict(N_BIAS=site["n_bias"], HAS_MASK=not overrides.get("no_mask"), MASK_2D=False, HAS_GATE=True, ROWS=cfg["rows"],
                 HEAD_DIM=d,
                 BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_D=max(16, d), DOT_PREC="tf32",
                 WIDE=False, MODE=int(overrides.get("mode", 1 if bound else 0)), FLAG_CHUNK=128, **opts)
    sig, attrs = {}, {}
    for i, n in enumerate(names):
        if n in const:
            sig[n] = "constexpr"
        elif n in ("Q", "K", "V", "O", "B0", "B1", "MSK", "G"):
            sig[n], attrs[(i,)] = "*bf16", [["tt.divisibility", 16]]
        elif n in ("KMAX", "BMAX"):  # the `bound` option's fp32 key norms and bias row maxima
            sig[n], attrs[(i,)] = "*fp32", [["tt.divisibility", 16]]
        elif n == "FLAGS":
            sig[n], attrs[(i,)] = "*i8", [["tt.divisibility", 16]]
        elif n == "qk_scale":
            sig[n] = "fp32"
        elif site["vals"].get(n, 0) == 1:  # the JIT turns integer arguments equal to 1 into constants
            sig[n], const[n] = "constexpr", 1
        else:
            sig[n] = "i32"
            if site["vals"].get(n, 0) % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    missing = [n for n in names if n not in sig]
    if missing:
        raise SystemExit(f"kernel arguments without a value: {missing}")
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in const.items()},
                    attrs=attrs)
    options = dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    if cfg.get("maxnreg"):
        options["maxnreg"] = int(cfg["maxnreg"])
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    return kernel, cfg


def compile_gluon(name: str, overrides: dict):
    """The Gluon kernel (kernels/_gl_attention.py) at call site `name`: q/k/v/gate views of one fused
    projection, the bias [1, H, L, L] dense, tiles from `overrides` (BLOCK_N, stages)."""
    import importlib.util

    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.runtime.jit import mangle_type

    if name != "tri2048":
        raise SystemExit("the Gluon kernel runs head dims 16-64: call site tri2048")
    spec = importlib.util.spec_from_file_location("gl_attention_sass", Path(__file__).resolve().parents[1]
                                                  / "kernels" / "_gl_attention.py")
    gla = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gla)
    L, H, D = 2048, 4, 32
    C = 4 * H * D
    bn, stages = int(overrides.get("BLOCK_N", 64)), int(overrides.get("stages", 4))
    rows = int(overrides.get("gluon_rows", 1))

    class _Storage:  # what a descriptor needs of its tensor at compile time: dtype and alignment
        dtype = torch.bfloat16

        @staticmethod
        def data_ptr():
            return 0

    def desc(block, shape, strides):
        return gla.TensorDescriptor(_Storage, shape, strides, block, gla._nvmma(block, torch.bfloat16))

    qkv = [L * C * L, D, L * C, C, 1]
    descs = dict(q_desc=desc([1, 1, 1, 64, D], [1, H, L, L, D], qkv),
                 k_desc=desc([1, 1, 1, bn, D], [1, H, L, L, D], qkv),
                 v_desc=desc([1, 1, 1, bn, D], [1, H, L, L, D], qkv),
                 b_desc=desc([1, 1, 1, 64, bn], [1, H, 1, L, L], [H * L * L, L * L, L * L, L, 1]))
    vals = dict(n1=H, n2=L, n_sets=H * L // rows, Lq=L, Lk=L, so0=0, so1=D, so2=L * H * D, som=H * D, sod=1,
                sg0=0, sg1=D, sg2=L * C, sgm=C, sgd=1, group=16)
    const = dict(HAS_BIAS=True, B0F=0, B1F=1, B2F=0, HAS_GATE=True, HEAD_DIM=D, BLOCK_M=64, BLOCK_N=bn,
                 STAGES=stages, ROWS=rows, P_SMEM=bool(overrides.get("p_smem", False)) and rows == 2)
    fn = gla._attn_fwd_gluon
    names = fn.arg_names
    sig, attrs = {}, {}
    for i, n in enumerate(names):
        if n in const:
            sig[n] = "constexpr"
        elif n in descs:
            sig[n] = mangle_type(descs[n])
        elif n in ("O", "G"):
            sig[n], attrs[(i,)] = "*bf16", [["tt.divisibility", 16]]
        elif n == "qk_scale":
            sig[n] = "fp32"
        elif vals.get(n, 0) == 1:
            sig[n], const[n] = "constexpr", 1
        else:
            sig[n] = "i32"
            if vals.get(n, 0) % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = GluonASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in const.items()},
                         attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))
    # one row: the main loop runs two key blocks a trip (unrolled); two rows: one block, both rows
    return kernel, dict(BLOCK_M=64, BLOCK_N=bn if rows == 2 else 2 * bn, rows=rows, num_warps=4, stages=stages)


def listing(kernel):
    """(SASS listing, registers a thread) of a compiled kernel, by Triton's bundled cuobjdump."""
    import triton
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.cubin")
        with open(path, "wb") as f:
            f.write(kernel.asm["cubin"])
        sass = subprocess.run([str(tool), "-sass", path], capture_output=True, text=True, check=True).stdout
        res = subprocess.run([str(tool), "-res-usage", path], capture_output=True, text=True, check=True).stdout
    regs = re.search(r"REG:(\d+)", res)
    return sass, int(regs.group(1)) if regs else None


def instructions(sass: str):
    """[(address, instruction text)] of a SASS listing."""
    return [(int(m.group(1), 16), m.group(2).strip()) for m in
            (re.match(r"\s+/\*([0-9a-f]+)\*/\s+(.*?);", line) for line in sass.splitlines()) if m]


def key_loop(kernel, conditional_only: bool = False):
    """(SASS instructions of the longest backward-branch loop, the whole listing). conditional_only:
    skip unconditional back-jumps (the Gluon kernel's mbarrier retry stubs, placed after the code,
    jump back into it)."""
    sass, key_loop.registers = listing(kernel)
    ins = instructions(sass)
    loops = []
    for addr, text in ins:
        target = re.search(r"BRA\s+(?:`\(\S+\)\s*)?0x([0-9a-f]+)", text)
        if target and int(target.group(1), 16) < addr and (text.startswith("@") or not conditional_only):
            loops.append((int(target.group(1), 16), addr))
    if not loops:
        raise SystemExit("no loop found in the kernel")
    lo, hi = max(loops, key=lambda r: r[1] - r[0])
    return [t for a, t in ins if lo <= a <= hi], sass


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("site", choices=["extra_msa", "msa_col", *TRIANGLE_HEAD_DIM])
    ap.add_argument("--config", type=json.loads, default={},
                    help="overrides of the kernel's default configuration (BLOCK_M, BLOCK_N, num_warps, num_stages, "
                         "rows, maxnreg: 0 for none), spare, paired")
    ap.add_argument("--sync", action="store_true", help="list the loop's HGMMA issues and waits")
    ap.add_argument("--gluon", action="store_true",
                    help="the Gluon kernel (kernels/_gl_attention.py: no key mask) instead; --config takes BLOCK_N, stages, rows, p_smem")
    ap.add_argument("--no-mask", action="store_true",
                    help="the call without a key mask (a stack whose mask is all ones: Runtime.skip_dense_masks)")
    a = ap.parse_args(argv)
    os.environ.setdefault("TRITON_INTERPRET", "0")
    if a.gluon:
        a.no_mask = True  # the Gluon kernel takes no key mask
    if a.no_mask:
        a.config["no_mask"] = True
    if a.gluon:
        kernel, cfg = compile_gluon(a.site, a.config)
    else:
        kernel, cfg = compile_site(a.site, a.config)
    loop, sass = key_loop(kernel, conditional_only=a.gluon)
    scores = cfg["BLOCK_M"] * cfg["BLOCK_N"] * cfg["rows"] / (32 * cfg["num_warps"])  # per thread
    ops = collections.Counter((t.split()[1] if t.startswith("@") else t.split()[0]).split(".")[0] for t in loop)
    spills = "local memory (spills) in the loop" if ops.get("LDL") or ops.get("STL") else "no spills in the loop"
    print(f"{a.site} {cfg} spare={a.config.get('spare', True)} mask={not a.no_mask}: {len(loop)} instructions "
          f"per key block, "
          f"{len(loop) / scores:.2f} per score; {key_loop.registers} registers; shared memory "
          f"{kernel.metadata.shared} B; {spills}")
    print(" ".join(f"{k}:{v}" for k, v in ops.most_common(24)))
    waits = sum("WARPGROUP.DEPBAR" in t for t in loop)
    print(f"tensor-core waits in the loop: {waits} for {sum(t.startswith('HGMMA') for t in loop)} MMA instructions")
    if a.sync:
        for t in loop:
            if "HGMMA" in t or "WARPGROUP" in t:
                print("  ", t[:100])


if __name__ == "__main__":
    main()
