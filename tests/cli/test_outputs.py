"""Output writers on real data: PDB entries from AlphaFold's test data and the outputs of an
AlphaFold 2.3 (JAX) run (tests/data/outputs/SOURCE.md). Files are re-read with gemmi and Bio.PDB."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

gemmi = pytest.importorskip("gemmi")

from fastfold_cli import outputs  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data" / "outputs"
AA = "ARNDCQEGHILKMFPSTWYVX"


def seq_of(aatype) -> str:
    return "".join(AA[a] for a in aatype)


@pytest.fixture(scope="module")
def af_run():
    """(features, result) of model_1_ptm on a 24-residue target, AlphaFold's own output."""
    d = dict(np.load(DATA / "model_1_ptm_small.npz"))
    features = {k: d.pop(k) for k in ("aatype", "residue_index", "true_msa", "msa_feat")}
    return features, d


@pytest.fixture(scope="module")
def glucagon():
    return outputs.from_pdb_string((DATA / "glucagon.pdb").read_text())


def pdb_columns(line: str) -> dict:
    """Fixed PDB ATOM columns (wwPDB format 3.3)."""
    return dict(record=line[0:6].strip(), serial=int(line[6:11]), name=line[12:16], resname=line[17:20],
                chain=line[21], resseq=int(line[22:26]), xyz=(float(line[30:38]), float(line[38:46]),
                                                             float(line[46:54])),
                occ=float(line[54:60]), b=float(line[60:66]), element=line[76:78].strip())


# ----------------------------------------------------------------------------------------- PDB

def test_from_pdb_string_matches_biopython(glucagon):
    from Bio.PDB import PDBParser
    from Bio.SeqUtils import seq1

    chain = PDBParser(QUIET=True).get_structure("g", DATA / "glucagon.pdb")[0]["A"]
    residues = [r for r in chain if r.id[0] == " "]
    assert seq_of(glucagon["aatype"]) == "".join(seq1(r.get_resname()) for r in residues) == \
        "HSQGTFTSDYSKYLDSRRAQDFVQWLMNT"
    assert glucagon["residue_index"].tolist() == [r.id[1] for r in residues]
    assert int(glucagon["atom_mask"].sum()) == sum(len(r) for r in residues) == 246
    ca = glucagon["atom_positions"][:, 1]
    np.testing.assert_allclose(ca, [r["CA"].coord for r in residues], atol=1e-3)


def test_to_pdb_columns_equal_the_original_entry(glucagon):
    """Every atom written lands in the right PDB columns with the original's values."""
    ours = outputs.to_pdb(**{k: v for k, v in glucagon.items() if k != "chain_ids"})
    lines = ours.splitlines()
    assert lines[0].rstrip() == "MODEL     1" and lines[-2].rstrip() == "ENDMDL" and lines[-1].rstrip() == "END"
    assert all(len(line) == 80 for line in lines)
    original = {}
    for line in (DATA / "glucagon.pdb").read_text().splitlines():
        if line.startswith("ATOM"):
            c = pdb_columns(line)
            original[(c["resseq"], c["name"])] = c
    atoms = [pdb_columns(line) for line in lines if line.startswith("ATOM")]
    assert len(atoms) == len(original) == 246
    assert [a["serial"] for a in atoms] == list(range(1, 247))
    for a in atoms:
        o = original[(a["resseq"], a["name"])]
        assert (a["resname"], a["chain"], a["element"], a["occ"]) == (o["resname"], "A", o["element"], 1.0)
        assert a["xyz"] == o["xyz"] and a["b"] == o["b"]
    ter = [line for line in lines if line.startswith("TER")]
    assert [line.rstrip() for line in ter] == ["TER     247      THR A  29"]


