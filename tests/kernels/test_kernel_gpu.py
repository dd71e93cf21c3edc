"""GPU tests (skipped without CUDA): compiled Triton kernels at real sizes, bf16/fp16/fp32, against a
float64 reference on the GPU. Shapes are the model's call sites at moderate N (the float64 reference
materialises the logits)."""
from __future__ import annotations

import pytest
import torch

from kernel_testlib import needs_cuda, rel_err, transition64, tri_mul_output64
from kernels.attention import attention, attention_reference, attention_triton
from kernels.layer_norm import layer_norm_reference, layer_norm_triton

pytestmark = needs_cuda

# bf16: inputs and the probabilities fed to the PV product are rounded to 8 bits (~4e-3 each);
# fp32 follows torch's matmul policy (IEEE unless TF32 is allowed).
TOL = {torch.bfloat16: 1.2e-2, torch.float16: 2e-3, torch.float32: 2e-5}


def _inputs(b, l, h, d, dtype, gen, lk=None, model_layout=True, n_pad=7):
    """q/k/v in the model's layout (views of [B, L, H, D]), pair bias from an [L, L, H] projection,
    key mask with padding at the end, and row 0 fully masked."""
    lk = lk or l
    dev = "cuda"

    def proj(n):
        x = torch.randn(b, n, h, d, generator=gen, device=dev).to(dtype)
        return x.transpose(-2, -3) if model_layout else x.transpose(-2, -3).contiguous()
    q, k, v = proj(l), proj(lk), proj(lk)
    bias = torch.randn(l, lk, h, generator=gen, device=dev).to(dtype).permute(2, 0, 1).unsqueeze(0)
    mask = torch.ones(b, 1, 1, lk, device=dev, dtype=dtype)
    mask[..., lk - n_pad:] = 0
    mask[0] = 0
    return q, k, v, bias, mask


def _gate(b, l, h, d, dtype, gen):
    """The gate [b, h, l, d] as the model passes it: a strided view of the second half of a fused
    [b, l, 2 * h * d] projection."""
    g = torch.randn(b, l, 2 * h * d, generator=gen, device="cuda").to(dtype)[..., h * d:]
    return g.unflatten(-1, (h, d)).transpose(-2, -3)


def _ref64(q, k, v, biases, mask, scale):
    return attention_reference(q.double(), k.double(), v.double(), [x.double() for x in biases],
                               None if mask is None else mask.double(), scale)


