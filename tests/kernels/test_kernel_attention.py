"""Triton attention vs the float64 reference, on CPU through Triton's interpreter.

Covers every bias/mask pattern the model uses (pair bias shared by all batch rows + per-row key mask;
key mask only; nothing), fully masked rows, odd lengths, D = 8/16/32 (and 5, 64), the model's strided
layouts, extra batch dims, several biases, a 2-D mask, and the backend switch's fallback.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kernel_testlib import needs_triton, rel_err
from kernels.attention import attention, attention_reference, attention_triton

pytestmark = needs_triton

TOL = {torch.float32: 2e-5, torch.float16: 3e-3}


def _ref64(q, k, v, biases, mask, scale):
    return attention_reference(q.double(), k.double(), v.double(), [b.double() for b in biases],
                               None if mask is None else mask.double(), scale)


def _key_mask(b, lk, gen, fully_masked_rows=(0,)):
    mask = (torch.rand(b, 1, 1, lk, generator=gen) > 0.3).float()
    for r in fully_masked_rows:
        mask[r] = 0.0
    return mask


def _check(q, k, v, biases, mask, scale, **kw):
    out = attention_triton(q, k, v, biases, mask, scale, **kw)
    ref = _ref64(q, k, v, biases, mask, scale)
    assert out.shape == ref.shape and out.dtype == q.dtype
    err = rel_err(out, ref)
    assert err < TOL[q.dtype], f"relative error {err:.2e}"
    return out


@pytest.mark.parametrize("d", [8, 16, 32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("pattern", ["pair_bias_and_mask", "mask_only", "plain"])
def test_patterns(interpret, d, dtype, pattern):
    gen = torch.Generator().manual_seed(hash((d, str(dtype), pattern)) % 2**31)
    b, h, l = 5, 2, 37  # odd batch (exercises the ROWS=2 tail), odd length
    q, k, v = (torch.randn(b, h, l, d, generator=gen).to(dtype) for _ in range(3))
    biases, mask = [], None
    if pattern == "pair_bias_and_mask":
        biases = [torch.randn(1, h, l, l, generator=gen).to(dtype)]  # shared by every batch row
    if pattern != "plain":
        mask = _key_mask(b, l, gen)
    _check(q, k, v, biases, mask, d ** -0.5)


@pytest.mark.parametrize("d", [8, 16])  # 8: the mask rides in the padded head-dim column
def test_fully_masked_row_is_uniform(interpret, d):
    """AlphaFold's additive -1e9: a row whose keys are all masked averages v uniformly."""
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 2, 13, d, generator=gen) for _ in range(3))
    mask = torch.zeros(2, 1, 1, 13)
    out = attention_triton(q, k, v, [torch.randn(1, 2, 13, 13, generator=gen)], mask, 0.25)
    torch.testing.assert_close(out, v.mean(-2, keepdim=True).expand_as(out), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d", [5, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_spare_columns_match_plain_path(interpret, d, dtype):
    """Small heads: the key mask added by the tensor cores through k's padded column and the
    denominator accumulated in v's (config spare=True, the default) give the plain path's result."""
    gen = torch.Generator().manual_seed(d)
    b, h, l = 3, 2, 29
    q, k, v = (torch.randn(b, h, l, d, generator=gen).to(dtype) for _ in range(3))
    biases = [torch.randn(1, h, l, l, generator=gen).to(dtype)]
    mask = _key_mask(b, l, gen)
    on = _check(q, k, v, biases, mask, d ** -0.5)
    off = _check(q, k, v, biases, mask, d ** -0.5, config=dict(spare=False))
    assert rel_err(on, off.double()) < TOL[dtype]


def test_model_layout(interpret):
    """q/k/v as the model makes them (transposed views of [B, L, H, D]), the pair bias as a permuted
    view of an [L, L, H] projection, a bool mask; the output keeps q's layout."""
    gen = torch.Generator().manual_seed(2)
    b, l, h, d = 4, 29, 4, 32
    q, k, v = (torch.randn(b, l, h, d, generator=gen).transpose(-2, -3) for _ in range(3))
    bias = torch.randn(l, l, h, generator=gen).permute(2, 0, 1).unsqueeze(0)
    mask = _key_mask(b, l, gen).bool()
    out = _check(q, k, v, [bias], mask, d ** -0.5)
    assert out.stride() == q.stride()


def test_cross_lengths_and_tiny(interpret):
    gen = torch.Generator().manual_seed(3)
    for lq, lk in [(13, 41), (1, 9), (40, 3)]:
        q = torch.randn(3, 2, lq, 16, generator=gen)
        k, v = (torch.randn(3, 2, lk, 16, generator=gen) for _ in range(2))
        bias = torch.randn(1, 2, lq, lk, generator=gen)
        _check(q, k, v, [bias], _key_mask(3, lk, gen), 0.3)


@pytest.mark.parametrize("d", [5, 64])
def test_other_head_dims(interpret, d):
    gen = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(2, 3, 21, d, generator=gen) for _ in range(3))
    _check(q, k, v, [torch.randn(1, 3, 21, 21, generator=gen)], _key_mask(2, 21, gen), d ** -0.5)


