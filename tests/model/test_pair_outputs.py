"""forward(pair_outputs=False): what `predict` and `bench` keep for long sequences (no pair
representation, distogram, PAE logits/probabilities or MSA representation; pTM from per-row-block
terms) — the reported values equal the full outputs'."""
from pathlib import Path

import numpy as np

from af_testlib import rel_err
from model.config import Runtime
from model.multimer import MsaSampling
from model.params import load_model

DATA = Path(__file__).resolve().parents[1] / "data"
HEAVY = ("repr_pair", "distogram_logits", "aligned_confidence_probs", "repr_msa")


def _run(fixture, chunks, **kw):
    model = load_model(next(fixture.glob("params_*.npz")))
    batch = dict(np.load(fixture / "features.npz"))
    if getattr(model, "multimer", False):
        model.evoformer.sampling = MsaSampling(mode="first", num_msa=4, num_extra_msa=8)
    rt = Runtime(chunks=chunks, inplace=True)
    return (model(batch, rt, num_recycle=1, **kw), model(batch, rt, num_recycle=1, pair_outputs=False, **kw))


def test_monomer_reports_the_same_confidence_from_row_blocks():
    full, lean = _run(DATA / "af_fixtures" / "model_1_ptm_odd", {"heads": 4})  # N=19: ragged blocks
    for k in HEAVY + ("predicted_aligned_error_logits",):
        assert k in full and k not in lean, k
    for k in ("predicted_aligned_error", "ptm", "max_predicted_aligned_error", "plddt", "final_atom_positions"):
        assert rel_err(lean[k].double(), full[k].double()) < 1e-6, k


def test_multimer_keeps_its_pae_logits_and_iptm():
    full, lean = _run(DATA / "af_fixtures_multimer" / "multimer_homodimer", {"heads": 5})
    for k in HEAVY:
        assert k not in lean, k
    for k in ("predicted_aligned_error_logits", "predicted_aligned_error", "ptm", "iptm", "ranking_confidence"):
        assert rel_err(lean[k].double(), full[k].double()) < 1e-6, k
