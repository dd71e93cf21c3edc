"""AlphaFold's transition (the MSA and pair MLPs), with its residual:

    out = x + relu(LN(x) W1 + b1) W2 + b2

x and out: [*, C] with the leading dims flattenable to one axis of positions (out may be x: in
place); ln = (scale [C], offset [C], eps); w1 [C, F·C], b1 [F·C], w2 [F·C, C], b2 [C]. The reference
is the network's sequence (LayerNorm, a GEMM with ReLU in its epilogue, a GEMM, the residual add),
each stage rounded to the storage dtype, with the hidden [P, F·C] tensor (4x the input) in memory;
the Triton kernel keeps each position tile's hidden block on chip: it reads x once and writes out
once, with no temporaries.
"""
from __future__ import annotations

import torch

from kernels._common import TRITON_DTYPES, add_residual, fused_dispatch, pow2_in, require
from kernels.layer_norm import layer_norm_reference


def transition_reference(x, ln, w1, b1, w2, b2, out):
    """The math as the network ran it before the kernel (same passes, same roundings). Returns out."""
    dt = x.dtype
    c = x.shape[-1]
    xn = layer_norm_reference(x, ln[0], ln[1], ln[2]).reshape(-1, c)
    if hasattr(torch, "_addmm_activation"):  # ReLU in cuBLASLt's epilogue (same values as after)
        h = torch._addmm_activation(b1.to(dt), xn, w1.to(dt))
    else:
        h = torch.relu_(torch.addmm(b1.to(dt), xn, w1.to(dt)))
    del xn
    upd = torch.addmm(b2.to(dt), h, w2.to(dt))
    del h
    return add_residual(x, upd.view(x.shape), out)


def _kernel(x, w1, out):
    """The Triton module that can run on these tensors here, or None (then the reference runs):
    Triton usable for their device, and shapes, strides and dtypes the kernel takes."""
    c, hid = x.shape[-1], w1.shape[-1]
    if not (x.dtype in TRITON_DTYPES and out.dtype == x.dtype and pow2_in(c, 16, 256) and pow2_in(hid, 16, 4096)):
        return None
    npos = x.numel() // c
    try:
        xv, ov = x.view(npos, c), out.view(npos, c)
    except RuntimeError:
        return None
    if xv.stride(1) != 1 or ov.stride(1) != 1:
        return None
    from kernels._triton_loader import module_for
    return module_for("_tri_transition", [x, w1, out])


def fused_available(x, w1, out) -> bool:
    """Whether `transition(..., backend="triton")` runs the fused kernel on these tensors here (the
    network then needs no chunks: the kernel has no temporaries)."""
    return _kernel(x, w1, out) is not None


def transition_triton(x, ln, w1, b1, w2, b2, out, config=None):
    """The Triton kernel itself (`kernels/_tri_transition.py`); raises if it can't run here."""
    return require(_kernel(x, w1, out), "transition").transition(x, ln, w1, b1, w2, b2, out, config=config)


def transition(x, ln, w1, b1, w2, b2, out, backend: str = "torch"):
    """Dispatch: "torch" the reference; "triton" the fused kernel where it can run (CUDA, or CPU
    under TRITON_INTERPRET=1; C a power of two in 16..256 and F·C in 16..4096; fp32/bf16/fp16; its
    tiles fit the GPU), else the reference. Shapes as in the module docstring. Returns out."""
    return fused_dispatch("transition", backend, lambda: _kernel(x, w1, out),
                          lambda mod: mod.transition(x, ln, w1, b1, w2, b2, out),
                          lambda: transition_reference(x, ln, w1, b1, w2, b2, out))
