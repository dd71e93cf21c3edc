import pytest

from pipeline.errors import InputError
from pipeline.fasta import parse_fasta_text, read_fasta, unique_sequences


def test_multi_record_lowercase_u_x():
    chains = parse_fasta_text(">A first chain\nmkv\nUXa\n\n>B\nGGG\n")
    assert [c.name for c in chains] == ["A", "B"]
    assert chains[0].description == "A first chain"
    assert chains[0].sequence == "MKVCXA"  # lowercase accepted, U -> C, X kept
    assert chains[1].sequence == "GGG"


@pytest.mark.parametrize("text, fragment", [
    ("", "no FASTA records"),
    ("\n\n  \n", "no FASTA records"),
    (">A\n", "record 'A' has no sequence"),
    (">A\nMKV\n>B\n>C\nGG\n", "record 'B' has no sequence"),
    (">A\nMKV\n>B\nMK1V\n", "record 'B': invalid character '1' at position 3"),
    (">A\nMK\nV*\n", "record 'A': invalid character '*' at position 4"),
    (">A\nMKV\n>A desc\nGG\n", "duplicate record name 'A'"),
    ("MKV\n", "before the first '>'"),
    (">\nMKV\n", "header '>' without a name"),
    (">../x\nMKV\n", "cannot be used as a directory name"),
])
def test_bad_input_one_line_error(text, fragment):
    with pytest.raises(InputError) as err:
        parse_fasta_text(text, source="in.fasta")
    msg = str(err.value)
    assert fragment in msg
    assert "\n" not in msg
    assert msg.startswith("in.fasta")


def test_input_error_is_value_error():
    assert issubclass(InputError, ValueError)


def test_read_real_fasta(data_dir, tmp_path):
    chains = read_fasta(data_dir / "short" / "short.fasta")
    assert len(chains) == 1 and chains[0].name == "query" and len(chains[0].sequence) == 73
    with pytest.raises(InputError, match="no such file"):
        read_fasta(tmp_path / "missing.fasta")
    empty = tmp_path / "empty.fasta"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        read_fasta(empty)


def test_unique_sequences_groups_identical_chains():
    chains = parse_fasta_text(">A\nMKV\n>B\nGG\n>C\nmkv\n")
    assert unique_sequences(chains) == {"MKV": ["A", "C"], "GG": ["B"]}


def test_windows_line_endings_and_bom(tmp_path):
    f = tmp_path / "w.fasta"
    f.write_bytes(b"\xef\xbb\xbf>A desc\r\nMKV\r\nLL\r\n")
    (chain,) = read_fasta(f)
    assert (chain.name, chain.sequence) == ("A", "MKVLL")
