"""The output projection with its residual, out += x W + b: the Triton kernel (CPU interpreter,
fp32/fp16) and the PyTorch reference against float64; odd row counts, the network's K/C pairs
(scaled down), the residual as a transposed column block (two strided row levels, as column-wise
attention updates it), the dispatcher's fallback, and the network's attention modules through it."""
from __future__ import annotations

import pytest
import torch

from kernel_testlib import block_inputs, fixture_block, needs_triton, rel_err
from kernels.linear_residual import linear_residual, linear_residual_reference, linear_residual_triton

pytestmark = needs_triton

TOL = {torch.float32: 2e-6, torch.float16: 2e-3}


def _case(rows, k, c, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, k, generator=gen).to(dtype)
    w = (torch.randn(k, c, generator=gen) * k ** -0.5).to(dtype)
    b = torch.randn(c, generator=gen).to(dtype)
    res = (torch.randn(rows, c, generator=gen) * 2 + 0.5).to(dtype)
    want = res.double() + x.double() @ w.double() + b.double()
    return x, w, b, res, want


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rows,k,c", [(37, 32, 32), (21, 16, 64), (50, 64, 16)])
def test_matches_float64(interpret, dtype, rows, k, c):
    x, w, b, res, want = _case(rows, k, c, dtype, seed=rows + k)
    out = res.clone()
    assert linear_residual_triton(x, w, b, out) is out
    assert rel_err(out, want) < TOL[dtype]
    ref = res.clone()
    assert rel_err(linear_residual_reference(x, w, b, ref), want) < TOL[dtype] * 3


def test_two_level_rows_and_untouched_rest(interpret):
    """out = a column block of a transposed [S, N, C] tensor, viewed [S, n, C]: row r of x lands at
    (r // n, r % n); everything outside the block stays as it was."""
    s, n_all, c, k = 5, 9, 32, 16
    x, w, b, _, _ = _case(s * 3, k, c, torch.float32, seed=4)
    big = torch.randn(n_all, s, c)  # the residual stored as [N, S, C]; updated through big^T [S, N, C]
    before = big.clone()
    block = big.transpose(0, 1)[:, 4:7]  # [S, 3, C]: strides (C, S*C, 1): two levels
    want = block.double() + (x.double() @ w.double() + b.double()).view(s, 3, c)
    assert linear_residual_triton(x, w, b, block) is block
    assert rel_err(big.transpose(0, 1)[:, 4:7], want) < TOL[torch.float32]
    keep = torch.ones(n_all, dtype=torch.bool)
    keep[4:7] = False
    torch.testing.assert_close(big[keep], before[keep], rtol=0, atol=0)


def test_dispatch_and_fallback(interpret):
    x, w, b, res, want = _case(13, 32, 32, torch.float32, seed=8)
    a = linear_residual(x, w, b, res.clone(), backend="triton")
    r = linear_residual(x, w, b, res.clone(), backend="torch")
    assert rel_err(a, want) < TOL[torch.float32] and rel_err(r, want) < TOL[torch.float32] * 3
    x24, w24, b24, res24, _ = _case(13, 24, 32, torch.float32, seed=9)  # K not a power of two: the reference
    torch.testing.assert_close(linear_residual(x24, w24, b24, res24.clone(), backend="triton"),
                               linear_residual_reference(x24, w24, b24, res24.clone()), rtol=0, atol=0)
    with pytest.raises(RuntimeError):
        linear_residual_triton(x24, w24, b24, res24.clone())
    with pytest.raises(ValueError):
        linear_residual(x, w, b, res.clone(), backend="cuda")


@pytest.mark.parametrize("which", ["msa_row_attention_with_pair_bias", "msa_column_attention",
                                   "triangle_attention_starting_node", "triangle_attention_ending_node"])
@pytest.mark.parametrize("chunk", [None, 2])
@torch.no_grad()
def test_network_attention_adds_through_the_kernel(interpret, monkeypatch, which, chunk):
    """Runtime.fused_residual: the network's attentions, in place on the Triton backend (reference-
    fixture weights, C = 256 and 128; whole and in chunks of 2), add their output projection into
    the residual through the kernel (a spy counts its calls) and give what the reference path gives."""
    from model.config import Runtime
    op = getattr(fixture_block(), which)
    s, n = 3, 5
    m, z, msa_mask, pair_mask = block_inputs(7, s, n)
    if which.startswith("msa_row"):
        run = lambda x, rt: op(x, msa_mask, z, rt)
        x0 = m
    elif which.startswith("msa_col"):
        run = lambda x, rt: op(x, msa_mask, rt)
        x0 = m
    else:
        run = lambda x, rt: op(x, pair_mask, rt)
        x0 = z
    want = run(x0.clone(), Runtime())
    from kernels._triton_loader import module_for
    mod, calls = module_for("_tri_linear_residual", [x0]), []
    real = mod.linear_residual
    monkeypatch.setattr(mod, "linear_residual", lambda *a, **k: calls.append(1) or real(*a, **k))
    chunks = {} if chunk is None else {k: chunk for k in ("msa_row_att", "msa_col_att", "tri_att")}
    xin = x0.clone()
    got = run(xin, Runtime(backend="triton", inplace=True, chunks=chunks))
    assert got is xin or got.data_ptr() == xin.data_ptr()
    assert len(calls) == (1 if chunk is None else -(-(n if not which.startswith("msa_row") else s) // chunk))
    assert rel_err(got, want) < 1e-6
    calls.clear()  # Runtime.fused_residual off: the GEMM and the add, the same numbers
    off = run(x0.clone(), Runtime(backend="triton", inplace=True, chunks=chunks, fused_residual=False))
    assert not calls and rel_err(off, want) < 1e-6
