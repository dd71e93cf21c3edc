"""Real searches on small real databases: pyhmmer jackhmmer vs the HMMER 3.3.2 binary, sharding,
kalign and HH-suite on a database the test builds."""
import subprocess

import pytest

from pipeline import parsers, tools
from pipeline_testutil import need_binary, read_fasta_seq, write_pdb_seqres

LUXC = "sp|P19841|LUXC_PHOPO"


@pytest.fixture(scope="module")
def luxc(data_dir):
    return read_fasta_seq(data_dir / "parity" / "q.fa")


def test_count_and_shard_cover_database(small_db):
    n = tools.count_sequences(small_db)
    assert n == 2122
    data = small_db.read_bytes()
    for k in (1, 2, 7):
        shards = tools.shard_database(small_db, k)
        assert len(shards) == k
        assert shards[0].start == 0 and shards[-1].end == len(data)
        assert all(a.end == b.start for a, b in zip(shards, shards[1:]))
        assert all(data[s.start:s.start + 1] == b">" for s in shards)
        assert sum(data[s.start:s.end].count(b">") for s in shards) == n


def test_jackhmmer_matches_hmmer_binary_recording(small_db, luxc, data_dir):
    """Same rows, names, order and deletion matrix as `jackhmmer` 3.3.2 with AlphaFold's flags."""
    hits = tools.jackhmmer_hits(luxc, small_db, name=LUXC)
    sto = tools.hits_to_stockholm(luxc, hits, name=LUXC)
    ours = parsers.parse_stockholm(sto)
    ref = parsers.parse_stockholm((data_dir / "parity" / "bin.sto").read_text())
    assert ours.descriptions == ref.descriptions
    assert ours.sequences == ref.sequences
    assert ours.deletion_matrix == ref.deletion_matrix
    # E-values agree with the binary's --tblout to its printed precision (2 significant digits)
    ref_e = parsers.parse_e_values_from_tblout((data_dir / "parity" / "bin.tbl").read_text())
    assert {h.name for h in hits if h.included} == set(ref_e) - {"query"}
    for h in hits:
        if ref_e[h.name] == 0:
            assert h.evalue < 1e-300
        else:
            assert h.evalue == pytest.approx(ref_e[h.name], rel=0.06)


def test_jackhmmer_matches_live_binary(small_db, luxc, tmp_path):
    need_binary("jackhmmer")
    q = tmp_path / "q.fa"
    tools.write_query_fasta(str(q), luxc)
    out = tmp_path / "bin.sto"
    subprocess.run(["jackhmmer", "-o", "/dev/null", "-A", str(out), "--noali", "--F1", "0.0005",
                    "--F2", "0.00005", "--F3", "0.0000005", "--incE", "0.0001", "-E", "0.0001",
                    "--cpu", "1", "-N", "1", str(q), str(small_db)], check=True)
    ref = parsers.parse_stockholm(out.read_text())
    ours = parsers.parse_stockholm(tools.jackhmmer(luxc, small_db))
    assert (ours.descriptions, ours.sequences, ours.deletion_matrix) == \
        (ref.descriptions, ref.sequences, ref.deletion_matrix)


@pytest.mark.parametrize("n_shards", [2, 5])
@pytest.mark.parametrize("max_hits", [None, 4])
def test_sharded_equals_unsharded(small_db, luxc, n_shards, max_hits):
    whole = tools.jackhmmer(luxc, small_db, max_hits=max_hits)
    assert tools.jackhmmer_sharded(luxc, small_db, n_shards, max_hits=max_hits) == whole
    n_rows = len(parsers.parse_stockholm(whole))
    assert n_rows == (13 if max_hits is None else 1 + max_hits)


def test_shard_z_gives_whole_database_evalues(small_db, luxc):
    """A shard searched with Z = whole database reports the unsharded E-values."""
    whole = {h.name: h.evalue for h in tools.jackhmmer_hits(luxc, small_db)}
    z = tools.count_sequences(small_db)
    for shard in tools.shard_database(small_db, 3):
        part = tools.jackhmmer_hits(luxc, shard, z=z)
        for h in part:
            if h.included:
                assert h.evalue == pytest.approx(whole[h.name], rel=1e-9)


def test_kalign_realigns():
    need_binary("kalign")
    a, b = tools.kalign(["GAEHHEQAAKHHHAAAEHHEKG", "GAEHHEQAKHHHAAAEHHEKGLL"])
    assert len(a) == len(b)
    assert a.replace("-", "") == "GAEHHEQAAKHHHAAAEHHEKG"
    assert b.replace("-", "") == "GAEHHEQAKHHHAAAEHHEKGLL"
    with pytest.raises(ValueError, match="at least 6"):
        tools.kalign(["MKV", "MKVLLL"])


def test_streamed_blocks_equal_one_block(small_db, luxc):
    """A shard is read block by block (bounded memory); the result is that of one search."""
    whole = tools.hits_to_stockholm(luxc, tools.jackhmmer_hits(luxc, small_db, block_sequences=10**7))
    for bs in (1, 97, 1000):
        hits = tools.jackhmmer_hits(luxc, small_db, block_sequences=bs)
        assert tools.hits_to_stockholm(luxc, hits) == whole
        assert hits.Z == 2122  # the E-value database size is the whole database
    n = sum(len(b) for b in tools.iter_shard_blocks(tools.Shard(str(small_db)), 500))
    assert n == 2122


def test_hmmsearch_templates_match_hmmer_binaries(data_dir, tmp_path):
    """AlphaFold's multimer template search (hmmbuild --hand + hmmsearch with its flags) through
    pyhmmer gives the hits and alignments of the HMMER binaries."""
    need_binary("hmmbuild")
    need_binary("hmmsearch")
    seqres = write_pdb_seqres(tmp_path / "pdb_seqres.txt", data_dir / "mmcifs")
    sto = (data_dir / "short" / "uniref90_hits.sto").read_text()
    sto = parsers.remove_empty_columns_from_stockholm_msa(parsers.deduplicate_stockholm_msa(sto))
    query = (data_dir / "short" / "short.fasta").read_text().split("\n")[1].strip()

    def hits_of(sto_text):
        a3m = parsers.convert_stockholm_to_a3m(sto_text, remove_first_row_gaps=False)
        return [(h.name, h.hit_sequence, h.indices_hit)
                for h in parsers.parse_hmmsearch_a3m(query, a3m, skip_first=False)]

    ours = hits_of(tools.hmmsearch_pdb_seqres(sto, seqres))
    (tmp_path / "query.msa").write_text(sto)
    subprocess.run(["hmmbuild", "--hand", "--amino", str(tmp_path / "q.hmm"), str(tmp_path / "query.msa")],
                   check=True, capture_output=True)
    subprocess.run(["hmmsearch", "--noali", "--cpu", "1", "--F1", "0.1", "--F2", "0.1", "--F3", "0.1",
                    "--incE", "100", "-E", "100", "--domE", "100", "--incdomE", "100",
                    "-A", str(tmp_path / "out.sto"), str(tmp_path / "q.hmm"), str(seqres)],
                   check=True, capture_output=True)
    ref = hits_of((tmp_path / "out.sto").read_text())
    assert len(ours) >= 4
    assert ours == ref
