#!/usr/bin/env python3
"""Compile a glue kernel for sm_90 (H100/H200) on any machine, no GPU needed, and report what limits
how many of its programs share an SM: registers a thread, shared memory, local-memory (spill)
instructions, and the SASS mix. The glue kernels have no hot loop (attention_sass.py counts the
attention kernel's), so the whole listing is counted.

    python scripts/glue_sass.py tri_mul_output [--config '{"split": 4}']
    python scripts/glue_sass.py transition [--config '{"BLOCK_P": 128, "num_warps": 8}']

tri_mul_output: the Evoformer's output stage (c = C_z = 128, bf16, z and out row-major);
transition: the pair transition (C = 128, 512 hidden units, bf16). The kernel's default tiles
unless --config overrides them (BLOCK_P, num_warps, num_stages, maxnreg, and the kernel's own keys:
split; BLOCK_H). Uses Triton's bundled ptxas and cuobjdump.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _compile(fn, const: dict, cfg: dict):
    """fn compiled for sm_90 with constexprs `const`: tensors (upper-case names but NPOS) as 16-byte
    aligned bf16 pointers, eps* as float32, every other integer a multiple of 16 (as the network's
    position counts and strides are at its shapes)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    sig, attrs = {}, {}
    for i, n in enumerate(fn.arg_names):
        if n in const:
            sig[n] = "constexpr"
        elif n.startswith("eps"):
            sig[n] = "fp32"
        elif n[0].isupper() and n != "NPOS":
            sig[n], attrs[(i,)] = "*bf16", [["tt.divisibility", 16]]
        else:
            sig[n], attrs[(i,)] = "i32", [["tt.divisibility", 16]]
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()},
                    attrs=attrs)
    opts = dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    if cfg.get("maxnreg"):  # ptxas's register cap
        opts["maxnreg"] = int(cfg["maxnreg"])
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=opts)


def compile_tri_mul_output(overrides: dict):
    """The kernel as the network launches it at c = C_z = 128 in bf16 (weights [128, 128] row-major)."""
    from kernels._triton_loader import load
    mod = load("_tri_tri_mul_output", False)
    cfg = dict(mod.default_config(128, 128, True), **overrides)
    const = dict(C=128, CZ=128, BLOCK_P=cfg["BLOCK_P"], DOT_PREC="tf32", SPLIT=int(cfg.get("split", 1)),
                 swo1=1, swg1=1)  # unit strides: the JIT's constants
    return _compile(mod._tri_mul_output_kernel, const, cfg), cfg


def compile_transition(overrides: dict):
    """The pair transition as the network launches it: C = 128, 4 x 128 hidden units, bf16."""
    from kernels._triton_loader import load
    mod = load("_tri_transition", False)
    cfg = dict(mod.default_config(128, 512, True), **overrides)
    const = dict(C=128, HID=512, BLOCK_P=cfg["BLOCK_P"], BLOCK_H=cfg["BLOCK_H"], DOT_PREC="tf32",
                 sw1b=1, sw2b=1)
    return _compile(mod._transition_kernel, const, cfg), cfg


KERNELS = {"tri_mul_output": compile_tri_mul_output, "transition": compile_transition}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kernel", choices=sorted(KERNELS))
    ap.add_argument("--config", type=json.loads, default={}, help="overrides of the kernel's default configuration")
    a = ap.parse_args(argv)
    os.environ.setdefault("TRITON_INTERPRET", "0")
    from attention_sass import instructions, listing
    kernel, cfg = KERNELS[a.kernel](a.config)
    sass, regs = listing(kernel)
    ops = collections.Counter((t.split()[1] if t.startswith("@") else t.split()[0]).split(".")[0]
                              for _, t in instructions(sass))
    spills = ops.get("LDL", 0) + ops.get("STL", 0)
    threads = 32 * cfg["num_warps"]
    by_regs = 65536 // (threads * ((regs + 7) // 8 * 8))  # registers are allocated 8 a thread at a time
    by_smem = (233472 // max(1, kernel.metadata.shared + 1024)) if kernel.metadata.shared else 32
    print(f"{a.kernel} {cfg}: {regs} registers, shared memory {kernel.metadata.shared} B, "
          f"{spills} spill instructions, {sum(ops.values())} instructions; "
          f"programs an SM: {min(by_regs, by_smem, 2048 // threads)} (registers {by_regs}, shared memory {by_smem})")
    print(" ".join(f"{k}:{v}" for k, v in ops.most_common(24)))


if __name__ == "__main__":
    main()
