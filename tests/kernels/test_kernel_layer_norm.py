"""Triton LayerNorm vs the float64 reference, on CPU through Triton's interpreter."""
from __future__ import annotations

import pytest
import torch

from kernel_testlib import needs_triton, rel_err
from kernels.layer_norm import layer_norm, layer_norm_reference, layer_norm_triton

pytestmark = needs_triton

TOL = {torch.float32: 1e-6, torch.float16: 1e-3}


def _ref64(x, w, b, eps=1e-5):
    return layer_norm_reference(x.double(), None if w is None else w.double(),
                                None if b is None else b.double(), eps)


@pytest.mark.parametrize("shape", [(7, 5, 128), (37, 13), (3, 100), (2, 256)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(interpret, shape, dtype, affine):
    gen = torch.Generator().manual_seed(hash((shape, str(dtype), affine)) % 2**31)
    c = shape[-1]
    x = (torch.randn(shape, generator=gen) * 3 + 1.5).to(dtype)  # non-zero mean on purpose
    w = torch.randn(c, generator=gen) if affine else None
    b = torch.randn(c, generator=gen) if affine else None
    y = layer_norm_triton(x, w, b)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert rel_err(y, _ref64(x, w, b)) < TOL[dtype]


def test_strided_input_and_half_params(interpret):
    """A transposed (non-contiguous) input and fp16 parameters with an fp32 input."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(16, 9, 64, generator=gen).transpose(0, 1)
    w = torch.randn(64, generator=gen).half()
    b = torch.randn(64, generator=gen).half()
    y = layer_norm_triton(x, w, b, eps=1e-3)
    assert rel_err(y, _ref64(x, w, b, 1e-3)) < TOL[torch.float32]


def test_backend_switch_and_fallback(interpret, monkeypatch):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(5, 32, generator=gen)
    w, b = torch.randn(32, generator=gen), torch.randn(32, generator=gen)
    torch.testing.assert_close(layer_norm(x, w, b, backend="triton"), layer_norm_triton(x, w, b), rtol=0, atol=0)
    monkeypatch.delenv("TRITON_INTERPRET")
    torch.testing.assert_close(layer_norm(x, w, b, backend="triton"), layer_norm_reference(x, w, b),
                               rtol=0, atol=0)
    with pytest.raises(ValueError):
        layer_norm(x, w, b, backend="nope")
