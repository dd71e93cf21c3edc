"""A LayerNorm followed by a projection: out = LN(x) W (+ b), written head-major or row-major.

Two uses. (1) The attentions' pair biases: triangle attention and MSA row attention project LN(z)
[N, N, C_z] to H = 4 or 8 heads and need the bias as [H, N, N] (contiguous along the key axis):
head_major=True, out [H, P] with unit stride along P (P = x's rows in order; a row block of the
[H, N, N] bias), or [H, A, B] with A * B = P and unit stride along B (a row block of a bias whose
rows are padded, so that each starts 16-byte aligned). (2) The attentions' inputs: LN(x) times the
concatenated q/k/v/gate weights [C, 4 H D] plus the gate's bias: head_major=False, out [*, H]
contiguous with x's leading shape. x: [*, C], rows flattening into one or two strided levels (a
row block of the pair or MSA, or of its transpose); ln = (scale [C], offset [C], eps); w: [C, H];
bias: [H] or None. The reference runs the LayerNorm (rounded to the storage dtype), the GEMM (the
bias in its epilogue) and, head-major, a transposing copy; the Triton kernel reads x once, keeps
LN(x) on chip and writes only out.
"""
from __future__ import annotations

from typing import Optional

import torch

from kernels._common import TRITON_DTYPES, fused_dispatch, pow2_in, require, row_levels


def norm_project_reference(x: torch.Tensor, ln, w: torch.Tensor, out: torch.Tensor,
                           bias: Optional[torch.Tensor] = None, head_major: bool = True,
                           ln_backend: str = "torch") -> torch.Tensor:
    """LayerNorm (`kernels.layer_norm` on `ln_backend`: the same values either way), matmul (the
    bias added in addmm's epilogue), head-major a transposed copy into out. Returns out."""
    from kernels.layer_norm import layer_norm
    a = layer_norm(x, ln[0], ln[1], ln[2], backend=ln_backend).reshape(-1, x.shape[-1])
    w = w.to(x.dtype)
    if not head_major and out.is_contiguous():  # straight into out, as the network's unfused path writes q/k/v/g
        o2 = out.view(-1, w.shape[1])
        if bias is None:
            torch.mm(a, w, out=o2)
        else:
            torch.addmm(bias.to(x.dtype), a, w, out=o2)
        return out
    y = torch.matmul(a, w) if bias is None else torch.addmm(bias.to(x.dtype), a, w)  # [P, H]
    return out.copy_(y.t().reshape(out.shape) if head_major else y.reshape(out.shape))


def _kernel(x, w, out, bias, head_major):
    """The Triton module that can run on these tensors here, or None (then the reference runs)."""
    h = w.shape[1]
    if not (x.dtype in TRITON_DTYPES and out.dtype == x.dtype and pow2_in(x.shape[-1], 16, 256)
            and (bias is None or tuple(bias.shape) == (h,))):
        return None
    if head_major:
        if not (1 <= h <= 64 and out.dim() in (2, 3) and out.shape[0] == h and out.stride(-1) == 1):
            return None
    elif not (h >= 1 and tuple(out.shape) == (*x.shape[:-1], h) and out.is_contiguous()):
        return None
    lv = row_levels(x)
    if lv is None or lv[0] != (out[0].numel() if head_major else out.numel() // h):
        return None
    from kernels._triton_loader import module_for
    return module_for("_tri_norm_project", [x, w, out])


def norm_project_triton(x, ln, w, out, bias=None, head_major: bool = True, config=None):
    """The Triton kernel itself (`kernels/_tri_norm_project.py`); raises if it can't run here."""
    return require(_kernel(x, w, out, bias, head_major), "norm_project").norm_project(
        x, ln, w, out, bias=bias, head_major=head_major, config=config)


def norm_project(x, ln, w, out, bias=None, head_major: bool = True, backend: str = "torch", fused: bool = True):
    """Dispatch: "torch" the reference; "triton" the fused kernel where it can run (CUDA, or CPU
    under TRITON_INTERPRET=1; C a power of two in 16..256; head-major H <= 64; fp32/bf16/fp16),
    else the reference. fused=False: the reference's passes with the LayerNorm on `backend` (the
    unfused path the network ran before the kernel). Returns out."""
    if not fused:
        return norm_project_reference(x, ln, w, out, bias, head_major, ln_backend=backend)
    return fused_dispatch("norm_project", backend, lambda: _kernel(x, w, out, bias, head_major),
                          lambda mod: mod.norm_project(x, ln, w, out, bias=bias, head_major=head_major),
                          lambda: norm_project_reference(x, ln, w, out, bias, head_major))
