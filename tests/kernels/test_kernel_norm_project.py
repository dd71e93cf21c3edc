"""LN(x) W: the pair bias written head-major (out[h, p]) and the attentions' inputs written row-major
with the gate's bias (out[p, h] = LN(x) W + b). The Triton kernel (CPU interpreter, fp32/fp16) and the
PyTorch reference against float64; odd row counts, H = 4 and 8 (padded to the tensor-core width) and
H several column tiles wide, rows of a transposed pair (two strided levels), an output row block of a
larger [H, N, N] bias, the dispatcher's fallback, and the network's attentions through it."""
from __future__ import annotations

import pytest
import torch

from kernel_testlib import block_inputs, fixture_block, layer_norm64, needs_triton, rel_err
from kernels.norm_project import norm_project, norm_project_reference, norm_project_triton

pytestmark = needs_triton

TOL = {torch.float32: 2e-6, torch.float16: 2e-3}


def _case(shape, c, h, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, c, generator=gen) * 2 + 0.3).to(dtype)
    ln = ((1 + 0.3 * torch.randn(c, generator=gen)).to(dtype), (0.2 * torch.randn(c, generator=gen)).to(dtype), 1e-5)
    w = (torch.randn(c, h, generator=gen) * c ** -0.5).to(dtype)
    want = (layer_norm64(x, *ln) @ w.double()).reshape(-1, h).t()
    return x, ln, w, want


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape,c,h", [((37,), 32, 4), ((3, 7), 64, 8), ((5, 9), 16, 1)])
def test_matches_float64(interpret, dtype, shape, c, h):
    x, ln, w, want = _case(shape, c, h, dtype, seed=c + h)
    out = torch.full((h, want.shape[1]), float("nan"), dtype=dtype)
    assert norm_project_triton(x, ln, w, out) is out
    assert rel_err(out, want) < TOL[dtype]
    assert rel_err(norm_project_reference(x, ln, w, torch.empty_like(out)), want) < TOL[dtype] * 3


def test_transposed_rows_into_a_bias_block(interpret):
    """x = rows 2:5 of a transposed [N, N, C] pair (two row levels); out = rows 2:5 of an [H, N, N]
    bias viewed [H, 3*N]; the rest of the bias untouched."""
    n, c, h = 9, 32, 4
    x_all, ln, w, _ = _case((n, n), c, h, torch.float32, seed=5)
    x = x_all.transpose(0, 1)[2:5]
    want = (layer_norm64(x, *ln) @ w.double()).reshape(-1, h).t()
    bias = torch.full((h, n, n), float("nan"))
    out = bias[:, 2:5].reshape(h, -1)
    assert out.data_ptr() == bias[:, 2:5].data_ptr()
    norm_project_triton(x, ln, w, out)
    assert rel_err(bias[:, 2:5].reshape(h, -1), want) < TOL[torch.float32]
    assert torch.isnan(bias[:, :2]).all() and torch.isnan(bias[:, 5:]).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape,c,h,transposed", [((37,), 32, 96, False), ((5, 7), 64, 40, True),
                                                  ((3, 11), 16, 16, False)])
def test_row_major_with_bias_matches_float64(interpret, dtype, shape, c, h, transposed):
    """The attentions' inputs: LN(x) W + b row-major ([*, H], H several column tiles wide, the last
    one partial), rows of a plain block or of a transposed view (column attention, the ending node)."""
    x, ln, w, _ = _case(shape, c, h, dtype, seed=c + 3 * h)
    if transposed:
        x = x.transpose(0, 1)
    gen = torch.Generator().manual_seed(h)
    b = torch.randn(h, generator=gen).to(dtype)
    want = layer_norm64(x, *ln) @ w.double() + b.double()
    out = torch.full((*x.shape[:-1], h), float("nan"), dtype=dtype)
    assert norm_project_triton(x, ln, w, out, bias=b, head_major=False) is out
    assert rel_err(out, want) < TOL[dtype]
    ref = norm_project_reference(x, ln, w, torch.empty_like(out), bias=b, head_major=False)
    assert rel_err(ref, want) < TOL[dtype] * 3
    # without a bias, and through the dispatcher
    out2 = norm_project(x, ln, w, torch.empty_like(out), head_major=False, backend="triton")
    assert rel_err(out2, want - b.double()) < TOL[dtype]


