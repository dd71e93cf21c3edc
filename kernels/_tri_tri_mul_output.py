"""Triton kernel of `kernels.tri_mul_output` (forward only). Loaded through `kernels._triton_loader`.

One program owns BLOCK_P positions and every output channel (so the update may be written in place
over z: no other program reads these positions). It loads z[positions, :] ([BLOCK_P, C_z]),
normalises it and multiplies it by W_g, and keeps sigmoid(gate) in the storage dtype; it loads the
product tile p[:, positions] ([BLOCK_P, c], read along positions, channel-major), normalises it
over channels in float32 and multiplies it by W_out; bias, product and the residual (z read again)
in registers; one store. Offsets are int64 (the [128, N, N] product passes 2**31 elements at
N > 4,100).

`split` (config key, SPLIT > 1; session 23, not yet timed on a GPU) forms both LayerNorms first,
rounded to the storage dtype, then the output in SPLIT slices of C_z / SPLIT channels, each with its
own slice of W_g and W_out. Only one slice's two accumulators are alive at a time: compiled offline
for sm_90 (64 positions, 4 warps) 159 registers at SPLIT = 4 against 251, so three programs fit an
SM instead of two. The values are SPLIT = 1's up to the order of the dots' sums (the same dots,
column slice by column slice).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from kernels._dot import dot_precision


@triton.jit
def _layer_norm_rows(x, S, B, cols, n: tl.constexpr, eps):
    """x [rows, n] float32 normalised over its n columns, scaled by S[cols], shifted by B[cols]."""
    xc = x - (tl.sum(x, axis=1) / n)[:, None]
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / n + eps)
    return xc * rstd[:, None] * tl.load(S + cols).to(tl.float32)[None, :] + tl.load(B + cols).to(tl.float32)[None, :]


@triton.jit
def _z_norm(zrow, p_ok, LZS, LZB, co, CZ: tl.constexpr, eps_z):
    """LN_z of the program's z tile [BLOCK_P, C_z], float32."""
    return _layer_norm_rows(tl.load(zrow, mask=p_ok[:, None], other=0.0).to(tl.float32), LZS, LZB, co, CZ, eps_z)


@triton.jit
def _p_norm(PP, offs_p, p_ok, spc, LPS, LPB, ch, C: tl.constexpr, eps_p):
    """LN over channels of the product's tile p[:, positions] as [BLOCK_P, c] (read along positions,
    channel-major), float32."""
    x = tl.load(PP + ch.to(tl.int64)[None, :] * spc + offs_p[:, None], mask=p_ok[:, None], other=0.0)
    return _layer_norm_rows(x.to(tl.float32), LPS, LPB, ch, C, eps_p)