def test_two_biases_and_2d_mask(interpret):
    """Pair bias + a per-row bias, and a mask that varies along the query axis too."""
    gen = torch.Generator().manual_seed(5)
    b, h, l, d = 3, 2, 19, 8
    q, k, v = (torch.randn(b, h, l, d, generator=gen) for _ in range(3))
    biases = [torch.randn(1, h, l, l, generator=gen), torch.randn(b, 1, 1, l, generator=gen)]
    mask = (torch.rand(b, 1, l, l, generator=gen) > 0.4).float()
    mask[1, 0, 3] = 0.0  # one fully masked query row
    _check(q, k, v, biases, mask, 0.35)


def test_three_biases_fold(interpret):
    gen = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(2, 2, 11, 16, generator=gen) for _ in range(3))
    biases = [torch.randn(1, 2, 11, 11, generator=gen), torch.randn(2, 1, 11, 11, generator=gen),
              torch.randn(11, generator=gen)]
    _check(q, k, v, biases, None, 0.25)


def test_extra_batch_dims(interpret):
    """[B1, B2, H, L, D] with a bias shared over both batch dims; and a layout whose outer dims can't
    be merged into three (the launcher loops over the leading ones)."""
    gen = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 3, 2, 17, 16, generator=gen) for _ in range(3))
    bias = torch.randn(1, 1, 2, 17, 17, generator=gen)
    mask = (torch.rand(2, 3, 1, 1, 17, generator=gen) > 0.3).float()
    _check(q, k, v, [bias], mask, 0.25)
    # four non-mergeable outer dims: q permuted, bias varying over dims 0 and 2 only
    base = torch.randn(2, 2, 2, 2, 9, 16, generator=gen)
    q = base.permute(3, 1, 0, 2, 4, 5)
    k, v = (torch.randn(2, 2, 2, 2, 9, 16, generator=gen) for _ in range(2))
    bias = torch.randn(2, 1, 2, 1, 9, 9, generator=gen)
    _check(q, k, v, [bias], None, 0.25)


@pytest.mark.parametrize("rows", [1, 2, 4])
def test_rows_per_program(interpret, rows):
    """Both kernel variants (one batch row per program, or two sharing the bias tile)."""
    gen = torch.Generator().manual_seed(8 + rows)
    q, k, v = (torch.randn(3, 2, 24, 16, generator=gen) for _ in range(3))
    _check(q, k, v, [torch.randn(1, 2, 24, 24, generator=gen)], _key_mask(3, 24, gen), 0.25,
           config=dict(rows=rows, BLOCK_M=16, BLOCK_N=16))


