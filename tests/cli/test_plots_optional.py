"""matplotlib is optional: without it a prediction writes every other output and one warning line
that the plots were skipped (the GPU machine has no matplotlib). The missing module is simulated
with sys.modules['matplotlib'] = None, which makes `import matplotlib` raise ImportError."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PARAMS = next((ROOT / "tests" / "data" / "af_fixtures").glob("*/params_model_1_ptm.npz"))


@pytest.fixture
def no_matplotlib(monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)


def test_write_plots_without_matplotlib_warns_once(no_matplotlib, tmp_path):
    from fastfold_cli import plots
    assert not plots.matplotlib_available()
    lines = []
    results = {"model_1_ptm": {"plddt": np.full(8, 70.0), "predicted_aligned_error": np.ones((8, 8))}}
    written = plots.write_plots(tmp_path, results, {"msa": np.zeros((3, 8), np.int32)}, log=lines.append)
    assert written == {} and list(tmp_path.iterdir()) == []
    assert len(lines) == 1 and lines[0].startswith("warning: matplotlib is not installed: plots skipped")


def test_predict_target_without_matplotlib_writes_everything_else(no_matplotlib, tmp_path, capfd):
    """The single-mode / batch-worker path (`predict_target`) with small official-format parameters:
    ranked structures, scores, ranking and timings are written, the target does not fail, and
    stderr carries exactly one line about the skipped plots."""
    from fastfold_cli.predict import ModelCache, Settings, predict_target
    from pipeline.features import make_raw_features, single_sequence_msa

    seq = "MKTAYIAKQRQISFVKSHFSRQ"
    raw = make_raw_features(seq, "t01", [single_sequence_msa(seq)])
    settings = Settings(model_names=["model_1_ptm"], num_recycles=0, param_paths={"model_1_ptm": str(PARAMS)})
    log = []
    done = predict_target(tmp_path, raw, settings, "cpu", ModelCache(1), {}, log=log.append)
    assert done["failed"] == [] and done["order"] == ["model_1_ptm"]
    for f in ("ranked_0.pdb", "ranked_0.cif", "unrelaxed_model_1_ptm.pdb", "result_model_1_ptm.json",
              "confidence_model_1_ptm.json", "pae_model_1_ptm.json", "ranking_debug.json", "timings.json"):
        assert (tmp_path / f).is_file(), f
    assert not list(tmp_path.glob("*.png"))
    assert "ranking_and_plots" in json.loads((tmp_path / "timings.json").read_text())
    err = [l for l in capfd.readouterr().err.splitlines() if "matplotlib" in l]
    assert len(err) == 1 and "plots skipped" in err[0], err
