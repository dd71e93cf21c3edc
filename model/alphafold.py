"""The AlphaFold 2.3 monomer network with recycling (modules.AlphaFold / AlphaFoldIteration).

`AlphaFold.forward(batch, rt)` takes one processed feature batch (the fixtures' layout: no
ensemble axis, numpy or torch) and returns a flat dict of output tensors named as in the fixtures'
`outputs.npz` (distogram_logits, plddt, final_atom_positions, repr_pair, ...).
"""
from __future__ import annotations

import contextlib
from typing import Dict, Optional

import numpy as np
import torch
from torch import nn

from model import dap
from model import heads as H
from model.config import Config, Runtime
from model.primitives import chunked
from model.structure_module import StructureModule
from model.trunk import EmbeddingsAndEvoformer, TemplateMemo

# Names of the parameter scopes, for the parameter importer.
PARAM_PREFIX = "alphafold/alphafold_iteration/"


class AlphaFold(nn.Module):
    """AlphaFold monomer. Block counts come from the parameter file (see model.params)."""

    def __init__(self, cfg: Config, num_evoformer: Optional[int] = None, num_extra: Optional[int] = None,
                 num_template: Optional[int] = None):
        super().__init__()
        e = cfg.embeddings_and_evoformer
        self.cfg = cfg
        self.multimer = bool(cfg.get("multimer", False))
        if self.multimer:  # AlphaFold-Multimer's embedder (model/multimer.py); the rest is shared
            from model.multimer import MultimerEmbeddingsAndEvoformer as embedder
        else:
            embedder = EmbeddingsAndEvoformer
        self.evoformer = embedder(
            e, num_evoformer if num_evoformer is not None else e.evoformer_num_block,
            num_extra if num_extra is not None else e.extra_msa_stack_num_block,
            num_template if num_template is not None else e.template.template_pair_stack.num_block)
        h = cfg.heads
        self.structure_module = StructureModule(h.structure_module, e.seq_channel, e.pair_channel)
        self.distogram_head = H.DistogramHead(h.distogram, e.pair_channel)
        self.masked_msa_head = H.MaskedMsaHead(h.masked_msa, e.msa_channel)
        self.experimentally_resolved_head = H.ExperimentallyResolvedHead(e.seq_channel)
        self.predicted_lddt_head = H.PredictedLDDTHead(h.predicted_lddt, h.structure_module.num_channel)
        if h.predicted_aligned_error.enabled:
            self.predicted_aligned_error_head = H.PredictedAlignedErrorHead(h.predicted_aligned_error, e.pair_channel)

    @property
    def has_pae(self) -> bool:
        return hasattr(self, "predicted_aligned_error_head")

    def prepare(self, rt: Runtime) -> "AlphaFold":
        """Store the trunk's weights in the runtime precision (structure module and heads stay fp32)."""
        self.evoformer.to(rt.dtype)
        return self

    def trunk_and_structure(self, batch: Dict[str, torch.Tensor], prev: Dict[str, torch.Tensor], rt: Runtime,
                            memo: Optional[TemplateMemo] = None):
        """One recycling iteration up to the structure module. `prev` may be consumed (its pair
        buffer becomes the new pair when `rt.inplace`). memo (monomer): template embeddings kept
        between the passes of one prediction. Returns (representations, structure outputs)."""
        reps = self.evoformer(batch, prev, rt, memo)
        # The MSA stays in the runtime precision (a float32 copy would be the structure module's and
        # the heads' largest tensor); the heads read it in blocks.
        for k in ("single", "msa_first_row"):
            reps[k] = reps[k].float()
        sm = self.structure_module(reps["single"], reps["pair"], batch, rt)
        return reps, sm

    def heads(self, reps, sm, rt: Runtime, pair_outputs: bool = True) -> Dict[str, torch.Tensor]:
        """All heads and confidence metrics of one iteration, as a flat output dict. The pair-sized
        outputs are formed in row blocks (`rt.chunk("heads")`) on `rt.outputs_device`.

        pair_outputs=False keeps only what a prediction reports: the PAE matrix [N, N], max PAE and
        pTM (formed per row block: `heads.tm_rows`), not the pair representation, distogram logits,
        PAE logits and probabilities or the MSA representation (at N=12,000 those would be ~190 GB
        of host memory). AlphaFold-Multimer keeps its PAE logits (ipTM, per-chain scores).

        DAP: the pair is this rank's row shard [N_pad/P, N_pad, C_z]; each rank runs the pair heads
        on its rows and rank 0 receives the row blocks (pair, distogram half logits, PAE logits)
        one block at a time. The pair-sized outputs and pTM exist on rank 0 only. The MSA, a row
        shard too, is gathered on rank 0 (other ranks' MSA outputs are empty)."""
        pair, sh = reps["pair"], rt.shard
        n = reps["single"].shape[0]
        lo, hi = dap.local_range(sh, pair.shape[1])
        root = dap.is_root(sh)
        keep_logits = pair_outputs or getattr(self, "multimer", False)
        msa = reps["msa"]
        if dap.active(sh):
            blocks = [b for _, b in dap.gather_blocks(sh, msa)]
            msa = torch.cat(blocks)[:reps["msa_rows"], :n] if root else msa[:0, :n]
        dev = torch.device(rt.outputs_device) if rt.outputs_device else pair.device
        rows = rt.chunk("heads") or n
        out = {"repr_single": reps["single"], "repr_msa_first_row": reps["msa_first_row"]}
        for k, v in sm.items():
            out[k if k.startswith("final_atom") else "structure_module_" + k] = v
        dh = self.distogram_head
        edges = torch.linspace(dh.cfg.first_break, dh.cfg.last_break, dh.cfg.num_bins - 1, device=pair.device)
        c_z, nb = pair.shape[-1], dh.cfg.num_bins
        empty = (lambda *s: torch.empty(*s, device=dev)) if root else (lambda *s: None)
        if pair_outputs:
            dist, repr_pair = empty(n, n, nb), empty(n, n, c_z)
        if self.has_pae:
            ph = self.predicted_aligned_error_head
            breaks = torch.linspace(0.0, ph.cfg.max_error_bin, ph.cfg.num_bins - 1, device=pair.device)
            pae = empty(n, n)
            pae_logits = empty(n, n, ph.cfg.num_bins) if keep_logits else None
            pae_probs = empty(n, n, ph.cfg.num_bins) if pair_outputs else None
            tm = None if keep_logits else torch.empty(n, device=pair.device)
            ones = torch.ones(n, device=pair.device)
        for b0 in range(0, hi - lo, rows):  # row blocks of this rank's rows (all rows without DAP)
            b1 = min(hi - lo, b0 + rows)
            zr = pair[b0:b1].float()
            parts = ([zr, dh.half_logits(zr)] if pair_outputs else []) + ([ph.logits(zr)] if self.has_pae else [])
            if not parts:
                break
            for r, blk in dap.gather_blocks(sh, torch.cat(parts, dim=-1)):
                r0 = r * (hi - lo) + b0  # global rows of rank r's block
                r1 = min(n, r0 + b1 - b0)
                if r1 <= r0:
                    continue
                if pair_outputs:
                    zr_, half, logits = blk[:r1 - r0, :n].split([c_z, nb, blk.shape[-1] - c_z - nb], dim=-1)
                    repr_pair[r0:r1] = zr_
                    dist[r0:r1] = half  # the half logits; symmetrised below
                    del zr_, half
                else:
                    logits = blk[:r1 - r0, :n]
                if self.has_pae:
                    probs, pae_rows, max_pae = H.compute_predicted_aligned_error(logits, breaks)
                    pae[r0:r1] = pae_rows
                    if keep_logits:
                        pae_logits[r0:r1] = logits
                    else:
                        tm[r0:r1] = H.tm_rows(probs, breaks, ones, None, r0)  # the probs just formed
                    if pair_outputs:
                        pae_probs[r0:r1] = probs
                    del probs, pae_rows
                del blk, logits  # row-block temporaries: not alive into the next block
            del zr, parts
        if root and pair_outputs:  # distogram = half + half^T, in place, one pair of row blocks at a time
            sym = rows if dist.is_cuda else n  # on the host (memory to spare): one pass, not many small blocks
            for i0 in range(0, n, sym):
                i1 = min(n, i0 + sym)
                for j0 in range(i0, n, sym):
                    j1 = min(n, j0 + sym)
                    a, b = dist[i0:i1, j0:j1].clone(), dist[j0:j1, i0:i1].clone()
                    dist[i0:i1, j0:j1] = a + b.transpose(0, 1)
                    if j0 != i0:
                        dist[j0:j1, i0:i1] = b + a.transpose(0, 1)
            out["repr_pair"] = repr_pair
            out["distogram_logits"] = dist
        out["distogram_bin_edges"] = edges
        if pair_outputs:
            out["repr_msa"] = msa.to(dev, torch.float32)
        out["masked_msa_logits"] = chunked(lambda x: self.masked_msa_head(x.float()).to(dev), [msa], rows, dim=0)
        out["experimentally_resolved_logits"] = self.experimentally_resolved_head(reps["single"])
        out["predicted_lddt_logits"] = self.predicted_lddt_head(sm["single"])
        out["plddt"] = H.compute_plddt(out["predicted_lddt_logits"])
        if self.has_pae and root:
            out["predicted_aligned_error_breaks"], out["predicted_aligned_error"] = breaks, pae
            out["max_predicted_aligned_error"] = max_pae
            if keep_logits:
                out["predicted_aligned_error_logits"] = pae_logits
                out["ptm"] = H.predicted_tm_score(pae_logits, breaks.to(dev))
            else:
                out["ptm"] = tm.max()
            if pair_outputs:
                out["aligned_confidence_probs"] = pae_probs
        return out

    @torch.no_grad()
    def forward(self, batch: Dict[str, object], rt: Optional[Runtime] = None, num_recycle: Optional[int] = None,
                early_stop_tolerance: Optional[float] = None, device: Optional[torch.device] = None,
                return_prev_inputs: bool = False, callback=None, pair_outputs: bool = True) -> Dict[str, torch.Tensor]:
        """Run up to `num_recycle` + 1 iterations and the heads of the last one. The previous
        positions, first MSA row and pair are fed back. `batch` is one feature sample (used every
        pass) or has a leading pass axis (pass i takes sample i, as AlphaFold resamples the MSA).

        early_stop_tolerance > 0 stops when the Cα distance-matrix change (AlphaFold/ColabFold
        `compute_tol`) falls below it (None: the preset's `recycle_early_stop_tolerance`, else 0).
        Multimer presets stop as AlphaFold-Multimer's while loop does: the first pass is compared
        with the zero start, and after the pass that converged one final pass is run. Multimer
        batches are the raw features (the MSA is sampled inside the network, see model.multimer)
        and the outputs add `iptm` and `ranking_confidence` (0.8 ipTM + 0.2 pTM).
        return_prev_inputs adds the last iteration's recycled inputs (`last_iter_input_prev_*`, a
        copy of the pair: for reference checks). callback(i, sm) is
        called after each iteration's structure module. Adds `num_recycles_run`.
        pair_outputs=False: only the outputs a prediction reports (see `heads`), for long sequences.
        """
        rt = rt or Runtime()
        if num_recycle is None:
            num_recycle = self.cfg.num_recycle
        if early_stop_tolerance is None:
            early_stop_tolerance = float(self.cfg.get("recycle_early_stop_tolerance", 0.0))
        device = device or next(self.parameters()).device
        batch = to_tensors(batch, device)
        if self.multimer:
            self.evoformer.reset_sampling()
        # A leading pass axis (AlphaFold's resample_msa_in_recycling): pass i uses sample i.
        n_samples = batch["msa_feat"].shape[0] if "msa_feat" in batch and batch["msa_feat"].dim() == 4 else 0
        sample = (lambda i: {k: v[min(i, n_samples - 1)] for k, v in batch.items()}) if n_samples else \
            (lambda i: batch)
        n = batch["aatype"].shape[-1]
        e = self.cfg.embeddings_and_evoformer
        prev = {"prev_pos": torch.zeros(n, 37, 3, device=device),
                "prev_msa_first_row": torch.zeros(n, e.msa_channel, device=device),
                "prev_pair": torch.zeros(*_pair_shard_shape(n, rt), e.pair_channel, device=device, dtype=rt.dtype)}
        kept = None
        last = False
        # The multimer template stack reads the pair (its query embedding): nothing to keep there.
        memo = TemplateMemo() if (rt.keep_templates and not self.multimer) else None
        with _matmul_precision(rt):
            for i in range(num_recycle + 1):
                if return_prev_inputs and (i == num_recycle or early_stop_tolerance > 0):
                    kept = {k: v.clone() for k, v in prev.items()}
                prev_pos = prev["prev_pos"]
                batch_i = sample(i)
                reps = sm = None  # the last pass's MSA and structure outputs are dead weight during this one
                reps, sm = self.trunk_and_structure(batch_i, prev, rt, memo)
                prev = {"prev_pos": sm["final_atom_positions"], "prev_msa_first_row": reps["msa_first_row"],
                        "prev_pair": reps["pair"]}
                if callback is not None:
                    callback(i, sm)
                if last:
                    break
                if early_stop_tolerance > 0 and (self.multimer or i > 0):
                    # DAP: rank 0's value, so that every rank stops after the same pass
                    tol = float(dap.broadcast(rt.shard, compute_tol(prev_pos, sm["final_atom_positions"],
                                                                    batch_i["seq_mask"]).reshape(1)))
                    if self.multimer:  # AlphaFold-Multimer's while loop: one more pass once tol <= tolerance
                        last = tol <= early_stop_tolerance
                    elif tol < early_stop_tolerance:
                        break
            out = self.heads(reps, sm, rt, pair_outputs)
            if self.multimer:
                _multimer_confidence(out, batch)
        if kept is not None:
            for k, v in kept.items():
                if k == "prev_pair":  # DAP: a row shard of the padded pair
                    v = dap.gather(rt.shard, v, 0)[:n, :n]
                out["last_iter_input_" + k] = v.float()
        out["num_recycles_run"] = torch.tensor(i)
        return out


