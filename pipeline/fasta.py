"""FASTA input: parse and validate the query records (one record = one chain).

AlphaFold accepts the 20 standard amino acids plus `X` (unknown); `U` (selenocysteine) is read as
`C`, as AlphaFold's `HHBLITS_AA_TO_ID` / `protein.from_*` do. Lowercase letters are upper-cased.
Everything else is an error naming the record and the 1-based position.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.errors import InputError

#: Letters a query may hold after upper-casing (U is mapped to C first).
ALLOWED = frozenset("ACDEFGHIKLMNPQRSTVWYX")


@dataclass(frozen=True)
class Chain:
    """One FASTA record: `name` = first word of the header, `description` = the whole header line
    without '>', `sequence` = validated upper-case residues (U already mapped to C)."""
    name: str
    description: str
    sequence: str


def parse_fasta_text(text: str, source: str = "<input>") -> list[Chain]:
    """Parse FASTA text into validated chains, in file order.

    Raises InputError (one line) for: empty input, text before the first header, a header without
    a name, a record without sequence, a character that is not an amino acid (record name and
    1-based position are given), duplicate record names.
    """
    records: list[tuple[str, list[str], int]] = []  # (header, sequence lines, header line number)
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            records.append((line[1:].strip(), [], lineno))
        elif not records:
            raise InputError(f"{source}: line {lineno}: sequence data before the first '>' header")
        else:
            records[-1][1].append("".join(line.split()))
    if not records:
        raise InputError(f"{source}: no FASTA records (empty file?)")
    chains: list[Chain] = []
    seen: dict[str, int] = {}
    for header, lines, lineno in records:
        if not header:
            raise InputError(f"{source}: line {lineno}: header '>' without a name")
        name = header.split()[0]
        if "/" in name or "\\" in name or name in (".", ".."):
            # the name becomes the directory msas/<name>/, so it must be a plain file name
            raise InputError(f"{source}: line {lineno}: record name '{name}' cannot be used as a directory name")
        if name in seen:
            raise InputError(f"{source}: duplicate record name '{name}' (lines {seen[name]} and {lineno})")
        seen[name] = lineno
        seq = "".join(lines).upper()
        if not seq:
            raise InputError(f"{source}: record '{name}' has no sequence")
        for pos, ch in enumerate(seq, start=1):
            if ch not in ALLOWED and ch != "U":
                raise InputError(
                    f"{source}: record '{name}': invalid character {ch!r} at position {pos} "
                    f"(allowed: 20 amino acids, X, U)")
        chains.append(Chain(name=name, description=header, sequence=seq.replace("U", "C")))
    return chains


def read_fasta(path: str | os.PathLike) -> list[Chain]:
    """Read and validate a FASTA file (see `parse_fasta_text`). A missing/unreadable file is an InputError."""
    try:
        with open(path, encoding="utf-8-sig", errors="strict") as fh:  # -sig: tolerate a BOM
            text = fh.read()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read FASTA ({exc.__class__.__name__}: {exc})") from None
    return parse_fasta_text(text, source=str(path))


def unique_sequences(chains: list[Chain]) -> dict[str, list[str]]:
    """Map each distinct sequence to the names of the chains that carry it (first-seen order).
    Identical chains are searched once."""
    out: dict[str, list[str]] = {}
    for c in chains:
        out.setdefault(c.sequence, []).append(c.name)
    return out
