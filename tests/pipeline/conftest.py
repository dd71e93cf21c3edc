"""Shared fixtures of the pipeline tests. Test data lives in tests/data/pipeline (see SOURCE.md);
nothing here reads ../shared at test time."""
import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from pipeline_testutil import DATA, need_binary


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def small_db(tmp_path_factory) -> Path:
    """The 2,122-protein pyhmmer test database, decompressed once per session."""
    out = tmp_path_factory.mktemp("db") / "db.faa"
    with gzip.open(DATA / "pyhmmer" / "db.faa.gz", "rb") as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return out


@pytest.fixture(scope="session", autouse=True)
def _shutdown_ray():
    """Stop the local Ray a test may have started in this process."""
    yield
    import sys
    if "ray" in sys.modules:
        import ray
        if ray.is_initialized():
            ray.shutdown()


@pytest.fixture(scope="session")
def example_db(tmp_path_factory) -> Path:
    """The bundled example's databases (examples/build_db.py: jackhmmer FASTAs, HH-suite BFD/UniRef30
    and pdb70, pdb_seqres, mmCIFs), built once per session. Read-only: copy it to change it."""
    for b in ("hhblits", "hhsearch", "ffindex_build"):
        need_binary(b)
    root = Path(__file__).resolve().parents[2]
    dest = tmp_path_factory.mktemp("exdb")
    env = dict(os.environ, PYTHONPATH=str(root))
    subprocess.run([sys.executable, str(root / "examples" / "build_db.py"), str(dest)], check=True,
                   env=env, capture_output=True)
    return dest
