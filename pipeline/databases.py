"""Database paths in AlphaFold's download layout, overridable one by one, checked before any search.

`--db-dir D` gives AlphaFold's `run_docker.py` defaults:
  D/uniref90/uniref90.fasta, D/mgnify/mgy_clusters_2022_05.fa,
  D/bfd/bfd_metaclust_clu_complete_id30_c90_final_seq.sorted_opt (HH-suite prefix),
  D/uniref30/UniRef30_2021_03 (prefix), D/small_bfd/bfd-first_non_consensus_sequences.fasta,
  D/pdb70/pdb70 (prefix), D/pdb_seqres/pdb_seqres.txt, D/uniprot/uniprot.fasta,
  D/pdb_mmcif/mmcif_files, D/pdb_mmcif/obsolete.dat.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Mapping

from pipeline.errors import DatabaseError, InputError

DEFAULT_LAYOUT = {
    "uniref90_database_path": "uniref90/uniref90.fasta",
    "mgnify_database_path": "mgnify/mgy_clusters_2022_05.fa",
    "bfd_database_path": "bfd/bfd_metaclust_clu_complete_id30_c90_final_seq.sorted_opt",
    "uniref30_database_path": "uniref30/UniRef30_2021_03",
    "small_bfd_database_path": "small_bfd/bfd-first_non_consensus_sequences.fasta",
    "pdb70_database_path": "pdb70/pdb70",
    "pdb_seqres_database_path": "pdb_seqres/pdb_seqres.txt",
    "uniprot_database_path": "uniprot/uniprot.fasta",
    "template_mmcif_dir": "pdb_mmcif/mmcif_files",
    "obsolete_pdbs_path": "pdb_mmcif/obsolete.dat",
}
HHSUITE_PREFIXES = {"bfd_database_path", "uniref30_database_path", "pdb70_database_path"}


@dataclasses.dataclass(frozen=True)
class Databases:
    """Resolved database paths (None = not configured)."""
    uniref90_database_path: str | None = None
    mgnify_database_path: str | None = None
    bfd_database_path: str | None = None
    uniref30_database_path: str | None = None
    small_bfd_database_path: str | None = None
    pdb70_database_path: str | None = None
    pdb_seqres_database_path: str | None = None
    uniprot_database_path: str | None = None
    template_mmcif_dir: str | None = None
    obsolete_pdbs_path: str | None = None


def resolve(db_dir: str | None = None, overrides: Mapping[str, str | None] | None = None,
            config_file: str | None = None) -> Databases:
    """Paths from `db_dir` defaults, then a JSON config file ({flag_name: path}, AlphaFold names in
    underscore or dash form), then explicit overrides (highest priority)."""
    values: dict[str, str | None] = {}
    if db_dir:
        values.update({k: os.path.join(db_dir, v) for k, v in DEFAULT_LAYOUT.items()})
    if config_file:
        try:
            with open(config_file) as fh:
                cfg = json.load(fh)
        except (OSError, ValueError) as exc:
            raise InputError(f"{config_file}: cannot read database config ({exc})") from None
        for k, v in cfg.items():
            key = k.replace("-", "_").lstrip("_")
            if key not in DEFAULT_LAYOUT:
                raise InputError(f"{config_file}: unknown database key '{k}'")
            values[key] = v
    for k, v in (overrides or {}).items():
        if v is not None:
            values[k] = os.fspath(v)
    return Databases(**values)


def required(db_preset: str, templates: bool, msa_mode: str, multimer: bool = False) -> list[str]:
    """Database fields a run needs (AlphaFold's `_check_flag` rules)."""
    if msa_mode == "single-sequence":
        need: list[str] = []
    else:
        need = ["uniref90_database_path", "mgnify_database_path"]
        if db_preset == "full_dbs":
            need += ["bfd_database_path", "uniref30_database_path"]
        elif db_preset == "reduced_dbs":
            need += ["small_bfd_database_path"]
        else:
            raise InputError(f"unknown --db-preset '{db_preset}' (full_dbs or reduced_dbs)")
        if multimer:
            need += ["uniprot_database_path"]  # AlphaFold requires it even for homomers
    if templates and msa_mode != "single-sequence":
        need += ["pdb_seqres_database_path"] if multimer else ["pdb70_database_path"]
        need += ["template_mmcif_dir"]
    return need


def check(dbs: Databases, db_preset: str, templates: bool, msa_mode: str = "full",
          multimer: bool = False) -> None:
    """Raise one DatabaseError naming every missing database, before any search starts."""
    problems = []
    for field in required(db_preset, templates, msa_mode, multimer):
        flag = "--" + field.replace("_", "-")
        path = getattr(dbs, field)
        if not path:
            problems.append(f"{flag} not set (use --db-dir or {flag})")
        elif field in HHSUITE_PREFIXES:
            if not glob.glob(path + "_*"):
                problems.append(f"{flag}: no HH-suite files {path}_*")
        elif field == "template_mmcif_dir":
            if not os.path.isdir(path):
                problems.append(f"{flag}: no directory {path}")
        elif not os.path.isfile(path):
            problems.append(f"{flag}: no file {path}")
    if problems:
        raise DatabaseError("missing databases: " + "; ".join(problems))


def fingerprint(path: str) -> str:
    """Identity of a database for cache keys: path, size and mtime of its file(s) (hashing the
    content of a 100 GB database on every run would cost more than the search)."""
    files = [path] if os.path.exists(path) else sorted(glob.glob(path + "_*"))
    parts = []
    for f in files:
        st = os.stat(f)
        parts.append(f"{os.path.abspath(f)}:{st.st_size}:{int(st.st_mtime)}")
    return "|".join(parts)
