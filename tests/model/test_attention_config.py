"""The attention kernel's options reach every attention of the network (Runtime.gluon_attention and
Runtime.attention_options -> Runtime.attention_config -> kernels.attention's config), and the torch
backend ignores them."""
from pathlib import Path

import numpy as np
import pytest
import torch

import kernels
from af_testlib import rel_err
from model.config import Runtime, parse_attention_options
from model.params import load_model

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "af_fixtures" / "model_3_gap"


def test_runtime_attention_config():
    assert Runtime().attention_config is None
    assert Runtime(gluon_attention=True).attention_config == {"gluon": True}
    assert Runtime(gluon_attention=False).attention_config == {"gluon": False}
    assert Runtime(attention_options={"paired": True}).attention_config == {"paired": True}
    assert Runtime(gluon_attention=False, attention_options={"head_dims": [32], "rows": 4}).attention_config == \
        {"gluon": False, "head_dims": [32], "rows": 4}


def test_sites_scope_the_options_to_those_attentions():
    rt = Runtime(gluon_attention=False, attention_options={"sites": ["tri_att"], "BLOCK_M": 128, "num_warps": 8})
    assert rt.attention_config_for("tri_att") == {"gluon": False, "BLOCK_M": 128, "num_warps": 8}
    assert rt.attention_config_for("msa_row_att") == {"gluon": False}
    assert Runtime(attention_options={"sites": ["msa_col_att"], "paired": True}).attention_config_for("tri_att") is None
    assert Runtime(attention_options={"paired": True}).attention_config_for("extra_row_att") == {"paired": True}
    with pytest.raises(ValueError, match="unknown attention site"):
        Runtime().attention_config_for("triangle")


@pytest.mark.parametrize("text,needle", [('{"sites": ["triangle"], "paired": true}', "tri_att"),
                                         ('{"sites": "tri_att"}', "must be a list"), ('{"pared": 1}', "pared"),
                                         ("{}", "non-empty"), ("{x", "not JSON")])
def test_parse_attention_options_names_what_is_wrong(text, needle):
    with pytest.raises(ValueError, match=needle):
        parse_attention_options(text)
    assert parse_attention_options('{"sites": ["tri_att", "msa_row_att"], "paired": true}') == \
        {"sites": ["tri_att", "msa_row_att"], "paired": True}


def test_attention_config_reaches_every_attention(monkeypatch):
    model = load_model(next(FIXTURE.glob("params_*.npz")))
    with np.load(FIXTURE / "features.npz") as f:
        batch = {k: f[k] for k in f.files}
    configs = []
    real = kernels.attention

    def spy(*a, config=None, **kw):
        configs.append(config)
        return real(*a, config=config, **kw)

    monkeypatch.setattr(kernels, "attention", spy)
    outs = {}
    runtimes = {"default": (Runtime(), None), "gluon": (Runtime(gluon_attention=True), {"gluon": True}),
                "options": (Runtime(attention_options={"head_dims": [32], "paired": True}),
                            {"head_dims": [32], "paired": True})}
    for name, (rt, expected) in runtimes.items():
        configs.clear()
        outs[name] = model(batch, rt, num_recycle=0)
        # MSA row and column and triangle (both ends) attentions, every block (template point-wise
        # attention is written out in model/trunk.py and has no kernel options)
        assert len(configs) >= 4 and all(c == expected for c in configs), name
    # scoped to the triangle attentions: they alone get the option, every other attention none
    configs.clear()
    outs["sites"] = model(batch, Runtime(attention_options={"sites": ["tri_att"], "paired": True}), num_recycle=0)
    n_tri = sum(c == {"paired": True} for c in configs)
    assert n_tri >= 2 and n_tri + configs.count(None) == len(configs) > n_tri, configs
    for name in ("gluon", "options", "sites"):
        for key in ("repr_pair", "repr_msa", "final_atom_positions"):
            assert rel_err(outs[name][key].numpy(), outs["default"][key].numpy()) == 0, (name, key)
