"""Attentions skip a key mask that is all ones (Runtime.skip_dense_masks): the trunk decides per
stack from the mask itself, and the network's outputs are those of the path that applies every mask.
The reference fixtures cover both cases: model_3_gap's masks are all ones, model_1_ptm_odd's MSA and
extra-MSA masks have padded rows (its pair mask is all ones)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import kernels
from af_testlib import rel_err
from model.config import Runtime
from model.params import load_model

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "af_fixtures"


def test_with_masks_flags():
    ones = torch.ones(5, 7)
    holed = ones.clone()
    holed[3, 2] = 0
    padded = torch.nn.functional.pad(ones, (0, 1, 0, 0), value=-1.0)  # DAP's padding entries are -1
    rt = Runtime()
    assert rt.with_masks(pair=ones).dense_pair_mask and not rt.with_masks(pair=ones).dense_msa_mask
    assert rt.with_masks(msa=ones).dense_msa_mask
    assert not rt.with_masks(msa=holed).dense_msa_mask
    assert not rt.with_masks(pair=padded).dense_pair_mask
    both = rt.with_masks(pair=ones).with_masks(msa=holed)  # a mask not given keeps its flag
    assert both.dense_pair_mask and not both.dense_msa_mask
    assert not Runtime(skip_dense_masks=False).with_masks(pair=ones, msa=ones).dense_pair_mask


@pytest.mark.parametrize("name,expect", [
    # attention call sites, by bias count: row attention / triangle attention carry a pair bias,
    # MSA column attention none; whether each got a key mask
    ("model_3_gap", {"masked": 0}),
    ("model_1_ptm_odd", {"masked_without_bias": True, "unmasked_with_bias": True}),
])
def test_dense_masks_skipped_same_outputs(monkeypatch, name, expect):
    fx = FIXTURES / name
    meta = json.loads((fx / "meta.json").read_text())
    model = load_model(next(fx.glob("params_*.npz")))
    with np.load(fx / "features.npz") as f:
        batch = {k: f[k] for k in f.files}
    calls = []
    real = kernels.attention

    def spy(q, k, v, biases=(), mask=None, **kw):
        calls.append((len(biases), mask is not None))
        return real(q, k, v, biases, mask, **kw)

    monkeypatch.setattr(kernels, "attention", spy)
    recycles = meta["args"]["recycles"]
    outs = {}
    for skip in (True, False):
        calls.clear()
        torch.manual_seed(0)
        outs[skip] = model(batch, Runtime(skip_dense_masks=skip), num_recycle=recycles)
        masked = [m for _, m in calls]
        if skip:
            if "masked" in expect:
                assert sum(masked) == expect["masked"] and calls
            if expect.get("masked_without_bias"):  # the MSA column attentions keep the MSA mask
                assert any(m for b, m in calls if b == 0)
            if expect.get("unmasked_with_bias"):  # the triangle attentions skip the (dense) pair mask
                assert any(not m for b, m in calls if b > 0)
                assert any(m for b, m in calls if b > 0)  # ... the MSA row attentions keep theirs
        else:
            assert all(masked) and calls
    for key in ("repr_pair", "repr_msa", "repr_single", "final_atom_positions", "predicted_lddt_logits"):
        assert rel_err(outs[True][key].numpy(), outs[False][key].numpy()) <= 1e-6, key
