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

from model import heads as H
from model.config import Config, Runtime
from model.structure_module import StructureModule
from model.trunk import EmbeddingsAndEvoformer

# Names of the parameter scopes, for the parameter importer.
PARAM_PREFIX = "alphafold/alphafold_iteration/"


class AlphaFold(nn.Module):
    """AlphaFold monomer. Block counts come from the parameter file (see model.params)."""

    def __init__(self, cfg: Config, num_evoformer: Optional[int] = None, num_extra: Optional[int] = None,
                 num_template: Optional[int] = None):
        super().__init__()
        e = cfg.embeddings_and_evoformer
        self.cfg = cfg
        self.evoformer = EmbeddingsAndEvoformer(
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

    def iteration(self, batch: Dict[str, torch.Tensor], prev: Dict[str, torch.Tensor], rt: Runtime):
        """One recycling iteration: trunk, structure module, heads. Returns (flat outputs, next prev)."""
        reps = self.evoformer(batch, prev, rt)
        reps = {k: v.float() for k, v in reps.items()}
        sm = self.structure_module(reps["single"], reps["pair"], batch, rt)
        out = {f"repr_{k}": v for k, v in reps.items()}
        for k, v in sm.items():
            if k.startswith("final_atom"):
                out[k] = v
            else:
                out["structure_module_" + k] = v
        out["distogram_logits"], out["distogram_bin_edges"] = self.distogram_head(reps["pair"])
        out["masked_msa_logits"] = self.masked_msa_head(reps["msa"])
        out["experimentally_resolved_logits"] = self.experimentally_resolved_head(reps["single"])
        out["predicted_lddt_logits"] = self.predicted_lddt_head(sm["single"])
        out["plddt"] = H.compute_plddt(out["predicted_lddt_logits"])
        if self.has_pae:
            logits, breaks = self.predicted_aligned_error_head(reps["pair"])
            out["predicted_aligned_error_logits"], out["predicted_aligned_error_breaks"] = logits, breaks
            probs, pae, max_pae = H.compute_predicted_aligned_error(logits, breaks)
            out["aligned_confidence_probs"], out["predicted_aligned_error"] = probs, pae
            out["max_predicted_aligned_error"] = max_pae
            out["ptm"] = H.predicted_tm_score(logits, breaks)
        new_prev = {"prev_pos": sm["final_atom_positions"], "prev_msa_first_row": reps["msa_first_row"],
                    "prev_pair": reps["pair"]}
        return out, new_prev

    @torch.no_grad()
    def forward(self, batch: Dict[str, object], rt: Optional[Runtime] = None, num_recycle: Optional[int] = None,
                early_stop_tolerance: float = 0.0, device: Optional[torch.device] = None) -> Dict[str, torch.Tensor]:
        """Run `num_recycle` + 1 iterations (AlphaFold semantics: the same features every pass;
        the previous positions, first MSA row and pair are fed back in float32).

        early_stop_tolerance > 0 stops when the Cα distance-matrix change (AlphaFold/ColabFold
        `compute_tol`) falls below it. Adds `num_recycles_run` to the outputs.
        """
        rt = rt or Runtime()
        if num_recycle is None:
            num_recycle = self.cfg.num_recycle
        device = device or next(self.parameters()).device
        batch = to_tensors(batch, device)
        n = batch["aatype"].shape[0]
        e = self.cfg.embeddings_and_evoformer
        prev = {"prev_pos": torch.zeros(n, 37, 3, device=device),
                "prev_msa_first_row": torch.zeros(n, e.msa_channel, device=device),
                "prev_pair": torch.zeros(n, n, e.pair_channel, device=device)}
        with _matmul_precision(rt):
            for i in range(num_recycle + 1):
                out, new_prev = self.iteration(batch, prev, rt)
                last_prev = prev
                stop = False
                if early_stop_tolerance > 0 and i > 0:
                    stop = float(compute_tol(prev["prev_pos"], new_prev["prev_pos"], batch["seq_mask"])) < early_stop_tolerance
                prev = new_prev
                if stop:
                    break
        for k, v in last_prev.items():
            out["last_iter_input_" + k] = v
        out["num_recycles_run"] = torch.tensor(i)
        return out


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