def test_prediction_pdb_rereads_with_plddt_as_bfactors(af_run, tmp_path):
    from Bio.PDB import PDBParser

    features, result = af_run
    text = outputs.to_pdb(**outputs.prediction_structure(features, result))
    path = tmp_path / "m.pdb"
    path.write_text(text)
    st = gemmi.read_structure(str(path))
    residues = list(st[0]["A"])
    assert gemmi.one_letter_code([r.name for r in residues]) == seq_of(features["aatype"])
    assert [r.seqid.num for r in residues] == (features["residue_index"] + 1).tolist()
    mask = result["final_atom_mask"] > 0.5
    assert st[0].count_atom_sites() == mask.sum()
    for i, r in enumerate(residues):
        np.testing.assert_allclose([a.b_iso for a in r], round(float(result["plddt"][i]), 2), atol=1e-5)
        np.testing.assert_allclose([a.pos.tolist() for a in r], result["final_atom_positions"][i][mask[i]],
                                   atol=5e-4)
    bio = PDBParser(QUIET=True).get_structure("m", str(path))
    assert len(list(bio.get_atoms())) == mask.sum()


def test_multichain_pdb_has_ter_per_chain():
    prot = outputs.from_pdb_string((DATA / "2rbg.pdb").read_text())
    assert prot.pop("chain_ids") == ["A", "B"]
    text = outputs.to_pdb(**prot)
    ter = [line.rstrip() for line in text.splitlines() if line.startswith("TER")]
    n_a = int(prot["atom_mask"][prot["chain_index"] == 0].sum())
    assert ter[0] == f"TER   {n_a + 1:>5}      SER A 126"
    assert ter[1].endswith("SER B 126") and len(ter) == 2
    back = outputs.from_pdb_string(text)
    assert back["chain_ids"] == ["A", "B"]
    np.testing.assert_array_equal(back["aatype"], prot["aatype"])  # MSE came in as X, stays UNK
    np.testing.assert_allclose(back["atom_positions"], prot["atom_positions"], atol=5e-4)


def test_to_pdb_rejects_bad_input(af_run):
    features, result = af_run
    s = outputs.prediction_structure(features, result)
    with pytest.raises(ValueError, match="aatype"):
        outputs.to_pdb(**{**s, "aatype": s["aatype"] + 30})
    with pytest.raises(ValueError, match="atom37"):
        outputs.to_pdb(**{**s, "atom_positions": s["atom_positions"][:, :14]})


# ----------------------------------------------------------------------------------------- mmCIF

def test_mmcif_rereads_with_gemmi_and_biopython(af_run, tmp_path):
    from Bio.PDB import MMCIFParser
    from Bio.PDB.MMCIF2Dict import MMCIF2Dict

    features, result = af_run
    s = outputs.prediction_structure(features, result)
    plddt = result["plddt"]
    path = tmp_path / "m.cif"
    path.write_text(outputs.to_mmcif(**s, plddt=plddt, name="ranked_0"))

    doc = gemmi.cif.read(str(path))
    block = doc.sole_block()
    assert block.name == "ranked_0"
    st = gemmi.make_structure_from_block(block)
    assert [e.name for e in st.entities] == ["1"]
    assert gemmi.one_letter_code(list(st.entities[0].full_sequence)) == seq_of(features["aatype"])
    assert list(block.find_values("_struct_asym.id")) == ["A"]
    assert list(block.find_values("_entity_poly.type")) == ["polypeptide(L)"]
    residues = list(st[0]["A"])
    assert [r.label_seq for r in residues] == list(range(1, 25))
    for i, r in enumerate(residues):
        np.testing.assert_allclose([a.b_iso for a in r], round(float(plddt[i]), 2), atol=1e-5)  # gemmi: float32
    local = [float(v) for v in block.find_values("_ma_qa_metric_local.metric_value")]
    np.testing.assert_allclose(local, np.round(plddt, 2), atol=1e-6)
    assert float(block.find_value("_ma_qa_metric_global.metric_value")) == pytest.approx(plddt.mean(), abs=0.006)
    assert not list(block.find_values("_cell.length_a"))  # no fake 1 Å crystal cell

    bio = MMCIFParser(QUIET=True).get_structure("m", str(path))
    atoms = list(bio.get_atoms())
    assert len(atoms) == int(result["final_atom_mask"].sum())
    mask = result["final_atom_mask"] > 0.5
    np.testing.assert_allclose([a.coord for a in atoms], result["final_atom_positions"][mask], atol=5e-4)
    assert MMCIF2Dict(str(path))["_chem_comp.type"][0].endswith("peptide linking")