@pytest.mark.parametrize("rows", [2, 4])
@pytest.mark.parametrize("form", ["online", "default"])
def test_rows_without_a_bias(interpret, monkeypatch, rows, form):
    """A bias-free call (MSA column attention) may take several batch rows a program from its config:
    they share no bias tile, but the loop then holds independent rows (`paired` interleaves their
    softmaxes). The same values as one row a program, bit for bit (the same operations per row), on
    an odd batch count (the last program's rows clamped), a ragged key block, a masked and an
    unmasked call; the default keeps one row for bias-free calls."""
    from kernels._triton_loader import module_for
    mod = module_for("_tri_attention", [torch.empty(1)])
    launched = []  # the ROWS each launch of the attention kernel got

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **meta):
                launched.append(meta["ROWS"])
                return real[grid](*args, **meta)
            return launch
    real = mod._attn_fwd_kernel
    monkeypatch.setattr(mod, "_attn_fwd_kernel", Spy())
    gen = torch.Generator().manual_seed(60 + rows)
    q, k, v = (torch.randn(5, 2, 37, 32, generator=gen) for _ in range(3))
    tiles = dict(BLOCK_M=16, BLOCK_N=16, paired=True)
    if form == "default":
        tiles.update(bound=True, sum_mma=True, shared_bound=True)
    for mask in (None, _key_mask(5, 37, gen)):
        launched.clear()
        several = _check(q, k, v, [], mask, 32 ** -0.5, config=dict(tiles, rows=rows))
        assert set(launched) == {rows}
        one = attention_triton(q, k, v, [], mask, 32 ** -0.5, config=dict(tiles, rows=1))
        assert torch.equal(several, one)
    launched.clear()
    attention_triton(q, k, v, [], None, 32 ** -0.5)
    assert set(launched) == {1}


@pytest.mark.parametrize("rows,b", [(2, 3), (4, 5)])
@pytest.mark.parametrize("d,dtype,form", [(32, torch.float32, "online"), (8, torch.float16, "online"),
                                          (16, torch.float16, "online"), (32, torch.float32, "default"),
                                          (32, torch.float16, "default")])
def test_paired_rows_equal_the_sequential_form(interpret, d, dtype, rows, b, form):
    """config paired=True (rows 0 and 1's logits, then both softmax steps; rows 2 and 3 likewise)
    computes exactly what the row-after-row loop does: same operations per row, only their order
    differs. A batch count that leaves the last program short (clamped rows), a ragged last key
    block, a key mask with a fully masked row. form "default": with the options the bf16 default
    takes them (`bound` and `shared_bound` where they apply, fp32; `sum_mma`, fp16)."""
    gen = torch.Generator().manual_seed(40 + d + rows)
    q, k, v = (torch.randn(b, 2, 37, d, generator=gen).to(dtype) for _ in range(3))
    bias = torch.randn(1, 2, 37, 37, generator=gen).to(dtype)
    mask = _key_mask(b, 37, gen)
    tiles = dict(rows=rows, BLOCK_M=16, BLOCK_N=16, paired=False)
    if form == "default":
        tiles.update(bound=True, sum_mma=True, shared_bound=True)
    paired = _check(q, k, v, [bias], mask, d ** -0.5, config=dict(tiles, paired=True))
    sequential = attention_triton(q, k, v, [bias], mask, d ** -0.5, config=tiles)
    assert torch.equal(paired, sequential)


def test_every_output_written(interpret):
    gen = torch.Generator().manual_seed(10)
    q, k, v = (torch.randn(3, 2, 23, 8, generator=gen) for _ in range(3))
    from kernels._triton_loader import module_for
    mod = module_for("_tri_attention", [q])
    out = torch.full_like(q, float("nan"))
    mod.attention(q, k, v, [torch.randn(1, 2, 23, 23, generator=gen)], None, 0.3, out=out)
    assert torch.isfinite(out).all()


def test_backend_switch(interpret):
    gen = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(2, 2, 10, 8, generator=gen) for _ in range(3))
    bias = torch.randn(1, 2, 10, 10, generator=gen)
    a = attention(q, k, v, [bias], None, 0.3, backend="triton")
    b = attention_triton(q, k, v, [bias], None, 0.3)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError):
        attention(q, k, v, backend="nope")


