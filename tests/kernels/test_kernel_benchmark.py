"""kernels/benchmark.py's network calls (what `scripts/kernel_bench.py` times), on the CPU through
Triton's interpreter: the starting and the ending node's triangle attention calls compute the gated
attention of the network's fused q/k/v/gate views, and the ending node's lands in the pair's
[L, B, H, D] layout."""
from __future__ import annotations

import types

import pytest
import torch

from kernel_testlib import needs_triton

pytestmark = needs_triton


@pytest.mark.parametrize("cfg", [None, {"paired": True}])
def test_network_calls_start_and_ending_node(interpret, cfg):
    from kernels.benchmark import Bench, network_views
    b, h, l, d = 5, 4, 37, 32
    gen = torch.Generator().manual_seed(21)
    net = network_views(torch.randn(b, l, 4 * h * d, generator=gen), h, d)
    bias = torch.randn(1, h, l, l, generator=gen)
    records, outs = [], []

    def time_ms(fn):  # stands in for do_bench: one call, its output kept
        outs.append(fn())
        return 1.0

    bench = types.SimpleNamespace(time_ms=time_ms, log=pytest.fail)
    for ending in (False, True):
        Bench.network_call(bench, "tri2048", net, bias, None, d ** -0.5,
                           lambda label, ms, err: records.append((label, err)), cfg, ending=ending)
    (start, e_start), (end, e_end) = records
    assert "ending node" not in start and "ending node, mask of ones skipped" in end, records
    assert e_start < 1e-5 and e_end < 1e-5, records
    assert torch.equal(outs[0], outs[1])
    # the ending node's output is a [B, H, L, D] view of an [L, B, H, D] buffer
    assert outs[1].permute(2, 0, 1, 3).is_contiguous() and not outs[0].permute(2, 0, 1, 3).is_contiguous()