CASES = {  # name: (batch rows, L, heads, head dim, use bias)
    "triangle": (256, 256, 4, 32, True),
    "msa_row": (128, 384, 8, 32, True),
    "extra_msa_row": (512, 301, 8, 8, True),
    "template_triangle": (200, 200, 4, 16, True),
    "msa_column": (96, 512, 8, 32, False),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_attention_call_sites(compiled, case, dtype):
    b, l, h, d, use_bias = CASES[case]
    gen = torch.Generator(device="cuda").manual_seed(len(case) * 7 + d)
    q, k, v, bias, mask = _inputs(b, l, h, d, dtype, gen)
    biases = [bias] if use_bias else []
    out = attention_triton(q, k, v, biases, mask, d ** -0.5)
    ref = _ref64(q, k, v, biases, mask, d ** -0.5)
    err = rel_err(out, ref)
    assert err < TOL[dtype], f"{case} {dtype}: relative error {err:.2e}"
    # the public switch takes the same path
    torch.testing.assert_close(attention(q, k, v, biases, mask, d ** -0.5, backend="triton"), out, rtol=0, atol=0)
    if d < 16:  # small heads: the mask and the denominator in the padded columns, or not (config spare)
        err = rel_err(attention_triton(q, k, v, biases, mask, d ** -0.5, config=dict(spare=False)), ref)
        assert err < TOL[dtype], f"{case} {dtype} spare=False: relative error {err:.2e}"


@pytest.mark.parametrize("case", ["triangle", "extra_msa_row", "msa_column"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_attention_gate_epilogue(compiled, case, dtype):
    """The gate applied by the kernel (o * sigmoid(g), g a strided view like the model's fused
    projection) against the float64 reference times sigmoid(g)."""
    b, l, h, d, use_bias = CASES[case]
    gen = torch.Generator(device="cuda").manual_seed(len(case) * 11 + d)
    q, k, v, bias, mask = _inputs(b, l, h, d, dtype, gen)
    g = _gate(b, l, h, d, dtype, gen)
    biases = [bias] if use_bias else []
    out = attention_triton(q, k, v, biases, mask, d ** -0.5, gate=g)
    err = rel_err(out, _ref64(q, k, v, biases, mask, d ** -0.5) * torch.sigmoid(g.double()))
    assert err < TOL[dtype], f"{case} {dtype}: relative error {err:.2e}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_attention_feature_major_small_heads(compiled, dtype):
    """The extra MSA's 8-channel heads as the model forms them: q/k/v/gate feature-major views of
    a transposed GEMM output [B, 4*H*D, L]; gate in the epilogue; output laid out [B, L, H, D]."""
    b, l, h, d = 512, 301, 8, 8
    gen = torch.Generator(device="cuda").manual_seed(77)
    yt = torch.randn(b, 4 * h * d, l, generator=gen, device="cuda").to(dtype)
    q, k, v, g = (t.unflatten(-2, (h, d)).transpose(-1, -2) for t in yt.split(h * d, dim=-2))
    _, _, _, bias, mask = _inputs(b, l, h, d, dtype, gen)
    out = attention_triton(q, k, v, [bias], mask, d ** -0.5, gate=g)
    err = rel_err(out, _ref64(q, k, v, [bias], mask, d ** -0.5) * torch.sigmoid(g.double()))
    assert err < TOL[dtype], f"{dtype}: relative error {err:.2e}"
    assert out.transpose(-2, -3).is_contiguous()


@pytest.mark.parametrize("rows", [1, 2, 4])
@pytest.mark.parametrize("block", [(64, 64), (128, 64), (128, 128)])
def test_attention_configs(compiled, rows, block):
    gen = torch.Generator(device="cuda").manual_seed(rows * 100 + block[1])
    q, k, v, bias, mask = _inputs(67, 333, 4, 32, torch.float16, gen, model_layout=False)
    cfg = dict(rows=rows, BLOCK_M=block[0], BLOCK_N=block[1], num_warps=8 if block[0] == 128 else 4)
    out = attention_triton(q, k, v, [bias], mask, 32 ** -0.5, config=cfg)
    assert rel_err(out, _ref64(q, k, v, [bias], mask, 32 ** -0.5)) < TOL[torch.float16]


@pytest.mark.parametrize("rows", [2, 4])
@pytest.mark.parametrize("case", ["triangle", "extra_msa_row", "template_triangle"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("masked", [True, False])
def test_attention_paired_rows(compiled, case, dtype, rows, masked):
    """config paired=True (both rows' logits, then both softmax steps; the compiler may interleave
    them): the float64 reference's accuracy, and the row-after-row loop's result to the bit. Without
    a key mask, bf16 triangle attention is the default's `bound` form (paired by default since
    session 21), at two rows a program and at four (measured slower in session 22, still an option)."""
    b, l, h, d, _ = CASES[case]
    gen = torch.Generator(device="cuda").manual_seed(d * 3 + 5)
    q, k, v, bias, mask = _inputs(b - 1, l, h, d, dtype, gen)  # odd batch: the clamped last row
    mask = mask if masked else None
    out = attention_triton(q, k, v, [bias], mask, d ** -0.5, config=dict(rows=rows, paired=True))
    assert rel_err(out, _ref64(q, k, v, [bias], mask, d ** -0.5)) < TOL[dtype]
    seq = attention_triton(q, k, v, [bias], mask, d ** -0.5, config=dict(rows=rows, paired=False))
    torch.testing.assert_close(out, seq, rtol=0, atol=0)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("masked", [True, False])
def test_attention_bound(compiled, case, dtype, masked):
    """config bound=True (softmax against each row's precomputed logit bound, tiles the bound can't
    serve recomputed online) at every call site, with the gate: the float64 reference's accuracy.
    With the key mask (row 0 fully masked: its tiles fall back); without (nothing falls back on
    these random inputs)."""
    b, l, h, d, use_bias = CASES[case]
    gen = torch.Generator(device="cuda").manual_seed(len(case) * 13 + d)
    q, k, v, bias, mask = _inputs(b, l, h, d, dtype, gen)
    mask = mask if masked else None
    g = _gate(b, l, h, d, dtype, gen)
    biases = [bias] if use_bias else []
    probe = []
    out = attention_triton(q, k, v, biases, mask, d ** -0.5, gate=g, config=dict(bound=True, _probe=probe))
    err = rel_err(out, _ref64(q, k, v, biases, mask, d ** -0.5) * torch.sigmoid(g.double()))
    assert err < TOL[dtype], f"{case} {dtype}: relative error {err:.2e}"
    flagged = int(probe[0].sum())
    assert (flagged > 0) if masked else (flagged == 0)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_attention_default_takes_bound_in_bf16_at_head_dim_32_unmasked(compiled, case, dtype):
    """With no config, bf16 at head dim 32 without a key mask takes the `bound` loop (the tile flags
    it leaves behind show it ran); with a key mask (row 0 fully masked), or at any other dtype or
    head dim, the online loop. Both at the float64 reference's accuracy."""
    b, l, h, d, use_bias = CASES[case]
    gen = torch.Generator(device="cuda").manual_seed(len(case) * 19 + d)
    q, k, v, bias, mask = _inputs(b, l, h, d, dtype, gen)
    biases = [bias] if use_bias else []
    for m in (mask, None):
        probe = []
        out = attention_triton(q, k, v, biases, m, d ** -0.5, config=dict(_probe=probe))
        err = rel_err(out, _ref64(q, k, v, biases, m, d ** -0.5))
        assert err < TOL[dtype], f"{case} {dtype}: relative error {err:.2e}"
        takes = dtype == torch.bfloat16 and d == 32 and m is None
        assert len(probe) == (1 if takes else 0), (case, dtype, m is None, len(probe))


@pytest.mark.parametrize("case", ["triangle", "msa_row", "template_triangle", "msa_column"])
@pytest.mark.parametrize("bound", [False, True])
@pytest.mark.parametrize("masked", [True, False])
def test_attention_sum_mma(compiled, case, bound, masked):
    """config sum_mma=True (the softmax denominator by an MMA of P with ones), bf16, online and with
    `bound`, with and without the key mask (row 0 fully masked: with `bound` its tiles fall back),
    the gate: the float64 reference's accuracy."""
    b, l, h, d, use_bias = CASES[case]
    gen = torch.Generator(device="cuda").manual_seed(len(case) * 23 + d)
    q, k, v, bias, mask = _inputs(b, l, h, d, torch.bfloat16, gen)
    mask = mask if masked else None
    g = _gate(b, l, h, d, torch.bfloat16, gen)
    biases = [bias] if use_bias else []
    probe = []
    out = attention_triton(q, k, v, biases, mask, d ** -0.5, gate=g,
                           config=dict(sum_mma=True, bound=bound, _probe=probe))
    err = rel_err(out, _ref64(q, k, v, biases, mask, d ** -0.5) * torch.sigmoid(g.double()))
    assert err < TOL[torch.bfloat16], f"{case}: relative error {err:.2e}"
    if bound:
        assert (int(probe[0].sum()) > 0) == masked


@pytest.mark.parametrize("case", ["triangle", "msa_row", "template_triangle"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("masked", [True, False])
def test_attention_shared_bound(compiled, case, dtype, masked):
    """config shared_bound=True (one logit bound for both rows of a program) with bound, and sum_mma
    (bf16 only), with and without the key mask (row 0 fully masked: its tiles fall back), the
    gate: the float64 reference's accuracy."""
    b, l, h, d, use_bias = CASES[case]
    gen = torch.Generator(device="cuda").manual_seed(len(case) * 29 + d)
    q, k, v, bias, mask = _inputs(b, l, h, d, dtype, gen)
    mask = mask if masked else None
    g = _gate(b, l, h, d, dtype, gen)
    probe = []
    out = attention_triton(q, k, v, [bias], mask, d ** -0.5, gate=g,
                           config=dict(bound=True, shared_bound=True, sum_mma=True, _probe=probe))
    err = rel_err(out, _ref64(q, k, v, [bias], mask, d ** -0.5) * torch.sigmoid(g.double()))
    assert err < TOL[dtype], f"{case} {dtype}: relative error {err:.2e}"
    assert (int(probe[0].sum()) > 0) == masked


@pytest.mark.parametrize("case", ["triangle", "extra_msa_row"])
@pytest.mark.parametrize("maxnreg", [96, 128, 168])
def test_attention_register_cap(compiled, case, maxnreg):
    """config maxnreg (ptxas's register cap; spills where the kernel needs more) keeps the results."""
    b, l, h, d, _ = CASES[case]
    gen = torch.Generator(device="cuda").manual_seed(maxnreg + d)
    q, k, v, bias, mask = _inputs(b, l, h, d, torch.bfloat16, gen)
    out = attention_triton(q, k, v, [bias], mask, d ** -0.5, config=dict(maxnreg=maxnreg))
    assert rel_err(out, _ref64(q, k, v, [bias], mask, d ** -0.5)) < TOL[torch.bfloat16]


def test_attention_fp16_cross_and_64(compiled):
    gen = torch.Generator(device="cuda").manual_seed(5)
    q, k, v, bias, mask = _inputs(9, 77, 2, 64, torch.float16, gen, lk=130)
    out = attention_triton(q, k, v, [bias], mask, 0.125)
    assert rel_err(out, _ref64(q, k, v, [bias], mask, 0.125)) < TOL[torch.float16]


def test_attention_offsets_beyond_int32(compiled):
    """Batch offsets past 2**31 elements (reached at N=4096 in triangle attention)."""
    n = 2 ** 31 + 2 ** 16
    buf = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    l, d = 64, 32
    shape, stride = (2, 2, l, d), (2 ** 31 - 2 ** 14, l * d, d, 1)
    q = buf.as_strided(shape, stride, 0)
    k = buf.as_strided(shape, stride, 2 ** 13)
    v = buf.as_strided(shape, stride, 2 ** 14)
    bias = torch.randn(1, 2, l, l, device="cuda", dtype=torch.bfloat16)
    out = attention_triton(q, k, v, [bias], None, d ** -0.5)
    ref = _ref64(q, k, v, [bias], None, d ** -0.5)
    assert rel_err(out[1], ref[1]) < TOL[torch.bfloat16]
    del buf


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
@pytest.mark.parametrize("c", [128, 256, 64, 384])
def test_layer_norm(compiled, dtype, c):
    gen = torch.Generator(device="cuda").manual_seed(c)
    x = (torch.randn(301, 257, c, generator=gen, device="cuda") * 2 + 0.5).to(dtype)
    w = torch.randn(c, generator=gen, device="cuda")
    b = torch.randn(c, generator=gen, device="cuda")
    y = layer_norm_triton(x, w, b)
    ref = layer_norm_reference(x.double(), w.double(), b.double())
    tol = {torch.bfloat16: 8e-3, torch.float16: 1e-3, torch.float32: 1e-6}[dtype]
    assert rel_err(y, ref) < tol


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_layer_norm_transposed_view(compiled, dtype):
    """Triangle attention's ending node: LN of a row chunk of z.transpose(0, 1), read in place."""
    gen = torch.Generator(device="cuda").manual_seed(11)
    z = (torch.randn(517, 517, 128, generator=gen, device="cuda") * 2 + 0.5).to(dtype)
    w, b = torch.randn(128, generator=gen, device="cuda"), torch.randn(128, generator=gen, device="cuda")
    x = z.transpose(0, 1)[100:333]
    y = layer_norm_triton(x, w, b)
    ref = layer_norm_reference(x.double(), w.double(), b.double())
    assert y.is_contiguous() and rel_err(y, ref) < {torch.bfloat16: 8e-3, torch.float32: 1e-6}[dtype]


def test_layer_norm_beyond_int32(compiled):
    rows = 2 ** 31 // 128 + 1000
    x = torch.randn(rows, 128, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(128, device="cuda")
    y = layer_norm_triton(x, w, None)
    tail = slice(rows - 2000, rows)
    assert rel_err(y[tail], layer_norm_reference(x[tail].double(), w.double(), None)) < 8e-3


def test_attention_inner_offsets_beyond_int32(compiled):
    """Offsets inside one batch row past 2**31 elements: queries/keys 4.2e6 elements apart (an MSA
    column attention over 512 sequences of a [S, N, H, D] tensor at N = 16,500), the launcher's
    int64 variant."""
    l, d, step = 512, 32, 16500 * 256
    buf = torch.randn((l - 1) * step + 3 * d, device="cuda", dtype=torch.bfloat16)
    shape, stride = (1, 1, l, d), (0, 0, step, 1)
    q, k, v = (buf.as_strided(shape, stride, i * d) for i in range(3))
    out = attention_triton(q, k, v, [], None, d ** -0.5)
    assert rel_err(out, _ref64(q, k, v, [], None, d ** -0.5)) < TOL[torch.bfloat16]
    del buf


def test_layer_norm_channel_major_beyond_int32(compiled):
    """dim=0 over a row block of a [128, n, N] product whose channels are n*N = 1.7e7 apart (N = 4,112
    and beyond): channel offsets past 2**31 elements."""
    c, n, n_all = 128, 4, 2 ** 31 // (127 * 4) + 64
    p = torch.randn(c, n, n_all, device="cuda", dtype=torch.bfloat16)
    w, b = torch.randn(c, device="cuda"), torch.randn(c, device="cuda")
    x = p[:, 1:3]
    y = layer_norm_triton(x, w, b, dim=0)
    ref = layer_norm_reference(x.double().movedim(0, -1), w.double(), b.double()).movedim(-1, 0)
    assert rel_err(y, ref) < 8e-3
    del p


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_gated_projection(compiled, dtype):
    """Triangle multiplication's fused gated projection at a real row block (256 rows x N=512,
    C_z=128, a 64-channel slice), against float64."""
    from kernels.gated_projection import gated_projection_triton
    gen = torch.Generator(device="cuda").manual_seed(11)
    p, c_in, c_all, c0, c1 = 256 * 512, 128, 128, 32, 96
    x = torch.randn(p, c_in, generator=gen, device="cuda").to(dtype)
    w_p, w_g = (torch.randn(c_in, c_all, generator=gen, device="cuda").to(dtype) * c_in ** -0.5 for _ in range(2))
    b_p, b_g = (torch.randn(c_all, generator=gen, device="cuda").to(dtype) for _ in range(2))
    mask = (torch.rand(p, generator=gen, device="cuda") > 0.1).to(dtype)
    out = torch.empty(c1 - c0, p, device="cuda", dtype=dtype)
    gated_projection_triton(x, w_p[:, c0:c1], b_p[c0:c1], w_g[:, c0:c1], b_g[c0:c1], mask, out)
    xd = x.double()
    want = (mask.double()[:, None] * (xd @ w_p[:, c0:c1].double() + b_p[c0:c1].double())
            * torch.sigmoid(xd @ w_g[:, c0:c1].double() + b_g[c0:c1].double())).t()
    assert rel_err(out, want) < {torch.bfloat16: 8e-3, torch.float32: 1e-5}[dtype]


@pytest.mark.parametrize("cfg", [dict(c_fast=False), dict(c_fast=True, BLOCK_C=128, BLOCK_P=64, num_warps=4),
                                 dict(persistent=132), dict(persistent=396, BLOCK_P=64, num_warps=4, num_stages=3),
                                 dict(persistent=264, BLOCK_P=64, num_warps=4, num_stages=3)])
def test_gated_projection_tile_variants(compiled, cfg):
    """The gated projection's grid orders and the persistent form (bf16, a ragged position count, all
    128 channels) against float64."""
    from kernels.gated_projection import gated_projection_triton
    gen = torch.Generator(device="cuda").manual_seed(16)
    p, c = 131 * 517, 128
    x = torch.randn(p, c, generator=gen, device="cuda").bfloat16()
    w_p, w_g = ((torch.randn(c, c, generator=gen, device="cuda") * c ** -0.5).bfloat16() for _ in range(2))
    b_p, b_g = (torch.randn(c, generator=gen, device="cuda").bfloat16() for _ in range(2))
    mask = (torch.rand(p, generator=gen, device="cuda") > 0.1).bfloat16()
    out = gated_projection_triton(x, w_p, b_p, w_g, b_g, mask, torch.empty(c, p, device="cuda", dtype=torch.bfloat16),
                                  config=cfg)
    xd = x.double()
    want = (mask.double()[:, None] * (xd @ w_p.double() + b_p.double()) * torch.sigmoid(xd @ w_g.double() + b_g.double())).t()
    assert rel_err(out, want) < 8e-3


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("c", [128, 64])
def test_gated_projection_with_layer_norm(compiled, dtype, c):
    """ln=: bf16 normalises each tile inside the persistent kernel (fuse_norm), fp32 runs the
    LayerNorm kernel first; raw pair entries (offset and scaled) at a ragged real row block, against
    float64 of the LayerNorm'd input (rounded to the storage dtype, as the network's LayerNorm
    output is)."""
    from kernels.gated_projection import gated_projection_triton
    from kernels.layer_norm import layer_norm_reference
    gen = torch.Generator(device="cuda").manual_seed(17)
    p = 131 * 517
    x = (torch.randn(p, c, generator=gen, device="cuda") * 3 + torch.randn(c, generator=gen, device="cuda")).to(dtype)
    ln = ((torch.randn(c, generator=gen, device="cuda") * 0.3 + 1).to(dtype),
          (torch.randn(c, generator=gen, device="cuda") * 0.2).to(dtype), 1e-5)
    w_p, w_g = ((torch.randn(c, c, generator=gen, device="cuda") * c ** -0.5).to(dtype) for _ in range(2))
    b_p, b_g = (torch.randn(c, generator=gen, device="cuda").to(dtype) for _ in range(2))
    mask = (torch.rand(p, generator=gen, device="cuda") > 0.1).to(dtype)
    out = gated_projection_triton(x, w_p, b_p, w_g, b_g, mask, torch.empty(c, p, device="cuda", dtype=dtype), ln=ln,
                                  config=dict(fuse_norm=True))
    xd = layer_norm_reference(x, *ln).double()
    want = (mask.double()[:, None] * (xd @ w_p.double() + b_p.double()) * torch.sigmoid(xd @ w_g.double() + b_g.double())).t()
    assert rel_err(out, want) < {torch.bfloat16: 8e-3, torch.float32: 1e-5}[dtype]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("k,c,transposed", [(128, 128, False), (128, 128, True), (256, 256, False), (64, 64, False)])
def test_linear_residual(compiled, dtype, k, c, transposed):
    """An attention's output projection added into its residual in place (triangle attention's 128,
    the MSA's 256, the extra MSA's 64 channels) on 517 x 131 rows, the residual contiguous or a
    transposed column block (two strided row levels), against float64; the rest untouched."""
    from kernels.linear_residual import linear_residual_triton
    gen = torch.Generator(device="cuda").manual_seed(17)
    n, m = 517, 131
    x = torch.randn(n * m, k, generator=gen, device="cuda").to(dtype)
    w = (torch.randn(k, c, generator=gen, device="cuda") * k ** -0.5).to(dtype)
    b = torch.randn(c, generator=gen, device="cuda").to(dtype)
    big = (torch.randn(m + 20, n, c, generator=gen, device="cuda") * 2).to(dtype)  # stored [M, N, C]
    before = big.clone()
    out = big[10:10 + m].transpose(0, 1) if transposed else big[10:10 + m]  # [N, m, C] or [m, N, C]
    want = out.double() + (x.double() @ w.double() + b.double()).view(out.shape)
    assert linear_residual_triton(x, w, b, out) is out
    assert rel_err(out, want) < {torch.bfloat16: 8e-3, torch.float32: 1e-5}[dtype]
    assert torch.equal(big[:10], before[:10]) and torch.equal(big[10 + m:], before[10 + m:])


def _norm_project_case(n, c, h, dtype, seed):
    """A random [n, n, C] pair (or MSA), LayerNorm parameters, W [C, H] and a bias [H] on the GPU."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    z = (torch.randn(n, n, c, generator=gen, device="cuda") * 2 + 0.3).to(dtype)
    ln = ((1 + 0.3 * torch.randn(c, generator=gen, device="cuda")).to(dtype),
          (0.2 * torch.randn(c, generator=gen, device="cuda")).to(dtype), 1e-5)
    w = (torch.randn(c, h, generator=gen, device="cuda") * c ** -0.5).to(dtype)
    return z, ln, w, torch.randn(h, generator=gen, device="cuda").to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("c,h,transposed", [(128, 4, False), (128, 8, False), (128, 4, True), (64, 4, False)])
def test_norm_project(compiled, dtype, c, h, transposed):
    """The pair bias LN(z) W written head-major, on rows 40:104 of a [517, 517, C] pair or of its
    transpose (the ending node), into that row block of an [H, N, N] bias, against float64."""
    from kernel_testlib import layer_norm64
    from kernels.norm_project import norm_project_triton
    n = 517
    z, ln, w, _ = _norm_project_case(n, c, h, dtype, seed=18)
    x = (z.transpose(0, 1) if transposed else z)[40:104]
    bias = torch.zeros(h, n, n, device="cuda", dtype=dtype)
    norm_project_triton(x, ln, w, bias[:, 40:104].reshape(h, -1))
    want = (layer_norm64(x, *ln) @ w.double()).reshape(-1, h).t()
    assert rel_err(bias[:, 40:104].reshape(h, -1), want) < {torch.bfloat16: 8e-3, torch.float32: 1e-5}[dtype]
    assert bias[:, :40].abs().sum() == 0 and bias[:, 104:].abs().sum() == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("c,h,transposed", [(128, 512, False), (128, 512, True), (256, 1024, False),
                                            (256, 1024, True), (64, 256, False)])
def test_norm_project_row_major(compiled, dtype, c, h, transposed):
    """The attentions' inputs LN(x) W + b ([*, 4 H D], the gate's bias in the epilogue) on rows 40:104
    of a [517, 517, C] pair (or MSA) or of its transpose, against float64."""
    from kernel_testlib import layer_norm64
    from kernels.norm_project import norm_project_triton
    z, ln, w, b = _norm_project_case(517, c, h, dtype, seed=19)
    x = (z.transpose(0, 1) if transposed else z)[40:104]
    out = torch.empty(*x.shape[:-1], h, device="cuda", dtype=dtype)
    norm_project_triton(x, ln, w, out, bias=b, head_major=False)
    want = layer_norm64(x, *ln) @ w.double() + b.double()
    assert rel_err(out, want) < {torch.bfloat16: 8e-3, torch.float32: 1e-5}[dtype]


def test_gated_projection_channel_offsets_beyond_int32(compiled):
    """The output block of a [128, n, N] projection whose channels are n*N = 1.7e7 apart."""
    from kernels.gated_projection import gated_projection_triton
    c, n, n_all = 128, 4, 2 ** 31 // (127 * 4) + 64
    buf = torch.zeros(c, n, n_all, device="cuda", dtype=torch.bfloat16)
    p = n_all  # one row: r0 = 2
    x = torch.randn(p, 128, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(128, c, device="cuda", dtype=torch.bfloat16) * 128 ** -0.5
    b = torch.randn(c, device="cuda", dtype=torch.bfloat16)
    mask = torch.ones(p, device="cuda", dtype=torch.bfloat16)
    out = buf[:, 2:3].reshape(c, -1)
    gated_projection_triton(x, w, b, w, b, mask, out)
    xd = x.double()
    y = xd @ w.double() + b.double()
    assert rel_err(buf[:, 2].reshape(c, -1), (y * torch.sigmoid(y)).t()) < 8e-3
    assert buf[:, :2].abs().sum() == 0 and buf[:, 3:].abs().sum() == 0
    del buf


def _tri_mul_output_case(c, cz, prod, r0, r1, dtype, gen):
    dev = "cuda"
    p = prod[:, r0:r1]
    z = (torch.randn(r1 - r0, prod.shape[2], cz, generator=gen, device=dev) * 2 - 0.3).to(dtype)
    ln_p = ((1 + 0.3 * torch.randn(c, generator=gen, device=dev)).to(dtype),
            (0.2 * torch.randn(c, generator=gen, device=dev)).to(dtype), 1e-5)
    ln_z = ((1 + 0.3 * torch.randn(cz, generator=gen, device=dev)).to(dtype),
            (0.2 * torch.randn(cz, generator=gen, device=dev)).to(dtype), 1e-5)
    w_out = (torch.randn(c, cz, generator=gen, device=dev) * c ** -0.5).to(dtype)
    w_g = (torch.randn(cz, cz, generator=gen, device=dev) * cz ** -0.5).to(dtype)
    b_out, b_g = (torch.randn(cz, generator=gen, device=dev).to(dtype) for _ in range(2))
    return p, z, ln_p, w_out, b_out, ln_z, w_g, b_g


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("c", [128, 64])
@pytest.mark.parametrize("config", [None, {"split": 4}, {"split": 2, "BLOCK_P": 128, "num_warps": 8}],
                         ids=["default", "split4", "split2_p128"])
def test_tri_mul_output(compiled, dtype, c, config):
    """Triangle multiplication's fused output stage at a real row block (rows 40:104 of a
    [c, 128, 517] product; C_z = c: 128 the Evoformer, 64 the template stack), in place over z,
    against float64; the default and the `split` forms the kernel bench times."""
    from kernels.tri_mul_output import tri_mul_output_triton
    gen = torch.Generator(device="cuda").manual_seed(12)
    prod = (torch.randn(c, 128, 517, generator=gen, device="cuda") * 3 + 0.5).to(dtype)
    args = _tri_mul_output_case(c, c, prod, 40, 104, dtype, gen)
    want = tri_mul_output64(*args)
    z = args[1]
    tri_mul_output_triton(args[0], z, *args[2:], z, config=config)
    assert rel_err(z, want) < {torch.bfloat16: 8e-3, torch.float32: 1e-5}[dtype]


def test_tri_mul_output_channel_offsets_beyond_int32(compiled):
    """A row of a [128, n, N] product whose channels are n*N = 1.7e7 apart (past 2**31 elements)."""
    from kernels.tri_mul_output import tri_mul_output_triton
    c, n, n_all = 128, 4, 2 ** 31 // (127 * 4) + 64
    prod = torch.empty(c, n, n_all, device="cuda", dtype=torch.bfloat16)
    prod[:, 2].normal_()
    gen = torch.Generator(device="cuda").manual_seed(13)
    args = _tri_mul_output_case(c, 128, prod, 2, 3, torch.bfloat16, gen)
    out = tri_mul_output_triton(*args, torch.empty_like(args[1]))
    assert rel_err(out, tri_mul_output64(*args)) < 8e-3
    del prod


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("c,factor", [(256, 4), (128, 4), (64, 4), (64, 2)])
def test_transition(compiled, dtype, c, factor):
    """The fused transition at the network's widths (MSA 256, pair 128, extra MSA 64, template pair
    64 with factor 2) on 3 x 517 positions (a ragged last tile), in place, against float64."""
    from kernels.transition import transition_triton
    gen = torch.Generator(device="cuda").manual_seed(14)
    dev = "cuda"
    x = (torch.randn(3, 517, c, generator=gen, device=dev) * 2 + 0.3).to(dtype)
    ln = ((1 + 0.3 * torch.randn(c, generator=gen, device=dev)).to(dtype),
          (0.2 * torch.randn(c, generator=gen, device=dev)).to(dtype), 1e-5)
    w1 = (torch.randn(c, factor * c, generator=gen, device=dev) * c ** -0.5).to(dtype)
    b1 = (0.5 * torch.randn(factor * c, generator=gen, device=dev)).to(dtype)
    w2 = (torch.randn(factor * c, c, generator=gen, device=dev) * (factor * c) ** -0.5).to(dtype)
    b2 = torch.randn(c, generator=gen, device=dev).to(dtype)
    want = transition64(x, ln, w1, b1, w2, b2)
    transition_triton(x, ln, w1, b1, w2, b2, x)
    assert rel_err(x, want) < {torch.bfloat16: 8e-3, torch.float32: 1e-5}[dtype]


def test_transition_offsets_beyond_int32(compiled):
    """The last positions of a [2**31 / 128 + 1,000, 128] pair (offsets past 2**31 elements)."""
    from kernels.transition import transition_triton
    c, rows = 128, 2 ** 31 // 128 + 1000
    x = torch.zeros(rows, c, device="cuda", dtype=torch.bfloat16)
    x[-700:].normal_()
    gen = torch.Generator(device="cuda").manual_seed(15)
    ln = (torch.ones(c, device="cuda", dtype=torch.bfloat16), torch.zeros(c, device="cuda", dtype=torch.bfloat16), 1e-5)
    w1 = (torch.randn(c, 4 * c, generator=gen, device="cuda") * c ** -0.5).bfloat16()
    w2 = (torch.randn(4 * c, c, generator=gen, device="cuda") * (4 * c) ** -0.5).bfloat16()
    b1, b2 = torch.zeros(4 * c, device="cuda", dtype=torch.bfloat16), torch.zeros(c, device="cuda", dtype=torch.bfloat16)
    want = transition64(x[-700:], ln, w1, b1, w2, b2)
    transition_triton(x, ln, w1, b1, w2, b2, x)
    assert rel_err(x[-700:], want) < 8e-3
    del x


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_opm_projection(compiled, dtype):
    """The outer product mean's projection at a real row block (64 rows of N = 1,031, c = 32)."""
    from kernels.opm_projection import opm_projection_triton
    gen = torch.Generator(device="cuda").manual_seed(21)
    n, n_res, c = 64, 1031, 32
    o = torch.randn(n, c, n_res, c, generator=gen, device="cuda").to(dtype)
    w = (torch.randn(c * c, 128, generator=gen, device="cuda") / 32).to(dtype)
    b = torch.randn(128, generator=gen, device="cuda").to(dtype)
    norm = (torch.randint(0, 500, (n, n_res), generator=gen, device="cuda").float() + 1e-3).to(dtype)
    got = opm_projection_triton(o, w, b, norm)
    want = (o.double().permute(0, 2, 1, 3).reshape(n, n_res, -1) @ w.double() + b.double()) / norm.double()[..., None]
    assert rel_err(got, want) < {torch.bfloat16: 8e-3, torch.float32: 1e-5}[dtype]


def test_opm_projection_adds_into_a_column_block(compiled):
    """add_to: the projection added into a column block of the pair's rows (bf16), in place."""
    from kernels.opm_projection import opm_projection_triton
    gen = torch.Generator(device="cuda").manual_seed(22)
    n, n_res, c = 48, 517, 32
    o = torch.randn(n, c, n_res, c, generator=gen, device="cuda").bfloat16()
    w = (torch.randn(c * c, 128, generator=gen, device="cuda") / 32).bfloat16()
    b = torch.randn(128, generator=gen, device="cuda").bfloat16()
    norm = (torch.randint(0, 500, (n, n_res), generator=gen, device="cuda").float() + 1e-3).bfloat16()
    pair = torch.randn(n, 1031, 128, generator=gen, device="cuda").bfloat16()
    before = pair.clone()
    block = pair[:, 300:300 + n_res]
    want = block.double() + (o.double().permute(0, 2, 1, 3).reshape(n, n_res, -1) @ w.double() + b.double()) \
        / norm.double()[..., None]
    assert opm_projection_triton(o, w, b, norm, add_to=block) is block
    assert rel_err(block, want) < 8e-3
    assert torch.equal(pair[:, :300], before[:, :300]) and torch.equal(pair[:, 300 + n_res:], before[:, 300 + n_res:])


def test_opm_projection_offsets_beyond_int32(compiled):
    """The last rows of an outer product past 2**31 elements ([1,500, 32, 1,500, 32] bf16)."""
    from kernels.opm_projection import opm_projection_triton
    n, c = 1500, 32
    o = torch.empty(n, c, n, c, device="cuda", dtype=torch.bfloat16)
    o[-3:].normal_()
    w = torch.randn(c * c, 128, device="cuda", dtype=torch.bfloat16) / 32
    b = torch.randn(128, device="cuda", dtype=torch.bfloat16)
    norm = torch.full((n, n), 3.0, device="cuda", dtype=torch.bfloat16)
    got = opm_projection_triton(o, w, b, norm)
    tail = o[-3:].double().permute(0, 2, 1, 3).reshape(3, n, -1)
    assert rel_err(got[-3:], (tail @ w.double() + b.double()) / 3.0) < 8e-3
    del o