@triton.jit
def _tri_mul_output_kernel(PP, Z, O, LPS, LPB, WO, BO, LZS, LZB, WG, BG, NPOS, spc, szp, sop,
                           swo0, swo1, swg0, swg1, eps_p, eps_z,
                           C: tl.constexpr, CZ: tl.constexpr, BLOCK_P: tl.constexpr, DOT_PREC: tl.constexpr,
                           SPLIT: tl.constexpr):
    pid = tl.program_id(0)
    offs_p = pid.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < NPOS
    ch = tl.arange(0, C)
    co = tl.arange(0, CZ)
    dt = O.dtype.element_ty
    zrow = Z + offs_p[:, None] * szp + co[None, :]

    if SPLIT == 1:
        # The gate first, from z's own LN, kept in the storage dtype (as the reference's sigmoid_ is): only
        # it stays alive while the product's tile is normalised and projected, and z is read again (from
        # L2) for the residual. H100, session 22: 0.305 against 0.314-0.320 ms a [128, 256, 2,048] block
        # for the product first with the gate in float32 (commit 1ef7528 has that order).
        xz = _z_norm(zrow, p_ok, LZS, LZB, co, CZ, eps_z)
        wg = tl.load(WG + co[:, None] * swg0 + co[None, :] * swg1)
        g = tl.dot(xz.to(dt), wg.to(dt), input_precision=DOT_PREC)
        s = tl.sigmoid(g + tl.load(BG + co).to(tl.float32)[None, :]).to(dt)

        # LN over the product's channels, then its output projection
        a = _p_norm(PP, offs_p, p_ok, spc, LPS, LPB, ch, C, eps_p)
        wo = tl.load(WO + ch[:, None] * swo0 + co[None, :] * swo1)
        upd = tl.dot(a.to(dt), wo.to(dt), input_precision=DOT_PREC)
        upd += tl.load(BO + co).to(tl.float32)[None, :]

        y = tl.load(zrow, mask=p_ok[:, None], other=0.0).to(tl.float32) + upd * s.to(tl.float32)
        tl.store(O + offs_p[:, None] * sop + co[None, :], y.to(dt), mask=p_ok[:, None])
    else:
        # Both LNs first (rounded to the storage dtype, as the dots read them), then the output
        # SPLIT slices of channels at a time: one slice's gate and update accumulators alive at once.
        xz = _z_norm(zrow, p_ok, LZS, LZB, co, CZ, eps_z).to(dt)
        a = _p_norm(PP, offs_p, p_ok, spc, LPS, LPB, ch, C, eps_p).to(dt)
        CS: tl.constexpr = CZ // SPLIT
        for h in tl.static_range(SPLIT):
            cs = h * CS + tl.arange(0, CS)
            wg = tl.load(WG + co[:, None] * swg0 + cs[None, :] * swg1)
            g = tl.dot(xz, wg.to(dt), input_precision=DOT_PREC)
            s = tl.sigmoid(g + tl.load(BG + cs).to(tl.float32)[None, :]).to(dt)
            wo = tl.load(WO + ch[:, None] * swo0 + cs[None, :] * swo1)
            upd = tl.dot(a, wo.to(dt), input_precision=DOT_PREC)
            upd += tl.load(BO + cs).to(tl.float32)[None, :]
            zs = tl.load(Z + offs_p[:, None] * szp + cs[None, :], mask=p_ok[:, None], other=0.0)
            y = zs.to(tl.float32) + upd * s.to(tl.float32)
            tl.store(O + offs_p[:, None] * sop + cs[None, :], y.to(dt), mask=p_ok[:, None])


@functools.lru_cache(maxsize=32)
def default_config(c: int, cz: int, on_gpu: bool) -> dict:
    """64 positions x every channel per program, 4 warps, on the GPU (H200 sweep, session 7: 0.326 ms
    per [128, 256, 2,048] block against 0.447 with 8 warps and 0.344 with 32 positions; H100,
    session 22: 8 warps 0.435-0.446 against 0.305 ms, 32 positions 0.432, 2 stages level, the
    product's tile loaded beside z's 0.306-0.310); small tiles in the interpreter."""
    if not on_gpu:
        return dict(BLOCK_P=16, num_warps=1, num_stages=1)
    return dict(BLOCK_P=64, num_warps=4, num_stages=1)


def tri_mul_output(p: torch.Tensor, z: torch.Tensor, ln_p, w_out: torch.Tensor, b_out: torch.Tensor, ln_z,
                   w_g: torch.Tensor, b_g: torch.Tensor, out: torch.Tensor, config: Optional[dict] = None):
    """Shapes as `kernels.tri_mul_output` (checked there). Returns out."""
    c, cz = p.shape[0], z.shape[-1]
    npos = z.numel() // cz
    if npos == 0:
        return out
    p2, z2, o2 = p.view(c, npos), z.view(npos, cz), out.view(npos, cz)
    assert w_out.shape == (c, cz) and w_g.shape == (cz, cz)
    cfg = dict(default_config(c, cz, z.device.type == "cuda"))
    if config:
        cfg.update(config)
    dt = z.dtype
    vec = lambda t: t.to(dt).contiguous()  # noqa: E731  (parameters kept in another dtype)
    w_out, w_g = w_out.to(dt), w_g.to(dt)
    split = int(cfg.get("split", 1))
    if split < 1 or cz % split or cz // split < 16:
        raise ValueError(f"tri_mul_output: split={split} must divide C_z={cz} into slices of at least 16 channels")
    grid = (triton.cdiv(npos, cfg["BLOCK_P"]),)
    _tri_mul_output_kernel[grid](
        p2, z2, o2, vec(ln_p[0]), vec(ln_p[1]), w_out, vec(b_out), vec(ln_z[0]), vec(ln_z[1]), w_g, vec(b_g),
        npos, p2.stride(0), z2.stride(0), o2.stride(0), w_out.stride(0), w_out.stride(1), w_g.stride(0),
        w_g.stride(1), float(ln_p[2]), float(ln_z[2]),
        C=c, CZ=cz, BLOCK_P=cfg["BLOCK_P"], DOT_PREC=dot_precision(dt, z.device), SPLIT=split,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    return out