def test_fallback_without_interpreter(monkeypatch):
    """CPU tensors without TRITON_INTERPRET: backend="triton" is the reference, bit for bit."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    gen = torch.Generator().manual_seed(12)
    q, k, v = (torch.randn(2, 2, 10, 8, generator=gen) for _ in range(3))
    bias = torch.randn(1, 2, 10, 10, generator=gen)
    torch.testing.assert_close(attention(q, k, v, [bias], None, 0.3, backend="triton"),
                               attention_reference(q, k, v, [bias], None, 0.3), rtol=0, atol=0)
    with pytest.raises(RuntimeError):
        attention_triton(q, k, v, [bias], None, 0.3)


def test_import_without_triton():
    """`import kernels` and backend="triton" work where triton is absent (reference fallback)."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, kernels\n"
            "q = torch.randn(1, 2, 5, 8)\n"
            "o = kernels.attention(q, q, q, [], None, 1.0, backend='triton')\n"
            "y = kernels.layer_norm(q, None, None, backend='triton')\n"
            "assert torch.equal(o, kernels.attention(q, q, q)) and y.shape == q.shape\n")
    root = Path(__file__).resolve().parents[2]
    env = {"PYTHONPATH": str(root), "TRITON_INTERPRET": "1", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env)


@pytest.mark.parametrize("rows", [1, 2])
def test_wide_offsets(interpret, rows):
    """The int64 offset variant (chosen when a slice spans 2**31 elements or more) forced on a small
    problem: same results as the reference."""
    gen = torch.Generator().manual_seed(20 + rows)
    base = torch.randn(40, 3, 2, 16, generator=gen)  # [L, B, H, D]: strided like the MSA column site
    q = base.permute(1, 2, 0, 3)
    k, v = (torch.randn(40, 3, 2, 16, generator=gen).permute(1, 2, 0, 3) for _ in range(2))
    _check(q, k, v, [torch.randn(1, 2, 40, 40, generator=gen)], _key_mask(3, 40, gen), 0.25,
           config=dict(rows=rows, BLOCK_M=16, BLOCK_N=16, wide=True))


def test_wide_offsets_chosen_by_extent(interpret):
    """The launcher asks for int64 offsets exactly when an operand's slice spans 2**31 elements."""
    from kernels._triton_loader import module_for

    class Shape:  # shape and strides only: the extent needs no storage
        def __init__(self, shape, strides):
            self.shape, self._s = shape, strides

        def stride(self, i):
            return self._s[i]

    mod = module_for("_tri_attention", [torch.zeros(1)])
    d, lq = 32, 508
    small = Shape((1, lq, d), (0, 4000 * 256, 1))   # MSA column rows at N = 4,000
    big = Shape((1, lq, d), (0, 17000 * 256, 1))    # at N = 17,000
    assert mod._inner_extent([small] * 4, lq, lq) < 2 ** 31
    assert mod._inner_extent([small, small, small, big], lq, lq) >= 2 ** 31


def test_out_of_resources_falls_back(interpret, monkeypatch):
    """A tile configuration the GPU cannot hold (shared memory) is retried with fewer stages, then
    fewer rows per program, instead of failing the call."""
    from triton.runtime.errors import OutOfResources

    from kernels._triton_loader import module_for
    gen = torch.Generator().manual_seed(12)
    q, k, v = (torch.randn(3, 2, 24, 16, generator=gen) for _ in range(3))
    bias, mask = torch.randn(1, 2, 24, 24, generator=gen), _key_mask(3, 24, gen)
    mod = module_for("_tri_attention", [q])
    real, tried = mod._launch_cfg, []

    def flaky(*args):
        cfg = args[7]
        tried.append((cfg["num_stages"], cfg["rows"]))
        if cfg["num_stages"] > 1 or cfg["rows"] > 2:
            raise OutOfResources(300000, 232448, "shared memory")
        return real(*args)

    monkeypatch.setattr(mod, "_launch_cfg", flaky)
    out = mod.attention(q, k, v, [bias], mask, 0.25, config=dict(rows=4, BLOCK_M=16, BLOCK_N=16, num_stages=3))
    assert tried == [(3, 4), (2, 4), (1, 4), (1, 2)]
    assert rel_err(out, _ref64(q, k, v, [bias], mask, 0.25)) < TOL[torch.float32]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@torch.no_grad()
