"""Triton LayerNorm over the last axis (forward only). Loaded through `kernels._triton_loader`.

Memory-bound: one read and one write of x is the floor (a [2048, 2048, 128] bf16 pair tensor moves
2.1 GB, 0.7 ms at 3 TB/s). Each program normalises a [BLOCK_R, C] tile held in registers (the whole
channel axis fits: C <= 4096 here, 128 for the pair tensor), so statistics need no second pass over
memory; rows are 16-byte-vectorised along C. Statistics in fp32 (two-pass over the registers:
mean, then centred variance, which is as accurate as the reference's).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from kernels._common import two_strides

MAX_CHANNELS = 4096


@triton.jit
def _layer_norm_kernel(X, W, B, Y, R, sx, sy, sxc, syc, eps, R_IN, sxo,
                       C: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
                       BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr, WIDE: tl.constexpr, SPLIT: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)  # int64: R * C exceeds 2**31 at N=4096
    cols = tl.arange(0, BLOCK_C)
    if WIDE:  # channel-major: C * the channel stride exceeds 2**31 (a [128, N, N] product at N > 4,100)
        cols = cols.to(tl.int64)
    if C == BLOCK_C:
        msk = (rows < R)[:, None]  # constant along C, so loads stay vectorised
    else:
        msk = (rows < R)[:, None] & (cols < C)[None, :]
    # sxc/syc: channel strides, 1 for [*, C] rows (Triton specialises 1, keeping loads vectorised);
    # the position count for a channel-major [C, P] tensor, whose rows are then its positions.
    if SPLIT:  # rows of x are (outer, inner) pairs with two strides: a transposed view, read in place
        xrow = (rows // R_IN) * sxo + (rows % R_IN) * sx
    else:
        xrow = rows * sx
    x = tl.load(X + xrow[:, None] + cols[None, :] * sxc, mask=msk, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / C
    xc = x - mean[:, None]
    if C != BLOCK_C:
        xc = tl.where(msk, xc, 0.0)
    var = tl.sum(xc * xc, axis=1) / C
    y = xc * tl.math.rsqrt(var + eps)[:, None]
    if HAS_W:
        w = tl.load(W + cols, mask=cols < C, other=0.0).to(tl.float32)
        y = y * w[None, :]
    if HAS_B:
        b = tl.load(B + cols, mask=cols < C, other=0.0).to(tl.float32)
        y = y + b[None, :]
    tl.store(Y + rows[:, None] * sy + cols[None, :] * syc, y.to(Y.dtype.element_ty), mask=msk)


@functools.lru_cache(maxsize=64)
def default_config(c: int, itemsize: int, on_gpu: bool, channel_major: bool = False) -> dict:
    """Rows per program and warps (cached by shape); from the H100 sweep in scripts/kernel_bench.py.
    Channel-major tiles are read along positions: wider position blocks keep those loads coalesced."""
    block_c = triton.next_power_of_2(c)
    if not on_gpu:
        return dict(BLOCK_R=4, num_warps=1)
    if channel_major:
        return dict(BLOCK_R=64, num_warps=8)
    # ~16 KB of input per program: enough bytes in flight per SM without spilling the fp32 copy.
    block_r = max(1, min(128, 16384 // (block_c * itemsize)))
    return dict(BLOCK_R=block_r, num_warps=8 if block_r * block_c >= 8192 else 4)


def layer_norm(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
               eps: float = 1e-5, config: Optional[dict] = None, dim: int = -1) -> torch.Tensor:
    """x: [*, C] (last dim contiguous, or it is copied), or with dim=0 a channel-major [C, *]
    whose x[0] is contiguous (a row block of triangle multiplication's [c, N, N] product);
    weight, bias: [C] or None. Returns a new contiguous tensor of x's shape and dtype."""
    if dim not in (-1, x.dim() - 1):
        if dim != 0:
            raise ValueError(f"layer_norm over dim {dim}: only the last or the first axis")
        c = x.shape[0]
        x2 = x.reshape(c, -1)  # [C, P], a view: positions contiguous, channels P apart
        y = torch.empty_like(x2, memory_format=torch.contiguous_format)
        _launch(x2.t(), y.t(), weight, bias, eps, config, channel_major=True)
        return y.reshape(x.shape)
    c = x.shape[-1]
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    split = two_strides(x) if c > 1 and x.dim() > 2 and x.stride(-1) == 1 else None
    if split is not None:  # e.g. z.transpose(0, 1) [N_j, N_i, C]: no contiguous copy first
        (_, s_out), (r_in, s_in) = split
        _launch(x, y.view(-1, c), weight, bias, eps, config, split=(r_in, s_in, s_out))
        return y
    x2 = x.reshape(-1, c)  # a view whenever the leading dims can be flattened
    if c > 1 and x2.stride(-1) != 1:
        x2 = x2.contiguous()
    _launch(x2, y.view(-1, c), weight, bias, eps, config)
    return y


def _launch(x2, y, weight, bias, eps, config, channel_major: bool = False, split=None):
    """Normalise the rows of x2 [R, C] into y [R, C] (either may be a transposed view). split =
    (rows_in, inner stride, outer stride): x2 is then any [*, C] tensor whose row r is at
    (r // rows_in) * outer stride + (r % rows_in) * inner stride (channels contiguous)."""
    r, c = y.shape
    rows_in, sx, sxo = split if split else (1, x2.stride(0), 0)
    sxc = 1 if split else x2.stride(1)
    if r == 0:
        return
    cfg = dict(default_config(c, x2.element_size(), x2.device.type == "cuda", channel_major))
    if config:
        cfg.update(config)
    w = weight.contiguous() if weight is not None else x2
    b = bias.contiguous() if bias is not None else x2
    grid = (triton.cdiv(r, cfg["BLOCK_R"]),)
    _layer_norm_kernel[grid](x2, w, b, y, r, sx, y.stride(0), sxc, y.stride(1), float(eps), rows_in, sxo,
                             C=c, HAS_W=weight is not None, HAS_B=bias is not None,
                             BLOCK_R=cfg["BLOCK_R"], BLOCK_C=triton.next_power_of_2(c),
                             WIDE=bool(cfg.get("wide", (c - 1) * max(abs(sxc), abs(y.stride(1))) >= 2 ** 31)),
                             SPLIT=split is not None, num_warps=cfg["num_warps"])