def test_mmcif_homodimer_shares_one_entity(tmp_path):
    prot = outputs.from_pdb_string((DATA / "2rbg.pdb").read_text())
    prot.pop("chain_ids")
    path = tmp_path / "d.cif"
    path.write_text(outputs.to_mmcif(**prot))
    st = gemmi.read_structure(str(path))
    assert [c.name for c in st[0]] == ["A", "B"]
    assert len(st.entities) == 1 and list(st.entities[0].subchains) == ["A", "B"]
    assert "_ma_qa_metric" not in path.read_text()  # only with plddt=
    back = gemmi.read_structure(str(path))
    assert back[0].count_atom_sites() == int(prot["atom_mask"].sum())


# ----------------------------------------------------------------------------------------- json

def test_confidence_json_is_alphafolds_format(af_run):
    plddt = af_run[1]["plddt"]
    text = outputs.confidence_json(plddt)
    assert " " not in text  # compact separators, as AlphaFold
    d = json.loads(text)
    assert list(d) == ["residueNumber", "confidenceScore", "confidenceCategory"]
    assert d["residueNumber"] == list(range(1, 25))
    assert d["confidenceScore"] == [round(float(x), 2) for x in plddt]
    assert set(d["confidenceCategory"]) == {"D"}  # random parameters: all below 50
    bands = json.loads(outputs.confidence_json(np.array([0, 49.99, 50, 69.99, 70, 89.99, 90, 100.0])))
    assert bands["confidenceCategory"] == list("DDLLMMHH")
    with pytest.raises(ValueError):
        outputs.confidence_json(np.array([101.0]))
    with pytest.raises(ValueError):
        outputs.confidence_json(plddt[None])


def test_pae_json_is_alphafolds_format(af_run):
    result = af_run[1]
    pae, max_pae = result["predicted_aligned_error"], float(result["max_predicted_aligned_error"])
    d = json.loads(outputs.pae_json(pae, max_pae))
    assert isinstance(d, list) and len(d) == 1 and set(d[0]) == {"predicted_aligned_error",
                                                                  "max_predicted_aligned_error"}
    m = np.array(d[0]["predicted_aligned_error"])
    assert m.shape == (24, 24)
    np.testing.assert_array_equal(m, np.round(pae.astype(np.float64), 1))
    assert d[0]["max_predicted_aligned_error"] == max_pae == pytest.approx(31.75)
    with pytest.raises(ValueError):
        outputs.pae_json(pae[:3], max_pae)


def test_ranking_monomer_and_multimer(af_run):
    plddt = af_run[1]["plddt"]
    results = {"model_1_ptm": {"plddt": plddt}, "model_2_ptm": {"plddt": plddt + 1},
               "model_3_ptm": {"plddt": plddt}}
    order, debug = outputs.ranking(results)
    assert order == ["model_2_ptm", "model_1_ptm", "model_3_ptm"]  # tie keeps insertion order
    assert list(debug) == ["plddts", "order"] and debug["order"] == order
    assert debug["plddts"]["model_1_ptm"] == pytest.approx(float(plddt.astype(np.float64).mean()))
    json.dumps(debug)  # plain floats, no numpy scalars

    multi = {"m1": {"plddt": plddt + 50, "ptm": np.float32(0.9), "iptm": np.float32(0.1)},
             "m2": {"plddt": plddt, "ptm": np.float32(0.2), "iptm": np.float32(0.5)}}
    order, debug = outputs.ranking(multi)
    assert order == ["m2", "m1"]  # 0.8*0.5+0.2*0.2 = 0.44 > 0.8*0.1+0.2*0.9 = 0.26, pLDDT ignored
    assert debug["iptm+ptm"]["m2"] == pytest.approx(0.44)
    with pytest.raises(ValueError):
        outputs.ranking({})


# ----------------------------------------------------------------------------------------- files

