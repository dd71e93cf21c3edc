"""The network against AlphaFold 2.3 (JAX) reference runs with random parameters in the official
format (tests/data/af_fixtures/*, made by shared/tools/afref). fp32 on the CPU."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from af_testlib import assert_atoms_and_confidence, assert_representations_close, rel_err

from model.config import Runtime
from model.params import load_model

FIXTURES = sorted(p for p in (Path(__file__).resolve().parents[1] / "data" / "af_fixtures").iterdir() if p.is_dir())


_rel = rel_err


@pytest.fixture(scope="module", params=FIXTURES, ids=[p.name for p in FIXTURES])
def run(request):
    fx = request.param
    meta = json.loads((fx / "meta.json").read_text())
    params = next(fx.glob("params_*.npz"))
    model = load_model(params)
    with np.load(fx / "features.npz") as f:
        batch = {k: f[k] for k in f.files}
    with np.load(fx / "outputs.npz") as f:
        ref = {k: f[k] for k in f.files}
    torch.manual_seed(0)
    out = model(batch, Runtime(), num_recycle=meta["args"]["recycles"], return_prev_inputs=True)
    out = {k: v.numpy() for k, v in out.items()}
    return dict(model=model, batch=batch, ref=ref, out=out, meta=meta)


def test_fixture_has_the_expected_model(run):
    meta, model = run["meta"], run["model"]
    assert len(model.evoformer.evoformer_iteration) == meta["args"]["evoformer_blocks"]
    assert model.has_pae == ("ptm" in run["ref"])


def test_every_output_is_compared(run):
    missing = set(run["ref"]) - set(run["out"])
    assert not missing


def test_representations_and_logits(run):
    assert_representations_close(run["ref"], run["out"], "structure_module_final_affines", min_keys=10)


def test_atoms_and_confidence(run):
    assert_atoms_and_confidence(run["ref"], run["out"])


def test_side_chains_and_trajectory(run):
    ref, out = run["ref"], run["out"]
    for k in ("structure_module_sidechains_frames", "structure_module_sidechains_atom_pos",
              "structure_module_sidechains_unnormalized_angles_sin_cos", "final_atom14_positions"):
        assert _rel(out[k], ref[k]) <= 1e-4, k


def test_chunked_inplace_equals_whole(run):
    """Tiny chunks on every chunked op plus in-place residual updates give the same numbers."""
    model, batch, meta = run["model"], run["batch"], run["meta"]
    out = model(batch, Runtime.chunked_all(3, inplace=True, recompute_templates=True),
                num_recycle=meta["args"]["recycles"])
    whole = run["out"]
    for k in ("repr_pair", "repr_msa", "repr_single", "final_atom_positions", "predicted_lddt_logits"):
        assert _rel(out[k].numpy(), whole[k]) <= 1e-5, k
