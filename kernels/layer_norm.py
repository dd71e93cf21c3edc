"""LayerNorm over the last axis, or over the first axis of a channel-major tensor (dim=0: triangle
multiplication's [c, N, N] product), statistics in float32 (AlphaFold uses eps=1e-5)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from kernels._common import TRITON_DTYPES


def layer_norm_reference(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                         eps: float = 1e-5, dim: int = -1) -> torch.Tensor:
    """x: [*, C] (dim=-1) or [C, *] (dim=0); weight, bias: [C]. Returns x's shape and dtype."""
    w = None if weight is None else weight.float()
    b = None if bias is None else bias.float()
    if dim in (-1, x.dim() - 1):
        return F.layer_norm(x.float(), x.shape[-1:], w, b, eps).to(x.dtype)
    if dim != 0:
        raise ValueError(f"layer_norm over dim {dim}: only the last or the first axis")
    # Channel-major: one float32 temporary of x's size (plus x's float32 copy for half precision).
    xf = x.float()
    var, mean = torch.var_mean(xf, dim=0, correction=0, keepdim=True)
    shape = (-1,) + (1,) * (x.dim() - 1)
    y = torch.sub(xf, mean)
    del xf
    y.mul_(torch.rsqrt_(var.add_(eps)))
    if w is not None:
        y.mul_(w.view(shape))
    if b is not None:
        y.add_(b.view(shape))
    return y.to(x.dtype)


_MAX_TRITON_CHANNELS = 4096  # one register tile per row block; wider rows take the reference


def _triton_ok(x: torch.Tensor, dim: int) -> bool:
    c = x.shape[dim] if x.dim() else 0
    if x.dtype not in TRITON_DTYPES or x.dim() < 1 or not 0 < c <= _MAX_TRITON_CHANNELS:
        return False
    # dim=0 needs each channel's positions to be one contiguous run (a row slice of [c, N, N] is)
    return dim != 0 or x[0].is_contiguous()


def layer_norm_triton(x, weight, bias, eps: float = 1e-5, config=None, dim: int = -1):
    """The Triton kernel itself (`kernels/_tri_layer_norm.py`); raises if Triton can't run on these
    tensors. Tests call this directly so a silent fallback can't pass for the kernel."""
    from kernels._triton_loader import module_for

    mod = module_for("_tri_layer_norm", [t for t in (x, weight, bias) if t is not None])
    if mod is None:
        raise RuntimeError("Triton LayerNorm can't run here (no triton, or CPU tensors without TRITON_INTERPRET=1)")
    return mod.layer_norm(x, weight, bias, eps, config=config, dim=dim)


def layer_norm(x, weight, bias, eps: float = 1e-5, backend: str = "torch", dim: int = -1):
    """Dispatch to a backend. Shapes as in `layer_norm_reference`.

    backend "triton" runs the Triton kernel where it can (CUDA tensors; CPU tensors under
    TRITON_INTERPRET=1) and otherwise falls back to the reference, with the same results.
    """
    if backend == "torch":
        return layer_norm_reference(x, weight, bias, eps, dim)
    if backend == "triton":
        if _triton_ok(x, dim):
            from kernels._triton_loader import module_for

            mod = module_for("_tri_layer_norm", [t for t in (x, weight, bias) if t is not None])
            if mod is not None:
                return mod.layer_norm(x, weight, bias, eps, dim=dim)
        return layer_norm_reference(x, weight, bias, eps, dim)
    raise ValueError(f"unknown layer_norm backend {backend!r}")
