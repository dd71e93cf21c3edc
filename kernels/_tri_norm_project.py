"""Triton kernel of `kernels.norm_project` (forward only). Loaded through `kernels._triton_loader`.

One program normalises a [BLOCK_P, C] tile of rows in float32 (rounded to the storage dtype, as the
reference's LayerNorm output is), multiplies it by W [C, H] one [C, BLOCK_H] column tile at a time
(the last tile's padding masked), adds the optional bias [H] in float32 before the one rounding (as
addmm's epilogue does), and stores each [BLOCK_P, BLOCK_H] result at
    out + h * so_h + (p // O_IN) * so_out + (p % O_IN) * so_p:
head-major (so_p = 1: out[h, p], a bias, possibly with padded rows on two levels) or row-major
(so_h = 1: out[p, h], the attentions' q/k/v/gate projections). The LayerNorm runs once per row
whatever H. The rows of x may sit on two strided levels (row r at (r // R_IN) * sx_out +
(r % R_IN) * sx_in: a transposed view of the pair or the MSA). Offsets are int64.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from kernels._common import row_levels
from kernels._dot import dot_precision


@triton.jit
def _norm_project_kernel(X, LS, LB, W, B, O, R, R_IN, sx_in, sx_out, swc, swh, so_h, so_p, O_IN, so_out, eps,
                         C: tl.constexpr, H: tl.constexpr, BLOCK_H: tl.constexpr, NH: tl.constexpr,
                         BLOCK_P: tl.constexpr, HAS_BIAS: tl.constexpr, HEAD_MAJOR: tl.constexpr,
                         DOT_PREC: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    r_ok = rows < R
    rows = tl.minimum(rows, R - 1)  # in-bounds loads without masks; the store is masked
    c = tl.arange(0, C)
    dt = O.dtype.element_ty
    x = tl.load(X + ((rows // R_IN) * sx_out + (rows % R_IN) * sx_in)[:, None] + c[None, :]).to(tl.float32)
    xc = x - (tl.sum(x, axis=1) / C)[:, None]
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / C + eps)
    a = (xc * rstd[:, None] * tl.load(LS + c).to(tl.float32)[None, :] + tl.load(LB + c).to(tl.float32)[None, :]).to(dt)
    if HEAD_MAJOR:
        o_base = O
        o_rows = (rows // O_IN) * so_out + (rows % O_IN) * so_p
    else:
        # Row-major: an int64 base for the program's first row and int32 offsets inside the tile
        # (int64 offsets for every element of a [BLOCK_P, BLOCK_H] tile cost ~64 registers a thread).
        p0 = pid.to(tl.int64) * BLOCK_P
        o_base = O + p0 * so_p
        o_rows = tl.minimum(tl.arange(0, BLOCK_P), tl.minimum(R - 1 - p0, BLOCK_P).to(tl.int32)) * so_p
    for hb in range(NH):  # not unrolled: one W tile and accumulator live at a time
        hh = hb * BLOCK_H + tl.arange(0, BLOCK_H)
        h_ok = hh < H
        w = tl.load(W + c[:, None] * swc + hh[None, :] * swh, mask=h_ok[None, :], other=0.0).to(dt)
        y = tl.dot(a, w, input_precision=DOT_PREC)
        if HAS_BIAS:
            y += tl.load(B + hh, mask=h_ok, other=0.0).to(tl.float32)[None, :]
        if HEAD_MAJOR:
            o_off = hh[None, :].to(tl.int64) * so_h + o_rows[:, None]
        else:
            o_off = hh[None, :] + o_rows[:, None]
        tl.store(o_base + o_off, y.to(dt), mask=r_ok[:, None] & h_ok[None, :])


@functools.lru_cache(maxsize=32)
def default_config(c: int, h: int, on_gpu: bool) -> dict:
    """64 rows per program, 4 warps (a [64, 128] tile: ~16 KB of bf16 input, as the LayerNorm
    kernel's); column tiles of up to 64. Wide H (q/k/v/gate, C = 128, H = 512) on an H200 (session
    12, kernel_bench --cases qkv): 0.610 ms at N = 1,024, against 0.663 for 128 rows on 8 warps (which,
    compiled offline, need no spills where this one spills: it wins anyway), 0.74-0.94 for 32- or
    128-wide column tiles or 256 rows. Small tiles in the interpreter."""
    if not on_gpu:
        return dict(BLOCK_P=16, BLOCK_H=16 if h <= 16 else 32, num_warps=1, num_stages=1)
    return dict(BLOCK_P=64, BLOCK_H=min(64, max(16, triton.next_power_of_2(h))), num_warps=4, num_stages=1)


def norm_project(x: torch.Tensor, ln, w: torch.Tensor, out: torch.Tensor, bias: Optional[torch.Tensor] = None,
                 head_major: bool = True, config: Optional[dict] = None):
    """Shapes as `kernels.norm_project` (checked there). Returns out."""
    c, h = x.shape[-1], w.shape[1]
    r, r_in, sx_in, sx_out = row_levels(x)
    if r == 0:
        return out
    cfg = dict(default_config(c, h, x.device.type == "cuda"))
    if config:
        cfg.update(config)
    dt = x.dtype
    scale, offset = ln[0].to(dt).contiguous(), ln[1].to(dt).contiguous()
    w = w.to(dt)
    if head_major:
        so_h, so_p = out.stride(0), 1
        o_in, so_out = (out.shape[2], out.stride(1)) if out.dim() == 3 else (max(r, 1), 0)
    else:  # out [*, H] contiguous: row p at p * H
        so_h, so_p, o_in, so_out = 1, h, max(r, 1), 0
    b = bias.to(dt).contiguous() if bias is not None else w
    bh = cfg["BLOCK_H"]
    _norm_project_kernel[(triton.cdiv(r, cfg["BLOCK_P"]),)](
        x, scale, offset, w, b, out, r, r_in, sx_in, sx_out, w.stride(0), w.stride(1), so_h, so_p, o_in, so_out,
        float(ln[2]),
        C=c, H=h, BLOCK_H=bh, NH=triton.cdiv(h, bh), BLOCK_P=cfg["BLOCK_P"], HAS_BIAS=bias is not None,
        HEAD_MAJOR=head_major,
        DOT_PREC=dot_precision(dt, x.device), num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out
