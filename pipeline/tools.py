"""The search tools AlphaFold 2.3 runs, as plain functions with AlphaFold's flags.

* jackhmmer (UniRef90, MGnify, small BFD, UniProt) runs in-process through pyhmmer. With `-N 1`
  jackhmmer is one HMM search with the single-sequence model of the query, so a database can be
  split into byte-range shards searched separately with `Z` = the whole database's sequence count
  and merged by score: the E-values and hits are those of one unsharded search.
* hhblits / hhsearch run the HH-suite binaries (subprocess), kalign the kalign binary.

Query records are written with a neutral name (`QUERY_NAME`) so that no query header looks like
a UniProt id (AlphaFold's species parser would pick it up) and so the cache key is name-free.
"""
from __future__ import annotations

import dataclasses
import datetime
import glob
import io
import os
import shutil
import subprocess
import tempfile
from typing import Sequence

from pipeline.errors import DatabaseError, ToolError

QUERY_NAME = "query"

# AlphaFold alphafold/data/tools/jackhmmer.py defaults (n_iter=1, e_value=1e-4, F1/F2/F3).
JACKHMMER_FLAGS = dict(F1=0.0005, F2=0.00005, F3=0.0000005, E=0.0001, incE=0.0001,
                       # jackhmmer's own default --incdomE (pyhmmer's Pipeline default is 0.01)
                       incdomE=0.001)
# AlphaFold alphafold/data/tools/hhblits.py defaults as passed by the monomer pipeline.
HHBLITS_FLAGS = ["-n", "3", "-e", "0.001", "-maxseq", "1000000", "-realign_max", "100000",
                 "-maxfilt", "100000", "-min_prefilter_hits", "1000"]
HHSEARCH_FLAGS = ["-maxseq", "1000000"]
# AlphaFold alphafold/data/tools/hmmsearch.py (multimer template search against pdb_seqres).
HMMSEARCH_FLAGS = dict(F1=0.1, F2=0.1, F3=0.1, incE=100, E=100, domE=100, incdomE=100)
# Hit caps applied when AlphaFold reads the results (pipeline.py / pipeline_multimer.py).
MAX_HITS = {"uniref90": 10000, "mgnify": 501, "small_bfd": None, "uniprot": 50000}


# --- FASTA databases and shards ---------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Shard:
    """Bytes [start, end) of a FASTA database, starting at a '>' record (end=-1: to end of file)."""
    path: str
    start: int = 0
    end: int = -1


def count_sequences(path: str | os.PathLike) -> int:
    """Number of FASTA records of a database (its `Z` for E-values). Streams the file."""
    n = 0
    with open(path, "rb") as fh:
        at_line_start = True
        while True:
            chunk = fh.read(1 << 24)
            if not chunk:
                break
            # count '>' at line starts: after '\n' within the chunk, plus the chunk's first byte
            n += chunk.count(b"\n>")
            if at_line_start and chunk[:1] == b">":
                n += 1
            at_line_start = chunk[-1:] == b"\n"
    return n


