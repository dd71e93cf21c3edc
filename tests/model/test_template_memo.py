"""Runtime.keep_templates: the monomer's template pair stacks run in the first recycling pass only
and later passes reuse their outputs (model.trunk.TemplateMemo). The outputs must be those of the
network that recomputes them every pass, as AlphaFold does; templates that change between passes
(a leading pass axis) must be embedded again; the planner keeps them only where they fit."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from af_testlib import rel_err
from model.config import Runtime
from model.params import load_model
from model.planner import GB, Problem, persistent_bytes, plan
from model.trunk import SingleTemplateEmbedding

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "af_fixtures" / "model_1_ptm_odd"
KEYS = ("repr_pair", "repr_msa", "repr_single", "final_atom_positions", "predicted_lddt_logits",
        "predicted_aligned_error")


@pytest.fixture(scope="module")
def fixture():
    meta = json.loads((FIXTURE / "meta.json").read_text())
    model = load_model(next(FIXTURE.glob("params_*.npz")))
    with np.load(FIXTURE / "features.npz") as f:
        batch = {k: f[k] for k in f.files}
    return model, batch, meta["args"]["recycles"]


def _run(model, batch, recycles, rt, monkeypatch):
    """Outputs, and how many times a template pair stack ran."""
    calls = []
    real = SingleTemplateEmbedding.forward

    def spy(self, *a, **kw):
        calls.append(1)
        return real(self, *a, **kw)

    monkeypatch.setattr(SingleTemplateEmbedding, "forward", spy)
    out = model(batch, rt, num_recycle=recycles)
    monkeypatch.setattr(SingleTemplateEmbedding, "forward", real)
    return out, len(calls)


def test_kept_templates_give_the_same_outputs(fixture, monkeypatch):
    model, batch, recycles = fixture
    n_templ = batch["template_aatype"].shape[0]
    assert recycles >= 2 and n_templ >= 2
    ref, n_ref = _run(model, batch, recycles, Runtime(), monkeypatch)
    out, n_kept = _run(model, batch, recycles, Runtime(keep_templates=True), monkeypatch)
    assert n_ref == (recycles + 1) * n_templ
    assert n_kept == n_templ  # the first pass only
    for k in KEYS:
        # the same operations on the same values: equal, not merely close
        assert torch.equal(out[k], ref[k]), (k, rel_err(out[k].numpy(), ref[k].numpy()))


def test_templates_that_change_between_passes_are_embedded_again(fixture, monkeypatch):
    model, batch, recycles = fixture
    n_templ = batch["template_aatype"].shape[0]
    passes = recycles + 1
    # A leading pass axis (AlphaFold's resampling): the last pass gets moved template atoms.
    stacked = {k: np.stack([v] * passes) for k, v in batch.items()}
    rng = np.random.default_rng(7)
    for k in ("template_all_atom_positions", "template_pseudo_beta"):
        stacked[k][-1] = stacked[k][-1] + rng.normal(0, 1.5, stacked[k][-1].shape).astype(stacked[k].dtype)
    ref, n_ref = _run(model, stacked, recycles, Runtime(), monkeypatch)
    out, n_kept = _run(model, stacked, recycles, Runtime(keep_templates=True), monkeypatch)
    assert n_ref == passes * n_templ
    assert n_kept == 2 * n_templ  # the first pass, then the last (its templates differ)
    for k in KEYS:
        assert torch.equal(out[k], ref[k]), k
    # and the moved templates do change the prediction (the check above is not vacuous)
    same, _ = _run(model, batch, recycles, Runtime(), monkeypatch)
    assert rel_err(ref["repr_pair"].numpy(), same["repr_pair"].numpy()) > 1e-4


def test_planner_keeps_templates_only_where_they_fit():
    p = Problem(1024, precision="bf16")
    roomy = plan(p, 70 * GB)
    assert roomy.problem.keep_templates and roomy.runtime().keep_templates
    kept_bytes = 4 * 1024 * 1024 * 64 * 2
    assert persistent_bytes(roomy.problem) - persistent_bytes(Problem(1024, precision="bf16", keep_templates=False)) \
        == kept_bytes
    # A budget just above the plan without them: keeping them would need smaller chunks, so no.
    bare = plan(Problem(1024, precision="bf16", keep_templates=False), 70 * GB)
    tight = plan(p, bare.predicted_peak + kept_bytes / 2)
    assert not tight.problem.keep_templates and not tight.runtime().keep_templates
    assert tight.chunks == plan(Problem(1024, precision="bf16", keep_templates=False),
                                bare.predicted_peak + kept_bytes / 2).chunks
    # Multimer presets (problem_for sets False) and problems without templates never keep them.
    assert not plan(Problem(1024, precision="bf16", keep_templates=False), 70 * GB).runtime().keep_templates
    assert not plan(Problem(1024, precision="bf16", n_templ=0), 70 * GB).runtime().keep_templates
