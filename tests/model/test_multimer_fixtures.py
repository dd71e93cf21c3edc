"""The AlphaFold-Multimer v3 network against AlphaFold 2.3 (JAX) reference runs with random
parameters in the official format (tests/data/af_fixtures_multimer/*, made by shared/tools/afref).
fp32 on the CPU, MSA sampling `first` (the fixtures' deterministic choice, no BERT masking)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from af_testlib import assert_atoms_and_confidence, assert_representations_close, rel_err

from model.alphafold import to_tensors
from model.config import Runtime
from model.multimer import MsaSampling, sample_features
from model.params import load_model

ROOT = Path(__file__).resolve().parents[1] / "data" / "af_fixtures_multimer"
FIXTURES = sorted(p for p in ROOT.iterdir() if p.is_dir()) if ROOT.is_dir() else []


_rel = rel_err


def _load(fx):
    meta = json.loads((fx / "meta.json").read_text())
    model = load_model(next(fx.glob("params_*.npz")))
    a = meta["args"]
    model.evoformer.sampling = MsaSampling(a["n_seq"], a["n_extra"], "first")
    with np.load(fx / "features.npz") as f:
        batch = {k: f[k] for k in f.files}
    with np.load(fx / "outputs.npz") as f:
        ref = {k: f[k] for k in f.files}
    return meta, model, batch, ref


@pytest.fixture(scope="module", params=FIXTURES, ids=[p.name for p in FIXTURES])
def run(request):
    meta, model, batch, ref = _load(request.param)
    torch.manual_seed(0)
    out = model(batch, Runtime(), num_recycle=meta["args"]["recycles"], early_stop_tolerance=0.0,
                return_prev_inputs=True)
    out = {k: v.numpy() for k, v in out.items()}
    return dict(model=model, batch=batch, ref=ref, out=out, meta=meta)


def test_fixtures_present():
    names = {p.name for p in FIXTURES}
    assert {"multimer_homodimer", "multimer_3chain"} <= names


def test_fixture_has_the_expected_model(run):
    meta, model = run["meta"], run["model"]
    assert model.multimer and model.has_pae
    assert len(model.evoformer.evoformer_iteration) == meta["args"]["evoformer_blocks"]
    assert int(run["out"]["num_recycles_run"]) == meta["args"]["recycles"]


def test_sampled_msa_features_equal_the_models(run):
    """The in-network features after the deterministic sampling: msa_feat (with the nearest-neighbour
    cluster profile), extra_msa_feat, as AlphaFold computed them (aux_* arrays)."""
    batch, model = run["batch"], run["model"]
    feats = sample_features(to_tensors(batch, "cpu"), model.evoformer.cfg, model.evoformer.sampling, None)
    np.testing.assert_allclose(feats["msa_feat"].numpy(), batch["aux_msa_feat"], atol=1e-6)
    np.testing.assert_allclose(feats["extra_msa_feat"].numpy(), batch["aux_extra_msa_feat"], atol=1e-6)
    np.testing.assert_array_equal(feats["extra_msa_mask"].numpy(), batch["aux_extra_msa_mask"])


def test_every_output_is_compared(run):
    missing = set(run["ref"]) - set(run["out"])
    assert not missing


def test_representations_and_logits(run):
    assert_representations_close(run["ref"], run["out"], "structure_module_final_rigids", min_keys=12)


def test_atoms_and_confidence(run):
    ref, out = run["ref"], run["out"]
    assert_atoms_and_confidence(ref, out)
    np.testing.assert_array_equal(out["final_atom14_mask"], ref["final_atom14_mask"])
    assert abs(float(out["iptm"]) - float(ref["iptm"])) <= 1e-4
    assert float(out["ranking_confidence"]) == pytest.approx(0.8 * float(out["iptm"]) + 0.2 * float(out["ptm"]))


def test_side_chains_and_trajectory(run):
    ref, out = run["ref"], run["out"]
    for k in ("structure_module_sidechains_frames", "structure_module_sidechains_atom_pos",
              "structure_module_sidechains_unnormalized_angles_sin_cos", "structure_module_sidechains_angles_sin_cos",
              "final_atom14_positions"):
        assert out[k].shape == ref[k].shape, k
        assert _rel(out[k], ref[k]) <= 1e-4, k


def test_chunked_inplace_equals_whole(run):
    """Tiny chunks on every chunked op plus in-place residual updates give the same numbers."""
    model, batch, meta = run["model"], run["batch"], run["meta"]
    out = model(batch, Runtime.chunked_all(3, inplace=True), num_recycle=meta["args"]["recycles"],
                early_stop_tolerance=0.0)
    whole = run["out"]
    for k in ("repr_pair", "repr_msa", "repr_single", "final_atom_positions", "predicted_lddt_logits"):
        assert _rel(out[k].numpy(), whole[k]) <= 1e-5, k


def test_early_stop_runs_one_pass_after_convergence(run):
    """AlphaFold-Multimer's while loop: pass 0 is compared with the zero start; once a pass changes
    the Cα distances by <= tol, one final pass runs (here: 2 passes of the 4 allowed)."""
    model, batch = run["model"], run["batch"]
    out = model(batch, Runtime(), num_recycle=3, early_stop_tolerance=1e9)
    assert int(out["num_recycles_run"]) == 1


def test_random_sampling_is_seeded_and_keeps_the_query_first():
    fx = FIXTURES[0]
    meta, model, batch, _ = _load(fx)
    b = to_tensors(batch, "cpu")
    cfg = model.evoformer.cfg
    s = MsaSampling(4, 8, "random", seed=5)
    draw = lambda seed: sample_features(b, cfg, s, torch.Generator().manual_seed(seed))  # noqa: E731
    a1, a2, c = draw(5), draw(5), draw(6)
    assert torch.equal(a1["msa_feat"], a2["msa_feat"]) and torch.equal(a1["extra_msa_feat"], a2["extra_msa_feat"])
    assert not torch.equal(a1["extra_msa_feat"], c["extra_msa_feat"])
    assert torch.equal(a1["true_msa"][0], b["msa"][0].long())  # cluster_bias_mask keeps the query row first
    assert a1["msa_feat"].shape[0] == 4 and a1["extra_msa_feat"].shape[0] == 8
    # BERT masking touches about 15 % of the cluster positions, always where the mask is set.
    big = MsaSampling(b["msa"].shape[0], 0, "random")
    frac = np.mean([float(sample_features(b, cfg, big, torch.Generator().manual_seed(k))["bert_mask"].mean())
                    for k in range(20)])
    assert 0.05 < frac < 0.2, frac
