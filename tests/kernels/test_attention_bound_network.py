"""The attention option `bound` through the whole network, on the CPU interpreter: the reference
fixture model_3_gap with every attention taking its softmax against precomputed logit bounds
(Runtime.attention_options) gives the torch backend's outputs as closely as the online kernel does
(4.7e-7, 3.8e-7 and 1.1e-6 relative for the pair, MSA and atoms when this test was written)."""
from pathlib import Path

import numpy as np
import torch

from kernel_testlib import needs_triton, rel_err
from model.config import Runtime
from model.params import load_model

pytestmark = needs_triton
FIXTURE = Path(__file__).resolve().parents[1] / "data" / "af_fixtures" / "model_3_gap"


def test_bound_network_matches_torch(interpret):
    model = load_model(next(FIXTURE.glob("params_*.npz")))
    with np.load(FIXTURE / "features.npz") as f:
        batch = {k: f[k] for k in f.files}
    probe = []
    with torch.no_grad():
        out = model(batch, Runtime(backend="triton", attention_options={"bound": True, "_probe": probe}),
                    num_recycle=0)
        ref = model(batch, Runtime(), num_recycle=0)
    assert len(probe) >= 4  # the MSA row and column and both triangle attentions took the bound path
    for key in ("repr_pair", "repr_msa", "final_atom_positions"):
        assert rel_err(out[key], ref[key]) < 5e-6, key