def shard_database(path: str | os.PathLike, n_shards: int) -> list[Shard]:
    """Split a FASTA database into up to `n_shards` byte ranges of similar size, each starting at a
    record header. Ranges cover the file exactly once, so sharded searches see every sequence once."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    n_shards = max(1, min(n_shards, size // 1024 or 1))
    cuts = [0]
    with open(path, "rb") as fh:
        for k in range(1, n_shards):
            fh.seek(max(size * k // n_shards, cuts[-1]))
            fh.readline()  # move to the next line start
            while True:
                pos = fh.tell()
                line = fh.readline()
                if not line or line.startswith(b">"):
                    break
            if pos > cuts[-1] and pos < size:
                cuts.append(pos)
    cuts.append(size)
    return [Shard(path, a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


class _RangeReader(io.RawIOBase):
    """A binary file object that reads only bytes [start, end) of a file, so pyhmmer can stream
    one shard of a database without copying it."""

    def __init__(self, path: str, start: int, end: int):
        self._fh = open(path, "rb")
        self._fh.seek(start)
        self._left = (os.path.getsize(path) if end < 0 else end) - start

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self._left)
        if n <= 0:
            return 0
        got = self._fh.readinto(memoryview(buf)[:n])
        self._left -= got
        return got

    def close(self) -> None:
        self._fh.close()
        super().close()


#: Sequences per block when streaming a shard: bounds memory to one block (~50 MB of UniRef90).
BLOCK_SEQUENCES = 100_000


def iter_shard_blocks(shard: Shard, block_sequences: int = BLOCK_SEQUENCES):
    """Digital sequence blocks of a shard, read `block_sequences` at a time (never the whole
    database in memory: UniRef90 is ~70 GB)."""
    import pyhmmer
    abc = pyhmmer.easel.Alphabet.amino()
    reader = io.BufferedReader(_RangeReader(shard.path, shard.start, shard.end), 1 << 20)
    with pyhmmer.easel.SequenceFile(reader, digital=True, alphabet=abc, format="fasta") as f:
        while True:
            block = f.read_block(sequences=block_sequences)
            if not len(block):
                break
            yield block


def _digital_query(sequence: str, name: str):
    import pyhmmer
    abc = pyhmmer.easel.Alphabet.amino()
    return pyhmmer.easel.TextSequence(name=name.encode(), sequence=sequence).digitize(abc)


# --- jackhmmer (pyhmmer) -------------------------------------------------------------------

def cap_hits(hits, max_hits: int | None):
    """Mark every hit after the first `max_hits` hits that would give MSA rows as not included, so
    `to_msa` aligns at most what AlphaFold keeps. Hits must be sorted. Returns `hits`."""
    if max_hits is None:
        return hits
    kept = 0
    for hit in hits:
        if not hit.included:
            continue
        if kept >= max_hits:
            hit.included = False
        elif any(d.included for d in hit.domains):
            kept += 1
    return hits


def jackhmmer_hits(sequence: str, shard: Shard | str, *, z: int | None = None,
                   max_hits: int | None = None, name: str = QUERY_NAME, flags: dict | None = None,
                   block_sequences: int = BLOCK_SEQUENCES):
    """One jackhmmer `-N 1` search of `sequence` against a database or shard, single-threaded.

    Returns pyhmmer `TopHits` sorted by score, with hits beyond `max_hits` un-included (capped
    before any merge). `z` = sequence count of the whole database (jackhmmer `-Z`); None = this
    shard's count, as the unsharded binary does. The shard is streamed `block_sequences` at a time.
    """
    import pyhmmer
    from pyhmmer.plan7 import Background, Builder, Pipeline
    if isinstance(shard, (str, os.PathLike)):
        shard = Shard(os.fspath(shard))
    abc = pyhmmer.easel.Alphabet.amino()
    query = _digital_query(sequence, name)
    background = Background(abc)
    # jackhmmer round 1 = the single-sequence model (BLOSUM62, popen 0.02, pextend 0.4); pyhmmer's
    # jackhmmer uses the same Builder(seed=42, architecture="hand").
    hmm, _, _ = Builder(abc, seed=42, architecture="hand").build(query, background)
    # The HMM carries its build time; TopHits.merge refuses hits of HMMs that differ, so shards
    # built in different seconds (or processes) must get the same stamp.
    hmm.creation_time = datetime.datetime(2000, 1, 1)
    hmm.command_line = None  # also compared by merge; differs between processes (sys.argv)
    opts = dict(JACKHMMER_FLAGS, **(flags or {}))
    if z is not None:
        opts["Z"] = float(z)
    pipeline = Pipeline(abc, background, **opts)
    parts = []
    for block in iter_shard_blocks(shard, block_sequences):
        # without a fixed Z each part counts its own targets; merge() sums them, so the E-values
        # equal those of one search over the whole shard
        parts.append(cap_hits(pipeline.search_hmm(hmm, block), max_hits))  # capped before merging
        pipeline.clear()
    if not parts:
        raise ValueError(f"no sequences in {shard.path} [{shard.start}, {shard.end})")
    return merge_hits(parts, max_hits)


def merge_hits(parts: Sequence, max_hits: int | None = None):
    """Merge per-shard TopHits (same query, same Z) into one, sorted by score, capped again."""
    if not parts:
        raise ValueError("no hits to merge")
    merged = parts[0].merge(*parts[1:]) if len(parts) > 1 else parts[0].copy()
    merged.sort(by="key")
    return cap_hits(merged, max_hits)


def hits_to_stockholm(sequence: str, hits, name: str = QUERY_NAME) -> str:
    """The jackhmmer `-A` Stockholm alignment of the included hits, query row first (as HMMER 3
    writes it with `--noali -A`: all consensus columns, `#=GS ... DE` descriptions)."""
    import pyhmmer
    from pyhmmer.plan7 import Trace
    abc = pyhmmer.easel.Alphabet.amino()
    query = _digital_query(sequence, name)
    msa = hits.to_msa(abc, sequences=[query], traces=[Trace.from_sequence(query)],
                      all_consensus_cols=True, digitize=True)
    msa.name = f"{name}-i1".encode()
    buf = io.BytesIO()
    msa.write(buf, "stockholm")
    return buf.getvalue().decode()


def jackhmmer(sequence: str, database: str | os.PathLike, *, z: int | None = None,
              max_hits: int | None = None, name: str = QUERY_NAME) -> str:
    """AlphaFold's jackhmmer call (`-N 1 -E 1e-4 --incE 1e-4 --F1 5e-4 --F2 5e-5 --F3 5e-7`) on a
    whole FASTA database; returns the Stockholm text. `max_hits` caps the alignment rows' hits."""
    hits = jackhmmer_hits(sequence, Shard(os.fspath(database)), z=z, max_hits=max_hits, name=name)
    return hits_to_stockholm(sequence, hits, name=name)


