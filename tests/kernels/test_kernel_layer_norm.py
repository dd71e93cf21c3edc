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


@pytest.mark.parametrize("view", ["transposed", "row_chunk", "msa_columns", "four_dims"])
def test_two_stride_views_read_in_place(interpret, monkeypatch, view):
    """Views whose rows are (outer, inner) pairs with two strides - triangle attention's ending node
    z.transpose(0, 1) and a row chunk of it, MSA column attention's m.transpose(0, 1) - are read in
    place (no contiguous copy of x first) and normalised as the float64 reference does."""
    gen = torch.Generator().manual_seed(hash(view) % 2**31)
    base = torch.randn(13, 11, 40, generator=gen) * 2 + 0.7
    x = {"transposed": base.transpose(0, 1), "row_chunk": base.transpose(0, 1)[3:8],
         "msa_columns": base[:, 2:9].transpose(0, 1),
         "four_dims": torch.randn(12, 11, 24, generator=gen).transpose(0, 1).unflatten(1, (3, 4))}[view]
    assert not x.is_contiguous()
    w, b = torch.randn(x.shape[-1], generator=gen), torch.randn(x.shape[-1], generator=gen)
    from kernels._triton_loader import module_for
    mod = module_for("_tri_layer_norm", [x])
    seen, real_launch = [], mod._launch
    monkeypatch.setattr(mod, "_launch", lambda x2, *a, **k: seen.append((x2.data_ptr(), x2.stride(), k.get("split")))
                        or real_launch(x2, *a, **k))
    y = layer_norm_triton(x, w, b)
    assert len(seen) == 1 and seen[0][:2] == (x.data_ptr(), x.stride()) and seen[0][2] is not None, seen
    assert y.shape == x.shape and y.is_contiguous()
    assert rel_err(y, _ref64(x, w, b)) < TOL[torch.float32]


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


def _ref64_channel_major(x, w, b, eps=1e-5):
    """dim=0 by the last-axis float64 reference on the channel-last copy: an independent route."""
    return _ref64(x.movedim(0, -1), w, b, eps).movedim(-1, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rows", [slice(0, 7), slice(3, 11)])
def test_channel_major(interpret, dtype, rows):
    """dim=0 over a row block p[:, r0:r1] of a channel-major [c, n, N] product (triangle
    multiplication's layout): channels n*N apart, each channel's block contiguous; odd sizes."""
    gen = torch.Generator().manual_seed(7 + rows.start)
    c, n, n_all = 24, 11, 13
    p = (torch.randn(c, n, n_all, generator=gen) * 2 - 0.7).to(dtype)
    w, b = torch.randn(c, generator=gen), torch.randn(c, generator=gen)
    x = p[:, rows]
    want = _ref64_channel_major(x, w, b)
    y = layer_norm_triton(x, w, b, dim=0)
    assert y.shape == x.shape and y.dtype == x.dtype and y.is_contiguous()
    assert rel_err(y, want) < TOL[dtype]
    # the torch reference's own dim=0 route, and the dispatcher, agree with it too
    assert rel_err(layer_norm_reference(x, w, b, dim=0), want) < TOL[dtype]
    assert rel_err(layer_norm(x, w, b, backend="triton", dim=0), want) < TOL[dtype]


def test_channel_major_needs_contiguous_channels(interpret):
    """A channel-major view whose channels are not contiguous runs (and matches) the reference."""
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(6, 8, 10, generator=gen).transpose(1, 2)  # x[0] not contiguous
    w, b = torch.randn(6, generator=gen), torch.randn(6, generator=gen)
    assert rel_err(layer_norm(x, w, b, backend="triton", dim=0), _ref64_channel_major(x, w, b)) < 1e-6
    with pytest.raises(ValueError):
        layer_norm(x, w, b, dim=1)


def test_channel_major_wide_offsets(interpret):
    """The int64 channel offsets (chosen when C * the channel stride reaches 2**31) forced small."""
    gen = torch.Generator().manual_seed(31)
    p = torch.randn(24, 11, 13, generator=gen)
    w, b = torch.randn(24, generator=gen), torch.randn(24, generator=gen)
    x = p[:, 2:9]
    y = layer_norm_triton(x, w, b, dim=0, config=dict(wide=True))
    assert rel_err(y, _ref64_channel_major(x, w, b)) < TOL[torch.float32]
