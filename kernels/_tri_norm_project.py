"""Triton kernel of `kernels.norm_project` (forward only). Loaded through `kernels._triton_loader`.

One program normalises a [BLOCK_P, C] tile of rows in float32 (rounded to the storage dtype, as the
reference's LayerNorm output is), multiplies it by W [C, H] (H padded to a tensor-core width HP,
the padding masked) and stores the [BLOCK_P, H] result head-major: out[h, p], unit stride along p.
The rows may sit on two strided levels (row r at (r // R_IN) * sx_out + (r % R_IN) * sx_in: the
ending node's transposed pair), and so may out's (a row block of a bias whose rows are padded to a
16-byte stride: [H, A, B] with B contiguous). Offsets are int64.
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
def _norm_project_kernel(X, LS, LB, W, O, R, R_IN, sx_in, sx_out, swc, swh, so, O_IN, so_out, eps,
                         C: tl.constexpr, H: tl.constexpr, HP: tl.constexpr, BLOCK_P: tl.constexpr,
                         DOT_PREC: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    r_ok = rows < R
    rows = tl.minimum(rows, R - 1)  # in-bounds loads without masks; the store is masked
    c = tl.arange(0, C)
    hh = tl.arange(0, HP)
    dt = O.dtype.element_ty
    x = tl.load(X + ((rows // R_IN) * sx_out + (rows % R_IN) * sx_in)[:, None] + c[None, :]).to(tl.float32)
    xc = x - (tl.sum(x, axis=1) / C)[:, None]
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / C + eps)
    a = (xc * rstd[:, None] * tl.load(LS + c).to(tl.float32)[None, :] + tl.load(LB + c).to(tl.float32)[None, :]).to(dt)
    w = tl.load(W + c[:, None] * swc + hh[None, :] * swh, mask=hh[None, :] < H, other=0.0).to(dt)
    y = tl.dot(a, w, input_precision=DOT_PREC)
    o_rows = (rows // O_IN) * so_out + rows % O_IN  # out's rows on up to two levels (padded bias rows)
    tl.store(O + hh[None, :].to(tl.int64) * so + o_rows[:, None], y.to(dt), mask=r_ok[:, None] & (hh[None, :] < H))


@functools.lru_cache(maxsize=32)
def default_config(c: int, on_gpu: bool) -> dict:
    """64 rows per program, 4 warps on the GPU (a [64, 128] tile: ~16 KB of bf16 input, as the LayerNorm
    kernel's); small tiles in the interpreter."""
    if not on_gpu:
        return dict(BLOCK_P=16, num_warps=1, num_stages=1)
    return dict(BLOCK_P=64, num_warps=4, num_stages=1)


def norm_project(x: torch.Tensor, ln, w: torch.Tensor, out: torch.Tensor, config: Optional[dict] = None):
    """Shapes as `kernels.norm_project` (checked there). Returns out."""
    c, h = x.shape[-1], w.shape[1]
    r, r_in, sx_in, sx_out = row_levels(x)
    if r == 0:
        return out
    cfg = dict(default_config(c, x.device.type == "cuda"))
    if config:
        cfg.update(config)
    dt = x.dtype
    scale, offset = ln[0].to(dt).contiguous(), ln[1].to(dt).contiguous()
    w = w.to(dt)
    o_in, so_out = (out.shape[2], out.stride(1)) if out.dim() == 3 else (max(r, 1), 0)
    _norm_project_kernel[(triton.cdiv(r, cfg["BLOCK_P"]),)](
        x, scale, offset, w, out, r, r_in, sx_in, sx_out, w.stride(0), w.stride(1), out.stride(0), o_in, so_out,
        float(ln[2]),
        C=c, H=h, HP=max(16, triton.next_power_of_2(h)), BLOCK_P=cfg["BLOCK_P"],
        DOT_PREC=dot_precision(dt, x.device), num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out
