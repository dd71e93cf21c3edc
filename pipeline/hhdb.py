"""Build small HH-suite databases (ffindex a3m + cs219 [+ hhm]) from sequences or A3M MSAs.

Used by the tests and by `examples/` to make offline stand-ins for BFD/UniRef30 (hhblits) and PDB70
(hhsearch) from real sequences. Full-size databases come from AlphaFold's download scripts.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from typing import Mapping

from pipeline.errors import ToolError


def cstranslate_binary() -> str:
    """HH-suite's `cstranslate` (Debian installs it under /usr/libexec/hhsuite only)."""
    found = shutil.which("cstranslate")
    if found:
        return found
    for variant in ("avx2", "sse4.1", "ssse3", "sse3", "plain"):
        path = f"/usr/libexec/hhsuite/cstranslate-{variant}"
        if os.access(path, os.X_OK):
            return path
    raise ToolError("cstranslate not found (apt-get install hhsuite)")


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(f"{os.path.basename(cmd[0])} failed: {proc.stderr.strip()[-500:]}")


def build_hhsuite_db(entries: Mapping[str, str], prefix: str, *, with_hhm: bool = False) -> str:
    """Write an HH-suite database `<prefix>_{a3m,cs219[,hhm]}.ff{data,index}`.

    `entries`: entry key -> A3M text (one MSA per entry; its first header names the hit in .hhr
    output, e.g. `>2CRB_A description`). Stop codons '*' are removed. Returns `prefix`."""
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    for old in glob.glob(prefix + "_*.ff*"):
        os.remove(old)
    with tempfile.TemporaryDirectory(prefix="ff_hhdb_") as tmp:
        for key, a3m in entries.items():
            with open(os.path.join(tmp, key), "w") as fh:
                fh.write(a3m.replace("*", "").rstrip("\n") + "\n")
        _run(["ffindex_build", "-s", f"{prefix}_a3m.ffdata", f"{prefix}_a3m.ffindex", tmp])
    _run([cstranslate_binary(), "-f", "-x", "0.3", "-c", "4", "-I", "a3m",
          "-i", f"{prefix}_a3m", "-o", f"{prefix}_cs219"])
    if with_hhm:
        _run(["ffindex_apply", f"{prefix}_a3m.ffdata", f"{prefix}_a3m.ffindex",
              "-i", f"{prefix}_hhm.ffindex", "-d", f"{prefix}_hhm.ffdata",
              "--", "hhmake", "-i", "stdin", "-o", "stdout", "-v", "0"])
    return prefix


def fasta_entries(fasta_text: str) -> dict[str, str]:
    """One single-sequence A3M entry per FASTA record, keyed by record index."""
    from pipeline.parsers import parse_fasta
    seqs, descs = parse_fasta(fasta_text)
    return {f"e{i:06d}": f">{d}\n{s}\n" for i, (s, d) in enumerate(zip(seqs, descs))}
