"""GPU tests of the Gluon attention kernel (kernels/_gl_attention.py; Hopper only): against the float64
reference at the network's call sites and on odd lengths, with a spy that the Gluon path really ran
(or really declined, where its TMA constraints don't hold). Skipped without an sm_90 GPU."""
from __future__ import annotations

import pytest
import torch

from kernel_testlib import needs_cuda, rel_err
from kernels.attention import attention_reference, attention_triton

pytestmark = needs_cuda

GL = {"gluon": True}


@pytest.fixture
def launches(compiled, monkeypatch):
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the Gluon kernel is for sm_90")
    from kernels._triton_loader import load
    try:
        gla = load("_gl_attention", False)
    except ImportError:
        pytest.skip("no Gluon in this Triton")
    calls = []
    orig = gla.launch
    monkeypatch.setattr(gla, "launch", lambda *a, **kw: (calls.append(1), orig(*a, **kw))[1])
    return calls


def _views(b, l, h, d, dtype, gen):
    """q/k/v/gate as the network makes them: views of one fused projection [B, L, 4HD]."""
    y = torch.randn(b, l, 4 * h * d, generator=gen, device="cuda").to(dtype)
    return [t.unflatten(-1, (h, d)).transpose(1, 2) for t in y.split(h * d, dim=-1)]


def _check(q, k, v, biases, gate, launches, expect_gluon, dtype, cfg=GL):
    scale = q.shape[-1] ** -0.5
    n0 = len(launches)
    out = attention_triton(q, k, v, biases, None, scale, config=cfg, gate=gate)
    ref = attention_reference(q.double(), k.double(), v.double(), [b.double() for b in biases], None, scale,
                              gate=None if gate is None else gate.double())
    assert (len(launches) > n0) == expect_gluon
    assert torch.isfinite(out).all()
    # the Triton kernel's error on the same inputs is the bar (both round p to 16 bits)
    tri = attention_triton(q, k, v, biases, None, scale, gate=gate)
    assert rel_err(out, ref) <= max(1.5 * rel_err(tri, ref), 2e-3 if dtype == torch.float16 else 8e-3)


@pytest.mark.parametrize("l,h,d", [(256, 4, 32), (200, 4, 32), (320, 4, 16), (136, 8, 32), (192, 2, 64)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gluon_network_call(launches, l, h, d, dtype):
    gen = torch.Generator(device="cuda").manual_seed(l + d)
    q, k, v, g = _views(5, l, h, d, dtype, gen)
    bias = torch.randn(1, h, l, l, generator=gen, device="cuda").to(dtype) * 2
    _check(q, k, v, [bias], g, launches, True, dtype)


@pytest.mark.parametrize("form", [{}, {"gluon_rows": 2}, {"gluon_rows": 2, "p_smem": True},
                                  {"gluon_rows": 2, "stages": 3}])
@pytest.mark.parametrize("b,l", [(5, 200), (2, 64), (3, 40)])
def test_gluon_row_forms(launches, form, b, l):
    """One row a program, and two rows taking turns (P in registers or shared memory; an odd number of
    rows repeats the last; one key block, a ragged last block), against float64."""
    gen = torch.Generator(device="cuda").manual_seed(b * l)
    q, k, v, g = _views(b, l, 4, 32, torch.bfloat16, gen)
    bias = torch.randn(1, 4, l, l, generator=gen, device="cuda").bfloat16() * 2
    _check(q, k, v, [bias], g, launches, True, torch.bfloat16, cfg=dict(GL, **form))


@pytest.mark.parametrize("lq,lk", [(40, 40), (8, 8), (72, 136), (130, 64)])
def test_gluon_odd_lengths_and_per_row_bias(launches, lq, lk):
    gen = torch.Generator(device="cuda").manual_seed(lq * lk)
    q = torch.randn(3, 2, lq, 32, generator=gen, device="cuda").bfloat16()
    k, v = (torch.randn(3, 2, lk, 32, generator=gen, device="cuda").bfloat16() for _ in range(2))
    shared = torch.randn(1, 2, lq, lk, generator=gen, device="cuda").bfloat16()
    per_row = torch.randn(3, 2, lq, lk, generator=gen, device="cuda").bfloat16()
    _check(q, k, v, [shared], None, launches, True, torch.bfloat16)
    _check(q, k, v, [per_row], None, launches, True, torch.bfloat16)
    _check(q, k, v, [], None, launches, True, torch.bfloat16)


def test_gluon_declines_what_it_cannot_address(launches):
    gen = torch.Generator(device="cuda").manual_seed(3)
    q, k, v, g = _views(2, 517, 4, 32, torch.bfloat16, gen)  # bias rows of 517 x 2 bytes: no TMA
    bias = torch.randn(1, 4, 517, 517, generator=gen, device="cuda").bfloat16()
    _check(q, k, v, [bias], g, launches, False, torch.bfloat16)
    q8, k8, v8, g8 = _views(2, 64, 8, 8, torch.bfloat16, gen)  # head dim 8: the Triton kernel
    _check(q8, k8, v8, [torch.randn(1, 8, 64, 64, device="cuda").bfloat16()], g8, launches, False, torch.bfloat16)
