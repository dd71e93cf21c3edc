"""Triton kernel of `kernels.linear_residual` (forward only). Loaded through `kernels._triton_loader`.

One program computes a [BLOCK_R, BLOCK_C] tile of x W (the reduction over K in BLOCK_K steps, fp32
accumulator), adds the bias and the residual tile it then overwrites, and rounds once. Each output
element is read and written by the same program, so the residual may be updated in place. The
residual's rows may sit on two strided levels (row r at (r // R_IN) * so_out + (r % R_IN) * so_in:
a transposed view or a column block, as column-wise attention updates them). Offsets are int64.
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
def _linear_residual_kernel(X, W, B, O, R, R_IN, sxr, swk, swc, so_in, so_out,
                            K: tl.constexpr, C: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr,
                            BLOCK_K: tl.constexpr, DOT_PREC: tl.constexpr):
    pid_r = tl.program_id(0)
    pid_c = tl.program_id(1)
    rows = pid_r.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    r_ok = rows < R
    rows = tl.minimum(rows, R - 1)  # in-bounds loads without masks; the store is masked
    cc = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    dt = O.dtype.element_ty
    acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(X + rows[:, None] * sxr + kk[None, :])
        w = tl.load(W + kk[:, None] * swk + cc[None, :] * swc)
        acc = tl.dot(x, w.to(x.dtype), acc, input_precision=DOT_PREC)
    optr = O + ((rows // R_IN) * so_out + (rows % R_IN) * so_in)[:, None] + cc[None, :]
    y = acc + tl.load(B + cc).to(tl.float32)[None, :] + tl.load(optr).to(tl.float32)
    tl.store(optr, y.to(dt), mask=r_ok[:, None])


@functools.lru_cache(maxsize=32)
def default_config(k: int, c: int, on_gpu: bool) -> dict:
    """GPU (H100, session 9, call AX): 128 rows x up to 128 channels, K in 64-wide steps, 8 warps, 3
    stages (0.294 ms for triangle attention's rows at N = 1,024, 2 stages 0.309, 64 rows 0.304;
    the MSA's K = C = 256 0.366 against 0.410, 256-wide channel tiles 0.425); small tiles in the
    interpreter."""
    if not on_gpu:
        return dict(BLOCK_R=16, BLOCK_C=min(c, 32), BLOCK_K=min(k, 16), num_warps=1, num_stages=1)
    return dict(BLOCK_R=128, BLOCK_C=min(c, 128), BLOCK_K=min(k, 64), num_warps=8, num_stages=3)


def linear_residual(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, out: torch.Tensor,
                    config: Optional[dict] = None) -> torch.Tensor:
    """Shapes as `kernels.linear_residual` (x [R, K] with unit column stride; out's rows on one or two
    strided levels, unit channel stride: `kernels.linear_residual` checks). Returns out."""
    r, k = x.shape
    c = out.shape[-1]
    n, r_in, so_in, so_out = row_levels(out)
    assert n == r and w.shape == (k, c) and x.stride(1) == 1 and out.stride(-1) == 1
    if r == 0:
        return out
    cfg = dict(default_config(k, c, x.device.type == "cuda"))
    if config:
        cfg.update(config)
    # tiles never wider than the (power-of-two) axes: the loads carry no masks
    cfg["BLOCK_C"], cfg["BLOCK_K"] = min(cfg["BLOCK_C"], c), min(cfg["BLOCK_K"], k)
    grid = (triton.cdiv(r, cfg["BLOCK_R"]), triton.cdiv(c, cfg["BLOCK_C"]))
    _linear_residual_kernel[grid](
        x, w, b.contiguous(), out, r, r_in, x.stride(0), w.stride(0), w.stride(1), so_in, so_out,
        K=k, C=c, BLOCK_R=cfg["BLOCK_R"], BLOCK_C=cfg["BLOCK_C"], BLOCK_K=cfg["BLOCK_K"],
        DOT_PREC=dot_precision(x.dtype, x.device), num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out