def test_self_attention_fused_projection(interpret, backend):
    """AlphaFold's gated self-attention forms q, k, v and the gate from one GEMM over x (strided
    views of its output, read in place by the kernel); the result equals the separate projections
    (the path cross-attention takes), and the kernel's output comes back in the [*, L, H, D]
    layout the output projection reads without a copy."""
    from model.primitives import Attention
    gen = torch.Generator().manual_seed(8)
    att = Attention(24, 24, 4, 8, 8, 24, gating=True)
    for p in att.parameters():
        p.data = torch.randn(p.shape, generator=gen) * 0.3
    x = torch.randn(3, 13, 24, generator=gen)
    bias = torch.randn(1, 4, 13, 13, generator=gen)
    mask = (torch.rand(3, 1, 1, 13, generator=gen) > 0.2).float()
    fused = att(x, x, [bias], mask, backend=backend)
    separate = att(x, x.clone(), [bias], mask, backend=backend)
    assert rel_err(fused, separate) < 1e-6
    if backend == "triton":
        q = torch.randn(3, 13, 4 * 32, generator=gen)[..., :32].unflatten(-1, (4, 8)).transpose(-2, -3)
        o = attention_triton(q, q, q, [bias], mask, scale=0.3)
        assert o.transpose(-2, -3).is_contiguous()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rows", [1, 2, 4])
def test_gate_in_epilogue(interpret, dtype, rows):
    """gate=g: the kernel returns o * sigmoid(g) (AlphaFold's gating) for g a strided view of a
    fused projection's output, with a shared pair bias, a key mask with a fully masked row and an
    odd batch count (rows past the end are computed but neither gated nor stored)."""
    gen = torch.Generator().manual_seed(40 + rows)
    b, l, h, d = 5, 23, 2, 16
    y = torch.randn(b, l, h * d * 4, generator=gen).to(dtype)  # [q | k | v | g] as one GEMM output
    q, k, v, g = (t.unflatten(-1, (h, d)).transpose(-2, -3) for t in y.split(h * d, dim=-1))
    bias = torch.randn(1, h, l, l, generator=gen).to(dtype)
    mask = _key_mask(b, l, gen)
    out = attention_triton(q, k, v, [bias], mask, d ** -0.5, config=dict(rows=rows), gate=g)
    ref = _ref64(q, k, v, [bias], mask, d ** -0.5) * torch.sigmoid(g.double())
    assert out.dtype == dtype and rel_err(out, ref) < TOL[dtype], rel_err(out, ref)
    # the reference's own gate follows the same formula
    assert rel_err(attention_reference(q.double(), k.double(), v.double(), [bias.double()], mask.double(),
                                       d ** -0.5, gate=g.double()), ref) < 1e-6  # (float32 inside)


@torch.no_grad()
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_gated_attention_module_matches_alphafold_formula(interpret, backend):
    """primitives.Attention (q/k/v/gate from one GEMM, the gate applied by the kernel) against
    AlphaFold's modules.Attention written out in float64: q = x Wq * dk^-0.5, logits + bias + mask,
    softmax, weighted v, gate = sigmoid(x Wg + bg), output o Wo + bo."""
    from model.primitives import Attention
    gen = torch.Generator().manual_seed(9)
    c, h, dk = 24, 4, 8
    att = Attention(c, c, h, dk, dk, c, gating=True)
    for p in att.parameters():
        p.data = torch.randn(p.shape, generator=gen) * 0.3
    x = torch.randn(3, 17, c, generator=gen)
    bias = torch.randn(1, h, 17, 17, generator=gen)
    mask = (torch.rand(3, 1, 1, 17, generator=gen) > 0.2).float()
    out = att(x, x, [bias], mask, backend=backend)
    P = {n: p.double() for n, p in att.named_parameters()}
    xd = x.double()
    q = torch.einsum("blc,chd->bhld", xd, P["query_w"]) * dk ** -0.5
    k = torch.einsum("blc,chd->bhld", xd, P["key_w"])
    v = torch.einsum("blc,chd->bhld", xd, P["value_w"])
    logits = q @ k.transpose(-1, -2) + bias.double() + 1e9 * (mask.double() - 1)
    o = torch.einsum("bhqk,bhkd->bqhd", torch.softmax(logits, -1), v)
    gate = torch.sigmoid(torch.einsum("blc,chd->blhd", xd, P["gating_w"]) + P["gating_b"])
    ref = torch.einsum("bqhd,hdo->bqo", o * gate, P["output_w"]) + P["output_b"]
    assert rel_err(out, ref) < 1e-5, rel_err(out, ref)


