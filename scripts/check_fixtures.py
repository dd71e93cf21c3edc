"""Run every reference fixture (tests/data/af_fixtures) on a device and precision and print the
deviation of each output from AlphaFold's: max|ours - ref| / max|ref| per tensor, atoms in Å.

    python scripts/check_fixtures.py --device cuda --precision fp32 bf16 [--backend torch triton] [--json F]
        [--only model_1_ptm_odd ...]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.config import Runtime, parse_attention_options  # noqa: E402
from model.params import load_model  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "data" / "af_fixtures"


def deviations(out, ref):
    res = {}
    for k, r in ref.items():
        if k not in out or r.dtype.kind not in "f":
            continue
        o = out[k]
        if k == "final_atom_positions":
            exists = ref["final_atom_mask"] > 0
            res[k + "_max_abs_A"] = float(np.abs(o - r)[exists].max())
        elif k in ("plddt", "predicted_aligned_error", "ptm"):
            res[k + "_max_abs"] = float(np.abs(o - r).max())
        else:
            res[k] = float(np.abs(o.astype(np.float64) - r).max() / max(np.abs(r).max(), 1e-30))
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", nargs="+", default=["fp32"])
    ap.add_argument("--backend", nargs="+", default=["torch"])
    ap.add_argument("--inplace", action="store_true",
                    help="in-place residual updates (Runtime.inplace: the fused residual projections run)")
    ap.add_argument("--keep-templates", action="store_true",
                    help="template pair stacks in the first recycling pass only (Runtime.keep_templates)")
    ap.add_argument("--attention-options", default=None, metavar="JSON",
                    help="options of the Triton attention kernel (Runtime.attention_options), e.g. '{\"bound\": true}'")
    ap.add_argument("--json", default=None)
    ap.add_argument("--only", nargs="+", default=None, metavar="NAME",
                    help="these fixtures only (folder names under tests/data/af_fixtures): a short GPU call")
    args = ap.parse_args()
    opts = None
    if args.attention_options:
        try:
            opts = parse_attention_options(args.attention_options)
        except ValueError as e:
            ap.error(f"--attention-options: {e}")
    names = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        raise SystemExit(f"check_fixtures: no fixture named {', '.join(unknown)} (have: {', '.join(names)})")
    report = {}
    for fx in (FIXTURES / name for name in names if not args.only or name in args.only):
        meta = json.loads((fx / "meta.json").read_text())
        batch = dict(np.load(fx / "features.npz"))
        ref = dict(np.load(fx / "outputs.npz"))
        for precision in args.precision:
            for backend in args.backend:
                model = load_model(next(fx.glob("params_*.npz")), device=args.device)
                rt = Runtime(precision=precision, backend=backend, inplace=args.inplace,
                             keep_templates=args.keep_templates,
                             attention_options=opts)
                model.prepare(rt)
                out = model(batch, rt, num_recycle=meta["args"]["recycles"], return_prev_inputs=True)
                out = {k: v.float().cpu().numpy() for k, v in out.items()}
                dev = deviations(out, ref)
                key = f"{fx.name}/{precision}/{backend}" + ("/inplace" if args.inplace else "") + \
                    ("/keep_templates" if args.keep_templates else "") + \
                    (f"/attention {args.attention_options}" if args.attention_options else "")
                report[key] = dev
                rel = {k: v for k, v in dev.items() if not k.endswith(("_A", "_abs"))}
                worst = max(rel, key=rel.get)
                print(f"{key:40s} worst rel {rel[worst]:.2e} ({worst}); atoms {dev['final_atom_positions_max_abs_A']:.2e} A; "
                      f"plddt {dev['plddt_max_abs']:.2e}" + (f"; ptm {dev['ptm_max_abs']:.2e}" if "ptm_max_abs" in dev else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
