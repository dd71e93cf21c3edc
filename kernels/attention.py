"""Attention with additive biases and a key mask, as AlphaFold's gated attention computes it.

The caller projects q/k/v, applies gating and the output projection; this function is the part that
grows with L_q * L_k and is therefore the one worth fusing.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from kernels._common import TRITON_DTYPES

# AlphaFold masks with an additive -1e9 (not -inf): a fully masked row becomes a uniform softmax.
MASK_BIAS = 1e9

# The Triton backend's config keys (kernels/_tri_attention.py; "stages" is the Gluon kernel's pipeline
# depth, "head_dims" scopes the others to those head dims) and the network's "sites" (which scopes
# them to those attentions: model.config.ATTENTION_SITES): what `fastfold bench --attention-options`
# accepts.
ATTENTION_OPTION_KEYS = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages", "rows", "group_ctas", "maxnreg",
                         "paired", "spare", "wide", "bound", "sum_mma", "shared_bound", "gluon", "gluon_rows", "p_smem", "stages",
                         "head_dims", "sites")


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    biases: Sequence[torch.Tensor] = (),
    mask: Optional[torch.Tensor] = None,
    scale: float = 1.0,
    gate: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Plain PyTorch softmax(scale * q k^T + sum(biases) + mask_bias) v [* sigmoid(gate)].

    q: [*, H, L_q, D]; k, v: [*, H, L_k, D]
    biases: tensors broadcastable to [*, H, L_q, L_k]
    mask: key mask broadcastable to [*, H, L_q, L_k] (1 = attend, 0 = masked), bool or float
    gate: optional, broadcastable to [*, H, L_q, D]: AlphaFold's gating o * sigmoid(gate), in float32
    before the one rounding to q's dtype.
    returns [*, H, L_q, D] in q's dtype; logits and softmax are computed in float32.
    """
    logits = torch.matmul(q.float() * scale, k.float().transpose(-1, -2))
    for b in biases:
        logits = logits + b.float()
    if mask is not None:
        logits = logits + MASK_BIAS * (mask.float() - 1.0)
    weights = torch.softmax(logits, dim=-1)
    o = torch.matmul(weights, v.float())
    if gate is not None:
        o = o * torch.sigmoid(gate.float())
    return o.to(q.dtype)


def attention_triton(q, k, v, biases=(), mask=None, scale=1.0, config=None, gate=None, out=None):
    """The Triton kernel itself (`kernels/_tri_attention.py`); raises if Triton can't run on these
    tensors. Tests call this directly so a silent fallback can't pass for the kernel."""
    from kernels._triton_loader import module_for

    mod = module_for("_tri_attention", [q, k, v, *biases] + ([mask] if mask is not None else []))
    if mod is None:
        raise RuntimeError("Triton attention can't run here (no triton, or CPU tensors without TRITON_INTERPRET=1)")
    return mod.attention(q, k, v, biases, mask, scale, config=config, gate=gate, out=out)


def triton_supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> bool:
    """Shapes/dtypes the Triton kernel handles; anything else takes the reference path."""
    return (q.dtype in TRITON_DTYPES and q.dtype == k.dtype == v.dtype and q.dim() >= 2
            and 0 < q.shape[-1] <= 64 and q.shape[-2] > 0 and k.shape[-2] > 0)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    biases: Sequence[torch.Tensor] = (),
    mask: Optional[torch.Tensor] = None,
    scale: float = 1.0,
    backend: str = "torch",
    gate: Optional[torch.Tensor] = None,
    out: Optional[torch.Tensor] = None,
    config: Optional[dict] = None,
) -> torch.Tensor:
    """Dispatch to a backend. Shapes as in `attention_reference`. out: write the result there (any
    strides, shape [*, H, L_q, D]) and return it. config: options of the Triton backend's kernel
    (keys of `_tri_attention.default_config`, and "gluon": run the sm_90 Gluon kernel where it
    applies); the torch backend ignores it.

    backend "triton" runs the fused kernel where it can (CUDA tensors; CPU tensors under
    TRITON_INTERPRET=1) and otherwise falls back to the reference, with the same results.
    """
    if backend == "torch":
        return _into(out, attention_reference(q, k, v, biases, mask, scale, gate))
    if backend == "triton":
        if triton_supported(q, k, v):
            from kernels._triton_loader import module_for

            mod = module_for("_tri_attention", [q, k, v, *biases] + ([mask] if mask is not None else []))
            if mod is not None:
                return mod.attention(q, k, v, biases, mask, scale, config=config, gate=gate, out=out)
        return _into(out, attention_reference(q, k, v, biases, mask, scale, gate))
    raise ValueError(f"unknown attention backend {backend!r}")


def _into(out: Optional[torch.Tensor], result: torch.Tensor) -> torch.Tensor:
    if out is None:
        return result
    return out.copy_(result)
