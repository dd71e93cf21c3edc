"""The outer product mean's output projection: out[i, j] = (sum_{a,b} o[i, a, j, b] W[a*c + b] + bias)
/ norm[i, j], straight from the outer product as the GEMM over sequences leaves it.

o: [n, c, N, c] (row block of the outer product [n*c, N*c] viewed as (i, a, j, b); c = 32 in
AlphaFold), w: [c*c, C_z], bias: [C_z], norm: [n, N] (the pair's count of sequences, + 1e-3).
Returns [n, N, C_z] in o's dtype, or, with `add_to` (the pair's rows [n, N, C_z], unit channel
stride), adds it there in place and returns add_to (the Triton kernel: one read and write of the
residual, no [n, N, C_z] update in memory). The reference permutes o to [n, N, c*c] (a copy of the whole
outer product: 143 ms of a 2.9 s N=1,024 pass), runs one GEMM with the bias and divides; the Triton
kernel reads o in place - for fixed (i, a) the [N, c] slice is a dense tile - so the copy and the
division pass disappear.
"""
from __future__ import annotations

from typing import Optional

import torch

from kernels._common import TRITON_DTYPES


def opm_projection_reference(o: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, norm: torch.Tensor,
                             add_to: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The math in o's dtype: the permuted copy, addmm, divide in place (then add_to += it)."""
    n, c, n_res, c2 = o.shape
    dt = o.dtype
    flat = o.permute(0, 2, 1, 3).reshape(n * n_res, c * c2)
    out = torch.addmm(bias.to(dt), flat, w.to(dt)).view(n, n_res, -1)
    del flat
    out = out.div_(norm.to(dt).unsqueeze(-1))
    return out if add_to is None else add_to.add_(out)


def _triton_ok(o: torch.Tensor, w: torch.Tensor) -> bool:
    return (o.dtype in TRITON_DTYPES and o.dim() == 4 and o.stride(3) == 1 and o.shape[1] == o.shape[3]
            and o.shape[3] in (16, 32, 64) and w.shape[0] == o.shape[1] * o.shape[3] and w.shape[1] <= 512)


def opm_projection_triton(o, w, bias, norm, config=None, add_to=None):
    """The Triton kernel itself (`kernels/_tri_opm_projection.py`); raises if it can't run here."""
    from kernels._triton_loader import module_for

    mod = module_for("_tri_opm_projection", [o, w, bias, norm])
    if mod is None:
        raise RuntimeError("Triton OPM projection can't run here (no triton, or CPU tensors without "
                           "TRITON_INTERPRET=1)")
    return mod.opm_projection(o, w, bias, norm, config=config, add_to=add_to)


def opm_projection(o, w, bias, norm, backend: str = "torch", add_to=None):
    """Dispatch: "torch" the reference; "triton" the kernel where it can run (else the reference).
    Shapes as in the module docstring."""
    if backend == "torch":
        return opm_projection_reference(o, w, bias, norm, add_to)
    if backend == "triton":
        if _triton_ok(o, w) and (add_to is None or (add_to.stride(-1) == 1 and add_to.dtype == o.dtype)):
            from kernels._triton_loader import module_for

            mod = module_for("_tri_opm_projection", [o, w, bias, norm])
            if mod is not None:
                return mod.opm_projection(o, w, bias, norm, add_to=add_to)
        return opm_projection_reference(o, w, bias, norm, add_to)
    raise ValueError(f"unknown opm_projection backend {backend!r}")
