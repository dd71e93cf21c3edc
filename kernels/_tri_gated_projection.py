"""Triton kernel of `kernels.gated_projection` (forward only). Loaded through `kernels._triton_loader`.

One program computes a [BLOCK_P, BLOCK_C] tile of both GEMMs (x [P, C] @ W_p, W_g [C, c]) with fp32
accumulators, then bias, sigmoid, mask and product in registers, and stores the tile channel-major
(out[c, p], unit stride along p). Memory: x is read once per channel tile and out written once,
instead of two GEMM outputs written and read back by three element-wise passes. Offsets are int64
(a [128, N, N] projection passes 2**31 elements at N > 4,100).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from kernels._dot import dot_precision


@triton.jit
def _gated_projection_kernel(X, WP, BP, WG, BG, M, O, P, C, NC, sxp, sxc, swk, swc, sgk, sgc, som,
                             BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
                             DOT_PREC: tl.constexpr, C_FAST: tl.constexpr):
    if C_FAST:  # the channel tiles of one position tile run together: x comes from L2 after the first
        pid_c = tl.program_id(0)
        pid_p = tl.program_id(1)
    else:
        pid_p = tl.program_id(0)
        pid_c = tl.program_id(1)
    offs_p = pid_p.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_k = tl.arange(0, BLOCK_K)
    p_ok = offs_p < P
    c_ok = offs_c < NC
    acc_p = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    acc_g = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        kk = k0 + offs_k
        k_ok = kk < C
        x = tl.load(X + offs_p[:, None] * sxp + kk[None, :] * sxc, mask=p_ok[:, None] & k_ok[None, :], other=0.0)
        wmask = k_ok[:, None] & c_ok[None, :]
        wp = tl.load(WP + kk[:, None] * swk + offs_c[None, :] * swc, mask=wmask, other=0.0)
        wg = tl.load(WG + kk[:, None] * sgk + offs_c[None, :] * sgc, mask=wmask, other=0.0)
        acc_p = tl.dot(x, wp.to(x.dtype), acc_p, input_precision=DOT_PREC)
        acc_g = tl.dot(x, wg.to(x.dtype), acc_g, input_precision=DOT_PREC)
    bp = tl.load(BP + offs_c, mask=c_ok, other=0.0).to(tl.float32)
    bg = tl.load(BG + offs_c, mask=c_ok, other=0.0).to(tl.float32)
    m = tl.load(M + offs_p, mask=p_ok, other=0.0).to(tl.float32)
    # The reference rounds each stage to the storage dtype; here only the result is rounded.
    y = (acc_p + bp[None, :]) * m[:, None] * tl.sigmoid(acc_g + bg[None, :])
    optr = O + offs_c.to(tl.int64)[None, :] * som + offs_p[:, None]
    tl.store(optr, y.to(O.dtype.element_ty), mask=p_ok[:, None] & c_ok[None, :])


@triton.jit
def _gated_projection_persistent(X, WP, BP, WG, BG, M, O, LS, LB, P, C, NC, sxp, sxc, swk, swc, sgk, sgc, som,
                                 eps, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, KP: tl.constexpr,
                                 DOT_PREC: tl.constexpr, STAGES: tl.constexpr, NORM: tl.constexpr):
    """Persistent form: each program keeps one channel tile's weights (the whole reduction axis, KP =
    C padded to a power of two) and walks position tiles, so the next tile's x is prefetched while
    this one is multiplied (software pipelining over the tile loop). The grid is n_c x k programs:
    program pid owns channel tile pid % n_c and position tiles pid // n_c, + k, + 2k, ...
    NORM: x is the raw pair and each tile is LayerNorm'd here (LS, LB, eps; float32 statistics, the
    result rounded to x's dtype as the LayerNorm kernel's output is), since every tile holds whole rows."""
    pid = tl.program_id(0)
    n_c = tl.cdiv(NC, BLOCK_C)
    step = tl.num_programs(0) // n_c
    offs_c = (pid % n_c) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < NC
    kk = tl.arange(0, KP)
    k_ok = kk < C
    wmask = k_ok[:, None] & c_ok[None, :]
    dt = X.dtype.element_ty
    wp = tl.load(WP + kk[:, None] * swk + offs_c[None, :] * swc, mask=wmask, other=0.0).to(dt)
    wg = tl.load(WG + kk[:, None] * sgk + offs_c[None, :] * sgc, mask=wmask, other=0.0).to(dt)
    bp = tl.load(BP + offs_c, mask=c_ok, other=0.0).to(tl.float32)
    bg = tl.load(BG + offs_c, mask=c_ok, other=0.0).to(tl.float32)
    if NORM:  # zero past C, so the padded columns stay 0 after the normalisation
        ls = tl.load(LS + kk, mask=k_ok, other=0.0).to(tl.float32)
        lb = tl.load(LB + kk, mask=k_ok, other=0.0).to(tl.float32)
    for pt in tl.range(pid // n_c, tl.cdiv(P, BLOCK_P), step, num_stages=STAGES):
        offs_p = pt * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)  # pt * BLOCK_P < P < 2**31
        p_ok = offs_p < P
        x = tl.load(X + offs_p[:, None] * sxp + kk[None, :] * sxc, mask=p_ok[:, None] & k_ok[None, :], other=0.0)
        if NORM:
            xf = x.to(tl.float32)
            mean = tl.sum(xf, axis=1) / C
            xc = tl.where(k_ok[None, :], xf - mean[:, None], 0.0)
            var = tl.sum(xc * xc, axis=1) / C
            x = (xc * tl.math.rsqrt(var + eps)[:, None] * ls[None, :] + lb[None, :]).to(dt)
        acc_p = tl.dot(x, wp, input_precision=DOT_PREC)
        acc_g = tl.dot(x, wg, input_precision=DOT_PREC)
        m = tl.load(M + offs_p, mask=p_ok, other=0.0).to(tl.float32)
        y = (acc_p + bp[None, :]) * m[:, None] * tl.sigmoid(acc_g + bg[None, :])
        optr = O + offs_c.to(tl.int64)[None, :] * som + offs_p[:, None]
        tl.store(optr, y.to(O.dtype.element_ty), mask=p_ok[:, None] & c_ok[None, :])


@functools.lru_cache(maxsize=32)
def default_config(c_in: int, n_out: int, on_gpu: bool, wide: bool = False, sms: int = 132) -> dict:
    """Tile sizes: the whole reduction axis (C_z = 128 or 64) in one or two steps; CPU (interpreter)
    runs use small tiles. `c_fast`: grid order with the channel tiles of a position tile adjacent;
    `persistent`: the number of programs of the persistent form (0: one program per tile).

    16-bit on the GPU (H100, session 9, call AY, 262,144 positions x 128 -> 128): the persistent form,
    64 positions x 64 channels, 4 warps, 3 stages: 0.085 ms with three programs per SM against 0.098
    for one 128 x 64 tile per program in channel-fast order (0.109 in position-fast order, call AX; a
    transposed accumulator, W^T x^T stored without a layout change, changed nothing and was removed);
    two programs per SM since session 13 (H100, same process: 0.072-0.073 ms against 0.085 for three,
    0.114 for one; 4 stages 0.073, 2 stages 0.130); 8 warps since session 22 (H100, three runs in two
    calls: 0.068-0.069 ms against 0.072; compiled offline 80 registers against 175, so both programs'
    16 warps fit an SM beside 90 KB of shared memory each).
    fp32 (`wide`) and C > 128 keep one tile per program.
    `fuse_norm`: with `ln=`, the persistent form normalises each tile itself. Off: on an H100 (session
    22) a call with it took 0.098-0.099 ms at 8 warps against 0.121-0.122 for the LayerNorm kernel then
    the kernel, but triangle multiplication normalises once for its two projections (0.05 + 2 x 0.068
    against 2 x 0.098 ms), so the network would lose."""
    if not on_gpu:
        return dict(BLOCK_P=16, BLOCK_C=16, BLOCK_K=16, num_warps=1, num_stages=1, c_fast=False, persistent=0,
                    fuse_norm=False)
    block_k = min(64, triton.next_power_of_2(max(c_in, 16)))
    block_c = min(64, triton.next_power_of_2(max(n_out, 16)))
    if wide or c_in > 128:  # the persistent form holds both weight tiles [C, 64] in shared memory
        return dict(BLOCK_P=128, BLOCK_C=block_c, BLOCK_K=block_k, num_warps=8, num_stages=2, c_fast=True,
                    persistent=0, fuse_norm=False)
    return dict(BLOCK_P=64, BLOCK_C=block_c, BLOCK_K=block_k, num_warps=8, num_stages=3, c_fast=True,
                persistent=2 * sms, fuse_norm=False)


def _config(x: torch.Tensor, nc: int, config: Optional[dict]) -> dict:
    on_gpu = x.device.type == "cuda"
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count if on_gpu else 1
    cfg = dict(default_config(x.shape[1], nc, on_gpu, x.dtype == torch.float32, sms))
    if config:
        cfg.update(config)
    return cfg


def _norms_in_kernel(cfg: dict) -> bool:
    return bool(cfg.get("persistent") and cfg.get("fuse_norm"))


def fuses_norm(x: torch.Tensor, nc: int, config: Optional[dict] = None) -> bool:
    """Whether `gated_projection(..., ln=)` normalises x inside the kernel for this input (the
    persistent form with `fuse_norm`) rather than in a LayerNorm pass first."""
    return _norms_in_kernel(_config(x, nc, config))


def gated_projection(x: torch.Tensor, w_p: torch.Tensor, b_p: torch.Tensor, w_g: torch.Tensor,
                     b_g: torch.Tensor, mask: torch.Tensor, out: torch.Tensor,
                     config: Optional[dict] = None, ln=None) -> torch.Tensor:
    """Shapes as `kernels.gated_projection`; ln: (scale, offset, eps) of a LayerNorm to apply to x
    first (in the kernel where `fuses_norm`, else by the LayerNorm kernel). Returns out."""
    p, c = x.shape
    nc = out.shape[0]
    assert out.shape[1] == p and out.stride(1) == 1, "out must be [c, P] with unit stride along P"
    assert w_p.shape == (c, nc) and w_g.shape == (c, nc) and mask.numel() == p
    if p == 0 or nc == 0:
        return out
    cfg = _config(x, nc, config)
    m = mask.reshape(p)
    if ln is not None and not _norms_in_kernel(cfg):
        from kernels.layer_norm import layer_norm
        x, ln = layer_norm(x, ln[0], ln[1], ln[2], backend="triton"), None
    if cfg.get("persistent"):
        n_c, n_p = triton.cdiv(nc, cfg["BLOCK_C"]), triton.cdiv(p, cfg["BLOCK_P"])
        per_c = max(1, min(n_p, cfg["persistent"] // n_c))
        ls, lb, eps = (ln[0].contiguous(), ln[1].contiguous(), float(ln[2])) if ln is not None else (x, x, 0.0)
        _gated_projection_persistent[(n_c * per_c,)](
            x, w_p, b_p.contiguous(), w_g, b_g.contiguous(), m, out, ls, lb, p, c, nc,
            x.stride(0), x.stride(1), w_p.stride(0), w_p.stride(1), w_g.stride(0), w_g.stride(1), out.stride(0),
            eps, BLOCK_P=cfg["BLOCK_P"], BLOCK_C=cfg["BLOCK_C"], KP=triton.next_power_of_2(max(c, 16)),
            DOT_PREC=dot_precision(x.dtype, x.device), STAGES=cfg["num_stages"], NORM=ln is not None,
            num_warps=cfg["num_warps"])
        return out
    grid = (triton.cdiv(p, cfg["BLOCK_P"]), triton.cdiv(nc, cfg["BLOCK_C"]))
    if cfg["c_fast"]:
        grid = grid[::-1]
    _gated_projection_kernel[grid](
        x, w_p, b_p.contiguous(), w_g, b_g.contiguous(), m, out, p, c, nc,
        x.stride(0), x.stride(1), w_p.stride(0), w_p.stride(1), w_g.stride(0), w_g.stride(1), out.stride(0),
        BLOCK_P=cfg["BLOCK_P"], BLOCK_C=cfg["BLOCK_C"], BLOCK_K=cfg["BLOCK_K"],
        DOT_PREC=dot_precision(x.dtype, x.device), C_FAST=bool(cfg["c_fast"]),
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out
