"""hhblits / hhsearch through the HH-suite binaries on tiny databases built by the test from real
sequences (pyhmmer's LuxC/PKSI families; the PDB chains of the template mmCIFs)."""
import gzip

import pytest

from pipeline import hhdb, parsers, templates, tools
from pipeline_testutil import need_binary


@pytest.fixture(scope="module")
def family_db(data_dir, tmp_path_factory):
    need_binary("hhblits")
    need_binary("ffindex_build")
    text = gzip.open(data_dir / "pyhmmer" / "db.faa.gz", "rt").read()
    records = text.split(">")[1:]
    entries = hhdb.fasta_entries(">" + ">".join(records[-26:]))  # LuxC + PKSI + 4 proteome proteins
    return hhdb.build_hhsuite_db(entries, str(tmp_path_factory.mktemp("hh") / "fam"))


def test_hhblits_finds_family(family_db, data_dir):
    luxc = "".join((data_dir / "parity" / "q.fa").read_text().splitlines()[1:])
    a3m = tools.hhblits(luxc, [family_db], cpus=1)
    msa = parsers.parse_a3m(a3m)
    assert msa.sequences[0] == luxc and msa.descriptions[0].startswith("query")
    names = {d.split()[0] for d in msa.descriptions[1:]}
    # all 12 LuxC proteins of the database are homologs; the PKSI family is unrelated
    luxc_names = {l[1:].split()[0] for l in (data_dir / "pyhmmer" / "LuxC.faa").read_text().splitlines() if l.startswith(">")}
    assert len(names & luxc_names) >= 10
    assert not any("PKS" in n or "PHLD" in n for n in names)
    assert all(len(s) == len(luxc) for s in msa.sequences)


def test_missing_hhsuite_db_is_reported(tmp_path):
    with pytest.raises(Exception, match="HH-suite database not found"):
        tools.hhblits("MKVLAAGIVGLLLA", [str(tmp_path / "nothing")])


def test_hhsearch_templates_end_to_end(data_dir, tmp_path):
    """AlphaFold's template path: UniRef90 sto -> dedup -> empty columns removed -> a3m -> hhsearch
    on a PDB70-like database of the mmCIF chains -> hhr -> template features."""
    need_binary("hhsearch")
    entries = {}
    for cif in sorted((data_dir / "mmcifs").glob("*.cif.gz")):
        pdb = cif.name[:4]
        m = templates.parse_mmcif(str(cif), pdb)
        for chain, seq in m.chain_to_seqres.items():
            entries[f"{pdb}_{chain}"] = f">{pdb.upper()}_{chain} {pdb} chain {chain}\n{seq}\n"
    db = hhdb.build_hhsuite_db(entries, str(tmp_path / "pdb70"))
    sto = (data_dir / "short" / "uniref90_hits.sto").read_text()
    query_a3m = parsers.convert_stockholm_to_a3m(
        parsers.remove_empty_columns_from_stockholm_msa(parsers.deduplicate_stockholm_msa(sto)))
    hhr = tools.hhsearch(query_a3m, [db], cpus=1)
    hits = parsers.parse_hhr(hhr)
    assert len(hits) >= 5
    seq = (data_dir / "short" / "short.fasta").read_text().split("\n")[1].strip()
    feats, _ = templates.get_template_features(seq, hits, str(data_dir / "mmcifs"), "2100-01-01")
    t = feats["template_aatype"].shape[0]
    assert t >= 1
    assert feats["template_all_atom_positions"].shape == (t, 73, 37, 3)
    # every featurized query residue has the template residue the hit aligned to it
    for i in range(t):
        s = feats["template_sequence"][i].decode()
        covered = feats["template_all_atom_masks"][i].sum(-1) > 0
        assert all((c != "-") >= cov for c, cov in zip(s, covered))