def jackhmmer_sharded(sequence: str, database: str | os.PathLike, n_shards: int, *,
                      max_hits: int | None = None, name: str = QUERY_NAME) -> str:
    """Same result as `jackhmmer` on the whole database, computed shard by shard in this process
    (the Ray DAG runs the shards as parallel tasks with the same functions)."""
    z = count_sequences(database)
    parts = [jackhmmer_hits(sequence, s, z=z, max_hits=max_hits, name=name)
             for s in shard_database(database, n_shards)]
    return hits_to_stockholm(sequence, merge_hits(parts, max_hits), name=name)


# --- hmmbuild + hmmsearch (multimer templates, pyhmmer) -------------------------------------

def hmmsearch_pdb_seqres(stockholm_msa: str, pdb_seqres: str | os.PathLike) -> str:
    """AlphaFold's multimer template search: `hmmbuild --hand --amino` on the (deduplicated)
    UniRef90 Stockholm, then `hmmsearch --F1 0.1 --F2 0.1 --F3 0.1 -E 100 --incE 100 --domE 100
    --incdomE 100` against pdb_seqres. Returns the hit alignment as Stockholm text ("" without hits)."""
    import pyhmmer
    from pyhmmer.plan7 import Background, Builder, Pipeline
    abc = pyhmmer.easel.Alphabet.amino()
    with pyhmmer.easel.MSAFile(io.BytesIO(stockholm_msa.encode()), format="stockholm",
                               digital=True, alphabet=abc) as f:
        msa = f.read()
    msa.name = b"query"
    background = Background(abc)
    hmm, _, _ = Builder(abc, architecture="hand").build_msa(msa, background)
    pipeline = Pipeline(abc, background, **HMMSEARCH_FLAGS)
    hits = merge_hits([pipeline.search_hmm(hmm, b) for b in iter_shard_blocks(Shard(os.fspath(pdb_seqres)))])
    if not any(True for _ in hits.included):
        return ""  # HMMER writes no alignment without a hit; AlphaFold then uses an all-zero template
    out = hits.to_msa(abc, all_consensus_cols=True, digitize=False)
    buf = io.BytesIO()
    out.write(buf, "stockholm")
    return buf.getvalue().decode()


