"""Shared fixtures of the pipeline tests. Test data lives in tests/data/pipeline (see SOURCE.md);
nothing here reads ../shared at test time."""
import gzip
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from pipeline_testutil import DATA


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
