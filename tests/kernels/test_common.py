"""kernels/_common.py: how the fused kernels see a tensor's rows (one or two strided levels), checked
against the addresses torch itself gives every row."""
from __future__ import annotations

import itertools

import pytest
import torch

from kernels._common import pow2_in, row_levels


def _row_offsets(x: torch.Tensor):
    """Each row's element offset from x's first element, in x's logical row order."""
    return [x[idx].storage_offset() - x.storage_offset() for idx in itertools.product(*map(range, x.shape[:-1]))]


@pytest.mark.parametrize("make", [
    lambda t: t,                                  # contiguous [A, B, C]
    lambda t: t[2:5],                             # a row block
    lambda t: t.transpose(0, 1),                  # a transposed pair
    lambda t: t.transpose(0, 1)[1:4],             # a row block of the transpose (a column block)
    lambda t: t[:, 3:7],                          # a column block of the rows
    lambda t: t[1],                               # one row of rows
])
def test_row_levels_gives_every_rows_address(make):
    x = make(torch.zeros(6, 8, 16))
    rows, r_in, s_in, s_out = row_levels(x)
    want = _row_offsets(x)
    assert rows == len(want)
    assert [(r // r_in) * s_out + (r % r_in) * s_in for r in range(rows)] == want


def test_row_levels_refuses_what_needs_three_levels_or_strided_channels():
    x = torch.zeros(4, 5, 6, 16)
    assert row_levels(x.permute(1, 0, 2, 3)[:, :, 1:4]) is None  # three independent strides
    assert row_levels(torch.zeros(16, 8).t()) is None  # channels not contiguous


def test_pow2_in():
    assert pow2_in(64, 16, 256) and pow2_in(16, 16, 256) and pow2_in(256, 16, 256)
    assert not pow2_in(24, 16, 256) and not pow2_in(512, 16, 256) and not pow2_in(8, 16, 256)
