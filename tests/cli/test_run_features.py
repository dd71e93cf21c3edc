"""`fastfold run-features` end to end on a reference fixture, and its bad-input handling."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fastfold_cli.main import cli

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "af_fixtures"


def _fixture(name_contains):
    return next(p for p in sorted(FIXTURES.iterdir()) if name_contains in p.name)


def test_run_features_writes_every_reference_output(tmp_path):
    fx = _fixture("model_3")
    out = tmp_path / "out.npz"
    res = CliRunner().invoke(cli, ["run-features", str(fx / "features.npz"), "--params",
                                   str(next(fx.glob("params_*.npz"))), "--out", str(out), "--num-recycles", "1"])
    assert res.exit_code == 0, res.output
    with np.load(out) as o, np.load(fx / "outputs.npz") as ref:
        assert set(ref.files) <= set(o.files)
        assert o["distogram_logits"].shape == ref["distogram_logits"].shape
        assert int(o["num_recycles_run"]) == 1
        assert np.isfinite(o["final_atom_positions"]).all()


@pytest.mark.parametrize("case", ["missing_features", "bad_params", "wrong_preset", "not_features"])
def test_bad_inputs_exit_2_with_one_line(tmp_path, case):
    fx = _fixture("model_3")
    feats, params = fx / "features.npz", next(fx.glob("params_*.npz"))
    extra = []
    if case == "missing_features":
        feats = tmp_path / "nope.npz"
    elif case == "bad_params":
        params = tmp_path / "params_model_3.npz"
        params.write_bytes(b"PK\x03\x04 truncated")
    elif case == "wrong_preset":
        extra = ["--preset", "model_1"]
    elif case == "not_features":
        feats = tmp_path / "f.npz"
        np.savez(feats, x=np.arange(3))
    # A real subprocess: what a user sees on stderr, and the exit code.
    p = subprocess.run([sys.executable, "-m", "fastfold_cli", "run-features", str(feats), "--params", str(params),
                        "--out", str(tmp_path / "o.npz"), *extra], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "o.npz").exists()
