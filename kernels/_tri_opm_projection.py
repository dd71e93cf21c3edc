"""Triton kernel of `kernels.opm_projection` (forward only). Loaded through `kernels._triton_loader`.

One program computes out[i, j-block, z-block]: a GEMM [BLOCK_J, c*c] @ [c*c, BLOCK_Z] whose K
axis (a, b) is walked one a at a time; for fixed (i, a) the operand tile o[i, a, j-block, :] is a
dense [BLOCK_J, c] block (rows c apart), so the outer product is read in place, once per z-block.
fp32 accumulation; bias and the division by norm in registers; the result is rounded once. Offsets
into o are int64 (a [N, 32, N, 32] outer product passes 2**31 elements at N > 1,448).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from kernels._dot import dot_precision


@triton.jit
def _opm_projection_kernel(O, W, B, NRM, Y, NJ, NZ, soi, soa, soj, swk, sni, snj, syi, syj,
                           C: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_Z: tl.constexpr,
                           DOT_PREC: tl.constexpr, ACCUM: tl.constexpr):
    pid_j = tl.program_id(0)
    i = tl.program_id(1).to(tl.int64)
    pid_z = tl.program_id(2)
    offs_j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    offs_z = pid_z * BLOCK_Z + tl.arange(0, BLOCK_Z)
    offs_b = tl.arange(0, C)
    j_ok = offs_j < NJ
    z_ok = offs_z < NZ
    base = O + i * soi + offs_j.to(tl.int64)[:, None] * soj + offs_b[None, :]
    acc = tl.zeros([BLOCK_J, BLOCK_Z], dtype=tl.float32)
    for a in range(0, C):
        x = tl.load(base + a * soa, mask=j_ok[:, None], other=0.0)
        wt = tl.load(W + (a * C + offs_b)[:, None] * swk + offs_z[None, :], mask=z_ok[None, :], other=0.0)
        acc = tl.dot(x, wt.to(x.dtype), acc, input_precision=DOT_PREC)
    bias = tl.load(B + offs_z, mask=z_ok, other=0.0).to(tl.float32)
    nrm = tl.load(NRM + i * sni + offs_j * snj, mask=j_ok, other=1.0).to(tl.float32)
    y = (acc + bias[None, :]) / nrm[:, None]
    yptr = Y + i * syi + offs_j[:, None] * syj + offs_z[None, :]
    ymask = j_ok[:, None] & z_ok[None, :]
    if ACCUM:  # Y is the residual: add into it (one rounding of the sum)
        y += tl.load(yptr, mask=ymask, other=0.0).to(tl.float32)
    tl.store(yptr, y.to(Y.dtype.element_ty), mask=ymask)


@functools.lru_cache(maxsize=32)
def default_config(c: int, n_out: int, on_gpu: bool) -> dict:
    """Tiles: all output channels (C_z = 128) in one tile, 128 positions j; CPU (interpreter) runs use
    small tiles."""
    if not on_gpu:
        return dict(BLOCK_J=16, BLOCK_Z=16, num_warps=1, num_stages=1)
    return dict(BLOCK_J=128, BLOCK_Z=min(128, triton.next_power_of_2(max(n_out, 16))), num_warps=8, num_stages=3)


def opm_projection(o: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, norm: torch.Tensor,
                   config: Optional[dict] = None, add_to: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Shapes as `kernels.opm_projection`. Returns a new [n, N, C_z] tensor, or add_to ([n, N, C_z],
    unit channel stride) with the result added in place."""
    n, c, n_res, c2 = o.shape
    nz = w.shape[1]
    assert c == c2 and o.stride(3) == 1 and w.shape[0] == c * c and norm.shape == (n, n_res)
    if add_to is not None:
        assert add_to.shape == (n, n_res, nz) and add_to.stride(2) == 1 and add_to.dtype == o.dtype
    y = torch.empty(n, n_res, nz, dtype=o.dtype, device=o.device) if add_to is None else add_to
    if y.numel() == 0:
        return y
    cfg = dict(default_config(c, nz, o.device.type == "cuda"))
    if config:
        cfg.update(config)
    w = w.contiguous()
    nrm = norm.contiguous()
    grid = (triton.cdiv(n_res, cfg["BLOCK_J"]), n, triton.cdiv(nz, cfg["BLOCK_Z"]))
    _opm_projection_kernel[grid](
        o, w, bias.contiguous(), nrm, y, n_res, nz, o.stride(0), o.stride(1), o.stride(2), w.stride(0),
        nrm.stride(0), nrm.stride(1), y.stride(0), y.stride(1),
        C=c, BLOCK_J=cfg["BLOCK_J"], BLOCK_Z=cfg["BLOCK_Z"], ACCUM=add_to is not None,
        DOT_PREC=dot_precision(o.dtype, o.device), num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return y
