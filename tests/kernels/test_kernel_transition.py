"""The transition with its residual, out = x + relu(LN(x) W1 + b1) W2 + b2: the Triton kernel (CPU
interpreter, fp32/fp16) and the PyTorch reference against float64 written from the formula; odd
position counts, C and hidden widths of the network's transitions (scaled down), in place over x,
the dispatcher's fallback, and the network's Transition module through it."""
from __future__ import annotations

import pytest
import torch

from kernel_testlib import assert_pair_matches, fixture_block, needs_triton, rel_err, transition64
from kernels.transition import transition, transition_reference, transition_triton

pytestmark = needs_triton

TOL = {torch.float32: 2e-6, torch.float16: 2e-3}


def _case(shape, c, factor, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, c, generator=gen) * 2 + 0.3).to(dtype)
    ln = ((1 + 0.3 * torch.randn(c, generator=gen)).to(dtype), (0.2 * torch.randn(c, generator=gen)).to(dtype), 1e-5)
    w1 = (torch.randn(c, factor * c, generator=gen) * c ** -0.5).to(dtype)
    b1 = (0.5 * torch.randn(factor * c, generator=gen)).to(dtype)
    w2 = (torch.randn(factor * c, c, generator=gen) * (factor * c) ** -0.5).to(dtype)
    b2 = torch.randn(c, generator=gen).to(dtype)
    args = (x, ln, w1, b1, w2, b2)
    return args, transition64(*args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape,c,factor", [((37,), 32, 4), ((3, 7), 16, 2), ((2, 5), 64, 4)])
def test_matches_float64(interpret, dtype, shape, c, factor):
    args, want = _case(shape, c, factor, dtype, seed=c + factor)
    assert_pair_matches(transition_triton, transition_reference, args,
                        torch.full_like(args[0], float("nan")), want, TOL[dtype])


def test_in_place_and_row_slices(interpret):
    """out is x (in place), and x a slice of the first axis of a larger tensor (a chunk)."""
    args, want = _case((6, 9), 32, 4, torch.float32, seed=3)
    apart = transition_triton(*args, torch.empty_like(args[0]))
    x = args[0].clone()
    assert transition_triton(x, *args[1:], x) is x
    torch.testing.assert_close(x, apart, rtol=0, atol=0)
    big = torch.full((10, 9, 32), float("nan"))
    big[2:8] = args[0]
    transition_triton(big[2:8], *args[1:], big[2:8])
    assert rel_err(big[2:8], want) < TOL[torch.float32]
    assert torch.isnan(big[:2]).all() and torch.isnan(big[8:]).all()


def test_dispatch_and_fallback(interpret, monkeypatch):
    args, want = _case((21,), 16, 4, torch.float32, seed=8)
    a = transition(*args, torch.empty_like(args[0]), backend="triton")
    b = transition(*args, torch.empty_like(args[0]), backend="torch")
    assert rel_err(a, want) < TOL[torch.float32] and rel_err(b, want) < TOL[torch.float32] * 3
    args24, _ = _case((5,), 24, 4, torch.float32, seed=9)  # C not a power of two: the reference
    torch.testing.assert_close(transition(*args24, torch.empty_like(args24[0]), backend="triton"),
                               transition(*args24, torch.empty_like(args24[0])), rtol=0, atol=0)
    with pytest.raises(RuntimeError):
        transition_triton(*args24, torch.empty_like(args24[0]))
    monkeypatch.delenv("TRITON_INTERPRET")  # CPU tensors without the interpreter: the reference
    torch.testing.assert_close(transition(*args, torch.empty_like(args[0]), backend="triton"), b, rtol=0, atol=0)
    with pytest.raises(ValueError):
        transition(*args, torch.empty_like(args[0]), backend="cuda")


def test_out_of_resources_falls_back_to_the_reference(interpret, monkeypatch):
    """A tile the GPU cannot hold (Triton's OutOfResources at compile time) runs the reference
    instead of failing the prediction; any other error still raises."""
    from kernels._triton_loader import module_for
    args, want = _case((9,), 16, 4, torch.float32, seed=2)
    mod = module_for("_tri_transition", [args[0]])

    class OutOfResources(Exception):
        pass

    def boom(*a, **k):
        raise OutOfResources("shared memory")
    monkeypatch.setattr(mod, "transition", boom)
    got = transition(*args, torch.empty_like(args[0]), backend="triton")
    torch.testing.assert_close(got, transition_reference(*args, torch.empty_like(args[0])), rtol=0, atol=0)
    monkeypatch.setattr(mod, "transition", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        transition(*args, torch.empty_like(args[0]), backend="triton")


@pytest.mark.parametrize("which", ["msa_transition", "pair_transition"])
@pytest.mark.parametrize("inplace", [False, True])
@torch.no_grad()
def test_network_transition_with_the_fused_kernel(interpret, monkeypatch, which, inplace):
    """Runtime.fused_transition: the network's transitions (reference-fixture weights, C = 256 and
    128) give what the reference path gives (chunked there); a spy asserts the kernel ran."""
    from model.config import Runtime
    op = getattr(fixture_block(), which)
    c = op.input_layer_norm.scale.shape[0]
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(3, 5, c, generator=gen) * 2 + 0.3
    want = op(x.clone(), Runtime(chunks={"transition": 2}))
    from kernels._triton_loader import module_for
    mod, calls = module_for("_tri_transition", [x]), []
    real = mod.transition
    monkeypatch.setattr(mod, "transition", lambda *a, **k: calls.append(1) or real(*a, **k))
    xin = x.clone()
    got = op(xin, Runtime(backend="triton", inplace=inplace))
    assert calls and (got is xin) == inplace
    assert rel_err(got, want) < 1e-6
