"""Helpers shared by the model tests: the parameter manifests and the relative-error measure the
reference limits are stated in."""
import json
from pathlib import Path

import numpy as np

MANIFESTS = Path(__file__).resolve().parents[1] / "data" / "af_param_manifests"


def manifest_shapes(preset, truncate=None):
    """(manifest dict, {npz key: shape}) of an official preset; stacked keys cut to `truncate`
    blocks when given (a small synthetic file of the same layout)."""
    m = json.loads((MANIFESTS / f"{preset}.json").read_text())
    shapes = {}
    for p in m["params"]:
        shape = tuple(p["shape"])
        if truncate and p["stacked"]:
            shape = (truncate,) + shape[1:]
        shapes[p["key"]] = shape
    return m, shapes


def rel_err(ours, ref):
    """max |ours - ref| / max |ref| (the model issue's measure)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30)


def write_synthetic_params(tmp_path, preset, blocks=1, seed=0):
    """A small parameter file in the official layout of `preset` (stacks cut to `blocks`), random
    values: (path, {key: array})."""
    _, shapes = manifest_shapes(preset, truncate=blocks)
    rng = np.random.default_rng(seed)
    arrays = {k: (0.05 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()}
    path = tmp_path / f"params_{preset}.npz"
    np.savez(path, **arrays)
    return path, arrays


def assert_representations_close(ref, out, rigid_key, min_keys):
    """Representations, logits and structure-module trajectories of a reference fixture within
    1e-4 relative (`rigid_key`: the monomer's final affines or the multimer's final rigids)."""
    keys = [k for k in ref if k.startswith("repr_") or k.endswith("_logits") or k.startswith("last_iter_input_prev_m")
            or k.startswith("last_iter_input_prev_pair")
            or k in ("structure_module_single", "structure_module_traj", rigid_key)]
    assert len(keys) >= min_keys
    errs = {k: rel_err(out[k], ref[k]) for k in keys}
    bad = {k: e for k, e in errs.items() if not e <= 1e-4}
    assert not bad, bad


def assert_atoms_and_confidence(ref, out):
    """Atoms within 1e-3 A, pLDDT and PAE within 0.005, pTM within 1e-4 of a reference fixture."""
    import pytest

    exists = ref["final_atom_mask"] > 0
    assert exists.sum() > 0
    np.testing.assert_array_equal(out["final_atom_mask"], ref["final_atom_mask"])
    d = np.abs(out["final_atom_positions"] - ref["final_atom_positions"])[exists]
    assert d.max() <= 1e-3, d.max()
    assert np.abs(out["plddt"] - ref["plddt"]).max() <= 0.005
    if "ptm" in ref:
        assert np.abs(out["predicted_aligned_error"] - ref["predicted_aligned_error"]).max() <= 0.005
        assert abs(float(out["ptm"]) - float(ref["ptm"])) <= 1e-4
        assert float(out["max_predicted_aligned_error"]) == pytest.approx(float(ref["max_predicted_aligned_error"]))