def test_write_prediction_outputs_and_ranked(af_run, tmp_path):
    features, result = af_run
    worse = {**result, "plddt": result["plddt"] - 10}
    out = tmp_path / "target"
    w1 = outputs.write_prediction_outputs(out, "model_1_ptm", features, worse)
    w2 = outputs.write_prediction_outputs(out, "model_2_ptm", features, result)
    assert set(w1) == {"unrelaxed_pdb", "confidence_json", "pae_json"}
    no_pae = {k: v for k, v in result.items() if k not in ("predicted_aligned_error", "max_predicted_aligned_error")}
    assert set(outputs.write_prediction_outputs(out, "model_3", features, no_pae)) == {"unrelaxed_pdb",
                                                                                      "confidence_json"}
    order = outputs.write_ranked(out, {"model_1_ptm": worse, "model_2_ptm": result, "model_3": no_pae})
    assert order[-1] == "model_1_ptm"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["unrelaxed_model_1_ptm.pdb", "unrelaxed_model_2_ptm.pdb", "unrelaxed_model_3.pdb",
                            "confidence_model_1_ptm.json", "confidence_model_2_ptm.json", "confidence_model_3.json",
                            "pae_model_1_ptm.json", "pae_model_2_ptm.json", "ranking_debug.json",
                            "ranked_0.pdb", "ranked_1.pdb", "ranked_2.pdb",
                            "ranked_0.cif", "ranked_1.cif", "ranked_2.cif"])  # and no stray temp files
    debug = json.loads((out / "ranking_debug.json").read_text())
    assert debug["order"] == order and set(debug["plddts"]) == set(order)
    assert (out / "ranked_2.pdb").read_text() == w1["unrelaxed_pdb"].read_text()
    assert (out / "ranked_0.pdb").read_text() == (out / f"unrelaxed_{order[0]}.pdb").read_text()
    # B-factors of the ranked mmCIF equal the pLDDT written in that model's confidence json.
    for i, name in enumerate(order):
        scores = json.loads((out / f"confidence_{name}.json").read_text())["confidenceScore"]
        st = gemmi.read_structure(str(out / f"ranked_{i}.cif"))
        np.testing.assert_allclose([a.b_iso for r in st[0]["A"] for a in r],
                                   [x for r, x in zip(st[0]["A"], scores) for _ in r], atol=1e-5)
        assert gemmi.one_letter_code([r.name for r in st[0]["A"]]) == seq_of(features["aatype"])
    pae = json.loads(w2["pae_json"].read_text())[0]["predicted_aligned_error"]
    assert np.array(pae).shape == (24, 24)

    # A relaxed structure replaces the unrelaxed one in ranked_*.
    relaxed = outputs.to_pdb(**{**outputs.prediction_structure(features, result),
                                "atom_positions": result["final_atom_positions"] + 1.0})
    order2 = outputs.write_ranked(out, {"model_2_ptm": result}, relaxed_pdbs={"model_2_ptm": relaxed})
    assert order2 == ["model_2_ptm"] and (out / "ranked_0.pdb").read_text() == relaxed


def test_write_atomic_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "a.json"
    outputs.write_atomic(path, "old")

    with pytest.raises(TypeError):
        outputs.write_atomic(path, 12345)  # not str/bytes: fails inside the write
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    outputs.write_atomic(path, b"\x00new")
    assert path.read_bytes() == b"\x00new"


# ----------------------------------------------------------------------------------------- plots

def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plots_are_valid_pngs(af_run, tmp_path):
    pytest.importorskip("matplotlib")
    from fastfold_cli import plots

    features, result = af_run
    results = {"model_1_ptm": result, "model_2_ptm": {**result, "plddt": result["plddt"] - 5}}
    written = plots.write_plots(tmp_path, results, features)
    assert set(written) == {"plddt", "pae", "msa_coverage"}
    sizes = {k: png_size(p) for k, p in written.items()}
    assert all(w > 200 and h > 100 for w, h in sizes.values())
    assert sizes["pae"][0] > sizes["pae"][1]  # two panels side by side
    assert sorted(p.name for p in tmp_path.iterdir()) == ["msa_coverage.png", "pae.png", "plddt.png"]

    # A complex: rows grouped by the chains they cover, as ColabFold's plot_msa_v2.
    msa = features["true_msa"].copy()
    msa[5:, 12:] = plots.GAP  # three sequences cover chain A only (unpaired rows)
    feats = {"msa": msa, "num_alignments": np.full(24, 8), "asym_id": np.repeat([1, 2], 12)}
    lines, bounds = plots.coverage_lines(plots.msa_from_features(feats), plots.chain_lengths_from_features(feats))
    assert lines.shape == (8, 24) and bounds.tolist() == [0, 3, 8]
    assert np.isnan(lines[:3, 12:]).all() and np.nanmax(lines) == pytest.approx(1.0)  # the query row
    png_size(plots.plot_msa_coverage(feats, tmp_path / "complex.png"))


