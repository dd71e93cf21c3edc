"""An output projection with its residual, in place: out += x W + b.

x: [R, K] (the rows of an attention's gated output, R = the rows of out in its logical order);
w: [K, C]; b: [C]; out: [*, C], the residual (a block of the MSA or pair representation, possibly
a transposed view). The reference is the network's two passes: the GEMM with the bias in its
epilogue (rounded to the storage dtype), then the residual add. The Triton kernel reads x and the
residual once and writes the residual once: the [R, C] update never reaches memory.
"""
from __future__ import annotations

import torch

from kernels._common import TRITON_DTYPES, fused_dispatch, pow2_in, require, row_levels


def linear_residual_reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out += addmm(b, x, w), viewed as out. Returns out."""
    dt = out.dtype
    upd = torch.addmm(b.to(dt), x.reshape(-1, x.shape[-1]), w.to(dt))
    return out.add_(upd.view(out.shape))


def _kernel(x, w, out):
    """The Triton module that can run on these tensors here, or None (then the reference runs)."""
    if not (x.dtype in TRITON_DTYPES and out.dtype == x.dtype and w.dtype == x.dtype and x.dim() == 2
            and x.stride(1) == 1 and pow2_in(x.shape[1], 16, 256) and pow2_in(out.shape[-1], 16, 256)
            and w.shape == (x.shape[1], out.shape[-1])):
        return None
    lv = row_levels(out)
    if lv is None or lv[0] != x.shape[0] or out.stride(-1) != 1:
        return None
    from kernels._triton_loader import module_for
    return module_for("_tri_linear_residual", [x, w, out])


def linear_residual_triton(x, w, b, out, config=None):
    """The Triton kernel itself (`kernels/_tri_linear_residual.py`); raises if it can't run here."""
    return require(_kernel(x, w, out), "linear_residual").linear_residual(x, w, b, out, config=config)


def linear_residual(x, w, b, out, backend: str = "torch"):
    """Dispatch: "torch" the reference; "triton" the fused kernel where it can run (CUDA, or CPU
    under TRITON_INTERPRET=1; K and C powers of two in 16..256; fp32/bf16/fp16, one dtype; out's
    rows on at most two strided levels), else the reference. Returns out."""
    return fused_dispatch("linear_residual", backend, lambda: _kernel(x, w, out),
                          lambda mod: mod.linear_residual(x, w, b, out),
                          lambda: linear_residual_reference(x, w, b, out))
