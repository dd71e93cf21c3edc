"""Helpers shared by the pipeline tests (a uniquely named module: `from conftest import` would
depend on which of the suite's conftest.py files pytest loaded last)."""
import shutil
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "pipeline"


def read_fasta_seq(path: Path) -> str:
    """The sequence of a one-record FASTA file."""
    return "".join(l.strip() for l in Path(path).read_text().splitlines()[1:])


def need_binary(name: str) -> None:
    if shutil.which(name) is None:
        pytest.skip(f"{name} not installed (scripts/install.sh installs it)")


def write_pdb_seqres(path: Path, mmcif_dir: Path) -> Path:
    """A pdb_seqres.txt in the PDB's format from the chains of every <id>.cif.gz in mmcif_dir."""
    from pipeline import templates

    with open(path, "w") as fh:
        for cif in sorted(Path(mmcif_dir).glob("*.cif.gz")):
            pdb = cif.name[:4]
            for chain, seq in templates.parse_mmcif(str(cif), pdb).chain_to_seqres.items():
                fh.write(f">{pdb}_{chain} mol:protein length:{len(seq)}  {pdb.upper()}\n{seq}\n")
    return path
