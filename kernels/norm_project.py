"""A LayerNorm followed by a narrow projection, written head-major: out[h, p] = (LN(x[p]) W)[h].

The attentions' pair biases: triangle attention and MSA row attention project LN(z) [N, N, C_z] to
H = 4 or 8 heads and need the bias as [H, N, N] (contiguous along the key axis). x: [*, C], rows
flattening into one or two strided levels (a row block of the pair, or of its transpose); ln =
(scale [C], offset [C], eps); w: [C, H]; out: [H, P] with unit stride along P (P = x's rows in
order; a row block of the [H, N, N] bias), or [H, A, B] with A * B = P and unit stride along B
(a row block of a bias whose rows are padded, so that each starts 16-byte aligned). The reference runs the LayerNorm (rounded to the storage
dtype), the GEMM and a transposing copy; the Triton kernel reads x once and writes only out.
"""
from __future__ import annotations

import torch

from kernels._common import TRITON_DTYPES, fused_dispatch, pow2_in, require, row_levels


def norm_project_reference(x: torch.Tensor, ln, w: torch.Tensor, out: torch.Tensor,
                           ln_backend: str = "torch") -> torch.Tensor:
    """LayerNorm (`kernels.layer_norm` on `ln_backend`: the same values either way), matmul,
    transposed copy into out. Returns out."""
    from kernels.layer_norm import layer_norm
    y = torch.matmul(layer_norm(x, ln[0], ln[1], ln[2], backend=ln_backend), w.to(x.dtype))  # [*, H]
    return out.copy_(y.reshape(-1, w.shape[1]).t().reshape(out.shape))


def _kernel(x, w, out):
    """The Triton module that can run on these tensors here, or None (then the reference runs)."""
    if not (x.dtype in TRITON_DTYPES and out.dtype == x.dtype and pow2_in(x.shape[-1], 16, 256)
            and 1 <= w.shape[1] <= 64 and out.dim() in (2, 3) and out.shape[0] == w.shape[1]
            and out.stride(-1) == 1):
        return None
    lv = row_levels(x)
    if lv is None or lv[0] != out[0].numel():
        return None
    from kernels._triton_loader import module_for
    return module_for("_tri_norm_project", [x, w, out])


def norm_project_triton(x, ln, w, out, config=None):
    """The Triton kernel itself (`kernels/_tri_norm_project.py`); raises if it can't run here."""
    return require(_kernel(x, w, out), "norm_project").norm_project(x, ln, w, out, config=config)


def norm_project(x, ln, w, out, backend: str = "torch", fused: bool = True):
    """Dispatch: "torch" the reference; "triton" the fused kernel where it can run (CUDA, or CPU
    under TRITON_INTERPRET=1; C a power of two in 16..256, H <= 64; fp32/bf16/fp16), else the
    reference. fused=False: the reference's passes with the LayerNorm on `backend` (the unfused
    path the network ran before the kernel). Returns out."""
    if not fused:
        return norm_project_reference(x, ln, w, out, ln_backend=backend)
    return fused_dispatch("norm_project", backend, lambda: _kernel(x, w, out),
                          lambda mod: mod.norm_project(x, ln, w, out),
                          lambda: norm_project_reference(x, ln, w, out))
