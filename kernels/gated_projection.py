"""Triangle multiplication's gated projection: out = mask * (x W_p + b_p) * sigmoid(x W_g + b_g),
written channel-major (out[c, p]), for one side (a or b) and a block of channels.

x: [P, C] (the LayerNorm'd pair entries of a row block, P = rows * N); w_p, w_g: [C, c] (column
slices of the [C_z, c] weights are fine); b_p, b_g: [c]; mask: [P]; out: [c, P] with unit stride
along P (a channel block of the [c, r, N] projection). The reference runs two GEMMs and three
element-wise passes; the Triton kernel keeps both accumulators on chip and writes `out` once.
ln: (scale, offset, eps) of triangle multiplication's input LayerNorm: x is then the raw pair and
LN(x) (rounded to x's dtype) is what is projected. The Triton kernel normalises each tile itself
where `gated_projection_fuses_norm` holds (LN(x) never reaches memory), else runs the LayerNorm first.
"""
from __future__ import annotations

import torch

from kernels._common import TRITON_DTYPES


def gated_projection_reference(x: torch.Tensor, w_p: torch.Tensor, b_p: torch.Tensor, w_g: torch.Tensor,
                               b_g: torch.Tensor, mask: torch.Tensor, out: torch.Tensor, ln=None) -> torch.Tensor:
    """The math in x's dtype, W^T x^T straight from the GEMM (no transposing copy). Returns out."""
    if ln is not None:
        from kernels.layer_norm import layer_norm_reference
        x = layer_norm_reference(x, ln[0], ln[1], ln[2])
    dt = x.dtype
    proj = torch.addmm(b_p.to(dt)[:, None], w_p.to(dt).t(), x.t())  # [c, P]
    torch.mul(mask.to(dt)[None, :], proj, out=out)
    proj = torch.addmm(b_g.to(dt)[:, None], w_g.to(dt).t(), x.t(), out=proj)
    out.mul_(torch.sigmoid_(proj))
    return out


def _triton_ok(x, out) -> bool:
    return (x.dtype in TRITON_DTYPES and out.dtype == x.dtype and x.dim() == 2 and out.dim() == 2
            and out.stride(1) == 1 and x.shape[1] <= 512)


def _module(x, w_p, w_g, mask, out):
    from kernels._triton_loader import module_for
    return module_for("_tri_gated_projection", [x, w_p, w_g, mask, out]) if _triton_ok(x, out) else None


def gated_projection_triton(x, w_p, b_p, w_g, b_g, mask, out, config=None, ln=None):
    """The Triton kernel itself (`kernels/_tri_gated_projection.py`); raises if it can't run here."""
    from kernels._triton_loader import module_for

    mod = module_for("_tri_gated_projection", [x, w_p, w_g, mask, out])
    if mod is None:
        raise RuntimeError("Triton gated projection can't run here (no triton, or CPU tensors without "
                           "TRITON_INTERPRET=1)")
    return mod.gated_projection(x, w_p, b_p, w_g, b_g, mask, out, config=config, ln=ln)


def gated_projection_fuses_norm(x, w_p, w_g, mask, out, backend: str = "torch") -> bool:
    """Whether `gated_projection(..., ln=, backend=)` normalises x inside the Triton kernel on these
    tensors. Where it doesn't, a caller projecting one LN(x) several times forms it once itself."""
    mod = _module(x, w_p, w_g, mask, out) if backend == "triton" else None
    return mod is not None and mod.fuses_norm(x, out.shape[0])


def gated_projection(x, w_p, b_p, w_g, b_g, mask, out, backend: str = "torch", ln=None):
    """Dispatch: "torch" the reference; "triton" the fused kernel where it can run (else the
    reference). Shapes as in the module docstring."""
    if backend == "torch":
        return gated_projection_reference(x, w_p, b_p, w_g, b_g, mask, out, ln=ln)
    if backend == "triton":
        mod = _module(x, w_p, w_g, mask, out)
        if mod is not None:
            return mod.gated_projection(x, w_p, b_p, w_g, b_g, mask, out, ln=ln)
        return gated_projection_reference(x, w_p, b_p, w_g, b_g, mask, out, ln=ln)
    raise ValueError(f"unknown gated_projection backend {backend!r}")
