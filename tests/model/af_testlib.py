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
