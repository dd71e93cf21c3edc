"""Features vs AlphaFold's own arrays on real data.

* raw: OpenFold's alphafold_feature_dict.pickle (AlphaFold's raw dict for short.fasta) vs ours
  from the same alignment files;
* processed: OpenFold's sample_feats.pickle.gz (AlphaFold-JAX processed model_1 batch, N=200,
  MSA depth 3222): given AlphaFold's own cluster sample, BERT-masked rows and extra rows, our
  nearest-neighbour clustering, profiles, msa_feat, target_feat and atom tables equal its arrays.
"""
import json

import numpy as np
import pytest

from pipeline import features, parsers
from pipeline.parsers import Msa


@pytest.fixture(scope="module")
def short_raw(data_dir):
    d = data_dir / "short"
    uniref = parsers.parse_stockholm(parsers.truncate_stockholm_msa(str(d / "uniref90_hits.sto"), 10000))
    bfd = parsers.parse_a3m((d / "bfd_uniclust_hits.a3m").read_text())
    mgnify = parsers.parse_stockholm(parsers.truncate_stockholm_msa(str(d / "mgnify_hits.sto"), 501))
    seq = (d / "short.fasta").read_text().split("\n")[1].strip()
    return features.make_raw_features(seq, "query", [uniref, bfd, mgnify])


def test_raw_features_equal_alphafold(short_raw, data_dir):
    ref = np.load(data_dir / "short" / "af_raw_features.npz")
    for k in ("aatype", "between_segment_residues", "residue_index", "seq_length", "msa",
              "deletion_matrix_int", "num_alignments"):
        assert short_raw[k].dtype == np.int32, k
        np.testing.assert_array_equal(short_raw[k], ref[k], err_msg=k)
    assert short_raw["msa"].shape == (1136, 73)
    assert short_raw["sequence"][0].decode() == str(ref["sequence"][0])
    assert short_raw["domain_name"][0] == b"query"
    assert short_raw["msa_species_identifiers"].shape == (1136,)


def test_msa_merge_order_and_exact_dedup():
    a = Msa(["MKV", "MKA", "MKV"], [[0, 0, 0], [0, 1, 0], [0, 0, 2]], ["query", "tr|B6ESM7|B6ESM7_ALISL/1-3", "x"])
    b = Msa(["MKV", "-KA", "MKA"], [[0, 0, 0]] * 3, ["query", "sp|P12748|LUXC_ALIFS", "y"])
    f = features.make_msa_features([a, b])
    # first occurrence wins, exact string match, order kept
    assert f["msa"].tolist() == [[10, 8, 17], [10, 8, 0], [21, 8, 0]]
    assert f["deletion_matrix_int"].tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert f["msa_species_identifiers"].tolist() == [b"", b"ALISL", b"ALIFS"]
    assert f["num_alignments"].tolist() == [3, 3, 3]


@pytest.fixture(scope="module")
def af_batch(data_dir):
    return np.load(data_dir / "sample_feats_small.npz")


def test_cluster_profiles_equal_alphafold(af_batch):
    msa = af_batch["msa"].astype(np.int32)            # AlphaFold's BERT-masked cluster rows (508, 200)
    dels = af_batch["deletion_matrix"].astype(np.float32)
    extra = af_batch["extra_msa"].astype(np.int32)     # all 2714 extra rows (< 5120: none cropped)
    xdels = af_batch["extra_deletion_matrix"].astype(np.float32)
    ones = np.ones(msa.shape, np.float32)
    assign = features.nearest_neighbor_clusters(msa, ones, extra, np.ones(extra.shape, np.float32))
    profile, del_mean = features.summarize_clusters(msa, ones, dels, extra, np.ones(extra.shape, np.float32),
                                                    xdels, assign)
    feat = features.make_msa_feat(msa, dels, profile, del_mean)
    ref = af_batch["msa_feat_head"]                   # AlphaFold's msa_feat, first 16 cluster rows
    np.testing.assert_allclose(feat[:16], ref, rtol=0, atol=2e-7)
    assert (ref[..., 25:48].sum(-1) > 0.99).all()


def test_target_feat_and_atom_tables_equal_alphafold(af_batch):
    aatype = af_batch["aatype"]
    np.testing.assert_array_equal(features.make_target_feat(aatype), af_batch["target_feat"])
    tables = features.atom_tables(aatype)
    for k, v in tables.items():
        np.testing.assert_array_equal(v, af_batch[k], err_msg=k)
        assert v.dtype == af_batch[k].dtype