def test_feature_major_inputs(interpret):
    """q/k/v/gate read feature-major ([*, H, L, D] views of a transposed [*, H*D, L] GEMM output,
    as the model forms small heads): same result as the float64 reference, and the output comes
    back laid out [*, L, H, D] (the caller's transpose back is free)."""
    gen = torch.Generator().manual_seed(31)
    b, l, h, d = 3, 21, 2, 8
    yt = torch.randn(b, 4 * h * d, l, generator=gen)
    q, k, v, g = (t.unflatten(-2, (h, d)).transpose(-1, -2) for t in yt.split(h * d, dim=-2))
    assert q.stride(-2) == 1
    bias = torch.randn(1, h, l, l, generator=gen)
    mask = _key_mask(b, l, gen)
    out = attention_triton(q, k, v, [bias], mask, d ** -0.5, gate=g)
    ref = _ref64(q, k, v, [bias], mask, d ** -0.5) * torch.sigmoid(g.double())
    assert rel_err(out, ref) < TOL[torch.float32]
    assert out.transpose(-2, -3).is_contiguous()


@torch.no_grad()
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("dk", [8, 16])
def test_attention_batch_inner_layout(interpret, backend, dk):
    """batch_inner=True (column attention, the ending node): the same values as the default, laid
    out [Q, B, C] in memory (a transposed view), the attention written there through `out=`."""
    from model.primitives import Attention
    gen = torch.Generator().manual_seed(12 + dk)
    att = Attention(32, 32, 2, dk, dk, 32, gating=True)
    for p in att.parameters():
        p.data = torch.randn(p.shape, generator=gen) * 0.3
    x = torch.randn(5, 19, 32, generator=gen)
    mask = (torch.rand(5, 1, 1, 19, generator=gen) > 0.2).float()
    bias = torch.randn(1, 2, 19, 19, generator=gen)
    plain = att(x, x, [bias], mask, backend=backend)
    inner = att(x, x, [bias], mask, backend=backend, batch_inner=True)
    assert inner.shape == plain.shape and inner.transpose(0, 1).is_contiguous()
    assert rel_err(inner, plain) < 1e-6



def test_config_head_dims_scopes_the_other_keys(interpret):
    """config "head_dims" (how `Runtime.attention_options` aims at one kind of attention): at a head
    dim it does not list, the other keys are dropped (so a BLOCK_M the kernel cannot build is
    harmless and the result is the default's, bit for bit); at a listed one they apply."""
    gen = torch.Generator().manual_seed(61)
    q, k, v = (torch.randn(3, 2, 21, 8, generator=gen) for _ in range(3))
    bias = torch.randn(1, 2, 21, 21, generator=gen)
    default = attention_triton(q, k, v, [bias], None, 0.3)
    scoped = attention_triton(q, k, v, [bias], None, 0.3, config={"head_dims": [16, 32], "BLOCK_M": 24})
    assert torch.equal(scoped, default)
    with pytest.raises(Exception, match="power of 2"):
        attention_triton(q, k, v, [bias], None, 0.3, config={"head_dims": [8], "BLOCK_M": 24})


