"""scripts/glue_sass.py: a glue kernel compiled offline for sm_90 (no GPU). Checks that the tri-mul
output stage's `split` option does what it is for: fewer registers a thread, so more programs an SM,
with no spills and no more instructions."""
from __future__ import annotations

import re

from kernel_testlib import needs_triton, offline_compile

pytestmark = needs_triton


def _report(*args):
    """(registers, spill instructions, instructions, programs an SM) from the script's summary line."""
    line = offline_compile("glue_sass.py", *args).splitlines()[0]
    m = re.search(r"(\d+) registers, .* (\d+) spill instructions, (\d+) instructions; programs an SM: (\d+)", line)
    assert m, line
    return tuple(map(int, m.groups()))


def test_tri_mul_output_split_frees_registers():
    regs, spills, n, progs = _report("tri_mul_output")
    regs4, spills4, n4, progs4 = _report("tri_mul_output", "--config", '{"split": 4}')
    assert spills == spills4 == 0
    assert regs4 <= 168 < regs and progs4 > progs, (regs, regs4, progs, progs4)
    assert n4 <= n * 1.05, (n, n4)
