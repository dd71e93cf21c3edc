"""What the kernel pairs share (imports torch only; Triton is loaded by `kernels._triton_loader`)."""
from __future__ import annotations

import math
from typing import Optional, Tuple

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


def require(mod, name: str):
    """The Triton module `find()` gave for a fused op's `*_triton` entry point (tests call those so a
    silent fallback can't pass for the kernel); raises RuntimeError when it is None."""
    if mod is None:
        raise RuntimeError(f"Triton {name} can't run on these tensors here")
    return mod


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


def merged(sizes, strides):
    """(size, stride) of dims that flatten into one strided axis, else None."""
    dims = [(n, s) for n, s in zip(sizes, strides) if n != 1]
    if not dims:
        return 1, 0
    for (n0, s0), (n1, s1) in zip(dims, dims[1:]):
        if s0 != s1 * n1:
            return None
    return math.prod(sizes), dims[-1][1]


def two_strides(x: torch.Tensor):
    """The leading dims of x [*, C] as ((outer count, stride), (inner count, stride)) when they do
    not flatten into one strided axis but into two (a transposed view), else None."""
    sizes, strides = x.shape[:-1], x.stride()[:-1]
    if merged(sizes, strides) is not None:
        return None
    for k in range(1, len(sizes)):
        outer, inner = merged(sizes[:k], strides[:k]), merged(sizes[k:], strides[k:])
        if outer is not None and inner is not None:
            return outer, inner
    return None


def row_levels(x: torch.Tensor) -> Optional[Tuple[int, int, int, int]]:
    """The rows of x [*, C] (unit channel stride) as (rows, rows_in, stride_in, stride_out): row r
    sits at (r // rows_in) * stride_out + (r % rows_in) * stride_in, when the leading dims flatten
    into one strided axis or two (a transposed view, a column block); None otherwise."""
    if x.dim() < 2 or x.stride(-1) != 1 and x.shape[-1] != 1:
        return None
    rows = math.prod(x.shape[:-1])
    one = merged(x.shape[:-1], x.stride()[:-1])
    if one is not None:
        return rows, max(rows, 1), one[1], 0
    two = two_strides(x)
    if two is None:
        return None
    (_, s_out), (n_in, s_in) = two
    return rows, n_in, s_in, s_out
