"""Parameter import: every key of every official monomer file maps to exactly one model parameter
with the right shape (from the real manifests), block counts come from the file, and bad files give
one-line errors."""
import numpy as np
import pytest

import configs
from af_testlib import manifest_shapes, write_synthetic_params
from model.params import (ParamsError, block_counts, build_model, check_monomer_file, load_model,
                          map_parameters, param_key, preset_from_filename)

_shapes = manifest_shapes


@pytest.mark.parametrize("preset", configs.MONOMER_PRESETS)
def test_manifest_maps_one_to_one(preset):
    m, shapes = _shapes(preset)
    check_monomer_file(shapes, preset)
    counts = block_counts(shapes)
    assert counts["evoformer"] == m["layer_counts"]["evoformer_num_block"] == 48
    assert counts["extra"] == m["layer_counts"]["extra_msa_stack_num_block"] == 4
    model = build_model(preset, shapes, device="meta")  # full size, no memory
    mapping = map_parameters(model, shapes)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == m["num_params"]
    used = {key for key, _ in mapping.values()}
    assert used == set(shapes)


def test_param_key_of_stacked_and_plain_names():
    assert param_key("evoformer.evoformer_iteration.3.outer_product_mean.output_w") == (
        "alphafold/alphafold_iteration/evoformer/evoformer_iteration/outer_product_mean//output_w", (3,))
    assert param_key("structure_module.fold_iteration.transition_2.bias") == (
        "alphafold/alphafold_iteration/structure_module/fold_iteration/transition_2//bias", ())


def test_mismatch_is_reported_by_name():
    _, shapes = _shapes("model_1")
    model = build_model("model_1", shapes, device="meta")
    extra = dict(shapes)
    extra["alphafold/alphafold_iteration/evoformer/bogus//weights"] = (3, 3)
    with pytest.raises(ParamsError, match="unused .*bogus"):
        map_parameters(model, extra)
    missing = dict(shapes)
    missing.pop("alphafold/alphafold_iteration/structure_module/initial_projection//bias")
    with pytest.raises(ParamsError, match="missing .*initial_projection//bias"):
        map_parameters(model, missing)
    wrong = dict(shapes)
    wrong["alphafold/alphafold_iteration/distogram_head/half_logits//weights"] = (128, 63)
    with pytest.raises(ParamsError, match="half_logits//weights: file shape"):
        map_parameters(model, wrong)


def test_synthetic_file_loads_with_its_block_count_and_values(tmp_path):
    path, arrays = write_synthetic_params(tmp_path, "model_3_ptm", blocks=1)
    model = load_model(path)
    assert len(model.evoformer.evoformer_iteration) == 1
    assert len(model.evoformer.extra_msa_stack) == 1
    key = "alphafold/alphafold_iteration/evoformer/evoformer_iteration/msa_transition/transition1//weights"
    got = model.evoformer.evoformer_iteration[0].msa_transition.transition1.weights.detach().numpy()
    np.testing.assert_array_equal(got, arrays[key][0])
    key = "alphafold/alphafold_iteration/structure_module/fold_iteration/invariant_point_attention//trainable_point_weights"
    np.testing.assert_array_equal(
        model.structure_module.fold_iteration.invariant_point_attention.trainable_point_weights.detach().numpy(),
        arrays[key])


def test_preset_from_file_name():
    assert preset_from_filename("/x/params_model_3_ptm.npz") == "model_3_ptm"
    assert preset_from_filename("params_model_2.npz") == "model_2"
    assert preset_from_filename("weights.npz") is None


def test_bad_files_give_one_line_errors(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_model(tmp_path / "params_model_1.npz")
    text = tmp_path / "params_model_1.npz"
    text.write_text("hello, not a zip\n")
    with pytest.raises(ParamsError) as e:
        load_model(text)
    assert "\n" not in str(e.value)
    foreign = tmp_path / "params_model_5.npz"
    np.savez(foreign, weights=np.ones(3, np.float32))
    with pytest.raises(ParamsError, match="not an AlphaFold parameter file"):
        load_model(foreign)
    good, _ = write_synthetic_params(tmp_path, "model_5", blocks=1)
    data = good.read_bytes()
    trunc = tmp_path / "trunc" / "params_model_5.npz"
    trunc.parent.mkdir()
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ParamsError, match="truncated or corrupt|damaged") as e:
        load_model(trunc)
    assert "\n" not in str(e.value)
    with pytest.raises(ParamsError, match="uses templates|has no template"):
        load_model(good, preset="model_1")
    with pytest.raises(ParamsError, match="predicted-aligned-error"):
        load_model(good, preset="model_5_ptm")
    with pytest.raises(ParamsError, match="unknown preset"):
        load_model(good, preset="model_9")


def test_multimer_file_is_refused_by_the_monomer_loader():
    _, shapes = _shapes("model_1_multimer_v3")
    with pytest.raises(ParamsError, match="Multimer"):
        check_monomer_file(shapes, "model_1")