def _multimer_confidence(out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> None:
    """ipTM (pTM over residue pairs of different chains) and AlphaFold-Multimer's ranking
    confidence 0.8 ipTM + 0.2 pTM, added to the outputs."""
    if "predicted_aligned_error_logits" not in out:
        return
    logits, breaks = out["predicted_aligned_error_logits"], out["predicted_aligned_error_breaks"]
    out["iptm"] = H.predicted_tm_score(logits, breaks.to(logits.device), asym_id=batch["asym_id"].to(logits.device))
    out["ranking_confidence"] = 0.8 * out["iptm"] + 0.2 * out["ptm"]


def _pair_shard_shape(n: int, rt: Runtime):
    """Rows and columns of the pair on this rank: [N, N], or under DAP [N_pad/P, N_pad]."""
    n_pad = dap.padded(rt.shard, n)
    lo, hi = dap.local_range(rt.shard, n_pad)
    return hi - lo, n_pad


def compute_tol(prev_pos: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RMS change of the Cα distance matrix between two passes (ColabFold's early-stop measure)."""
    def dist(x):
        ca = x[:, 1].float()
        return torch.sqrt(((ca[:, None] - ca[None, :]) ** 2).sum(-1))
    m2 = mask.float()[:, None] * mask.float()[None, :]
    sq = (dist(prev_pos) - dist(pos)) ** 2
    return torch.sqrt((sq * m2).sum() / m2.sum() + 1e-8)


@contextlib.contextmanager
def _matmul_precision(rt: Runtime):
    """fp32 means IEEE fp32 matmuls; tf32 allows TF32 tensor cores. Restored afterwards."""
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if rt.precision == "tf32" else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def to_tensors(batch: Dict[str, object], device) -> Dict[str, torch.Tensor]:
    """numpy/torch feature dict -> torch tensors on `device` (strings and objects dropped)."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v.to(device)
        else:
            a = np.asarray(v)
            if a.dtype.kind in "biuf":
                out[k] = torch.from_numpy(np.ascontiguousarray(a)).to(device)
    return out
