"""Triton kernel of `kernels.transition` (forward only). Loaded through `kernels._triton_loader`.

One program owns BLOCK_P positions and every channel (so out may be x: no other program reads these
positions). It normalises its x tile in float32, then walks the hidden layer BLOCK_H units at a
time: h = relu(x_n W1[:, block] + b1[block]) (rounded to the storage dtype, as the reference's
hidden tensor is) and acc += h W2[block, :], so the hidden layer never leaves the chip. The
residual x tile is read again at the end (from L2) rather than held in registers through the loop.
Offsets are int64.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from kernels._dot import dot_precision


@triton.jit
def _transition_kernel(X, O, LS, LB, W1, B1, W2, B2, NPOS, sx, so, sw1a, sw1b, sw2a, sw2b, eps,
                       C: tl.constexpr, HID: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_H: tl.constexpr,
                       DOT_PREC: tl.constexpr):
    pid = tl.program_id(0)
    offs_p = pid.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < NPOS
    c = tl.arange(0, C)
    dt = O.dtype.element_ty
    xptr = X + offs_p[:, None] * sx + c[None, :]
    x = tl.load(xptr, mask=p_ok[:, None], other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / C
    xc = x - mean[:, None]
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / C + eps)
    a = (xc * rstd[:, None] * tl.load(LS + c).to(tl.float32)[None, :]
         + tl.load(LB + c).to(tl.float32)[None, :]).to(dt)
    acc = tl.zeros([BLOCK_P, C], dtype=tl.float32)
    for h0 in range(0, HID, BLOCK_H):
        hh = h0 + tl.arange(0, BLOCK_H)
        w1 = tl.load(W1 + c[:, None] * sw1a + hh[None, :] * sw1b)
        h = tl.dot(a, w1.to(dt), input_precision=DOT_PREC) + tl.load(B1 + hh).to(tl.float32)[None, :]
        h = tl.maximum(h, 0.0).to(dt)
        w2 = tl.load(W2 + hh[:, None] * sw2a + c[None, :] * sw2b)
        acc = tl.dot(h, w2.to(dt), acc, input_precision=DOT_PREC)
    y = tl.load(xptr, mask=p_ok[:, None], other=0.0).to(tl.float32) + acc + tl.load(B2 + c).to(tl.float32)[None, :]
    tl.store(O + offs_p[:, None] * so + c[None, :], y.to(dt), mask=p_ok[:, None])


@functools.lru_cache(maxsize=32)
def default_config(c: int, hid: int, on_gpu: bool, wide: bool = False) -> dict:
    """GPU (H200 sweep, session 7): 16-bit C = 256 (MSA) 128 positions x 64 hidden units per step,
    8 warps (1.57 ms on 512 x 1,024 positions; 2.09 with 64 positions); fp32 (`wide`) C = 256 64
    positions (128 needs more shared memory than an H200 has); C <= 128 (pair) 64 x 64, 4 warps
    (0.73 ms at N = 1,024; 8 warps 1.46). Small tiles in the interpreter."""
    if not on_gpu:
        return dict(BLOCK_P=16, BLOCK_H=16, num_warps=1, num_stages=1)
    if c >= 256:
        return dict(BLOCK_P=64 if wide else 128, BLOCK_H=min(64, hid), num_warps=8, num_stages=2)
    return dict(BLOCK_P=64, BLOCK_H=min(64, hid), num_warps=4, num_stages=2)


def transition(x: torch.Tensor, ln, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
               out: torch.Tensor, config: Optional[dict] = None) -> torch.Tensor:
    """Shapes as `kernels.transition` (checked there). Returns out."""
    c, hid = x.shape[-1], w1.shape[-1]
    npos = x.numel() // c
    if npos == 0:
        return out
    assert w1.shape == (c, hid) and w2.shape == (hid, c)
    xv, ov = x.view(npos, c), out.view(npos, c)
    cfg = dict(default_config(c, hid, x.device.type == "cuda", x.element_size() > 2))
    if config:
        cfg.update(config)
    dt = x.dtype
    vec = lambda t: t.to(dt).contiguous()  # noqa: E731
    w1, w2 = w1.to(dt), w2.to(dt)
    grid = (triton.cdiv(npos, cfg["BLOCK_P"]),)
    _transition_kernel[grid](
        xv, ov, vec(ln[0]), vec(ln[1]), w1, vec(b1), w2, vec(b2), npos, xv.stride(0), ov.stride(0),
        w1.stride(0), w1.stride(1), w2.stride(0), w2.stride(1), float(ln[2]),
        C=c, HID=hid, BLOCK_P=cfg["BLOCK_P"], BLOCK_H=cfg["BLOCK_H"], DOT_PREC=dot_precision(dt, x.device),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out
