"""Triangle multiplication's output stage, out = z + (LN_p(p)^T W_out + b_out) * sigmoid(LN_z(z) W_g +
b_g): the Triton kernel (CPU interpreter, fp32/fp16) and the PyTorch reference against float64; the
product as a row block of a larger channel-major buffer, odd lengths, in place over z, channel
widths of the monomer (128/128 at the GPU; 16-64 here), the dispatcher's fallback, and the network's
triangle multiplication through it."""
from __future__ import annotations

import pytest
import torch

from kernel_testlib import assert_pair_matches, needs_triton, rel_err, tri_mul_output64
from kernels.tri_mul_output import tri_mul_output, tri_mul_output_reference, tri_mul_output_triton

pytestmark = needs_triton

TOL = {torch.float32: 2e-6, torch.float16: 2e-3}


def _case(c, cz, n_rows, r0, r1, n_all, dtype, seed):
    """p: rows r0:r1 of a [c, n_rows, n_all] product (channels n_rows*n_all apart); z [r, N, C_z]."""
    gen = torch.Generator().manual_seed(seed)
    prod = (torch.randn(c, n_rows, n_all, generator=gen) * 3 + 0.5).to(dtype)
    p = prod[:, r0:r1]
    z = (torch.randn(r1 - r0, n_all, cz, generator=gen) * 2 - 0.3).to(dtype)
    ln_p = (1 + 0.3 * torch.randn(c, generator=gen), 0.2 * torch.randn(c, generator=gen), 1e-5)
    ln_z = (1 + 0.3 * torch.randn(cz, generator=gen), 0.2 * torch.randn(cz, generator=gen), 1e-5)
    w_out = torch.randn(c, cz, generator=gen) * c ** -0.5
    w_g = torch.randn(cz, cz, generator=gen) * cz ** -0.5
    b_out, b_g = torch.randn(cz, generator=gen), torch.randn(cz, generator=gen)
    args = (p, z, (ln_p[0].to(dtype), ln_p[1].to(dtype), 1e-5), w_out.to(dtype), b_out.to(dtype),
            (ln_z[0].to(dtype), ln_z[1].to(dtype), 1e-5), w_g.to(dtype), b_g.to(dtype))
    return args, tri_mul_output64(*args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("c,cz,n_rows,r0,r1,n_all", [(16, 32, 5, 1, 4, 7), (32, 16, 3, 0, 3, 11), (64, 64, 4, 2, 3, 5)])
def test_matches_float64(interpret, dtype, c, cz, n_rows, r0, r1, n_all):
    args, want = _case(c, cz, n_rows, r0, r1, n_all, dtype, seed=c + n_all)
    assert_pair_matches(tri_mul_output_triton, tri_mul_output_reference, args,
                        torch.full_like(args[1], float("nan")), want, TOL[dtype])


def test_in_place_over_z(interpret):
    """out is z itself (the network's in-place update): same as writing a separate tensor (the
    kernel reads z twice, the second time before its store over it)."""
    args, want = _case(32, 32, 6, 1, 5, 9, torch.float32, seed=4)
    apart = tri_mul_output_triton(*args, torch.empty_like(args[1]))
    z = args[1].clone()
    got = tri_mul_output_triton(args[0], z, *args[2:], z)
    assert got is z
    torch.testing.assert_close(z, apart, rtol=0, atol=0)
    assert rel_err(z, want) < TOL[torch.float32]


@pytest.mark.parametrize("split", [2, 4])
def test_split_channels_same_values(interpret, split):
    """`split`: both LayerNorms first, then the output in slices of C_z / split channels. The same
    dots column by column, so the whole-width form's values up to the order of the dots' sums (the
    interpreter's matmul blocks a column slice differently), in place too (each slice's z is read
    before its store, and the LN of z was taken from all of z before any store)."""
    args, want = _case(32, 64, 6, 1, 5, 9, torch.float32, seed=11)
    whole = tri_mul_output_triton(*args, torch.empty_like(args[1]))
    z = args[1].clone()
    got = tri_mul_output_triton(args[0], z, *args[2:], z, config={"split": split})
    assert rel_err(got, whole) < 1e-6
    assert rel_err(got, want) < TOL[torch.float32]
    args16, want16 = _case(16, 64, 3, 0, 3, 7, torch.float16, seed=12)
    got16 = tri_mul_output_triton(*args16, torch.empty_like(args16[1]), config={"split": split})
    assert rel_err(got16, want16) < TOL[torch.float16]
    with pytest.raises(ValueError, match="split"):  # slices under 16 channels (the dot's minimum)
        tri_mul_output_triton(*args, torch.empty_like(args[1]), config={"split": 8})


def test_dispatch_and_fallback(interpret, monkeypatch):
    args, want = _case(16, 16, 3, 0, 3, 6, torch.float32, seed=8)
    a = tri_mul_output(*args, torch.empty_like(args[1]), backend="triton")
    b = tri_mul_output(*args, torch.empty_like(args[1]), backend="torch")
    assert rel_err(a, want) < TOL[torch.float32] and rel_err(b, want) < TOL[torch.float32] * 3
    # a channel count the kernel does not take (not a power of two): the reference, same values
    args24, want24 = _case(24, 16, 3, 0, 3, 6, torch.float32, seed=9)
    c = tri_mul_output(*args24, torch.empty_like(args24[1]), backend="triton")
    torch.testing.assert_close(c, tri_mul_output(*args24, torch.empty_like(args24[1])), rtol=0, atol=0)
    with pytest.raises(RuntimeError):
        tri_mul_output_triton(*args24, torch.empty_like(args24[1]))
    monkeypatch.delenv("TRITON_INTERPRET")  # CPU tensors without the interpreter: the reference
    d = tri_mul_output(*args, torch.empty_like(args[1]), backend="triton")
    torch.testing.assert_close(d, b, rtol=0, atol=0)
    with pytest.raises(ValueError):
        tri_mul_output(*args, torch.empty_like(args[1]), backend="cuda")
