"""scripts/attention_sass.py: the attention kernel compiled offline for sm_90 (no GPU), its key
loop's SASS counted. Checks the spare-column path does what it is for: fewer instructions per score
at the extra-MSA call site than without it, and no register spills either way."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kernel_testlib import needs_triton

pytestmark = needs_triton
ROOT = Path(__file__).resolve().parents[2]


def _per_score(*args):
    env = dict(os.environ, TRITON_INTERPRET="0")  # a fresh process: Triton in compiled mode
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "attention_sass.py"), *args],
                         capture_output=True, text=True, env=env, timeout=600)
    if out.returncode and "ptxas" in out.stderr:
        pytest.skip("Triton's bundled ptxas is not usable here")
    assert out.returncode == 0, out.stderr[-2000:]
    first = out.stdout.splitlines()[0]
    assert "no spills in the loop" in first, first
    return float(re.search(r"([0-9.]+) per score", first).group(1))


def test_spare_columns_cut_the_per_score_work():
    with_spare = _per_score("extra_msa")
    without = _per_score("extra_msa", "--config", '{"spare": false}')
    assert 4 < with_spare < without, (with_spare, without)