@pytest.mark.parametrize("rows", [1, 2, 4])
@pytest.mark.parametrize("d,dtype", [(32, torch.float32), (16, torch.float32), (8, torch.float32)])
def test_bound_matches_reference(interpret, d, dtype, rows):
    """config bound=True: each row's softmax taken against a precomputed upper bound of its logits
    (|q| max|k| scale + the bias's row maximum) instead of a running maximum. The pair attentions'
    pattern (shared bias, key mask) with a fully masked batch row, whose tiles sum to zero against
    the bound and are recomputed by the online kernel; a ragged key block; an odd batch count."""
    gen = torch.Generator().manual_seed(60 + d + rows)
    b, h, l = 5, 2, 37
    q, k, v = (torch.randn(b, h, l, d, generator=gen).to(dtype) for _ in range(3))
    bias = (2.0 * torch.randn(1, h, l, l, generator=gen)).to(dtype)
    mask = _key_mask(b, l, gen)
    tiles = dict(rows=rows, BLOCK_M=16, BLOCK_N=16)
    probe = []
    _check(q, k, v, [bias], mask, d ** -0.5, config=dict(tiles, bound=True, _probe=probe))
    flags = probe[0]
    assert 0 < int(flags.sum()) < flags.numel()  # the fully masked row's tiles, and not the others


def test_bound_two_biases_no_mask_and_gate(interpret):
    """bound=True with two biases (the bound takes the maximum of their sum), no key mask (nothing
    falls back), the gate in the epilogue, and no bias at all (the bound is |q| max|k| scale)."""
    gen = torch.Generator().manual_seed(71)
    q, k, v, g = (torch.randn(3, 2, 29, 16, generator=gen) for _ in range(4))
    biases = [torch.randn(1, 2, 29, 29, generator=gen), torch.randn(3, 1, 29, 29, generator=gen)]
    cfg = dict(bound=True, BLOCK_M=16, BLOCK_N=16)
    for bs in (biases, []):
        probe = []
        out = attention_triton(q, k, v, bs, None, 0.25, config=dict(cfg, _probe=probe), gate=g)
        ref = _ref64(q, k, v, bs, None, 0.25) * torch.sigmoid(g.double())
        assert rel_err(out, ref) < TOL[torch.float32]
        assert int(probe[0].sum()) == 0


@pytest.mark.parametrize("shared", [False, True])
def test_bound_falls_back_only_where_loose(interpret, shared):
    """A query row with a huge norm and keys nearly orthogonal to it: |q| max|k| scale exceeds its
    largest logit by far more than 80 (log2 units), so its sum underflows against the bound. Exactly
    that tile is flagged and recomputed the online way; the result still matches float64. With
    shared_bound the huge row raises its partner row's bound too: the same one tile."""
    gen = torch.Generator().manual_seed(130 if shared else 72)
    b, h, l, d = 4, 2, 40, 32
    q, k, v = (torch.randn(b, h, l, d, generator=gen) for _ in range(3))
    bias = torch.randn(1, h, l, l, generator=gen)
    cfg = dict(bound=True, shared_bound=shared, rows=2, BLOCK_M=16, BLOCK_N=16)
    probe = []
    _check(q, k, v, [bias], None, d ** -0.5, config=dict(cfg, _probe=probe))
    assert int(probe[0].sum()) == 0
    q[2, 1, 17] *= 400.0
    probe = []
    _check(q, k, v, [bias], None, d ** -0.5, config=dict(cfg, _probe=probe))
    assert int(probe[0].sum()) == 1


def test_bound_not_taken_in_fp16(interpret):
    """fp16 keeps the online softmax under bound=True: P in fp16 could not hold the terms, down to
    2^-96, that a trusted bound allows (bf16 and fp32 share fp32's exponent range)."""
    gen = torch.Generator().manual_seed(73)
    q, k, v = (torch.randn(3, 2, 24, 16, generator=gen).half() for _ in range(3))
    probe = []
    out = _check(q, k, v, [], None, 0.25, config=dict(bound=True, BLOCK_M=16, BLOCK_N=16, _probe=probe))
    assert probe == []
    assert torch.equal(out, attention_triton(q, k, v, [], None, 0.25, config=dict(BLOCK_M=16, BLOCK_N=16)))


