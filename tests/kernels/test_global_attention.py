"""AlphaFold's global attention (the extra-MSA column attention) against a float64 transcription of
modules.GlobalAttention: x contiguous, x a transposed view (the layout the column attention's
LayerNorm writes) and a column block of it; masked sequences and DAP's -1 padding; the output
returned or added into the residual in place (the reference addmm + add, and the Triton
`linear_residual` kernel under the CPU interpreter), with the rest of the residual untouched."""
from __future__ import annotations

import pytest
import torch

from kernel_testlib import needs_triton, rel_err
from model.primitives import GlobalAttention

C, H, D, C_OUT = 32, 4, 8, 32


def _module(seed):
    gen = torch.Generator().manual_seed(seed)
    mod = GlobalAttention(C, H, D, D, C_OUT)
    with torch.no_grad():
        for p in mod.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if p.dim() > 1 else 0.3))
    return mod


def _reference(mod, x, mask):
    """modules.GlobalAttention in float64: x [B, S, C], mask [B, S] (-1: DAP padding, weight 0)."""
    x, m = x.double(), mask.double()
    w = {k: v.detach().double() for k, v in mod.named_parameters()}
    mw = m.clamp(min=0)[..., None]
    q_avg = (mw * x).sum(1) / (mw.sum(1) + 1e-10)                             # [B, C]
    q = torch.einsum("bc,chd->bhd", q_avg, w["query_w"]) * D ** -0.5
    k = x @ w["key_w"]
    v = x @ w["value_w"]
    logits = torch.einsum("bhd,bsd->bhs", q, k) + 1e9 * (m[:, None, :] - 1)
    avg = torch.einsum("bhs,bsd->bhd", torch.softmax(logits, -1), v)
    g = torch.sigmoid(torch.einsum("bsc,chd->bshd", x, w["gating_w"]) + w["gating_b"])
    return torch.einsum("bshd,hdo->bso", g * avg[:, None], w["output_w"]) + w["output_b"]


def _inputs(b, s, seed, layout):
    gen = torch.Generator().manual_seed(seed)
    mask = (torch.rand(b, s, generator=gen) > 0.3).float()
    mask[0, :] = 0.0                  # a column whose sequences are all masked: the plain mean of v
    mask[1, -2:] = -1.0               # DAP's padded sequences
    if layout == "contiguous":
        x = torch.randn(b, s, C, generator=gen)
    elif layout == "transposed":      # [S, B, C] in memory, as the column attention's LayerNorm writes it
        x = torch.randn(s, b, C, generator=gen).transpose(0, 1)
    else:                             # a column block of a transposed [S, N, C]
        x = torch.randn(s, b + 3, C, generator=gen).transpose(0, 1)[2: 2 + b]
    return x, mask


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "block"])
def test_matches_float64(layout):
    mod = _module(1)
    x, mask = _inputs(5, 11, 2, layout)
    out = mod(x, mask)
    assert out.shape == (5, 11, C_OUT)
    assert rel_err(out, _reference(mod, x, mask)) < 1e-5


@needs_triton
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("layout", ["transposed", "block"])
def test_adds_into_residual(interpret, backend, layout):
    """add_to = the residual as the network holds it (a transposed view of the MSA, or a column
    block of it): updated in place, everything else untouched."""
    b, s = 4, 7
    mod = _module(3)
    x, mask = _inputs(b, s, 4, "transposed" if layout == "transposed" else "block")
    big = torch.randn(s, b + 2, C_OUT)                  # the MSA [S, N, C]
    before = big.clone()
    res = big.transpose(0, 1)[1: 1 + b]                  # [b, S, C]: its columns 1..b
    want = res.double() + _reference(mod, x, mask)
    assert mod(x, mask, add_to=res, residual_backend=backend) is res
    assert rel_err(big.transpose(0, 1)[1: 1 + b], want) < 1e-5
    keep = torch.ones(b + 2, dtype=torch.bool)
    keep[1: 1 + b] = False
    torch.testing.assert_close(big[:, keep], before[:, keep], rtol=0, atol=0)
