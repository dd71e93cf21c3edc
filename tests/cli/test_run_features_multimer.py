"""`fastfold run-features` on AlphaFold-Multimer feature batches: `--msa-sampling first` with the
fixture's row counts reproduces the reference; `random` is seeded; monomer runs refuse the options."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fastfold_cli.main import cli

ROOT = Path(__file__).resolve().parents[1] / "data"
MULTIMER = ROOT / "af_fixtures_multimer" / "multimer_3chain"


def _run(tmp_path, name, *extra, fx=MULTIMER):
    out = tmp_path / f"{name}.npz"
    res = CliRunner().invoke(cli, ["run-features", str(fx / "features.npz"), "--params",
                                   str(next(fx.glob("params_*.npz"))), "--out", str(out), *extra])
    return res, out


@pytest.mark.skipif(not MULTIMER.is_dir(), reason="multimer fixture missing")
def test_first_sampling_reproduces_the_fixture_and_random_is_seeded(tmp_path):
    a = json.loads((MULTIMER / "meta.json").read_text())["args"]
    rows = ["--num-msa", str(a["n_seq"]), "--num-extra-msa", str(a["n_extra"]), "--num-recycles", str(a["recycles"])]
    res, out = _run(tmp_path, "first", *rows, "--msa-sampling", "first")
    assert res.exit_code == 0, res.output
    with np.load(out) as o, np.load(MULTIMER / "outputs.npz") as ref:
        assert set(ref.files) <= set(o.files)
        assert abs(float(o["iptm"]) - float(ref["iptm"])) <= 1e-4
        assert float(o["ranking_confidence"]) == pytest.approx(0.8 * float(o["iptm"]) + 0.2 * float(o["ptm"]))
        first = o["final_atom_positions"]
    runs = []
    for name, seed in (("r1", "3"), ("r2", "3"), ("r3", "4")):
        res, out = _run(tmp_path, name, *rows, "--msa-sampling", "random", "--seed", seed)
        assert res.exit_code == 0, res.output
        with np.load(out) as o:
            runs.append(o["final_atom_positions"])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2]) and not np.array_equal(runs[0], first)


def test_monomer_refuses_multimer_sampling_options(tmp_path):
    fx = next(p for p in sorted((ROOT / "af_fixtures").iterdir()) if "model_3" in p.name)
    res, out = _run(tmp_path, "mono", "--msa-sampling", "first", fx=fx)
    assert res.exit_code == 2
    assert "only for AlphaFold-Multimer" in res.output and not out.exists()
