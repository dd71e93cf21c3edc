"""Triangle multiplication's gated projection: the Triton kernel (CPU interpreter, fp32/fp16) and the
PyTorch reference against a float64 computation of mask * (x W_p + b_p) * sigmoid(x W_g + b_g),
stored channel-major; odd sizes, weight column slices, an output slice of a larger buffer, masked
positions, and the dispatcher's fallback."""
from __future__ import annotations

import pytest
import torch

from kernel_testlib import assert_pair_matches, fixture_block, needs_triton, rel_err
from kernels.gated_projection import gated_projection, gated_projection_reference, gated_projection_triton

pytestmark = needs_triton

TOL = {torch.float32: 2e-6, torch.float16: 2e-3}


def _case(p, c_in, c_all, c0, c1, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(p, c_in, generator=gen).to(dtype)
    w_p, w_g = (torch.randn(c_in, c_all, generator=gen) * c_in ** -0.5 for _ in range(2))
    b_p, b_g = (torch.randn(c_all, generator=gen) for _ in range(2))
    mask = (torch.rand(p, generator=gen) > 0.2).to(dtype)
    args = (x, w_p[:, c0:c1].to(dtype), b_p[c0:c1].to(dtype), w_g[:, c0:c1].to(dtype), b_g[c0:c1].to(dtype), mask)
    xd = x.double()
    want = (mask.double()[:, None] * (xd @ args[1].double() + args[2].double())
            * torch.sigmoid(xd @ args[3].double() + args[4].double())).t()
    return args, want


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("p,c_in,c_all,c0,c1", [(37, 32, 32, 0, 32), (53, 40, 48, 8, 31), (16, 64, 64, 16, 48)])
def test_matches_float64(interpret, dtype, p, c_in, c_all, c0, c1):
    args, want = _case(p, c_in, c_all, c0, c1, dtype, seed=p + c_in)
    assert_pair_matches(gated_projection_triton, gated_projection_reference, args,
                        torch.empty(c1 - c0, p, dtype=dtype), want, TOL[dtype])


@pytest.mark.parametrize("cfg", [dict(c_fast=False), dict(c_fast=True, BLOCK_C=32),
                                 dict(persistent=3), dict(persistent=5, BLOCK_C=8, num_stages=2)])
def test_tile_variants(interpret, cfg):
    """Both grid orders and the persistent form (a few programs walking the tiles; several channel
    tiles) give the same values, on odd sizes and a weight column slice."""
    args, want = _case(53, 40, 48, 8, 31, torch.float32, seed=11)
    out = gated_projection_triton(*args, torch.empty(23, 53), config=cfg)
    assert rel_err(out, want) < TOL[torch.float32]


def test_output_block_of_a_larger_buffer(interpret):
    """out = ab[side, :, r0:r1] viewed as [c, r*N]: channels n*N apart, positions contiguous; the
    rest of the buffer is untouched."""
    n, n_all, c, r0, r1 = 7, 9, 24, 2, 5
    args, want = _case((r1 - r0) * n_all, 32, c, 0, c, torch.float32, seed=5)
    buf = torch.full((2, c, n, n_all), float("nan"))
    out = buf[1, :, r0:r1].reshape(c, -1)
    assert out.data_ptr() == buf[1, :, r0:r1].data_ptr()  # a view
    gated_projection_triton(*args, out)
    assert rel_err(buf[1, :, r0:r1].reshape(c, -1), want) < TOL[torch.float32]
    assert torch.isnan(buf[0]).all() and torch.isnan(buf[1, :, :r0]).all() and torch.isnan(buf[1, :, r1:]).all()


def test_dispatch_and_fallback(interpret, monkeypatch):
    args, want = _case(21, 32, 32, 0, 32, torch.float32, seed=9)
    a = gated_projection(*args, torch.empty(32, 21), backend="triton")
    b = gated_projection(*args, torch.empty(32, 21), backend="torch")
    assert rel_err(a, want) < TOL[torch.float32] and rel_err(b, want) < TOL[torch.float32]
    monkeypatch.delenv("TRITON_INTERPRET")  # CPU tensors without the interpreter: the reference
    c = gated_projection(*args, torch.empty(32, 21), backend="triton")
    torch.testing.assert_close(c, b, rtol=0, atol=0)
    with pytest.raises(ValueError):
        gated_projection(*args, torch.empty(32, 21), backend="cuda")


@pytest.mark.parametrize("direction", ["outgoing", "incoming"])
@pytest.mark.parametrize("mode", ["whole", "chunked", "offloaded"])
@torch.no_grad()
def test_triangle_multiplication_with_the_fused_kernel(interpret, monkeypatch, direction, mode):
    """Runtime.fused_tri_mul: the network's triangle multiplication (reference-fixture weights), with
    the fused gated projections and output stage, gives what the reference path gives, resident,
    channel-chunked and with the pair offloaded."""
    from model.config import Runtime
    op = getattr(fixture_block(), f"triangle_multiplication_{direction}")
    gen = torch.Generator().manual_seed(3)
    n = 11
    z = torch.randn(n, n, 128, generator=gen) * 2 + 0.3
    mask = (torch.rand(n, n, generator=gen) > 0.15).float()
    kw = {"chunked": dict(chunks={"tri_mul": 48}), "offloaded": dict(inplace=True, offload_pair=True)}.get(mode, {})
    want = op(z.clone(), mask, Runtime(**kw))
    from kernels._triton_loader import module_for
    calls = {}
    for name, fn in (("_tri_gated_projection", "gated_projection"), ("_tri_tri_mul_output", "tri_mul_output")):
        mod = module_for(name, [z])
        real = getattr(mod, fn)
        monkeypatch.setattr(mod, fn, lambda *a, _f=real, _n=fn, **k: calls.setdefault(_n, []).append(1) or _f(*a, **k))
    got = op(z.clone(), mask, Runtime(backend="triton", fused_tri_mul=True, **kw))
    assert set(calls) == {"gated_projection", "tri_mul_output"}  # both fused kernels ran (no silent fallback)
    assert rel_err(got, want) < 1e-6


def _ln_case(p, c_in, c, dtype, seed):
    """Raw pair entries (offset and scaled, so the LayerNorm matters) and the float64 result of
    mask * (LN(x) W_p + b_p) * sigmoid(LN(x) W_g + b_g), LN(x) rounded to x's dtype as the
    network's LayerNorm output is."""
    from kernels.layer_norm import layer_norm_reference
    gen = torch.Generator().manual_seed(seed)
    args, _ = _case(p, c_in, c, 0, c, dtype, seed)
    x = (args[0].float() * 3 + torch.randn(c_in, generator=gen) * 2).to(dtype)
    ln = ((torch.randn(c_in, generator=gen) * 0.3 + 1).to(dtype), (torch.randn(c_in, generator=gen) * 0.2).to(dtype),
          1e-5)
    xd = layer_norm_reference(x, *ln).double()
    _, w_p, b_p, w_g, b_g, mask = args
    want = (mask.double()[:, None] * (xd @ w_p.double() + b_p.double())
            * torch.sigmoid(xd @ w_g.double() + b_g.double())).t()
    return (x, w_p, b_p, w_g, b_g, mask), ln, want


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("cfg", [dict(persistent=3, fuse_norm=True), dict(persistent=5, BLOCK_C=8, num_stages=2,
                                                                           fuse_norm=True),
                                 dict(persistent=3), dict()])
@pytest.mark.parametrize("c_in", [32, 40])
def test_layer_norm_of_the_input(interpret, dtype, cfg, c_in):
    """ln=: the persistent form with fuse_norm normalises each tile of x itself (40 channels: padded
    to 64, the padding stays zero); otherwise the LayerNorm kernel runs first. All, and the
    reference, against float64."""
    args, ln, want = _ln_case(45, c_in, 24, dtype, seed=c_in)
    out = gated_projection_triton(*args, torch.empty(24, 45, dtype=dtype), config=cfg, ln=ln)
    assert rel_err(out, want) < TOL[dtype] * 2
    ref = gated_projection_reference(*args, torch.empty(24, 45, dtype=dtype), ln=ln)
    assert rel_err(ref, want) < TOL[dtype] * 2


def test_fuses_norm_predicate(interpret):
    """`gated_projection_fuses_norm` is true exactly where the kernel that would run is persistent."""
    from kernels._triton_loader import module_for
    from kernels.gated_projection import gated_projection_fuses_norm
    args, _, _ = _ln_case(16, 32, 16, torch.float32, seed=1)
    x, w_p, _, w_g, _, mask = args
    out = torch.empty(16, 16)
    mod = module_for("_tri_gated_projection", [x])
    cfg = mod.default_config(32, 16, False)
    assert gated_projection_fuses_norm(x, w_p, w_g, mask, out, "triton") == bool(
        cfg.get("persistent") and cfg.get("fuse_norm"))
    assert mod.fuses_norm(x, 16, dict(persistent=4, fuse_norm=True))
    assert not mod.fuses_norm(x, 16, dict(persistent=0, fuse_norm=True))
    assert not mod.fuses_norm(x, 16, dict(persistent=4, fuse_norm=False))
    assert not gated_projection_fuses_norm(x, w_p, w_g, mask, out, "torch")


@pytest.mark.parametrize("direction", ["outgoing", "incoming"])
@torch.no_grad()
def test_triangle_multiplication_normalises_in_the_kernel(interpret, monkeypatch, direction):
    """Where the gated projection normalises in the kernel (persistent with fuse_norm; forced here),
    triangle multiplication hands it the raw pair rows and its LayerNorm: the LayerNorm'd rows are
    never formed, and the result is the reference path's."""
    from kernels._triton_loader import module_for
    from model.config import Runtime
    op = getattr(fixture_block(), f"triangle_multiplication_{direction}")
    gen = torch.Generator().manual_seed(4)
    n = 9
    z = torch.randn(n, n, 128, generator=gen) * 2 + 0.3
    mask = (torch.rand(n, n, generator=gen) > 0.15).float()
    want = op(z.clone(), mask, Runtime())
    mod = module_for("_tri_gated_projection", [z])
    cfg = dict(mod.default_config(128, 32, False), persistent=4, fuse_norm=True)
    monkeypatch.setattr(mod, "default_config", lambda *a, **k: cfg)
    real, lns = mod.gated_projection, []
    monkeypatch.setattr(mod, "gated_projection", lambda *a, **k: lns.append(k.get("ln")) or real(*a, **k))
    got = op(z.clone(), mask, Runtime(backend="triton", fused_tri_mul=True))
    assert len(lns) == 2 * 3 and all(ln is not None for ln in lns)  # both sides of 3 row blocks of 3 rows
    assert rel_err(got, want) < 1e-6