def test_row_major_declines_what_it_cannot_write(interpret):
    x, ln, w, _ = _case((6, 5), 32, 48, torch.float32, seed=4)
    with pytest.raises(RuntimeError):  # not contiguous
        norm_project_triton(x, ln, w, torch.empty(5, 6, 48).transpose(0, 1), head_major=False)
    with pytest.raises(RuntimeError):  # wrong shape
        norm_project_triton(x, ln, w, torch.empty(30, 47), head_major=False)


def test_dispatch_and_fallback(interpret):
    x, ln, w, want = _case((21,), 32, 4, torch.float32, seed=8)
    a = norm_project(x, ln, w, torch.empty(4, 21), backend="triton")
    r = norm_project(x, ln, w, torch.empty(4, 21), backend="torch")
    assert rel_err(a, want) < TOL[torch.float32] and rel_err(r, want) < TOL[torch.float32] * 3
    x24, ln24, w24, _ = _case((5,), 24, 4, torch.float32, seed=9)  # C not a power of two: the reference
    torch.testing.assert_close(norm_project(x24, ln24, w24, torch.empty(4, 5), backend="triton"),
                               norm_project_reference(x24, ln24, w24, torch.empty(4, 5)), rtol=0, atol=0)
    with pytest.raises(RuntimeError):
        norm_project_triton(x24, ln24, w24, torch.empty(4, 5))
    with pytest.raises(ValueError):
        norm_project(x, ln, w, torch.empty(4, 21), backend="cuda")


def test_unfused_runs_the_layer_norm_on_the_backend(interpret, monkeypatch):
    """fused=False (Runtime.fused_bias off): the reference's passes, with the LayerNorm on the given
    backend (the Triton LayerNorm kernel here, as the network ran before), not this kernel."""
    from kernels._triton_loader import module_for
    x, ln, w, want = _case((21,), 32, 4, torch.float32, seed=10)
    ln_mod, proj_mod, calls = module_for("_tri_layer_norm", [x]), module_for("_tri_norm_project", [x]), []
    real = ln_mod.layer_norm
    monkeypatch.setattr(ln_mod, "layer_norm", lambda *a, **k: calls.append("ln") or real(*a, **k))
    monkeypatch.setattr(proj_mod, "norm_project", lambda *a, **k: calls.append("fused"))
    out = norm_project(x, ln, w, torch.empty(4, 21), backend="triton", fused=False)
    assert calls == ["ln"] and rel_err(out, want) < TOL[torch.float32] * 3


@pytest.mark.parametrize("which", ["msa_row_attention_with_pair_bias", "triangle_attention_starting_node",
                                   "triangle_attention_ending_node"])
