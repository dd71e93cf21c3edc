"""The outer product mean's output projection: the Triton kernel (CPU interpreter, fp32/fp16) and the
PyTorch reference against float64 ((o permuted to [n, N, c*c]) @ W + bias) / norm; odd lengths, a
row block of a larger outer product, c = 16 and 32, and the dispatcher's fallback."""
from __future__ import annotations

import pytest
import torch

from kernel_testlib import fixture_block, needs_triton, rel_err
from kernels.opm_projection import opm_projection, opm_projection_reference, opm_projection_triton

pytestmark = needs_triton

TOL = {torch.float32: 2e-6, torch.float16: 2e-3}


def _case(n, n_res, c, cz, dtype, seed, rows=None):
    gen = torch.Generator().manual_seed(seed)
    full = torch.randn((rows or n) * c, n_res * c, generator=gen)  # the GEMM's [n*c, N*c] output
    o = full[:n * c].view(n, c, n_res, c).to(dtype) if rows is None else \
        full.view(rows, c, n_res, c)[2:2 + n].to(dtype)  # a row block of a larger outer product
    w = (torch.randn(c * c, cz, generator=gen) * (c * c) ** -0.5).to(dtype)
    bias = torch.randn(cz, generator=gen).to(dtype)
    norm = (torch.randint(0, 9, (n, n_res), generator=gen).float() + 1e-3).to(dtype)  # a 0 count included
    od = o.double()
    want = (od.permute(0, 2, 1, 3).reshape(n, n_res, c * c) @ w.double() + bias.double()) / norm.double()[..., None]
    return (o, w, bias, norm), want


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("n,n_res,c,cz,rows", [(3, 37, 32, 48, None), (2, 21, 16, 128, 7), (5, 16, 16, 40, None)])
def test_matches_float64(interpret, dtype, n, n_res, c, cz, rows):
    args, want = _case(n, n_res, c, cz, dtype, seed=n * 100 + n_res, rows=rows)
    got = opm_projection_triton(*args)
    assert got.shape == (n, n_res, cz) and got.dtype == dtype and got.is_contiguous()
    assert rel_err(got, want) < TOL[dtype]
    ref = opm_projection_reference(*args)
    assert rel_err(ref, want) < TOL[dtype] * 3  # the reference rounds the GEMM before dividing


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_adds_into_a_column_block(interpret, dtype):
    """add_to: the result is added into a column block of the pair's rows ([n, N_all, C_z] sliced
    along N: rows N_all * C_z apart), in place; the rest of the pair is untouched."""
    n, n_res, c, cz = 3, 21, 16, 40
    args, want = _case(n, n_res, c, cz, dtype, seed=31)
    pair = (torch.randn(n, n_res + 9, cz) * 2).to(dtype)
    before = pair.clone()
    block = pair[:, 4:4 + n_res]
    want = block.double() + want
    assert opm_projection_triton(*args, add_to=block) is block
    assert rel_err(pair[:, 4:4 + n_res], want) < TOL[dtype]
    torch.testing.assert_close(pair[:, :4], before[:, :4], rtol=0, atol=0)
    torch.testing.assert_close(pair[:, 4 + n_res:], before[:, 4 + n_res:], rtol=0, atol=0)
    ref = before.clone()
    assert rel_err(opm_projection_reference(*args, add_to=ref[:, 4:4 + n_res]), want) < TOL[dtype] * 3


def test_dispatch_and_fallback(interpret, monkeypatch):
    args, _ = _case(2, 19, 16, 24, torch.float32, seed=9)
    torch.testing.assert_close(opm_projection(*args, backend="triton"), opm_projection_triton(*args), rtol=0, atol=0)
    monkeypatch.delenv("TRITON_INTERPRET")
    torch.testing.assert_close(opm_projection(*args, backend="triton"), opm_projection_reference(*args), rtol=0, atol=0)
    with pytest.raises(ValueError):
        opm_projection(*args, backend="nope")


@pytest.mark.parametrize("chunk", [None, 3])
@torch.no_grad()
def test_outer_product_mean_with_the_kernel(interpret, monkeypatch, chunk):
    """The network's outer product mean (reference-fixture weights) with the Triton backend gives
    what the reference path gives, whole and in row chunks, and the kernel did run."""
    from model.config import Runtime
    op = fixture_block().outer_product_mean
    gen = torch.Generator().manual_seed(5)
    s, n = 6, 11
    m = torch.randn(s, n, 256, generator=gen) + 0.2
    mask = (torch.rand(s, n, generator=gen) > 0.2).float()
    z = torch.randn(n, n, 128, generator=gen)
    kw = dict(chunks={"opm": chunk}) if chunk else {}
    want = op(m, mask, z.clone(), Runtime(**kw))
    from kernels._triton_loader import module_for
    mod, calls = module_for("_tri_opm_projection", [z]), []
    real = mod.opm_projection
    monkeypatch.setattr(mod, "opm_projection", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = op(m, mask, z.clone(), Runtime(backend="triton", **kw))
    assert len(calls) == (-(-n // chunk) if chunk else 1)
    assert rel_err(got, want) < 1e-6


@torch.no_grad()
def test_outer_product_mean_normalises_once_when_whole(monkeypatch):
    """Unchunked, the outer product mean forms LN(m) once for both projections; with row or sequence
    chunks each projection normalises its own blocks. The outputs agree in every case."""
    from model.config import Runtime
    op = fixture_block().outer_product_mean
    gen = torch.Generator().manual_seed(6)
    s, n = 5, 9
    m = torch.randn(s, n, 256, generator=gen) * 2 + 0.4
    mask = (torch.rand(s, n, generator=gen) > 0.2).float()
    z = torch.randn(n, n, 128, generator=gen)
    calls = []
    real = type(op.layer_norm_input).forward
    monkeypatch.setattr(type(op.layer_norm_input), "forward",
                        lambda self, x, *a, **k: calls.append(tuple(x.shape)) or real(self, x, *a, **k))
    whole = op(m, mask, z.clone(), Runtime())
    assert calls == [(s, n, 256)]
    for chunks, count in (({"opm": 4}, 1 + 3), ({"transition": 2}, 3 + 1)):
        calls.clear()
        got = op(m, mask, z.clone(), Runtime(chunks=chunks))
        assert len(calls) == count
        assert rel_err(got, whole) < 1e-6
