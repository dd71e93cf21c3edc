"""Output heads (AlphaFold 2.3 modules.py) and the confidence metrics computed from them
(alphafold/common/confidence.py): pLDDT, predicted aligned error, pTM."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from model.config import Config
from model.primitives import LayerNorm, Linear


class DistogramHead(nn.Module):
    """Symmetrised distance-bin logits from the pair representation."""

    def __init__(self, cfg: Config, c_z: int):
        super().__init__()
        self.cfg = cfg
        self.half_logits = Linear(c_z, cfg.num_bins)

    def forward(self, pair):
        """pair: [N, N, C_z] -> (logits [N, N, B], bin_edges [B-1])."""
        half = self.half_logits(pair)
        edges = torch.linspace(self.cfg.first_break, self.cfg.last_break, self.cfg.num_bins - 1, device=pair.device)
        return half + half.transpose(0, 1), edges


class MaskedMsaHead(nn.Module):
    def __init__(self, cfg: Config, c_m: int):
        super().__init__()
        self.logits = Linear(c_m, cfg.num_output)

    def forward(self, msa):
        """msa: [S, N, C_m] -> [S, N, 23]."""
        return self.logits(msa)


class ExperimentallyResolvedHead(nn.Module):
    def __init__(self, c_s: int):
        super().__init__()
        self.logits = Linear(c_s, 37)

    def forward(self, single):
        """single: [N, C_s] -> [N, 37]."""
        return self.logits(single)


class PredictedLDDTHead(nn.Module):
    def __init__(self, cfg: Config, c_s: int):
        super().__init__()
        self.input_layer_norm = LayerNorm(c_s)
        self.act_0 = Linear(c_s, cfg.num_channels)
        self.act_1 = Linear(cfg.num_channels, cfg.num_channels)
        self.logits = Linear(cfg.num_channels, cfg.num_bins)

    def forward(self, sm_single):
        """sm_single: [N, C] structure-module single activations -> [N, 50]."""
        a = torch.relu(self.act_0(self.input_layer_norm(sm_single)))
        return self.logits(torch.relu(self.act_1(a)))


class PredictedAlignedErrorHead(nn.Module):
    def __init__(self, cfg: Config, c_z: int):
        super().__init__()
        self.cfg = cfg
        self.logits = Linear(c_z, cfg.num_bins)

    def forward(self, pair):
        """pair: [N, N, C_z] -> (logits [N, N, B], breaks [B-1])."""
        breaks = torch.linspace(0.0, self.cfg.max_error_bin, self.cfg.num_bins - 1, device=pair.device)
        return self.logits(pair), breaks


def compute_plddt(logits: torch.Tensor) -> torch.Tensor:
    """logits [N, B] -> per-residue pLDDT [N] in 0..100."""
    b = logits.shape[-1]
    centers = (torch.arange(b, device=logits.device, dtype=torch.float32) + 0.5) / b
    return (torch.softmax(logits.float(), -1) * centers).sum(-1) * 100


def _bin_centers(breaks: torch.Tensor) -> torch.Tensor:
    step = breaks[1] - breaks[0]
    centers = breaks + step / 2
    return torch.cat([centers, (centers[-1] + step)[None]])


def compute_predicted_aligned_error(logits: torch.Tensor, breaks: torch.Tensor):
    """logits [N, N, B] -> (probs [N, N, B], PAE [N, N] in Å, max PAE)."""
    probs = torch.softmax(logits.float(), -1)
    centers = _bin_centers(breaks.float())
    return probs, (probs * centers).sum(-1), centers[-1]


def predicted_tm_score(logits: torch.Tensor, breaks: torch.Tensor, residue_weights: Optional[torch.Tensor] = None,
                       asym_id: Optional[torch.Tensor] = None) -> torch.Tensor:
    """pTM (or ipTM when asym_id is given) from PAE logits [N, N, B]; AlphaFold's definition."""
    n = logits.shape[0]
    if residue_weights is None:
        residue_weights = logits.new_ones(n, dtype=torch.float32)
    return tm_rows(torch.softmax(logits.float(), -1), breaks, residue_weights, asym_id, 0).max()


def tm_rows(probs: torch.Tensor, breaks: torch.Tensor, residue_weights: torch.Tensor,
            asym_id: Optional[torch.Tensor], r0: int) -> torch.Tensor:
    """The weighted per-alignment TM terms of rows r0:r0+r from a row block of PAE probabilities
    [r, N, B] (residue_weights [N], asym_id [N] or None for pTM) -> [r]; pTM is their maximum
    over all rows, so a row-block loop never needs the whole [N, N, B] logits."""
    r, n = probs.shape[0], probs.shape[1]
    residue_weights = residue_weights.float()
    centers = _bin_centers(breaks.float())
    clipped_n = torch.clamp(residue_weights.sum(), min=19)
    d0 = 1.24 * (clipped_n - 15) ** (1.0 / 3) - 1.8
    tm_per_bin = 1.0 / (1 + centers ** 2 / d0 ** 2)
    term = (probs * tm_per_bin).sum(-1)
    if asym_id is None:
        pair_mask = torch.ones(r, n, dtype=torch.bool, device=probs.device)
    else:
        pair_mask = asym_id[r0:r0 + r, None] != asym_id[None, :]
    term = term * pair_mask
    w = pair_mask * (residue_weights[None, :] * residue_weights[r0:r0 + r, None])
    normed = w / (1e-8 + w.sum(-1, keepdim=True))
    per_alignment = (term * normed).sum(-1)
    return per_alignment * residue_weights[r0:r0 + r]


def chain_scores(logits: torch.Tensor, breaks: torch.Tensor, plddt: torch.Tensor, asym_id: torch.Tensor) -> dict:
    """Per-chain and interface confidence of a complex, from PAE logits [N, N, B], pLDDT [N] and
    asym_id [N] (1-based chain index):

    chains: {asym: {"mean_plddt", "ptm"}} — pTM of the chain on its own residues;
    interfaces: {"a-b": ipTM} — the ipTM restricted to chains a and b (AlphaFold's ipTM formula with
    residue weights on those two chains: the pair-wise form of ColabFold's and AF3's chain-pair ipTM).
    """
    asym = asym_id.long()
    ids = [int(a) for a in torch.unique(asym).tolist() if a > 0]
    chains, interfaces = {}, {}
    for a in ids:
        m = asym == a
        chains[a] = {"mean_plddt": float(plddt[m].float().mean()),
                     "ptm": float(predicted_tm_score(logits, breaks, residue_weights=m.float()))}
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            w = ((asym == a) | (asym == b)).float()
            interfaces[f"{a}-{b}"] = float(predicted_tm_score(logits, breaks, residue_weights=w, asym_id=asym))
    return {"chains": chains, "interfaces": interfaces}
