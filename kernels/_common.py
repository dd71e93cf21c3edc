"""What the kernel pairs share (imports torch only; Triton is loaded by `kernels._triton_loader`)."""
from __future__ import annotations

import torch

# The storage dtypes the Triton kernels take; anything else runs the reference.
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def pow2_in(n: int, lo: int, hi: int) -> bool:
    """n is a power of two in [lo, hi] (the fused kernels' channel counts)."""
    return lo <= n <= hi and n & (n - 1) == 0


def add_residual(x: torch.Tensor, upd: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out = x + upd; in place (add_) when out is x, which autograd also allows. Returns out."""
    if out.data_ptr() == x.data_ptr() and out.stride() == x.stride():
        return out.add_(upd)
    return torch.add(x, upd, out=out)


def fused_dispatch(name: str, backend: str, find, run, reference):
    """The fused ops' backend switch. "torch": reference(). "triton": run(mod) with mod = find(), the
    Triton module that can take these tensors here (None: it can't), unless its tiles do not fit
    the GPU (Triton's OutOfResources when compiling); reference() otherwise."""
    if backend == "triton":
        mod = find()
        if mod is not None:
            from kernels._triton_loader import unless_out_of_resources
            y = unless_out_of_resources(lambda: run(mod))
            if y is not None:
                return y
    elif backend != "torch":
        raise ValueError(f"unknown {name} backend {backend!r}")
    return reference()
