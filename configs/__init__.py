"""Model presets as data: `monomer.json` is AlphaFold 2.3's monomer config, `multimer.json` its
multimer v3 config, `presets.json` the per-preset differences. `load_preset` returns a plain nested dict; `model.config` wraps it."""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources

MONOMER_PRESETS = tuple(f"model_{i}{s}" for s in ("", "_ptm") for i in range(1, 6))
MULTIMER_PRESETS = tuple(f"model_{i}_multimer_v3" for i in range(1, 6))


@lru_cache(maxsize=None)
def _read(name: str) -> dict:
    return json.loads(resources.files(__package__).joinpath(name).read_text())


def load_preset(name: str) -> dict:
    """Nested config dict for a preset (`model_1` … `model_5_ptm`, `model_1_multimer_v3` …)."""
    presets = _read("presets.json")
    if name not in presets or name.startswith("_"):
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(MONOMER_PRESETS + MULTIMER_PRESETS)}")
    cfg = copy.deepcopy(_read("multimer.json" if name in MULTIMER_PRESETS else "monomer.json"))
    cfg.pop("_comment", None)
    for path, value in presets[name].items():
        node = cfg
        *parents, leaf = path.split(".")
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise KeyError(f"preset {name}: {path} is not a config key")
        node[leaf] = value
    cfg["preset"] = name
    return cfg