# --- HH-suite -----------------------------------------------------------------------------

def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolError(f"'{name}' not found on PATH (apt-get install hhsuite hmmer kalign)")
    return path


def check_hhsuite_db(prefix: str) -> None:
    """AlphaFold checks an HH-suite database prefix by globbing `<prefix>_*`."""
    if not glob.glob(prefix + "_*"):
        raise DatabaseError(f"HH-suite database not found: no files match {prefix}_*")


def _run(cmd: list[str], what: str, cwd: str | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-20:]
        raise ToolError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")


def write_query_fasta(path: str, sequence: str, name: str = QUERY_NAME) -> None:
    with open(path, "w") as fh:
        fh.write(f">{name}\n{sequence}\n")


def hhblits(sequence: str, databases: Sequence[str], *, cpus: int = 4, name: str = QUERY_NAME) -> str:
    """AlphaFold's hhblits call on BFD + UniRef30 (database *prefixes*); returns the A3M text."""
    for db in databases:
        check_hhsuite_db(db)
    with tempfile.TemporaryDirectory(prefix="ff_hhblits_") as tmp:
        query = os.path.join(tmp, "query.fasta")
        out = os.path.join(tmp, "output.a3m")
        write_query_fasta(query, sequence, name)
        cmd = [_binary("hhblits"), "-i", query, "-cpu", str(cpus), "-oa3m", out, "-o", "/dev/null",
               *HHBLITS_FLAGS]
        for db in databases:
            cmd += ["-d", db]
        _run(cmd, "hhblits")
        with open(out) as fh:
            return fh.read()


def hhsearch(a3m: str, databases: Sequence[str], *, cpus: int = 1) -> str:
    """AlphaFold's hhsearch template search (`-maxseq 1000000`) of an A3M query MSA against PDB70
    (database prefixes); returns the .hhr text."""
    for db in databases:
        check_hhsuite_db(db)
    with tempfile.TemporaryDirectory(prefix="ff_hhsearch_") as tmp:
        query = os.path.join(tmp, "query.a3m")
        out = os.path.join(tmp, "output.hhr")
        with open(query, "w") as fh:
            fh.write(a3m)
        cmd = [_binary("hhsearch"), "-i", query, "-o", out, *HHSEARCH_FLAGS, "-cpu", str(cpus)]
        for db in databases:
            cmd += ["-d", db]
        _run(cmd, "hhsearch")
        with open(out) as fh:
            return fh.read()


def kalign(sequences: Sequence[str]) -> list[str]:
    """Align sequences with kalign 3 (fasta output; kalign 3 writes no a3m/Stockholm).
    AlphaFold requires every sequence to have at least 6 residues. Returns the aligned rows in
    input order."""
    from pipeline.parsers import parse_fasta
    for s in sequences:
        if len(s) < 6:
            raise ValueError(f"kalign needs sequences of at least 6 residues, got {len(s)}: {s!r}")
    with tempfile.TemporaryDirectory(prefix="ff_kalign_") as tmp:
        inp = os.path.join(tmp, "input.fasta")
        out = os.path.join(tmp, "output.fasta")
        with open(inp, "w") as fh:
            for i, s in enumerate(sequences):
                fh.write(f">{i}\n{s}\n")
        _run([_binary("kalign"), "-i", inp, "-o", out, "--format", "fasta", "-n", "1"], "kalign")
        with open(out) as fh:
            seqs, names = parse_fasta(fh.read())
    by_name = dict(zip(names, seqs))
    return [by_name[str(i)].upper().replace(".", "-") for i in range(len(sequences))]
