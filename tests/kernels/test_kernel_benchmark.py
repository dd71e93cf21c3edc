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
        Bench.network_call(bench, "tri2048", net, [bias], None, d ** -0.5,
                           lambda label, ms, err: records.append((label, err)), cfg, ending=ending)
    (start, e_start), (end, e_end) = records
    assert "ending node" not in start and "ending node, mask of ones skipped" in end, records
    assert e_start < 1e-5 and e_end < 1e-5, records
    assert torch.equal(outs[0], outs[1])
    # the ending node's output is a [B, H, L, D] view of an [L, B, H, D] buffer
    assert outs[1].permute(2, 0, 1, 3).is_contiguous() and not outs[0].permute(2, 0, 1, 3).is_contiguous()


def test_network_call_without_bias(interpret):
    """The msa_col case (MSA column attention): no pair bias, the output in [L, B, H, D] (batch_inner),
    with two rows a program as a variant: the same values as the default's one row."""
    from kernels.benchmark import ATTN_CASES, Bench, network_views
    assert ATTN_CASES["msa_col"].get("columns") and not ATTN_CASES["msa_col"].get("triangle")
    b, h, l, d = 5, 2, 37, 32
    gen = torch.Generator().manual_seed(22)
    net = network_views(torch.randn(b, l, 4 * h * d, generator=gen), h, d)
    records, outs = [], []

    def time_ms(fn):
        outs.append(fn())
        return 1.0

    bench = types.SimpleNamespace(time_ms=time_ms, log=pytest.fail)
    for cfg in (None, {"rows": 2, "BLOCK_M": 16, "BLOCK_N": 16}):
        Bench.network_call(bench, "msa_col", net, [], None, d ** -0.5,
                           lambda label, ms, err: records.append((label, err)), cfg, ending=True)
    assert all("[L, B, H, D] out, mask of ones skipped" in r[0] and r[1] < 1e-5 for r in records), records
    assert outs[0].permute(2, 0, 1, 3).is_contiguous()
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-6, atol=1e-6)


def test_pick_variant_reads_both_network_labels(tmp_path):
    """scripts/pick_variant.py (device scripts pick the network's next option with it): the fastest
    variant of a case's network call beyond the factor, for the [B, L, H, D] and the column
    attention's [L, B, H, D] labels; nothing when no variant is fast enough."""
    import json
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    from pick_variant import KEYS, pick
    for key in KEYS:
        runs = {key: {"ms": 10.0}, key + ' {"BLOCK_N": 64}': {"ms": 9.0}, key + ' {"rows": 2}': {"ms": 9.5},
                "variant {\"rows\": 4}": {"ms": 1.0}}  # not a network call: ignored
        path = tmp_path / "k.json"
        path.write_text(json.dumps({"attention": {"case": {"runs": runs}}}))
        assert pick(str(path), "case", 1.03) == '{"BLOCK_N": 64}'
        assert pick(str(path), "case", 1.2) == ""
