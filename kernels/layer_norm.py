"""LayerNorm over the last axis, statistics in float32 (AlphaFold uses eps=1e-5)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def layer_norm_reference(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                         eps: float = 1e-5) -> torch.Tensor:
    """x: [*, C]; weight, bias: [C]. Returns [*, C] in x's dtype."""
    w = None if weight is None else weight.float()
    b = None if bias is None else bias.float()
    return F.layer_norm(x.float(), x.shape[-1:], w, b, eps).to(x.dtype)


def layer_norm(x, weight, bias, eps: float = 1e-5, backend: str = "torch"):
    """Dispatch to a backend. Shapes as in `layer_norm_reference`."""
    if backend == "torch":
        return layer_norm_reference(x, weight, bias, eps)
    raise ValueError(f"unknown layer_norm backend {backend!r}")