@pytest.mark.parametrize("rows", [1, 2, 4])
@pytest.mark.parametrize("d", [16, 32])
def test_sum_mma_matches_reference(interpret, d, rows):
    """config sum_mma=True (16-bit): the softmax denominator accumulates by an MMA of the rounded P
    with a tile of ones instead of a row sum on the CUDA cores. fp16 (the interpreter gets bf16
    wrong; `bound` with it is a GPU test), a pair bias shared by the rows, a key mask with a fully
    masked row, a ragged key block, the gate: the float64 reference's accuracy, and not the row
    sum's result to the bit (the path was taken)."""
    gen = torch.Generator().manual_seed(100 + d + rows)
    b, h, l = 5, 2, 37
    q, k, v = (torch.randn(b, h, l, d, generator=gen).half() for _ in range(3))
    bias = torch.randn(1, h, l, l, generator=gen).half()
    gate = torch.randn(b, h, l, d, generator=gen).half()
    mask = _key_mask(b, l, gen)
    tiles = dict(BLOCK_M=16, BLOCK_N=16, rows=rows)
    out = attention_triton(q, k, v, [bias], mask, d ** -0.5, gate=gate, config=dict(tiles, sum_mma=True))
    ref = _ref64(q, k, v, [bias], mask, d ** -0.5) * torch.sigmoid(gate.double())
    assert rel_err(out, ref) < TOL[torch.float16], rel_err(out, ref)
    assert not torch.equal(out, attention_triton(q, k, v, [bias], mask, d ** -0.5, gate=gate, config=tiles))


@pytest.mark.parametrize("d,dtype", [(8, torch.float16), (32, torch.float32)])
def test_sum_mma_not_taken_where_it_does_not_apply(interpret, d, dtype):
    """sum_mma changes nothing at head dim 8 (v's spare column already sums on the tensor cores) or
    in fp32 (its row sums stay on the CUDA cores): the same bits as without it."""
    gen = torch.Generator().manual_seed(110 + d)
    q, k, v = (torch.randn(3, 2, 24, d, generator=gen).to(dtype) for _ in range(3))
    bias = torch.randn(1, 2, 24, 24, generator=gen).to(dtype)
    tiles = dict(BLOCK_M=16, BLOCK_N=16)
    assert torch.equal(attention_triton(q, k, v, [bias], None, d ** -0.5, config=dict(tiles, sum_mma=True)),
                       attention_triton(q, k, v, [bias], None, d ** -0.5, config=tiles))


@pytest.mark.parametrize("rows", [2, 4])
@pytest.mark.parametrize("d", [16, 32])
def test_shared_bound_matches_reference(interpret, d, rows):
    """config shared_bound=True (with bound): one logit bound per query row for all of a program's
    batch rows (their largest), so the bias tile minus the bound is formed once a block. The pair
    attentions' pattern with a fully masked batch row (its tiles fall back), a ragged key block, an
    odd batch count, the gate: float64's accuracy, and not the per-row bound's bits (the path was
    taken). One row a program: the per-row bound's bits."""
    gen = torch.Generator().manual_seed(120 + d + rows)
    b, h, l = 9, 2, 37  # the fully masked row 0's program falls back whole: others share a bound
    q, k, v, g = (torch.randn(b, h, l, d, generator=gen) for _ in range(4))
    bias = 2.0 * torch.randn(1, h, l, l, generator=gen)
    mask = _key_mask(b, l, gen)
    tiles = dict(rows=rows, BLOCK_M=16, BLOCK_N=16, bound=True)
    probe = []
    out = attention_triton(q, k, v, [bias], mask, d ** -0.5, gate=g, config=dict(tiles, shared_bound=True, _probe=probe))
    ref = _ref64(q, k, v, [bias], mask, d ** -0.5) * torch.sigmoid(g.double())
    assert rel_err(out, ref) < TOL[torch.float32], rel_err(out, ref)
    assert 0 < int(probe[0].sum()) < probe[0].numel()
    assert not torch.equal(out, attention_triton(q, k, v, [bias], mask, d ** -0.5, gate=g, config=tiles))
    one = dict(tiles, rows=1)
    assert torch.equal(attention_triton(q, k, v, [bias], mask, d ** -0.5, config=dict(one, shared_bound=True)),
                       attention_triton(q, k, v, [bias], mask, d ** -0.5, config=one))
