"""`fastfold run-features --gpus 2` (DAP, two gloo processes on the CPU) writes the same outputs as
one process, on a fixture whose length (23) does not divide by 2."""
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from fastfold_cli.main import cli

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "af_fixtures"


def test_run_features_gpus_2_equals_one_process(tmp_path):
    fx = next(p for p in sorted(FIXTURES.iterdir()) if "model_3" in p.name)
    args = ["run-features", str(fx / "features.npz"), "--params", str(next(fx.glob("params_*.npz"))),
            "--num-recycles", "1", "--device", "cpu"]
    outs = []
    for extra in ([], ["--gpus", "2"]):
        out = tmp_path / f"out{len(outs)}.npz"
        res = CliRunner().invoke(cli, args + ["--out", str(out)] + extra)
        assert res.exit_code == 0, res.output
        outs.append(np.load(out))
    one, two = outs
    assert set(one.files) == set(two.files)
    for k in ("repr_pair", "repr_msa", "distogram_logits", "final_atom_positions", "plddt"):
        assert np.abs(one[k] - two[k]).max() <= 1e-5 * np.abs(one[k]).max(), k
