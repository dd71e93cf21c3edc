"""Template features from hhsearch hits + mmCIF files vs AlphaFold's own template features for
OpenFold's short.fasta (AlphaFold's dict holds 8 templates; 1hf9 has no mmCIF here)."""
import dataclasses
import datetime
import shutil

import numpy as np
import pytest

from pipeline import parsers, templates
from pipeline_testutil import need_binary


@pytest.fixture(scope="module")
def short(data_dir):
    hits = parsers.parse_hhr((data_dir / "short" / "pdb70_hits.hhr").read_text())
    seq = (data_dir / "short" / "short.fasta").read_text().split("\n")[1].strip()
    return seq, hits


def test_template_features_equal_alphafold(short, data_dir):
    seq, hits = short
    feats, warnings = templates.get_template_features(seq, hits, str(data_dir / "mmcifs"), "2100-01-01")
    # 5KC1 F/J: the aligned residues are unobserved, dropped as in AlphaFold's run
    assert warnings == [f"1hf9_B: no mmCIF file 1hf9.cif in {data_dir / 'mmcifs'}",
                        "5kc1_F: template atom mask is all zeros", "5kc1_J: template atom mask is all zeros"]
    ref = np.load(data_dir / "short" / "af_raw_features.npz")
    ref_names = [str(x) for x in ref["template_domain_names"]]
    names = [x.decode() for x in feats["template_domain_names"]]
    assert names == [n for n in ref_names if n != "1hf9_B"]  # same order: sum_probs, stable
    assert feats["template_aatype"].shape == (7, 73, 22)
    for i, name in enumerate(names):
        j = ref_names.index(name)
        assert feats["template_sequence"][i].decode() == str(ref["template_sequence"][j])
        for k in ("template_aatype", "template_all_atom_positions", "template_all_atom_masks", "template_sum_probs"):
            np.testing.assert_array_equal(feats[k][i], ref[k][j], err_msg=f"{name} {k}")
            assert feats[k].dtype == np.float32


def test_date_cutoff_and_max_hits(short, data_dir):
    seq, hits = short
    cut, _ = templates.get_template_features(seq, hits, str(data_dir / "mmcifs"), "2014-01-01")
    names = [x.decode() for x in cut["template_domain_names"]]
    assert names == ["3u8v_A", "2crb_A", "1psm_A", "3zee_A", "4i6p_A", "2q2k_A"]  # 4zey: 2015
    early, _ = templates.get_template_features(seq, hits, str(data_dir / "mmcifs"), datetime.date(1950, 1, 1))
    assert early["template_aatype"].shape == (0,)  # AlphaFold's empty template arrays
    top2, _ = templates.get_template_features(seq, hits, str(data_dir / "mmcifs"), "2100-01-01", max_hits=2)
    assert [x.decode() for x in top2["template_domain_names"]] == ["3u8v_A", "2crb_A"]


def test_obsolete_mapping_and_broken_file_skipped(short, data_dir, tmp_path):
    seq, hits = short
    mm = tmp_path / "mmcif"
    mm.mkdir()
    shutil.copy(data_dir / "mmcifs" / "2crb.cif.gz", mm)
    (mm / "3u8v.cif").write_text("data_broken\n_this is not mmcif\n")
    obsolete = tmp_path / "obsolete.dat"
    obsolete.write_text(" LIST OF OBSOLETE COORDINATE ENTRIES AND SUCCESSORS\n"
                        "OBSLTE    01-JAN-20 9ZZZ     2CRB\nOBSLTE    01-JAN-20 4ZEY\n")
    renamed = [dataclasses.replace(h, name=h.name.replace("2CRB_A", "9ZZZ_A")) for h in hits]
    feats, warnings = templates.get_template_features(seq, renamed, str(mm), "2100-01-01", str(obsolete))
    assert [x.decode() for x in feats["template_domain_names"]] == ["2crb_A"]
    assert any(w.startswith("3u8v_A: cannot parse") for w in warnings)
    assert "4zey is obsolete" in warnings


def test_kalign_realignment_when_hit_sequence_differs(short, data_dir):
    """PDB70 may hold another version of the chain: the hit is realigned to the mmCIF SEQRES."""
    need_binary("kalign")
    seq, hits = short
    hit = next(h for h in hits if h.name.startswith("3U8V_A"))
    # one substitution in the hit: no longer an exact/X-wildcard substring of the SEQRES
    pos = next(i for i, c in enumerate(hit.hit_sequence) if c not in "-X" and i > 3)
    mutated = hit.hit_sequence[:pos] + ("W" if hit.hit_sequence[pos] != "W" else "A") + hit.hit_sequence[pos + 1:]
    feats, warning = templates.featurize_hit(dataclasses.replace(hit, hit_sequence=mutated), seq,
                                             str(data_dir / "mmcifs"), datetime.date(2100, 1, 1))
    assert warning and "realigned with kalign" in warning
    ref, _ = templates.featurize_hit(hit, seq, str(data_dir / "mmcifs"), datetime.date(2100, 1, 1))
    # the realigned template carries the mmCIF's residues and coordinates at the same query positions
    assert feats["template_sequence"] == ref["template_sequence"]
    np.testing.assert_array_equal(feats["template_all_atom_positions"], ref["template_all_atom_positions"])


def test_parse_mmcif_release_date_and_chains(data_dir):
    m = templates.parse_mmcif(str(data_dir / "mmcifs" / "2q2k.cif.gz"), "2q2k")
    assert m.release_date == datetime.date(2008, 2, 5)
    assert set(m.chain_to_seqres) == {"A", "B"} or "A" in m.chain_to_seqres
    assert len(m.chain_to_seqres["A"]) == 70