def test_bert_statistics_like_alphafold(af_batch):
    """AlphaFold's batch masks ~15% of cluster positions; ours draws the same distribution."""
    true = af_batch["true_msa"].astype(np.int32)
    profile = np.eye(22, dtype=np.float32)[true].mean(0)
    masked, mask = features.bert_mask_msa(np.random.default_rng(0), true, profile, features.FeatureConfig())
    assert abs(mask.mean() - af_batch["bert_mask"].mean()) < 0.005
    assert abs(mask.mean() - 0.15) < 0.005
    ours_token22 = (masked == 22).sum() / mask.sum()
    af_token22 = (af_batch["msa"] == 22).sum() / af_batch["bert_mask"].sum()
    assert abs(ours_token22 - af_token22) < 0.02 and abs(ours_token22 - 0.7) < 0.02
    assert (masked[mask == 0] == true[mask == 0]).all()


def test_processed_keys_shapes_match_fixture(short_raw, data_dir):
    spec = json.loads((data_dir / "fixture_feature_keys.json").read_text())
    batch = features.process_features(short_raw, "model_1_ptm", seed=0)
    assert list(batch) == list(spec)
    n = 73
    for k, (dtype, shape) in spec.items():
        assert str(batch[k].dtype) == dtype, k
        assert batch[k].ndim == len(shape), k
    assert batch["msa_feat"].shape == (508, n, 49)
    assert batch["extra_msa"].shape == (5120, n)
    assert batch["template_aatype"].shape == (4, n)
    assert batch["msa_row_mask"].sum() == 508 and batch["extra_msa_row_mask"].sum() == 1136 - 508
    # query first, never shuffled; AF-order restypes
    np.testing.assert_array_equal(batch["true_msa"][0], batch["aatype"])


@pytest.mark.parametrize("model, clusters, extra, templates", [
    ("model_1", 508, 5120, True), ("model_2_ptm", 508, 1024, True),
    ("model_3", 512, 5120, False), ("model_5_ptm", 512, 1024, False)])
def test_presets(short_raw, model, clusters, extra, templates):
    b = features.process_features(short_raw, model, seed=1)
    assert b["msa_feat"].shape[0] == clusters and b["extra_msa"].shape[0] == extra
    assert ("template_aatype" in b) == templates


def test_deterministic_for_seed_and_ensemble_axis(short_raw):
    a = features.process_features(short_raw, "model_1_ptm", seed=3)
    b = features.process_features(short_raw, "model_1_ptm", seed=3)
    c = features.process_features(short_raw, "model_1_ptm", seed=4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["msa_feat"], c["msa_feat"])
    e = features.process_features(short_raw, "model_1_ptm", seed=3, ensemble_axis=True)
    assert e["msa_feat"].shape == (4, 508, 73, 49) and e["seq_length"].shape == (4,)
    assert not np.array_equal(e["true_msa"][0], e["true_msa"][1])  # resampled per recycle


def test_deterministic_case_equals_raw_msa(short_raw):
    """With clusters >= depth and masking off AlphaFold's sampling keeps every row (query first),
    leaves the extra MSA empty and the profile is the row itself: msa_feat is a function of raw."""
    cfg = features.FeatureConfig(max_msa_clusters=2000, replace_fraction=0.0)
    b = features.process_features(short_raw, cfg, seed=0, pad=False)
    hh_to_af = np.asarray(features.rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE)
    raw_rows = sorted(map(tuple, hh_to_af[short_raw["msa"]].tolist()))
    assert sorted(map(tuple, b["true_msa"].tolist())) == raw_rows
    np.testing.assert_array_equal(b["true_msa"][0], hh_to_af[short_raw["msa"][0]])
    assert b["extra_msa"].shape == (0, 73) and b["bert_mask"].sum() == 0
    one_hot = np.eye(23, dtype=np.float32)[b["true_msa"]]
    np.testing.assert_allclose(b["msa_feat"][..., 25:48], one_hot, atol=1e-5)
    np.testing.assert_array_equal(b["msa_feat"][..., :23], one_hot)


def test_templates_processed(short_raw):
    raw = dict(short_raw)
    rng = np.random.default_rng(0)
    t, n = 2, 73
    aat = np.zeros((t, n, 22), np.float32)
    aat[:, np.arange(n), rng.integers(0, 20, n)] = 1
    pos = rng.normal(size=(t, n, 37, 3)).astype(np.float32)
    masks = (rng.random((t, n, 37)) > 0.3).astype(np.float32)
    raw.update(template_aatype=aat, template_all_atom_positions=pos, template_all_atom_masks=masks,
               template_sum_probs=np.array([[3.0], [1.0]], np.float32))
    b = features.process_features(raw, "model_1", seed=0)
    assert b["template_mask"].tolist() == [1, 1, 0, 0]
    hh_to_af = np.asarray(features.rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE)
    np.testing.assert_array_equal(b["template_aatype"][:2], hh_to_af[aat.argmax(-1)])
    gly = b["template_aatype"][:2] == features.rc.restype_order["G"]
    cb = np.where(gly[..., None], pos[:, :, 1], pos[:, :, 3])
    np.testing.assert_array_equal(b["template_pseudo_beta"][:2], cb)
    assert not b["template_all_atom_positions"][2:].any()
