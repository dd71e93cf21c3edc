#!/usr/bin/env python3
"""The kernel micro-benchmark (`kernels/benchmark.py`; also `fastfold bench --kernels`):
    python scripts/kernel_bench.py [--sweep] [--cases tri2048,ln,opm] [--json out.json]"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kernels.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main()
