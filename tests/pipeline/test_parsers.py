"""Parsers on real alignments (OpenFold's short.fasta MSAs, HMMER 3.3.2 jackhmmer output)."""
from pipeline import parsers
from pipeline_testutil import read_fasta_seq


def test_stockholm_query_first_and_deletions(data_dir):
    sto = (data_dir / "parity" / "bin.sto").read_text()
    msa = parsers.parse_stockholm(sto)
    query = read_fasta_seq(data_dir / "parity" / "q.fa")
    assert len(msa) == 13
    assert msa.sequences[0] == query
    assert msa.descriptions[0] == "sp|P19841|LUXC_PHOPO"
    assert msa.descriptions[1] == "sp|P19841|LUXC_PHOPO/1-488"  # the self-hit
    assert msa.descriptions[5] == "sp|P12748|LUXC_ALIFS/2-479"
    assert all(len(s) == len(query) for s in msa.sequences)
    assert all(len(d) == len(query) for d in msa.deletion_matrix)
    # every residue of a row is either aligned to a query column or counted as a deletion
    rows = parsers._stockholm_rows(sto)
    for (name, raw), seq, dels in zip(rows.items(), msa.sequences, msa.deletion_matrix):
        n_res = sum(c not in "-." for c in raw)
        assert sum(c != "-" for c in seq) + sum(dels) == n_res
    assert sum(map(sum, msa.deletion_matrix)) > 0


def test_stockholm_to_a3m_round_trip(data_dir):
    sto = (data_dir / "short" / "uniref90_hits.sto").read_text()
    a = parsers.parse_stockholm(sto)
    b = parsers.parse_a3m(parsers.convert_stockholm_to_a3m(sto))
    assert a.sequences == b.sequences
    assert a.deletion_matrix == b.deletion_matrix
    assert [d.split()[0] for d in b.descriptions] == list(a.descriptions)


def test_truncate_keeps_first_names(data_dir):
    path = data_dir / "short" / "uniref90_hits.sto"
    full = parsers.parse_stockholm(path.read_text())
    for n in (1, 5, 40):
        cut = parsers.parse_stockholm(parsers.truncate_stockholm_msa(str(path), n))
        assert cut.sequences == full.sequences[:n]
        assert cut.descriptions == full.descriptions[:n]


def test_dedup_and_empty_columns_for_template_query(data_dir):
    sto = (data_dir / "short" / "uniref90_hits.sto").read_text()
    full = parsers.parse_stockholm(sto)
    dedup = parsers.deduplicate_stockholm_msa(sto)
    d = parsers.parse_stockholm(dedup)
    assert len(set(d.sequences)) == len(d.sequences) == len(set(full.sequences))
    assert d.sequences[0] == full.sequences[0]
    cleaned = parsers.remove_empty_columns_from_stockholm_msa(dedup)
    rows = list(parsers._stockholm_rows(cleaned).values())
    assert all(any(r[j] != "-" for r in rows) for j in range(len(rows[0])))
    assert parsers.parse_stockholm(cleaned).sequences == d.sequences


def test_a3m_lowercase_are_deletions():
    msa = parsers.parse_a3m(">q\nMKV\n>h1\nMabK-\n>h2\n-KcV\n")
    assert msa.sequences == ["MKV", "MK-", "-KV"]
    assert msa.deletion_matrix == [[0, 0, 0], [0, 2, 0], [0, 0, 1]]


def test_hhr(data_dir):
    hits = parsers.parse_hhr((data_dir / "short" / "pdb70_hits.hhr").read_text())
    assert len(hits) == 10
    h = hits[0]
    assert h.name.startswith("1HF9_B ATPASE INHIBITOR")
    assert (h.index, h.aligned_cols, h.sum_probs) == (1, 22, 13.1)
    assert h.query == "AEHHHKAAEHHEQAAKHHHAAA" and h.hit_sequence == "ISHHAKEIERLQKEIERHKQSI"
    assert h.indices_query == list(range(6, 28)) and h.indices_hit == list(range(9, 31))
    assert [x.sum_probs for x in hits][5:] == [0.0, 0.0, 7.4, 0.0, 0.0]
    for x in hits:
        assert len(x.query) == len(x.hit_sequence) == len(x.indices_query) == len(x.indices_hit)


def test_species_identifiers():
    assert parsers.species_identifier("sp|P12748|LUXC_ALIFS/2-479") == "ALIFS"
    assert parsers.species_identifier("tr|A0A644X819|A0A644X819_9ZZZZ/85-426 DE x") == "9ZZZZ"
    assert parsers.species_identifier("UniRef90_Q9H5Z4/4-78") == ""
    assert parsers.species_identifier("MGYP000123/1-50") == ""
    assert parsers.species_identifier("query") == ""
    assert parsers.species_identifier("") == ""


def test_tblout_evalues(data_dir):
    ev = parsers.parse_e_values_from_tblout((data_dir / "parity" / "bin.tbl").read_text())
    assert ev["sp|Q03324|LUXC1_PHOLE"] == 9e-283
    assert len(ev) == 13  # 12 hits + 'query'
