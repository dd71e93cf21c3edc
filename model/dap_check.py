"""DAP self-checks: every sharded op, block and whole model against the same code on one process.

Used by tests/model/test_dap.py (CPU, gloo) and on GPU machines:

    python -m model.dap_check --world 2                  # nccl if CUDA is available, else gloo
    python -m model.dap_check --world 4 --n-res 61 --precision fp32

Functions here run inside each rank (`dap.launch` pickles them, so they live in an importable
module). Each rank computes the unsharded reference itself and reports relative errors.
"""
from __future__ import annotations

import argparse
import json
from typing import Dict, Optional

import numpy as np
import torch

from model import dap
from model.config import Runtime


def rel(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))


def _inputs(n: int, s: int, c_m: int, c_z: int, shard, seed: int, device):
    """Random m [S, N, C_m], z [N, N, C_z] and 0/1 masks with a fully masked MSA row, a fully masked
    residue column and a masked residue, plus their DAP-padded versions (zeros / PAD_MASK)."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(s, n, c_m, generator=g)
    z = torch.randn(n, n, c_z, generator=g)
    msa_mask = (torch.rand(s, n, generator=g) > 0.2).float()
    msa_mask[1] = 0          # a fully masked sequence (uniform row attention in AlphaFold)
    msa_mask[:, 2] = 0       # a fully masked column (uniform column attention)
    seq = torch.ones(n)
    seq[n - 2] = 0           # a masked residue: a fully masked pair row
    pair_mask = seq[:, None] * seq[None, :]
    n_p, s_p = dap.padded(shard, n), dap.padded(shard, s)
    mp, zp = dap.pad(m, (s_p, n_p)), dap.pad(z, (n_p, n_p))
    mmp = dap.pad(msa_mask, (s_p, n_p), dap.PAD_MASK)
    pmp = dap.pad(pair_mask, (n_p, n_p), dap.PAD_MASK)
    to = lambda *xs: [x.to(device) for x in xs]  # noqa: E731
    return to(m, z, msa_mask, pair_mask), to(mp, zp, mmp, pmp)


def op_errors(shard, n: int = 9, s: int = 5, seed: int = 0, device: Optional[str] = None,
              chunks: Optional[dict] = None, inplace: bool = False) -> Dict[str, float]:
    """Relative error (real entries) of each sharded op / block vs the unsharded one, on random
    inputs with random full-width weights (model_1_ptm shapes; N and S need not divide by P)."""
    from model.random_params import random_model
    device = device or ("cuda" if torch.cuda.is_available() and dap.active(shard)
                        and dist_backend() == "nccl" else "cpu")
    torch.manual_seed(seed)
    model = random_model("model_1_ptm", seed=seed, num_evoformer=1, num_extra=1).to(device)
    ev = model.evoformer
    blk, ext = ev.evoformer_iteration[0], ev.extra_msa_stack[0]
    tmpl = ev.template_embedding.single_template_embedding.blocks()[0]
    rt0 = Runtime(chunks=chunks or {}, inplace=inplace)
    rt = rt0.with_(shard=shard)
    c_m, c_z = 256, 128
    (m, z, mm, pm), (mp, zp, mmp, pmp) = _inputs(n, s, c_m, c_z, shard, seed, device)
    rows = lambda x: dap.scatter(shard, x, 0).clone()  # noqa: E731
    cols = lambda x: dap.scatter(shard, x, 1).clone()  # noqa: E731
    g_rows = lambda x: dap.gather(shard, x, 0)  # noqa: E731
    g_cols = lambda x: dap.gather(shard, x, 1)  # noqa: E731
    errs = {}

    def check(name, ours, ref):
        errs[name] = rel(ours[tuple(slice(0, d) for d in ref.shape)].float().cpu(), ref.float().cpu())

    with torch.no_grad():
        op = blk.msa_row_attention_with_pair_bias
        check("msa_row_attention", g_rows(op(rows(mp), mmp, rows(zp), rt)), op(m.clone(), mm, z, rt0))
        # row blocks switched to the column shard while the next block is attended
        check("msa_row_attention.to_columns", g_cols(op(rows(mp), mmp, rows(zp), rt, to_columns=True)),
              op(m.clone(), mm, z, rt0))
        op = blk.msa_column_attention
        check("msa_column_attention", g_cols(op(cols(mp), mmp, rt)), op(m.clone(), mm, rt0))
        op = blk.msa_transition
        check("msa_transition", g_cols(op(cols(mp), rt)), op(m.clone(), rt0))
        op = blk.outer_product_mean
        check("outer_product_mean", g_rows(op(cols(mp), mmp, rows(zp), rt)), op(m, mm, z.clone(), rt0))
        for name in ("triangle_multiplication_outgoing", "triangle_multiplication_incoming",
                     "triangle_attention_starting_node", "triangle_attention_ending_node"):
            op = getattr(blk, name)
            check(name, g_rows(op(rows(zp), pmp, rt)), op(z.clone(), pm, rt0))
            if "multiplication" in name:  # one row per collective block: every block pipelined
                check(name + ".rows1", g_rows(op(rows(zp), pmp, rt.with_(dap_tri_mul_rows=1))), op(z.clone(), pm, rt0))
        check("pair_transition", g_rows(blk.pair_transition(rows(zp), rt)), blk.pair_transition(z.clone(), rt0))
        # Extra-MSA block (global column attention), 64 MSA channels.
        e, ep = m[..., :64].contiguous(), mp[..., :64].contiguous()
        op = ext.msa_column_global_attention
        check("msa_column_global_attention", g_cols(op(cols(ep), mmp, rt)), op(e.clone(), mm, rt0))
        me, ze = ext(rows(ep), rows(zp), mmp, pmp, rt)
        me_ref, ze_ref = ext(e.clone(), z.clone(), mm, pm, rt0)
        check("extra_msa_block.msa", g_rows(me), me_ref)
        check("extra_msa_block.pair", g_rows(ze), ze_ref)
        mb, zb = blk(rows(mp), rows(zp), mmp, pmp, rt)
        mb_ref, zb_ref = blk(m.clone(), z.clone(), mm, pm, rt0)
        check("evoformer_block.msa", g_rows(mb), mb_ref)
        check("evoformer_block.pair", g_rows(zb), zb_ref)
        t, tp = z[..., :64].contiguous(), zp[..., :64].contiguous()
        check("template_pair_block", g_rows(tmpl(rows(tp), pmp, rt)), tmpl(t.clone(), pm, rt0))
    return errs


def dist_backend() -> Optional[str]:
    import torch.distributed as dist
    return dist.get_backend() if dist.is_initialized() else None


def run_model(shard, model_src, batch, num_recycle: int, rt_kwargs: Optional[dict] = None,
              device: Optional[str] = None) -> Optional[Dict[str, np.ndarray]]:
    """Run a model (a params .npz path, or a (preset, seed, num_evoformer, num_extra) tuple of
    random weights) on `batch`; rank 0 returns its outputs as numpy, other ranks None."""
    from model.params import load_model
    from model.random_params import random_model
    device = device or ("cuda" if torch.cuda.is_available() and dist_backend() != "gloo" else "cpu")
    if isinstance(model_src, tuple):
        preset, seed, n_evo, n_extra = model_src
        model = random_model(preset, seed=seed, num_evoformer=n_evo, num_extra=n_extra).to(device)
    else:
        model = load_model(model_src).to(device)
    rt = Runtime(shard=shard, **(rt_kwargs or {}))
    model.prepare(rt)
    torch.manual_seed(0)
    out = model(batch, rt, num_recycle=num_recycle, return_prev_inputs=True, device=torch.device(device))
    if shard is not None and shard.rank != 0:
        return None
    return {k: v.float().cpu().numpy() for k, v in out.items()}


def suite(shard, fixtures=(), chunked_fixture: Optional[str] = None, op_kwargs=({},)) -> dict:
    """Everything tests/model/test_dap.py checks, in one launch: op/block errors for each entry
    of op_kwargs, and the outputs (rank 0) of each reference fixture directory, plain and, for
    `chunked_fixture`, with tiny chunks and in-place updates."""
    from pathlib import Path
    res = {"ops": [op_errors(shard, **kw) for kw in op_kwargs], "fixtures": {}}
    for fx in fixtures:
        fx = Path(fx)
        variants = [("plain", {})]
        if fx.name == chunked_fixture:
            variants.append(("chunked", CHUNKED))
        for tag, kw in variants:
            meta = json.loads((fx / "meta.json").read_text())
            with np.load(fx / "features.npz") as f:
                batch = {k: f[k] for k in f.files}
            res["fixtures"][(fx.name, tag)] = run_model(shard, str(next(fx.glob("params_*.npz"))), batch,
                                                        meta["args"]["recycles"], kw, device="cpu")
    return res


# Tiny chunks on every chunked op, in-place updates, two-pass template attention, template
# embeddings kept between passes (each rank its row shard).
CHUNKED = dict(chunks={op: 3 for op in ("msa_row_att", "msa_col_att", "extra_row_att", "extra_col_att", "tri_att",
                                        "transition", "opm", "tri_mul", "pair_rows", "template_att", "ipa",
                                        "heads")},
               inplace=True, recompute_templates=True, keep_templates=True)


def _main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--backend", default=None, help="nccl | gloo (default: nccl with CUDA)")
    ap.add_argument("--n-res", type=int, default=37)
    ap.add_argument("--precision", default="fp32")
    args = ap.parse_args()
    errs = dap.launch(op_errors, args.world, args.backend)
    worst = {k: max(e[k] for e in errs) for k in errs[0]}
    print(json.dumps({"ops": worst}, indent=1))
    from model.random_params import random_features
    batch = random_features("model_1_ptm", args.n_res, 7, 11, n_templates=2)
    src = ("model_1_ptm", 0, 2, 1)
    ref = run_model(None, src, batch, 1, {"precision": args.precision})
    out = dap.launch(run_model, args.world, args.backend, args=(src, batch, 1, {"precision": args.precision}))[0]
    e = {k: rel(out[k], ref[k]) for k in ref if ref[k].dtype.kind == "f"}
    print(json.dumps({"model_max": max(e.values()), "model": e}, indent=1))


if __name__ == "__main__":
    _main()
