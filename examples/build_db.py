"""Build the bundled offline example database in AlphaFold's download layout.

    python examples/build_db.py [DEST]        # default: examples/db

From the real data in examples/data (see SOURCE.md) it writes
  DEST/uniref90/uniref90.fasta        de-gapped UniRef90 homologs of query.fasta + 400 background proteins
  DEST/mgnify/mgy_clusters_2022_05.fa de-gapped MGnify homologs + 100 background proteins
  DEST/small_bfd/bfd-first_non_consensus_sequences.fasta  de-gapped BFD/Uniclust rows
  DEST/bfd/..._opt_*, DEST/uniref30/UniRef30_2021_03_*    HH-suite databases of the BFD/Uniclust
                                      rows cut into clusters of 50 (as BFD/UniRef30 hold cluster MSAs)
  DEST/pdb70/pdb70_*                  HH-suite database, one entry per protein chain of the mmCIFs
  DEST/pdb_seqres/pdb_seqres.txt      the same chains in pdb_seqres format (multimer templates)
  DEST/uniprot/uniprot.fasta          de-gapped BFD/Uniclust rows with UniProt ids + 100 background
  DEST/pdb_mmcif/mmcif_files/*.cif.gz, DEST/pdb_mmcif/obsolete.dat
Needs HH-suite (ffindex_build, cstranslate): scripts/install.sh installs it. Takes ~10 s.
"""
from __future__ import annotations

import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from pipeline import databases, hhdb, parsers, templates  # noqa: E402

LAYOUT = databases.DEFAULT_LAYOUT


def _degapped(rows: dict[str, str]) -> str:
    return "".join(f">{name}\n{seq.replace('-', '').replace('.', '').upper()}\n"
                   for name, seq in list(rows.items())[1:])  # row 0 is the query itself


def build(dest: str) -> str:
    data = os.path.join(HERE, "data")
    read = lambda name: open(os.path.join(data, name)).read()  # noqa: E731
    background = read("background.faa").split(">")[1:]

    def write(field: str, text: str) -> None:
        path = os.path.join(dest, LAYOUT[field])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)

    write("uniref90_database_path", _degapped(parsers._stockholm_rows(read("uniref90_hits.sto")))
          + "".join(">" + r for r in background))
    write("mgnify_database_path", _degapped(parsers._stockholm_rows(read("mgnify_hits.sto")))
          + "".join(">" + r for r in background[:100]))
    seqs, descs = parsers.parse_fasta(read("bfd_uniclust_hits.a3m"))
    write("small_bfd_database_path", "".join(
        f">{d.split()[0]}\n{s.replace('-', '').upper()}\n" for s, d in zip(seqs[1:], descs[1:])))

    # BFD / UniRef30 stand-ins: clusters of 50 aligned rows, each an A3M entry
    rows = [f">{d.split()[0]}\n{s}\n" for s, d in zip(seqs[1:], descs[1:])]
    clusters = [rows[i:i + 50] for i in range(0, len(rows), 50)]
    half = len(clusters) // 2
    for field, part in (("bfd_database_path", clusters[:half]), ("uniref30_database_path", clusters[half:])):
        prefix = os.path.join(dest, LAYOUT[field])
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
        hhdb.build_hhsuite_db({f"c{i:04d}": "".join(c) for i, c in enumerate(part)}, prefix)

    mmcif_dir = os.path.join(dest, LAYOUT["template_mmcif_dir"])
    os.makedirs(mmcif_dir, exist_ok=True)
    entries = {}
    for name in sorted(os.listdir(os.path.join(data, "mmcif"))):
        shutil.copy(os.path.join(data, "mmcif", name), mmcif_dir)
        pdb = name[:4]
        for chain, seq in templates.parse_mmcif(os.path.join(data, "mmcif", name), pdb).chain_to_seqres.items():
            entries[f"{pdb}_{chain}"] = f">{pdb.upper()}_{chain} {pdb} chain {chain}\n{seq}\n"
    # pdb_seqres in the PDB's format (multimer template search)
    write("pdb_seqres_database_path", "".join(
        f">{k[:4].lower()}{k[4:]} mol:protein length:{len(v.split(chr(10))[1])}  {k[:4].upper()}\n{v.split(chr(10))[1]}\n"
        for k, v in entries.items()))
    # UniProt stand-in (multimer pairing): the BFD/Uniclust rows carry real UniProt ids and species
    write("uniprot_database_path", "".join(
        f">{d.split()[0]}\n{s.replace('-', '').upper()}\n" for s, d in zip(seqs[1:], descs[1:])
        if d.startswith(("tr|", "sp|"))) + "".join(">" + r for r in background[:100]))
    prefix = os.path.join(dest, LAYOUT["pdb70_database_path"])
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    hhdb.build_hhsuite_db(entries, prefix)
    with open(os.path.join(dest, LAYOUT["obsolete_pdbs_path"]), "w") as fh:
        fh.write(" LIST OF OBSOLETE COORDINATE ENTRIES AND SUCCESSORS\n")
    return dest


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "db")))
