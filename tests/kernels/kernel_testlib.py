"""Helpers shared by the kernel tests (imported by name: pytest puts this folder on sys.path)."""
from __future__ import annotations

import pytest
import torch

try:
    import triton  # noqa: F401
    HAVE_TRITON = True
except Exception:
    HAVE_TRITON = False

needs_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton not installed")
needs_cuda = pytest.mark.skipif(not (HAVE_TRITON and torch.cuda.is_available()), reason="needs CUDA and triton")


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN/inf anywhere fails."""
    out = out.double()
    ref = ref.double()
    assert torch.isfinite(out).all(), "non-finite values in kernel output"
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()