def test_complex_outputs_follow_asym_id(af_run, tmp_path):
    """Multimer features: chains from asym_id, residue numbers per chain, ranking by ipTM+pTM."""
    features, result = af_run
    feats = {"aatype": features["aatype"], "residue_index": np.tile(np.arange(12), 2),
             "asym_id": np.repeat([1, 2], 12)}
    res = {**result, "iptm": np.float32(0.3)}
    outputs.write_prediction_outputs(tmp_path, "model_1_multimer_v3_pred_0", feats, res)
    order = outputs.write_ranked(tmp_path, {"model_1_multimer_v3_pred_0": res})
    assert json.loads((tmp_path / "ranking_debug.json").read_text())["iptm+ptm"][order[0]] == \
        pytest.approx(0.8 * 0.3 + 0.2 * float(result["ptm"]))
    for name in ("unrelaxed_model_1_multimer_v3_pred_0.pdb", "ranked_0.cif"):
        st = gemmi.read_structure(str(tmp_path / name))
        assert [c.name for c in st[0]] == ["A", "B"]
        assert [r.seqid.num for r in st[0]["B"]] == list(range(1, 13))
        assert gemmi.one_letter_code([r.name for c in st[0] for r in c]) == seq_of(features["aatype"])


def test_pdb_is_byte_identical_to_colabfolds_alphafold_output():
    """ColabFold's test model was written by AlphaFold's protein.to_pdb: parsing it and writing it
    again gives the same ATOM records, byte for byte."""
    text = (DATA / "ERR550519_2213899_unrelaxed_model_1.pdb").read_text()
    prot = outputs.from_pdb_string(text)
    prot.pop("chain_ids")
    ours = outputs.to_pdb(**prot)
    theirs = [line for line in text.splitlines() if line.startswith("ATOM")]
    assert [line for line in ours.splitlines() if line.startswith("ATOM")] == theirs
    assert len(theirs) == 1069


def test_mmcif_holds_what_colabfolds_mmcif_holds(tmp_path):
    """Same model through our mmCIF writer and ColabFold's: same sequence, atoms, B-factors, and the
    release date AlphaFold's template reader needs."""
    prot = outputs.from_pdb_string((DATA / "ERR550519_2213899_unrelaxed_model_1.pdb").read_text())
    prot.pop("chain_ids")
    path = tmp_path / "m.cif"
    path.write_text(outputs.to_mmcif(**prot))
    ours, theirs = (gemmi.read_structure(str(p)) for p in (path, DATA / "ERR550519_2213899_unrelaxed_model_1.cif"))
    seqs = [list(gemmi.cif.read(str(p)).sole_block().find_values("_entity_poly_seq.mon_id"))
            for p in (path, DATA / "ERR550519_2213899_unrelaxed_model_1.cif")]
    assert seqs[0] == seqs[1] and len(seqs[0]) == 130
    a = [(r.seqid.num, r.name, at.name, at.pos.tolist(), at.b_iso) for r in ours[0]["A"] for at in r]
    b = [(r.seqid.num, r.name, at.name, at.pos.tolist(), at.b_iso) for r in theirs[0]["A"] for at in r]
    assert a == b
    block = gemmi.cif.read(str(path)).sole_block()
    assert block.find_value("_pdbx_audit_revision_history.revision_date") == "1971-01-01"


def test_prediction_structure_reads_raw_and_batched_features(af_run):
    """The raw pipeline dict (one-hot aatype [N,21]) and a batch with a leading axis ([1,N]) give
    the same structure as the plain processed features."""
    features, result = af_run
    plain = outputs.prediction_structure(features, result)
    raw = {"aatype": np.eye(21, dtype=np.int32)[features["aatype"]], "residue_index": features["residue_index"]}
    batched = {k: features[k][None] for k in ("aatype", "residue_index")}
    for feats in (raw, batched):
        other = outputs.prediction_structure(feats, result)
        for k in ("aatype", "residue_index"):
            np.testing.assert_array_equal(other[k], plain[k])
