"""Parsers for the alignment formats AlphaFold reads: Stockholm (jackhmmer), A3M (hhblits), hhr
(hhsearch), HMMER tblout, plus the Stockholm rewrites AlphaFold applies before a template search.

The semantics follow AlphaFold 2.3 `alphafold/data/parsers.py` and `msa_identifiers.py`
(Apache-2.0, DeepMind) so that the same files give the same arrays:

* columns where the query (first row) has a gap are dropped;
* `deletion_matrix[i][j]` = residues of row i inserted before query column j;
* `truncate_stockholm_msa` keeps the first N sequence names in file order (= hit rank);
* A3M lowercase = insertions, counted as deletions and removed.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import re
import string
from typing import Iterable, Sequence

DeletionMatrix = list[list[int]]


@dataclasses.dataclass(frozen=True)
class Msa:
    """A parsed MSA: `sequences` are aligned rows of equal length N (query first, no insertions),
    `deletion_matrix` is [S][N] ints, `descriptions` one per row (Stockholm: the sequence name incl.
    `/start-end`; A3M: the header line)."""
    sequences: Sequence[str]
    deletion_matrix: DeletionMatrix
    descriptions: Sequence[str]

    def __post_init__(self):
        if not (len(self.sequences) == len(self.deletion_matrix) == len(self.descriptions)):
            raise ValueError("All fields of an MSA must have the same length. "
                             f"Got {len(self.sequences)}, {len(self.deletion_matrix)}, {len(self.descriptions)}.")

    def __len__(self) -> int:
        return len(self.sequences)

    def truncate(self, max_seqs: int) -> "Msa":
        """The first `max_seqs` rows."""
        return Msa(self.sequences[:max_seqs], self.deletion_matrix[:max_seqs], self.descriptions[:max_seqs])


@dataclasses.dataclass(frozen=True)
class TemplateHit:
    """One hhsearch/hmmsearch hit. `indices_query`/`indices_hit` are 0-based residue indices per
    alignment column, -1 for a gap; `query`/`hit_sequence` are the aligned strings."""
    index: int
    name: str
    aligned_cols: int
    sum_probs: float | None
    query: str
    hit_sequence: str
    indices_query: list[int]
    indices_hit: list[int]


def parse_fasta(fasta_string: str) -> tuple[list[str], list[str]]:
    """(sequences, descriptions) of a FASTA/A3M text; descriptions are header lines without '>'.
    No validation (alignments contain gaps and lowercase)."""
    sequences: list[str] = []
    descriptions: list[str] = []
    for line in fasta_string.splitlines():
        line = line.strip()
        if line.startswith(">"):
            descriptions.append(line[1:])
            sequences.append("")
        elif line and not line.startswith("#") and sequences:
            sequences[-1] += line
    return sequences, descriptions


def _stockholm_rows(stockholm_string: str) -> "collections.OrderedDict[str, str]":
    """Sequence name -> concatenated aligned row (wrapped blocks joined), in file order."""
    rows: "collections.OrderedDict[str, str]" = collections.OrderedDict()
    for line in stockholm_string.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        name, seq = line.split()
        rows[name] = rows.get(name, "") + seq
    return rows


def parse_stockholm(stockholm_string: str) -> Msa:
    """Stockholm text -> Msa with query-gap columns removed and per-column deletion counts."""
    rows = _stockholm_rows(stockholm_string)
    msa: list[str] = []
    deletion_matrix: DeletionMatrix = []
    query = ""
    keep_columns: list[int] = []
    for i, seq in enumerate(rows.values()):
        if i == 0:
            query = seq
            keep_columns = [c for c, res in enumerate(query) if res != "-"]
        msa.append("".join(seq[c] for c in keep_columns))
        deletions: list[int] = []
        count = 0
        for res, qres in zip(seq, query):
            if res != "-" or qres != "-":
                if qres == "-":
                    count += 1
                else:
                    deletions.append(count)
                    count = 0
        deletion_matrix.append(deletions)
    return Msa(sequences=msa, deletion_matrix=deletion_matrix, descriptions=list(rows.keys()))


_LOWER = str.maketrans("", "", string.ascii_lowercase)


def parse_a3m(a3m_string: str) -> Msa:
    """A3M text -> Msa: lowercase letters are insertions (counted into the deletion matrix, removed)."""
    sequences, descriptions = parse_fasta(a3m_string)
    deletion_matrix: DeletionMatrix = []
    for seq in sequences:
        deletions: list[int] = []
        count = 0
        for ch in seq:
            if ch.islower():
                count += 1
            else:
                deletions.append(count)
                count = 0
        deletion_matrix.append(deletions)
    aligned = [s.translate(_LOWER) for s in sequences]
    return Msa(sequences=aligned, deletion_matrix=deletion_matrix, descriptions=descriptions)


def _keep_line(line: str, seqnames: set[str]) -> bool:
    """Whether a Stockholm line survives filtering to `seqnames` (header, RF and end lines stay)."""
    if not line.strip():
        return True
    if line.strip() == "//":
        return True
    if line.startswith("# STOCKHOLM"):
        return True
    if line.startswith("#=GC RF"):
        return True
    if line[:4] == "#=GS":
        return line.split()[1] in seqnames
    if line.startswith("#"):
        return False
    return line.partition(" ")[0] in seqnames


def truncate_stockholm_msa(stockholm_msa_path: str, max_sequences: int) -> str:
    """Read a Stockholm file keeping only the first `max_sequences` sequence names (hit rank order),
    streaming it twice so a huge file is never held in memory as rows."""
    seqnames: set[str] = set()
    filtered: list[str] = []
    with open(stockholm_msa_path) as f:
        for line in f:
            if line.strip() and not line.startswith(("#", "//")):
                seqnames.add(line.partition(" ")[0])
                if len(seqnames) >= max_sequences:
                    break
        f.seek(0)
        for line in f:
            if _keep_line(line, seqnames):
                filtered.append(line)
    return "".join(filtered)


def truncate_stockholm_text(stockholm: str, max_sequences: int) -> str:
    """`truncate_stockholm_msa` for Stockholm text already in memory."""
    seqnames: set[str] = set()
    lines = stockholm.splitlines(keepends=True)
    for line in lines:
        if line.strip() and not line.startswith(("#", "//")):
            seqnames.add(line.partition(" ")[0])
            if len(seqnames) >= max_sequences:
                break
    return "".join(line for line in lines if _keep_line(line, seqnames))


def deduplicate_stockholm_msa(stockholm_msa: str) -> str:
    """Drop rows whose match-column string (query-insert columns removed) repeats an earlier row.
    AlphaFold applies this to the UniRef90 hits before building the template-search query."""
    rows = _stockholm_rows(stockholm_msa)
    if not rows:
        return stockholm_msa
    query_align = next(iter(rows.values()))
    mask = [c != "-" for c in query_align]
    seen: set[str] = set()
    keep: set[str] = set()
    for name, alignment in rows.items():
        masked = "".join(itertools.compress(alignment, mask))
        if masked not in seen:
            seen.add(masked)
            keep.add(name)
    return "\n".join(line for line in stockholm_msa.splitlines() if _keep_line(line, keep)) + "\n"


def remove_empty_columns_from_stockholm_msa(stockholm_msa: str) -> str:
    """Remove alignment columns that are gaps in every row, block by block (each block ends with its
    `#=GC RF` line, as HMMER writes them). Needed because hhsearch rejects all-gap columns."""
    processed: dict[int, str] = {}
    unprocessed: dict[int, str] = {}
    for i, line in enumerate(stockholm_msa.splitlines()):
        if line.startswith("#=GC RF"):
            _, _, first_alignment = line.rpartition(" ")
            mask = []
            for j in range(len(first_alignment)):
                for row in unprocessed.values():
                    _, _, alignment = row.rpartition(" ")
                    if alignment[j] != "-":
                        mask.append(True)
                        break
                else:
                    mask.append(False)
            unprocessed[i] = line
            if not any(mask):
                for k in unprocessed:
                    processed[k] = ""
            else:
                for k, row in unprocessed.items():
                    prefix, _, alignment = row.rpartition(" ")
                    processed[k] = f"{prefix} {''.join(itertools.compress(alignment, mask))}"
            unprocessed = {}
        elif line.strip() and not line.startswith(("#", "//")):
            unprocessed[i] = line
        else:
            processed[i] = line
    return "\n".join(processed[i] for i in range(len(processed)))


def _sto_row_to_a3m(query_non_gaps: list[bool], sto_seq: str) -> Iterable[str]:
    for is_match, res in zip(query_non_gaps, sto_seq):
        if is_match:
            yield res
        elif res != "-":
            yield res.lower()


def convert_stockholm_to_a3m(stockholm: str, max_sequences: int | None = None,
                             remove_first_row_gaps: bool = True) -> str:
    """Stockholm -> A3M text (query-gap columns become lowercase insertions), keeping `#=GS DE`
    descriptions in headers. Used for the hhsearch template query."""
    descriptions: dict[str, str] = {}
    sequences: dict[str, str] = {}
    reached_max = False
    for line in stockholm.splitlines():
        reached_max = bool(max_sequences) and len(sequences) >= max_sequences
        if line.strip() and not line.startswith(("#", "//")):
            name, aligned = line.split(maxsplit=1)
            if name not in sequences:
                if reached_max:
                    continue
                sequences[name] = ""
            sequences[name] += aligned
    for line in stockholm.splitlines():
        if line[:4] == "#=GS":
            columns = line.split(maxsplit=3)
            name, feature = columns[1:3]
            value = columns[3] if len(columns) == 4 else ""
            if feature != "DE":
                continue
            if reached_max and name not in sequences:
                continue
            descriptions[name] = value
            if len(descriptions) == len(sequences):
                break
    out: dict[str, str] = {}
    query_non_gaps: list[bool] = []
    if remove_first_row_gaps and sequences:
        query_non_gaps = [res != "-" for res in next(iter(sequences.values()))]
    for name, sto_seq in sequences.items():
        seq = sto_seq.replace(".", "")  # dots are optional in a3m
        if remove_first_row_gaps:
            seq = "".join(_sto_row_to_a3m(query_non_gaps, seq))
        out[name] = seq
    return "\n".join(f">{k} {descriptions.get(k, '')}\n{out[k]}" for k in out) + "\n"


def parse_e_values_from_tblout(tblout: str) -> dict[str, float]:
    """Target name -> full-sequence E-value from a HMMER `--tblout` table (the query maps to 0)."""
    e_values = {"query": 0.0}
    for line in tblout.splitlines():
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        e_values[fields[0]] = float(fields[4])
    return e_values


# --- hhr (HH-suite) ------------------------------------------------------------------------

def _hhr_indices(sequence: str, start: int, out: list[int]) -> None:
    counter = start
    for symbol in sequence:
        if symbol == "-":
            out.append(-1)
        else:
            out.append(counter)
            counter += 1


_HHR_SUMMARY = re.compile(
    r"Probab=(.*)[\t ]*E-value=(.*)[\t ]*Score=(.*)[\t ]*Aligned_cols=(.*)[\t ]*Identities=(.*)%"
    r"[\t ]*Similarity=(.*)[\t ]*Sum_probs=(.*)[\t ]*Template_Neff=(.*)")
_HHR_Q = re.compile(r"[\t ]*([0-9]*) ([A-Z-]*)[\t ]*([0-9]*) \([0-9]*\)")
_HHR_T = re.compile(r"[\t ]*([0-9]*) ([A-Z-]*)[\t ]*[0-9]* \([0-9]*\)")


def _parse_hhr_hit(lines: list[str]) -> TemplateHit:
    number = int(lines[0].split()[-1])
    name = lines[1][1:]
    match = _HHR_SUMMARY.match(lines[2])
    if match is None:
        raise ValueError(f"Could not parse hhr hit summary line: {lines[2]!r}")
    values = [float(x) for x in match.groups()]
    aligned_cols, sum_probs = values[3], values[6]
    query = hit = ""
    idx_q: list[int] = []
    idx_h: list[int] = []
    length_block = None
    for line in lines[3:]:
        # Fixed-width blocks: the first 17 characters are 'Q <name> ' / 'T <name> '.
        if line.startswith("Q ") and not line.startswith(("Q ss_dssp", "Q ss_pred", "Q Consensus")):
            m = _HHR_Q.match(line[17:])
            if m is None:
                raise ValueError(f"Could not parse hhr query line: {line!r}")
            start = int(m.group(1)) - 1
            delta = m.group(2)
            end = int(m.group(3))
            length_block = end - start + delta.count("-")
            if length_block != len(delta):
                raise ValueError(f"Inconsistent hhr query block: {line!r}")
            query += delta
            _hhr_indices(delta, start, idx_q)
        elif line.startswith("T ") and not line.startswith(("T ss_dssp", "T ss_pred", "T Consensus")):
            m = _HHR_T.match(line[17:])
            if m is None:
                raise ValueError(f"Could not parse hhr template line: {line!r}")
            start = int(m.group(1)) - 1
            delta = m.group(2)
            if length_block != len(delta):
                raise ValueError(f"Inconsistent hhr template block: {line!r}")
            hit += delta
            _hhr_indices(delta, start, idx_h)
    return TemplateHit(index=number, name=name, aligned_cols=int(aligned_cols), sum_probs=sum_probs,
                       query=query, hit_sequence=hit, indices_query=idx_q, indices_hit=idx_h)


def parse_hhr(hhr_string: str) -> list[TemplateHit]:
    """All hits of an hhsearch/hhblits `.hhr` result, in file order."""
    lines = hhr_string.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("No ")]
    starts.append(len(lines))
    return [_parse_hhr_hit(lines[starts[i]:starts[i + 1]]) for i in range(len(starts) - 1)]


# --- hmmsearch hits (multimer template search) -----------------------------------------------

def _a3m_indices(sequence: str, start: int) -> list[int]:
    """Residue index per match column of an A3M row: -1 for '-', lowercase insertions skipped but
    counted."""
    indices = []
    counter = start
    for symbol in sequence:
        if symbol == "-":
            indices.append(-1)
        elif symbol.islower():
            counter += 1
        else:
            indices.append(counter)
            counter += 1
    return indices


_HMMSEARCH_DESC = re.compile(r"^>?([a-z0-9]+)_(\w+)/([0-9]+)-([0-9]+).*protein length:([0-9]+) *(.*)$")


def parse_hmmsearch_a3m(query_sequence: str, a3m_string: str, skip_first: bool = True) -> list[TemplateHit]:
    """Template hits of an hmmsearch alignment against pdb_seqres (converted to A3M without
    removing query-gap columns); names `<pdbid>_<chain>`, sum_probs None. Non-protein rows skipped."""
    parsed = list(zip(*parse_fasta(a3m_string)))
    if skip_first:
        parsed = parsed[1:]
    indices_query = _a3m_indices(query_sequence, 0)
    hits = []
    for i, (hit_sequence, description) in enumerate(parsed, start=1):
        if "mol:protein" not in description:
            continue
        m = _HMMSEARCH_DESC.match(description.strip())
        if m is None:
            raise ValueError(f"Could not parse pdb_seqres hit description {description!r}")
        hits.append(TemplateHit(
            index=i, name=f"{m.group(1)}_{m.group(2)}",
            aligned_cols=sum(r.isupper() and r != "-" for r in hit_sequence), sum_probs=None,
            query=query_sequence, hit_sequence=hit_sequence.upper(), indices_query=indices_query,
            indices_hit=_a3m_indices(hit_sequence, int(m.group(3)) - 1)))
    return hits


# --- species identifiers (AlphaFold msa_identifiers.py) -------------------------------------

_UNIPROT_PATTERN = re.compile(
    r"""
    ^
    (?:tr|sp)                                  # UniProtKB/TrEMBL or Swiss-Prot
    \|
    (?P<AccessionIdentifier>[A-Za-z0-9]{6,10}) # primary accession
    (?:_\d)?                                   # isoform suffix, ignored
    \|
    (?:[A-Za-z0-9]+)                           # entry name / repeated accession
    _
    (?P<SpeciesIdentifier>([A-Za-z0-9]){1,5})  # species mnemonic
    (?:_\d+)?                                  # small BFD suffix, ignored
    $
    """,
    re.VERBOSE,
)


def species_identifier(description: str) -> str:
    """Species mnemonic of an MSA row description (`tr|ACC|NAME_SPECIES/1-99 ...` -> `SPECIES`),
    '' when the row is not a UniProt entry (UniRef90, MGnify, the query)."""
    words = description.split()
    if not words:
        return ""
    match = _UNIPROT_PATTERN.search(words[0].partition("/")[0].strip())
    return match.group("SpeciesIdentifier") if match else ""
