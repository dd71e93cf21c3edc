"""Parameter import of the AlphaFold-Multimer v3 presets: every key of every official multimer file
(from the real manifests) maps to exactly one model parameter with the right shape, block counts come
from the file, and wrong files give one-line errors."""
import numpy as np
import pytest

import configs
from af_testlib import manifest_shapes, write_synthetic_params
from model.params import (ParamsError, block_counts, build_model, check_monomer_file, check_multimer_file,
                          load_model, map_parameters, param_key, preset_from_filename)

_shapes = manifest_shapes


@pytest.mark.parametrize("preset", configs.MULTIMER_PRESETS)
def test_multimer_manifest_maps_one_to_one(preset):
    m, shapes = _shapes(preset)
    assert m["preset"] == preset and preset_from_filename(m["file_name"]) == preset
    check_multimer_file(shapes, preset)
    counts = block_counts(shapes)
    assert counts["evoformer"] == m["layer_counts"]["evoformer_num_block"] == 48
    assert counts["extra"] == m["layer_counts"]["extra_msa_stack_num_block"] == 4
    assert counts["template"] == m["layer_counts"]["template_pair_stack_num_block"] == 2
    model = build_model(preset, shapes, device="meta")
    assert model.multimer
    mapping = map_parameters(model, shapes)
    assert sum(p.numel() for p in model.parameters()) == m["num_params"]
    assert {key for key, _ in mapping.values()} == set(shapes)
    assert len(shapes) == 330


def test_multimer_preset_configs():
    c4 = configs.load_preset("model_4_multimer_v3")
    c1 = configs.load_preset("model_1_multimer_v3")
    assert c1["embeddings_and_evoformer"]["num_extra_msa"] == 2048
    assert c4["embeddings_and_evoformer"]["num_extra_msa"] == 1152
    assert c1["embeddings_and_evoformer"]["num_msa"] == 508
    assert c1["heads"]["structure_module"]["position_scale"] == 20.0
    assert c1["embeddings_and_evoformer"]["evoformer"]["outer_product_mean"]["first"]


def test_relative_encoding_scope_name():
    assert param_key("evoformer.relative_encoding.position_activations.weights") == (
        "alphafold/alphafold_iteration/evoformer/~_relative_encoding/position_activations//weights", ())
    assert param_key("evoformer.template_embedding.single_template_embedding.template_embedding_iteration.1."
                     "triangle_multiplication_outgoing.projection.weights")[1] == (1,)


def test_synthetic_multimer_file_loads_with_its_block_counts(tmp_path):
    path, arrays = write_synthetic_params(tmp_path, "model_2_multimer_v3", blocks=1)
    model = load_model(path)
    assert len(model.evoformer.evoformer_iteration) == 1
    assert len(model.evoformer.template_embedding.single_template_embedding.template_embedding_iteration) == 1
    key = "alphafold/alphafold_iteration/evoformer/~_relative_encoding/position_activations//weights"
    np.testing.assert_array_equal(
        model.evoformer.relative_encoding.position_activations.weights.detach().numpy(), arrays[key])
    key = "alphafold/alphafold_iteration/structure_module/fold_iteration/quat_rigid/rigid//weights"
    np.testing.assert_array_equal(model.structure_module.fold_iteration.quat_rigid.rigid.weights.detach().numpy(),
                                  arrays[key])


def test_wrong_files_give_one_line_errors(tmp_path):
    mono, _ = write_synthetic_params(tmp_path, "model_1_ptm", blocks=1)
    with pytest.raises(ParamsError, match="monomer") as e:
        load_model(mono, preset="model_1_multimer_v3")
    assert "\n" not in str(e.value)
    multi, arrays = write_synthetic_params(tmp_path, "model_3_multimer_v3", blocks=1)
    with pytest.raises(ParamsError, match="Multimer"):
        load_model(multi, preset="model_3_ptm")
    # a v1/v2-style file: unfused triangle multiplication weights
    _, shapes = _shapes("model_3_multimer_v3")
    unfused = {k.replace("/projection//", "/left_projection//"): s for k, s in shapes.items()}
    with pytest.raises(ParamsError, match="unfused"):
        check_multimer_file(unfused, "model_3_multimer_v3")
    missing = dict(arrays)
    missing.pop("alphafold/alphafold_iteration/evoformer/template_embedding/output_linear//bias")
    path = tmp_path / "broken" / "params_model_3_multimer_v3.npz"
    path.parent.mkdir()
    np.savez(path, **missing)
    with pytest.raises(ParamsError, match="missing .*output_linear//bias") as e:
        load_model(path)
    assert "\n" not in str(e.value)
    check_monomer_file(_shapes("model_1_ptm")[1], "model_1_ptm")


def test_random_multimer_model_runs_on_random_features():
    import torch

    from model.config import Runtime
    from model.random_params import random_model, random_multimer_features

    model = random_model("model_5_multimer_v3", seed=1, num_evoformer=1, num_extra=1)
    batch = random_multimer_features((9, 7), n_seq=12, n_templates=4, homomer=False, seed=1)
    out = model(batch, Runtime(), num_recycle=1)
    assert out["masked_msa_logits"].shape == (12, 16, 22)  # 12 rows < num_msa: all are cluster rows
    assert torch.isfinite(out["final_atom_positions"]).all()
    assert 0 <= float(out["iptm"]) <= 1 and 0 <= float(out["ptm"]) <= 1