@pytest.mark.parametrize("rows", [None, 2])
@torch.no_grad()
def test_network_pair_biases_through_the_kernel(interpret, monkeypatch, which, rows):
    """Runtime.fused_bias: the network's pair-biased attentions (fixture weights; whole and in row
    blocks of 2) form their bias through the kernel (a spy counts its calls) and give what the
    reference path gives."""
    from model.config import Runtime
    op = getattr(fixture_block(), which)
    s, n = 3, 5
    m, z, msa_mask, pair_mask = block_inputs(3, s, n)
    if which.startswith("msa_row"):
        run = lambda rt: op(m.clone(), msa_mask, z, rt)  # noqa: E731
    else:
        run = lambda rt: op(z.clone(), pair_mask, rt)  # noqa: E731
    want = run(Runtime())
    from kernels._triton_loader import module_for
    mod, calls = module_for("_tri_norm_project", [z]), []
    real = mod.norm_project
    # head-major calls only: the biases (the row-major ones are the inputs' projections, below)
    monkeypatch.setattr(mod, "norm_project",
                        lambda *a, **k: k.get("head_major", True) and calls.append(1) or real(*a, **k))
    chunks = {} if rows is None else {"pair_rows": rows}
    got = run(Runtime(backend="triton", chunks=chunks))
    assert len(calls) == (1 if rows is None else -(-n // rows))
    assert rel_err(got, want) < 1e-6
    calls.clear()
    off = run(Runtime(backend="triton", chunks=chunks, fused_bias=False))
    assert not calls and rel_err(off, want) < 1e-6


@pytest.mark.parametrize("which", ["msa_row_attention_with_pair_bias", "msa_column_attention",
                                   "triangle_attention_starting_node", "triangle_attention_ending_node"])
@pytest.mark.parametrize("rows", [None, 2])
@torch.no_grad()
def test_network_attention_inputs_through_the_kernel(interpret, monkeypatch, which, rows):
    """Runtime.fused_qkv: the network's triangle attentions (fixture weights; whole and in chunks of 2
    rows or columns, the ending node's on transposed views) form LN(x) and q, k, v and the gate in one
    kernel call per chunk (a spy counts the row-major calls); the MSA's (C = 256, where the kernel lost)
    don't; all give what the reference path gives; off, the kernel is not called."""
    from model.config import Runtime
    from model.primitives import FUSED_QKV_MAX_C
    op = getattr(fixture_block(), which)
    s, n = 3, 5
    m, z, msa_mask, pair_mask = block_inputs(3, s, n)
    if which.startswith("msa_row"):
        run, n_rows, name = (lambda rt: op(m.clone(), msa_mask, z, rt)), s, "msa_row_att"  # noqa: E731
    elif which.startswith("msa_col"):
        run, n_rows, name = (lambda rt: op(m.clone(), msa_mask, rt)), n, "msa_col_att"  # noqa: E731
    else:
        run, n_rows, name = (lambda rt: op(z.clone(), pair_mask, rt)), n, "tri_att"  # noqa: E731
    want = run(Runtime())
    from kernels._triton_loader import module_for
    mod, calls = module_for("_tri_norm_project", [z]), []
    real = mod.norm_project
    monkeypatch.setattr(mod, "norm_project",
                        lambda *a, **k: (not k.get("head_major", True)) and calls.append(1) or real(*a, **k))
    chunks = {} if rows is None else {name: rows}
    # the fused path runs for inputs up to FUSED_QKV_MAX_C channels (the pair's 128, not the MSA's 256)
    fused = (m if which.startswith("msa") else z).shape[-1] <= FUSED_QKV_MAX_C
    assert fused == (not which.startswith("msa"))
    for inplace in (False, True):
        calls.clear()
        got = run(Runtime(backend="triton", chunks=chunks, inplace=inplace, fused_qkv=True))
        assert len(calls) == ((1 if rows is None else -(-n_rows // rows)) if fused else 0), inplace
        assert rel_err(got, want) < 1e-6
    calls.clear()
    off = run(Runtime(backend="triton", chunks=chunks))  # the default: off
    assert not calls and rel_err(off, want) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_padded_output_rows(interpret, dtype):
    """out = [H, A, B] with rows padded past B (the network's bias, rows 16-byte aligned): every row
    lands at its padded stride and the padding is never written, on both paths."""
    a, b, c, h = 3, 13, 32, 4
    x, ln, w, want = _case((a, b), c, h, dtype, seed=11)
    for fn in (norm_project_triton, norm_project_reference):
        store = torch.full((h, a, b + 3), float("nan"), dtype=dtype)
        out = store[:, :, :b]
        assert fn(x, ln, w, out) is out
        assert rel_err(out.reshape(h, -1), want) < TOL[dtype] * 3
        assert torch.isnan(store[:, :, b:]).all()
