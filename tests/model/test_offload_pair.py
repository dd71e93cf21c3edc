"""Runtime.offload_pair: triangle multiplication with the pair in host memory while its product is
formed (model/evoformer.py `_forward_offloaded`) computes what the resident path computes — per op
in both directions, and through the whole network on a reference fixture."""
from pathlib import Path

import numpy as np
import pytest
import torch

from af_testlib import rel_err
from model.config import Runtime
from model.params import load_model

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "af_fixtures" / "model_3_gap"


@pytest.fixture(scope="module")
def model():
    return load_model(next(FIXTURE.glob("params_*.npz")))


@pytest.mark.parametrize("direction", ["outgoing", "incoming"])
@pytest.mark.parametrize("chunk", [None, 3])
@torch.no_grad()
def test_offloaded_triangle_multiplication_equals_resident(model, direction, chunk):
    op = getattr(model.evoformer.evoformer_iteration[0], f"triangle_multiplication_{direction}")
    gen = torch.Generator().manual_seed(11 if direction == "outgoing" else 12)
    n = 19  # odd, and not a multiple of the row block
    z = torch.randn(n, n, 128, generator=gen) * 2 + 0.3
    mask = (torch.rand(n, n, generator=gen) > 0.15).float()
    mask[-2:] = 0  # padded rows
    chunks = {"tri_mul": chunk} if chunk else {}
    want = op(z.clone(), mask, Runtime(chunks=chunks))
    zo = z.clone()
    storage_before = zo.untyped_storage().data_ptr()
    got = op(zo, mask, Runtime(chunks=chunks, inplace=True, offload_pair=True))
    assert got is zo and zo.untyped_storage().nbytes() == zo.numel() * 4  # updated in place, storage restored
    assert storage_before != 0
    assert rel_err(got, want) < 1e-6


def test_offload_through_the_network_matches_the_resident_run(model, monkeypatch):
    from model.evoformer import TriangleMultiplication

    batch = dict(np.load(FIXTURE / "features.npz"))
    chunks = {"tri_mul": 4, "pair_rows": 5}
    ref = model(batch, Runtime(chunks=chunks, inplace=True), num_recycle=1)
    calls = []
    real = TriangleMultiplication._forward_offloaded
    monkeypatch.setattr(TriangleMultiplication, "_forward_offloaded",
                        lambda self, *a: calls.append(self.outgoing) or real(self, *a))
    off = model(batch, Runtime(chunks=chunks, inplace=True, offload_pair=True), num_recycle=1)
    n_ops = sum(isinstance(m, TriangleMultiplication) for m in model.modules())
    assert len(calls) == 2 * n_ops and set(calls) == {True, False}  # every call, both passes, offloaded
    for k in ("final_atom_positions", "repr_pair", "repr_single", "plddt"):
        assert rel_err(off[k].double(), ref[k].double()) < 1e-5, k
