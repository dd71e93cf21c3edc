#!/usr/bin/env python3
"""Print the kernel option JSON of the variant that ran a case fastest, as the network calls it with the
mask of ones skipped, in a `kernel_bench.py --variants` JSON, if it beats the default by more than a
factor; print nothing otherwise. For device scripts that decide their next job from the last one.

    python3 scripts/pick_variant.py kbench.json tri2048 1.03
"""
import json
import sys

# the network call's label: a [B, L, H, D] output, or (column attention's cases) an [L, B, H, D] one
KEYS = ("ours (network call: fused views + gate), mask of ones skipped",
        "ours (network call: fused views + gate), [L, B, H, D] out, mask of ones skipped")


def pick(path: str, case: str, factor: float) -> str:
    runs = json.load(open(path))["attention"][case]["runs"]
    key = next((k for k in KEYS if runs.get(k)), None)
    if key is None:
        return ""
    best, best_ms = "", runs[key]["ms"] / factor
    for label, r in runs.items():
        if label.startswith(key + " {") and r.get("ms") and r["ms"] < best_ms:
            best, best_ms = label[len(key) + 1:], r["ms"]
    return best


if __name__ == "__main__":
    print(pick(sys.argv[1], sys.argv[2], float(sys.argv[3])))
