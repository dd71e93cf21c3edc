"""AlphaFold-Multimer feature processing (`pipeline.multimer`) on real alignments.

Chains (tests/data/pipeline/multimer, see SOURCE.md): two LuxC proteins with their real HMMER
jackhmmer hits (UniProt ids, shared species PHOLE/ALIFS/VIBHA/...) and ParR of PDB 2q2k (OpenFold's
recorded UniRef90/BFD/MGnify/UniProt alignments, hmmsearch templates from the 2q2k mmCIF).
`reference.npz` holds what AlphaFold's own pipeline_multimer/feature_processing/msa_pairing code
made from the same per-chain features; every array must be equal, dtype included.
"""
import collections
import importlib.util
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import multimer
from pipeline import parsers
from pipeline_testutil import DATA, write_pdb_seqres

MM = DATA / "multimer"
ROOT = Path(__file__).resolve().parents[2]
GAP = 21  # AlphaFold order: 20 = X, 21 = gap


def _load_generator():
    spec = importlib.util.spec_from_file_location("mm_make_reference", MM / "make_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


GEN = _load_generator()
CASES = GEN.CASES


@pytest.fixture(scope="module")
def raw():
    """Per-chain raw features (AlphaFold's monomer features.pkl + UniProt *_all_seq), made from
    the files by FastFold's own parsers, template featurizer and feature code."""
    return {n: GEN.raw_chain(n) for n in sorted({n for v in CASES.values() for n in v})}


@pytest.fixture(scope="module")
def ref():
    with np.load(MM / "reference.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def merged(raw):
    return {case: multimer.multimer_features([raw[n] for n in names]) for case, names in CASES.items()}


def _species(sto: str) -> list[str]:
    msa = parsers.parse_stockholm(sto)
    return [parsers.species_identifier(d) for d in msa.descriptions]


@pytest.mark.parametrize("case", list(CASES))
def test_equals_alphafold(case, merged, ref):
    """Every array of AlphaFold's features.pkl (pair_and_merge + pad_msa) equal, dtype included."""
    ex = merged[case]
    keys = {k.split("/", 1)[1] for k in ref if k.startswith(case + "/") and not k.endswith("/paired_rows")}
    assert set(ex) == keys
    for k in sorted(keys):
        want = ref[f"{case}/{k}"]
        got = np.asarray(ex[k])
        if k == "msa":  # stored as int8
            assert got.dtype == np.int32
            want = want.astype(np.int32)
        assert got.dtype == want.dtype and got.shape == want.shape, (k, got.dtype, want.dtype, got.shape, want.shape)
        np.testing.assert_array_equal(got, want, err_msg=k)


@pytest.mark.parametrize("case", ["heterodimer", "heteromer3", "a2b", "parr_mut"])
def test_paired_rows_equal_alphafold(case, raw, ref):
    chains = [multimer.convert_monomer_features(raw[n], c) for n, c in zip(CASES[case], "ABC")]
    chains = list(multimer.add_assembly_features(dict(zip("ABC", chains))).values())
    multimer.process_unmerged_features(dict(enumerate(chains)))
    rows = multimer.reorder_paired_rows(multimer.pair_sequences(chains))
    np.testing.assert_array_equal(rows, ref[f"{case}/paired_rows"])


def test_heterodimer_pairs_by_species(raw, merged):
    """LuxC A x LuxC B: one paired row per species both MSAs hold, each paired row
    holds hits of one species in both chains, the query pair first; unpaired rows that equal a
    paired row are gone."""
    sp = {c: _species((MM / f"luxc_{c}.sto").read_text()) for c in "AB"}
    assert sp["A"][0] == sp["B"][0] == ""  # the query (`chain_A`) has no species
    # species per UniProt row as AlphaFold reads them: make_msa_features drops rows equal to an
    # earlier one (each query's self-hit, e.g. LUXC_PHOPO in chain A)
    count = {c: collections.Counter(s for s in raw[f"luxc_{c}"]["msa_species_identifiers_all_seq"] if s)
             for c in "AB"}
    shared = {s: min(count["A"][s], count["B"][s]) for s in count["A"].keys() & count["B"].keys()}
    # A keeps both PHOLE hits, B only one (its query is LUXC1_PHOLE): one PHOLE pair; PHOPO is
    # chain A's query (self-hit dropped), so B's PHOPO hit stays unpaired
    assert count["A"][b"PHOLE"] == 2 and shared[b"PHOLE"] == 1 and b"PHOPO" not in shared
    assert len(shared) == 10
    a, b = (multimer.convert_monomer_features(raw[f"luxc_{c}"], c) for c in "AB")
    chains = list(multimer.add_assembly_features({"A": a, "B": b}).values())
    multimer.process_unmerged_features(dict(enumerate(chains)))
    rows = multimer.reorder_paired_rows(multimer.pair_sequences(chains))
    assert rows.shape == (1 + sum(shared.values()), 2)
    assert rows[0].tolist() == [0, 0]
    spa = raw["luxc_A"]["msa_species_identifiers_all_seq"]
    spb = raw["luxc_B"]["msa_species_identifiers_all_seq"]
    for i, j in rows[1:]:
        assert spa[i] == spb[j] != b""
    # of A's two PHOLE rows the one closer to A's query is paired
    msa_a = raw["luxc_A"]["msa_all_seq"]
    phole = [i for i, s in enumerate(spa) if s == b"PHOLE"]
    sim = [(msa_a[i] == msa_a[0]).sum() for i in phole]
    assert sim[0] != sim[1]
    assert phole[int(np.argmax(sim))] in rows[:, 0] and phole[int(np.argmin(sim))] not in rows[:, 0]
    # within a species, rows pair by descending similarity to each chain's query
    ex = merged["heterodimer"]
    n_a = len(raw["luxc_A"]["sequence"][0])
    p = len(rows)
    assert ex["msa"].shape == (512, n_a + len(raw["luxc_B"]["sequence"][0]))
    assert int(ex["num_alignments"]) == 13  # 11 paired + 1 unpaired row per chain, then pad_msa
    paired = ex["msa"][:p]
    assert (paired != GAP).any(axis=1).all()
    # unpaired block: chain A rows gap in B's columns and vice versa
    unpaired = ex["msa"][p:13]
    assert ((unpaired[:, :n_a] == GAP).all(axis=1) ^ (unpaired[:, n_a:] == GAP).all(axis=1)).all()
    pa = {r.tobytes() for r in ex["msa"][:p, :n_a]}
    assert not any(r.tobytes() in pa for r in unpaired[:, :n_a] if (r != GAP).any())
    assert ex["cluster_bias_mask"].tolist()[:3] == [1, 0, 0] and ex["cluster_bias_mask"].sum() == 1
    np.testing.assert_array_equal(ex["bert_mask"][:p], 1)
    np.testing.assert_array_equal(ex["msa_mask"][:13], 1)
    np.testing.assert_array_equal(ex["msa_mask"][13:], 0)
    np.testing.assert_array_equal(ex["msa"][13:], 0)  # pad_msa pads with 0 under a 0 mask


def test_homodimer_2q2k(raw, merged):
    """ParR x 2 (2q2k): no UniProt pairing, one entity, features copied, MSA dense across the two
    copies, cluster bias on row 0 only, the real hmmsearch template padded to 4."""
    ex = merged["homodimer"]
    n = len(raw["parr"]["sequence"][0])
    s = raw["parr"]["msa"].shape[0]
    assert ex["aatype"].shape == (2 * n,)
    np.testing.assert_array_equal(ex["asym_id"], np.repeat([1.0, 2.0], n))
    np.testing.assert_array_equal(ex["sym_id"], np.repeat([1.0, 2.0], n))
    np.testing.assert_array_equal(ex["entity_id"], np.ones(2 * n))
    np.testing.assert_array_equal(ex["residue_index"], np.tile(np.arange(n), 2))
    assert int(ex["num_alignments"]) == s
    np.testing.assert_array_equal(ex["msa"][:s, :n], ex["msa"][:s, n:])
    order = np.asarray(multimer.rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE)
    np.testing.assert_array_equal(ex["msa"][:s, :n], order[raw["parr"]["msa"]])
    np.testing.assert_array_equal(ex["deletion_matrix"][:s, :n], raw["parr"]["deletion_matrix_int"])
    assert ex["cluster_bias_mask"][0] == 1 and ex["cluster_bias_mask"].sum() == 1
    np.testing.assert_array_equal(ex["bert_mask"][:s], 1)
    t = raw["parr"]["template_aatype"].shape[0]
    # hmmsearch hits 2q2k_A/B (ParR itself: dropped as duplicates, as AlphaFold does), 3zee_A and
    # 4i6p_A/B (same 15-residue segment: 4i6p dropped as a repeated template sequence)
    assert [d.decode() for d in raw["parr"]["template_domain_names"]] == ["3zee_A"]
    assert ex["template_aatype"].shape == (4, 2 * n) and ex["template_all_atom_positions"].shape == (4, 2 * n, 37, 3)
    covered = ex["template_all_atom_mask"][0].any(-1)
    assert covered[:n].sum() == covered[n:].sum() == 15
    np.testing.assert_array_equal(ex["template_all_atom_mask"][0, :n], ex["template_all_atom_mask"][0, n:])
    assert not ex["template_all_atom_mask"][1:].any() and not ex["template_aatype"][1:].any()
    assert t == 1 and int(ex["num_templates"]) == 1 and int(ex["assembly_num_chains"]) == 2


def test_three_chain_heteromer_partial_pairing(raw, merged):
    """LuxC A + LuxC B + ParR: ParR shares no species with LuxC, so every paired row but the
    query row pairs the two LuxC chains with ParR's padding row (all gap, no deletions)."""
    ex = merged["heteromer3"]
    lens = [len(raw[n]["sequence"][0]) for n in CASES["heteromer3"]]
    parr = slice(lens[0] + lens[1], sum(lens))
    np.testing.assert_array_equal(ex["asym_id"], np.repeat([1.0, 2.0, 3.0], lens))
    np.testing.assert_array_equal(ex["entity_id"], np.repeat([1.0, 2.0, 3.0], lens))
    np.testing.assert_array_equal(ex["sym_id"], np.ones(sum(lens)))
    p = 11
    assert (ex["msa"][0] == ex["aatype"]).all()
    assert (ex["msa"][1:p, parr] == GAP).all() and not ex["deletion_matrix"][1:p, parr].any()
    assert ((ex["msa"][1:p, :lens[0]] != GAP).any(axis=1)).all()
    # ParR's unpaired rows: its MSA without its query (paired in row 0), block-diagonal
    s_real = int(ex["num_alignments"])
    rows_parr = np.flatnonzero((ex["msa"][p:s_real, parr] != GAP).any(axis=1)) + p
    assert len(rows_parr) == raw["parr"]["msa"].shape[0] - 1
    assert (ex["msa"][rows_parr][:, :parr.start] == GAP).all()
    assert not ex["bert_mask"][rows_parr][:, :parr.start].any() and ex["bert_mask"][rows_parr][:, parr].all()
    assert ex["cluster_bias_mask"].sum() == 1


def test_homomer_inside_heteromer_entity_order(raw, merged):
    """FASTA A=LuxC, B=ParR, C=LuxC: AlphaFold orders the complex by entity (A, C, B), so asym 2
    is FASTA record C; chain_map says where each record went."""
    ex = merged["a2b"]
    raws = [raw[n] for n in CASES["a2b"]]
    cmap = multimer.chain_map(raws, ["luxA", "parr", "luxA2"])
    assert [(c["asym_id"], c["chain_id"], c["name"], c["entity_id"], c["sym_id"]) for c in cmap] == [
        (1, "A", "luxA", 1, 1), (2, "C", "luxA2", 1, 2), (3, "B", "parr", 2, 1)]
    for c in cmap:
        sl = slice(c["start"], c["end"])
        assert (ex["asym_id"][sl] == c["asym_id"]).all() and (ex["sym_id"][sl] == c["sym_id"]).all()
        assert (ex["entity_id"][sl] == c["entity_id"]).all()
    assert cmap[-1]["end"] == ex["aatype"].shape[0]
    # the two LuxC copies pair as separate chains: paired rows hold both copies side by side
    n = cmap[0]["end"]
    np.testing.assert_array_equal(ex["msa"][:12, :n], ex["msa"][:12, n:2 * n])


def test_species_tie_order_is_pandas(ref):
    """Rows of one species with equal similarity are paired in pandas' sort_values order (what
    AlphaFold uses): numpy quicksort of the reversed array. numpy's SIMD quicksort orders ties
    differently on different CPUs (so does AlphaFold); compare only where numpy sorts as on the
    machine that recorded pandas' answer."""
    v = ref["ties/values"]
    order = multimer._argsort_descending_like_pandas(v)
    assert sorted(order.tolist()) == list(range(len(v))) and (np.diff(v[order]) <= 0).all()
    if not np.array_equal(v.argsort(kind="quicksort"), ref["ties/numpy_quicksort"]):
        pytest.skip("numpy's quicksort orders ties differently on this CPU than where pandas was run")
    np.testing.assert_array_equal(order, ref["ties/pandas_descending"])


def test_network_batch_layout(merged):
    """The network batch has exactly the multimer fixtures' keys and dtypes (features.npz)."""
    spec = {"aatype": ("int32", 1), "residue_index": ("int32", 1), "asym_id": ("int32", 1),
            "entity_id": ("int32", 1), "sym_id": ("int32", 1), "seq_mask": ("float32", 1),
            "msa": ("int32", 2), "deletion_matrix": ("float32", 2), "msa_mask": ("float32", 2),
            "cluster_bias_mask": ("float32", 1), "bert_mask": ("float32", 2),
            "template_aatype": ("int32", 2), "template_all_atom_positions": ("float32", 4),
            "template_all_atom_mask": ("float32", 3), "all_atom_positions": ("float32", 3),
            "all_atom_mask": ("float32", 2)}
    fixture = ROOT / "tests" / "data" / "af_fixtures_multimer" / "multimer_3chain" / "features.npz"
    if fixture.exists():
        with np.load(fixture) as f:
            assert {k: (str(f[k].dtype), f[k].ndim) for k in f.files if not k.startswith("aux_")} == spec
    ex = merged["heteromer3"]
    b = multimer.network_batch(ex)
    assert {k: (str(v.dtype), v.ndim) for k, v in b.items()} == spec
    n = ex["aatype"].shape[0]
    assert b["msa"].shape == b["bert_mask"].shape == (512, n) and b["template_aatype"].shape == (4, n)
    for k in b:
        np.testing.assert_array_equal(b[k], ex[k])
    np.testing.assert_array_equal(b["all_atom_mask"].sum(-1) > 0, True)


def test_single_chain_and_query_only_heteromer(raw):
    """One chain: AlphaFold-Multimer's monomer path (no pairing). A heteromer chain without
    UniProt hits (single-sequence mode) pairs only its query row."""
    one = multimer.multimer_features([raw["parr"]])
    assert one["msa"].shape == (512, 70) and int(one["num_alignments"]) == raw["parr"]["msa"].shape[0]
    a = {k: v for k, v in raw["luxc_A"].items() if not k.endswith("_all_seq")}
    ex = multimer.multimer_features([a, raw["parr"]])
    n_a = len(raw["luxc_A"]["sequence"][0])
    # only the query pair is paired; ParR's own UniProt hits stay in its unpaired block
    assert (ex["msa"][0] == ex["aatype"]).all()
    assert (ex["msa"][1, :n_a] == GAP).all() or (ex["msa"][1, n_a:] == GAP).all()


def test_bad_inputs(raw):
    with pytest.raises(multimer.MultimerInputError, match="at least one chain"):
        multimer.multimer_features([])
    with pytest.raises(multimer.MultimerInputError, match="more chains than the PDB format"):
        multimer.multimer_features([raw["parr"]] * 63)
    with pytest.raises(multimer.MultimerInputError, match="lack sequence"):
        multimer.multimer_features([raw["parr"], {"msa": raw["parr"]["msa"]}])
    broken = dict(raw["luxc_A"], msa_all_seq=raw["luxc_A"]["msa_all_seq"][:, :10])
    with pytest.raises(multimer.MultimerInputError, match="differ in length"):
        multimer.multimer_features([broken, raw["parr"]])
    no_species = dict(raw["luxc_A"], msa_species_identifiers_all_seq=raw["luxc_A"]["msa_species_identifiers_all_seq"][:3])
    with pytest.raises(multimer.MultimerInputError, match="species ids for 3 of 12 UniProt rows"):
        multimer.multimer_features([no_species, raw["parr"]])
    short = dict(raw["parr"], aatype=raw["parr"]["aatype"][:5])
    with pytest.raises(multimer.MultimerInputError, match="do not match seq_length"):
        multimer.multimer_features([short, raw["luxc_A"]])
    with pytest.raises(multimer.MultimerInputError, match="lack residue_index, asym_id"):
        multimer.network_batch({"aatype": np.zeros(3)})
    assert multimer.chain_ids(3) == ["A", "B", "C"] and multimer.chain_ids(62)[-1] == "9"
    assert [multimer.int_id_to_str_id(i) for i in (1, 26, 27, 28)] == ["A", "Z", "AA", "BA"]


# --- fastfold msa --model-preset multimer on the bundled example --------------------------------

def test_cli_writes_merged_multimer_features(example_db, tmp_path):
    """`fastfold msa --model-preset multimer` on A, B (a variant), C = A: merged features.pkl equal
    to multimer_features of the per-chain features, features.npz = the network batch,
    multimer_chain_map.json in asym order."""
    query = (ROOT / "examples" / "query.fasta").read_text().split("\n")[1].strip()
    variant = query[:40] + "GSGS" + query[50:]
    fasta = tmp_path / "abc.fasta"
    fasta.write_text(f">A\n{query}\n>B\n{variant}\n>C\n{query}\n")
    out = tmp_path / "o"
    r = subprocess.run([sys.executable, "-c", "from fastfold_cli.main import cli; cli()", "msa", str(fasta),
                        "--out", str(out), "--db-dir", str(example_db), "--model-preset", "multimer",
                        "--db-preset", "reduced_dbs", "--max-template-date", "2100-01-01", "--executor", "serial"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "features.npz" in r.stdout
    per_chain = [pickle.loads((out / "msas" / c / "features.pkl").read_bytes()) for c in "ABC"]
    want = multimer.multimer_features(per_chain)
    got = pickle.loads((out / "features.pkl").read_bytes())
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    lens = [len(query), len(query), len(variant)]  # asym order: A, C (entity 1), B (entity 2)
    assert got["aatype"].shape == (sum(lens),) and int(got["num_alignments"]) > 3
    with np.load(out / "features.npz") as f:
        assert set(f.files) == set(multimer.NETWORK_FEATURES)
        np.testing.assert_array_equal(f["asym_id"], np.repeat([1, 2, 3], lens))
        np.testing.assert_array_equal(f["entity_id"], np.repeat([1, 1, 2], lens))
        np.testing.assert_array_equal(f["sym_id"], np.repeat([1, 2, 1], lens))
        assert f["msa"].dtype == np.int32 and f["msa"].shape[0] >= 512
    cmap = json.loads((out / "multimer_chain_map.json").read_text())
    assert [c["name"] for c in cmap] == ["A", "C", "B"]
    timings = json.loads((out / "timings.json").read_text())
    assert timings["multimer_merge_seconds"] >= 0


def test_template_search_without_hits_gives_the_zero_template(tmp_path):
    """A chain with no pdb_seqres hit: hmmsearch writes no alignment (HMMER writes an empty -A
    file), and the hmmsearch featurizer gives AlphaFold's one all-zero template."""
    from pipeline import dag, tools
    seqres = write_pdb_seqres(tmp_path / "pdb_seqres.txt", DATA / "mmcifs")
    seqs, _ = parsers.parse_fasta((ROOT / "examples" / "data" / "background.faa").read_text())
    seq = seqs[1].upper().rstrip("*")  # 397 aa, unrelated to the 8 PDB entries
    sto = f"# STOCKHOLM 1.0\n\nquery {seq}\n#=GC RF {'x' * len(seq)}\n//\n"
    assert tools.hmmsearch_pdb_seqres(sto, seqres) == ""
    raw, warns = dag.t_features(seq, "B", sto, None, "a3m", sto, "", str(DATA / "mmcifs"), "2100-01-01", None,
                                "hmmsearch", None)
    assert raw["template_aatype"].shape == (1, len(seq), 22) and not raw["template_all_atom_masks"].any()
    assert not warns


def _msa_cli(*args):
    return subprocess.run([sys.executable, "-c", "from fastfold_cli.main import cli; cli()", "msa", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_cli_single_sequence_multimer_and_too_many_chains(tmp_path):
    """--msa-mode single-sequence needs no database: each chain's query only, the queries paired
    in row 0; more than 62 records is refused before any work (exit 2, one line)."""
    f = tmp_path / "in.fasta"
    f.write_text(">A\nMKTAYIAKQRQISFVKSHFSRQ\n>B\nGSHMDKKETKHLLKIKKEDYPQ\n>C\nMKTAYIAKQRQISFVKSHFSRQ\n")
    r = _msa_cli(f, "--out", tmp_path / "o", "--msa-mode", "single-sequence", "--model-preset", "multimer",
                 "--executor", "serial")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "o" / "features.npz") as b:
        assert b["msa"].shape == (512, 66) and b["msa_mask"][:, 0].tolist() == [1] + [0] * 511
        np.testing.assert_array_equal(b["msa"][0], b["aatype"])
        np.testing.assert_array_equal(b["asym_id"], np.repeat([1, 2, 3], 22))
        np.testing.assert_array_equal(b["entity_id"], np.repeat([1, 1, 2], 22))
    many = tmp_path / "many.fasta"
    many.write_text("".join(f">c{i}\nMKTAYIAKQR\n" for i in range(63)))
    r = _msa_cli(many, "--out", tmp_path / "m", "--msa-mode", "single-sequence", "--model-preset", "multimer")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"Error: {many}: 63 chains; AlphaFold-Multimer takes at most 62 (PDB chain ids)"]
    assert not (tmp_path / "m").exists()


def test_no_templates_equals_the_zero_template(raw):
    """--no-templates gives (0,)-shaped template features; the merged batch is the same as with
    AlphaFold's one all-zero template (both pad to 4 zero templates)."""
    from pipeline.features import empty_template_features
    n = len(raw["luxc_A"]["sequence"][0])
    assert raw["luxc_A"]["template_aatype"].shape == (1, n, 22) and not raw["luxc_A"]["template_aatype"].any()
    bare = dict(raw["luxc_A"], **empty_template_features(n))
    a = multimer.network_batch(multimer.multimer_features([raw["luxc_A"], raw["luxc_B"]]))
    b = multimer.network_batch(multimer.multimer_features([bare, raw["luxc_B"]]))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
