"""AlphaFold-Multimer v3 input embedding (AlphaFold 2.3 modules_multimer.py): the in-network MSA
sampling, BERT masking and cluster profile, chain-relative position encoding, the multimer template
embedding (per-template pair features with the intra-chain mask, `template_pair_embedding_{i}`,
mult-first template stack, mean + ReLU + `output_linear`) and the chi-angle template rows.

Every shared op (Evoformer blocks, template pair blocks, triangle ops, Linear, LayerNorm, the
recycling distogram, pseudo-beta) is the one implementation in model/evoformer.py, model/trunk.py,
model/primitives.py and model/all_atom.py, switched by the multimer config (configs/multimer.json).
Module attribute names equal haiku scope names (`relative_encoding` is AlphaFold's
`~_relative_encoding`, see model/params.py).

MSA handling (`MsaSampling`): `first` takes rows [:num_msa] as the cluster MSA and the rest as the
extra MSA, without BERT masking (what the reference fixtures do); `random` is AlphaFold's Gumbel
row sampling plus BERT masking, drawn again on every recycling pass from a seeded generator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from model import all_atom, dap
from model.config import Config, Runtime
from model.evoformer import EvoformerIteration, TemplatePairBlock
from model.primitives import LayerNorm, Linear, chunked
from model.trunk import (dgram_from_positions, embed_extra_shard, embed_pair_shard, initial_msa, shard_msa,
                         trunk_outputs)

MSA_SAMPLING_MODES = ("random", "first")


@dataclass
class MsaSampling:
    """How the multimer network picks its cluster / extra MSA rows from the raw MSA.

    num_msa / num_extra_msa: None -> the preset's values (508 / 2048 or 1152).
    mode: "random" (AlphaFold: Gumbel sampling keeping row 0 first, BERT masking 15 %) or
    "first" (rows [:num_msa] cluster, the rest extra, no masking; the fixtures' choice).
    seed: seeds the generator of the random draws (one generator per forward call, each recycling
    pass draws a new sample from it)."""

    num_msa: Optional[int] = None
    num_extra_msa: Optional[int] = None
    mode: str = "random"
    seed: int = 0

    def __post_init__(self):
        if self.mode not in MSA_SAMPLING_MODES:
            raise ValueError(f"msa sampling must be one of {MSA_SAMPLING_MODES}, not {self.mode!r}")


# ---------------------------------------------------------------------------------------------
# MSA features (modules_multimer: sample_msa, make_masked_msa, nearest_neighbor_clusters,
# create_msa_feat, create_extra_msa_feature, make_msa_profile)
# ---------------------------------------------------------------------------------------------

def _gumbel(shape, gen: torch.Generator, device) -> torch.Tensor:
    eps = 1e-6
    u = torch.rand(shape, generator=gen, dtype=torch.float32).to(device)
    return -torch.log(-torch.log(u + eps) + eps)


def msa_profile(msa: torch.Tensor, msa_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over all rows of one_hot(msa, 22) (token 22 counts as nothing). -> [N, 22]."""
    m = msa_mask.float()[..., None]
    return (m * F.one_hot(msa.long(), 23)[..., :22].float()).sum(0) / (m.sum(0) + 1e-10)


def sample_msa(batch: Dict[str, torch.Tensor], num_msa: int, mode: str, gen: Optional[torch.Generator]):
    """Split the raw MSA into the cluster rows and the extra rows. Returns a dict with msa,
    deletion_matrix, msa_mask and their extra_* counterparts."""
    msa, mask = batch["msa"], batch["msa_mask"]
    n = msa.shape[0]
    if mode == "first":
        order = torch.arange(n, device=msa.device)
    else:
        logits = (torch.clamp(mask.float().sum(-1), 0.0, 1.0) - 1.0) * 1e6
        if "cluster_bias_mask" in batch:
            bias = batch["cluster_bias_mask"].float()
        else:
            bias = torch.zeros(n, device=msa.device)
            bias[0] = 1.0
        logits = logits + bias * 1e6
        order = torch.argsort(logits + _gumbel(logits.shape, gen, msa.device), descending=True)
    sel, extra = order[:num_msa], order[num_msa:]
    out = {}
    for k in ("msa", "deletion_matrix", "msa_mask"):
        out[k] = batch[k][sel]
        out["extra_" + k] = batch[k][extra]
    return out


def make_masked_msa(msa: torch.Tensor, msa_mask: torch.Tensor, profile: torch.Tensor, cfg: Config,
                    gen: torch.Generator) -> torch.Tensor:
    """AlphaFold's BERT masking of the cluster MSA: `replace_fraction` of the positions become a
    sample of (uniform aa, profile, same, mask token 22). Returns (masked MSA, masked positions)."""
    random_aa = torch.tensor([0.05] * 20 + [0.0, 0.0], device=msa.device)
    probs = (cfg.uniform_prob * random_aa + cfg.profile_prob * profile
             + cfg.same_prob * F.one_hot(msa.long(), 23)[..., :22].float())  # token 22 -> zeros, as jax
    mask_prob = 1.0 - cfg.profile_prob - cfg.same_prob - cfg.uniform_prob
    probs = torch.cat([probs, torch.full_like(probs[..., :1], mask_prob)], dim=-1)
    u = torch.rand(msa.shape, generator=gen, dtype=torch.float32).to(msa.device)
    position = (u < cfg.replace_fraction) & (msa_mask > 0)
    logits = torch.log(probs + 1e-6)
    sampled = torch.argmax(logits + _gumbel(logits.shape, gen, msa.device), dim=-1)
    bert = torch.where(position, sampled, msa.long())
    return bert * msa_mask.long(), position.float()


def nearest_neighbor_clusters(s: Dict[str, torch.Tensor], gap_agreement_weight: float = 0.0):
    """Cluster profile [S, N, 23] and cluster deletion mean [S, N] from assigning each extra row
    to its most similar cluster row (softmax(1e3 * agreement) over clusters), AlphaFold's way."""
    weights = torch.tensor([1.0] * 21 + [gap_agreement_weight, 0.0], device=s["msa"].device)
    msa_mask, extra_mask = s["msa_mask"].float(), s["extra_msa_mask"].float()
    msa_1hot = msa_mask[..., None] * F.one_hot(s["msa"].long(), 23).float()           # [S, N, 23]
    extra_1hot = extra_mask[..., None] * F.one_hot(s["extra_msa"].long(), 23).float()  # [E, N, 23]
    agreement = torch.einsum("mrc,nrc->nm", extra_1hot, weights * msa_1hot)            # [S, E]
    assignment = torch.softmax(1e3 * agreement, dim=0)
    assignment = assignment * torch.einsum("mr,nr->mn", msa_mask, extra_mask)
    count = assignment.sum(-1) + 1.0
    msa_sum = torch.einsum("nm,mrc->nrc", assignment, extra_1hot) + msa_1hot
    profile = msa_sum / count[:, None, None]
    del_sum = torch.einsum("nm,mc->nc", assignment, extra_mask * s["extra_deletion_matrix"].float())
    del_sum = del_sum + s["deletion_matrix"].float()
    return profile, del_sum / count[:, None]


def _deletion_value(d: torch.Tensor) -> torch.Tensor:
    return torch.atan(d / 3.0) * (2.0 / math.pi)


def msa_features(s: Dict[str, torch.Tensor], profile: torch.Tensor, deletion_mean: torch.Tensor) -> torch.Tensor:
    """msa_feat [S, N, 49]: one_hot(msa, 23), has_deletion, deletion value, cluster profile,
    deletion mean value."""
    d = s["deletion_matrix"].float()
    return torch.cat([F.one_hot(s["msa"].long(), 23).float(), torch.clamp(d, 0.0, 1.0)[..., None],
                      _deletion_value(d)[..., None], profile, _deletion_value(deletion_mean)[..., None]], dim=-1)


def extra_msa_features(msa: torch.Tensor, deletion: torch.Tensor) -> torch.Tensor:
    """[E, N, 25]: one_hot(extra_msa, 23), has_deletion, deletion value."""
    d = deletion.float()
    return torch.cat([F.one_hot(msa.long(), 23).float(), torch.clamp(d, 0.0, 1.0)[..., None],
                      _deletion_value(d)[..., None]], dim=-1)


def sample_features(batch: Dict[str, torch.Tensor], cfg: Config, sampling: MsaSampling,
                    gen: Optional[torch.Generator]) -> Dict[str, torch.Tensor]:
    """One pass's MSA inputs of the multimer network from the raw features: msa_feat [S, N, 49],
    msa_mask [S, N], extra_msa_feat [E, N, 25], extra_msa_mask [E, N] (and true_msa, bert_mask,
    msa: the cluster rows before / after masking)."""
    num_msa = sampling.num_msa if sampling.num_msa is not None else cfg.num_msa
    num_extra = sampling.num_extra_msa if sampling.num_extra_msa is not None else cfg.num_extra_msa
    profile = msa_profile(batch["msa"], batch["msa_mask"]) if sampling.mode == "random" else None
    s = sample_msa(batch, num_msa, sampling.mode, gen)
    true_msa = s["msa"]
    if sampling.mode == "random" and cfg.masked_msa.replace_fraction > 0:
        s["msa"], bert_mask = make_masked_msa(s["msa"], s["msa_mask"], profile, cfg.masked_msa, gen)
    else:
        s["msa"], bert_mask = s["msa"].long() * s["msa_mask"].long(), torch.zeros_like(s["msa_mask"]).float()
    if cfg.use_cluster_profile:
        prof, dmean = nearest_neighbor_clusters(s)
    else:
        prof, dmean = F.one_hot(s["msa"].long(), 23).float(), s["deletion_matrix"].float()
    return {"msa_feat": msa_features(s, prof, dmean), "msa_mask": s["msa_mask"].float(),
            "extra_msa_feat": extra_msa_features(s["extra_msa"][:num_extra], s["extra_deletion_matrix"][:num_extra]),
            "extra_msa_mask": s["extra_msa_mask"][:num_extra].float(),
            "msa": s["msa"], "true_msa": true_msa, "bert_mask": bert_mask}


# ---------------------------------------------------------------------------------------------
# Templates (modules_multimer.TemplateEmbedding, SingleTemplateEmbedding, template_embedding_1d)
# ---------------------------------------------------------------------------------------------

class ScalarLinear(nn.Module):
    """haiku Linear with num_input_dims=0: a scalar feature times weights [out] plus bias [out]."""

    def __init__(self, num_output: int):
        super().__init__()
        self.weights = nn.Parameter(torch.empty(num_output))
        self.bias = nn.Parameter(torch.empty(num_output))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., None] * self.weights.to(x.dtype) + self.bias.to(x.dtype)


def template_unit_vectors(atom_pos: torch.Tensor, atom_mask: torch.Tensor, rows: slice = slice(None)):
    """Unit vector from residue i to residue j in i's backbone frame, [N, N, 3], and the backbone
    mask [N]. As AlphaFold-Multimer: rigid[:, None].inverse().apply_to_point(CA), i.e.
    R_i^T CA_j + R_i^T (-CA_i) (exactly 0 on the diagonal), normalised with the 1e-6 clip.
    `rows` selects a block of rows i -> [r, N, 3] (a DAP rank's rows)."""
    rot, ca, mask = all_atom.backbone_frames(atom_pos.float(), atom_mask)
    rt_ = all_atom.rot_transpose(rot)[rows]                             # [r, 3, 3]
    local = all_atom.rot_vec_mul(rt_[:, None], ca[None, :]) + all_atom.rot_vec_mul(rt_, -ca[rows])[:, None]
    return all_atom.vec_normalized(local), mask


class MultimerSingleTemplateEmbedding(nn.Module):
    """One template's pair features -> sum of `template_pair_embedding_{0..8}` -> template stack
    (multiplications first) -> output LayerNorm. Scope `single_template_embedding`."""

    def __init__(self, cfg: Config, c_z: int, num_blocks: int):
        super().__init__()
        c_t = cfg.num_channels
        self.cfg = cfg
        self.query_embedding_norm = LayerNorm(c_z)
        # (dgram, pb mask, aatype j, aatype i, unit x, y, z, backbone mask, query) as AlphaFold orders them.
        sizes = [cfg.dgram_features.num_bins, 0, 22, 22, 0, 0, 0, 0, c_z]
        for i, k in enumerate(sizes):
            self.add_module(f"template_pair_embedding_{i}", Linear(k, c_t) if k else ScalarLinear(c_t))
        self.template_embedding_iteration = nn.ModuleList(
            [TemplatePairBlock(cfg.template_pair_stack, c_t) for _ in range(num_blocks)])
        self.output_layer_norm = LayerNorm(c_t)

    def embed(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"template_pair_embedding_{i}")(x)

    def forward(self, query_act: torch.Tensor, aatype, atom_pos, atom_mask, mask_2d, multichain_2d,
                rt: Runtime, rows: slice = slice(None)) -> torch.Tensor:
        """query_act: template_pair_embedding_8(LN(query pair)) [N, N, C_t] (the same for every
        template); aatype [N]; atom_pos [N, 37, 3]; atom_mask [N, 37]; mask_2d [N, N];
        multichain_2d [r, N] (the rows `rows`) -> [N, N, C_t].

        DAP: query_act is this rank's row shard [N_pad/P, N_pad, C_t], mask_2d the whole padded
        mask and `rows` this rank's real residue rows; the features are formed on those rows only
        and padded (the padding is masked in the template stack)."""
        dt = query_act.dtype
        pb, pb_mask = all_atom.pseudo_beta(aatype, atom_pos.float(), atom_mask.float())
        pb_2d = pb_mask[rows, None] * pb_mask[None, :] * multichain_2d
        dgram = dgram_from_positions(pb, **self.cfg.dgram_features, rows=rows) * pb_2d[..., None]
        onehot = F.one_hot(aatype.long(), 22).to(dt)
        unit, bb_mask = template_unit_vectors(atom_pos, atom_mask, rows)
        bb_2d = bb_mask[rows, None] * bb_mask[None, :] * multichain_2d
        unit = unit * bb_2d[..., None]
        act = self.embed(0, dgram.to(dt))
        act = act + self.embed(1, pb_2d.to(dt))
        act = act + self.embed(2, onehot[None, :, :])
        act = act + self.embed(3, onehot[rows, None, :])
        for c in range(3):
            act = act + self.embed(4 + c, unit[..., c].to(dt))
        act = act + self.embed(7, bb_2d.to(dt))
        act = dap.pad(act, query_act.shape[:2]) + query_act
        for block in self.template_embedding_iteration[:rt.max_blocks]:
            act = block(act, mask_2d, rt)
        return self.output_layer_norm(act, rt.backend)


class MultimerTemplateEmbedding(nn.Module):
    """Mean of the template embeddings over all templates, ReLU, `output_linear`. Scope
    `template_embedding`. Returns the update to add to the pair representation."""

    def __init__(self, cfg: Config, c_z: int, num_blocks: int):
        super().__init__()
        self.single_template_embedding = MultimerSingleTemplateEmbedding(cfg, c_z, num_blocks)
        self.output_linear = Linear(cfg.num_channels, c_z)

    def forward(self, z: torch.Tensor, batch: Dict[str, torch.Tensor], mask_2d: torch.Tensor,
                rt: Runtime) -> torch.Tensor:
        """z: [N, N, C_z] (DAP: this rank's row shard [N_pad/P, N_pad, C_z]); mask_2d: [N, N]
        (whole, padded) -> the update [N, N, C_z] (DAP: row shard)."""
        ste = self.single_template_embedding
        aatype = batch["template_aatype"]
        n_templ, n_res = aatype.shape
        lo, hi = dap.local_range(rt.shard, z.shape[1])
        real = slice(min(lo, n_res), min(hi, n_res))  # this rank's rows that are real residues
        asym = batch["asym_id"]
        multichain = (asym[real, None] == asym[None, :]).float()
        query = chunked(lambda z_c: ste.embed(8, ste.query_embedding_norm(z_c, rt.backend)), [z],
                        rt.chunk("pair_rows"), dim=0)
        total = None
        for t in range(n_templ):
            emb = ste(query, aatype[t], batch["template_all_atom_positions"][t], batch["template_all_atom_mask"][t],
                      mask_2d, multichain, rt, rows=real)
            total = emb if total is None else total + emb
        if total is None:
            return torch.zeros_like(z)
        return self.output_linear(torch.relu(total / n_templ))


def template_single_features(batch: Dict[str, torch.Tensor]):
    """Template rows of the MSA (template_embedding_1d): features [T, N, 34] = one_hot(aatype, 22),
    sin chi * mask, cos chi * mask, chi mask; and the row mask [T, N] (chi1 mask)."""
    aatype = batch["template_aatype"].long()
    chi, mask = all_atom.chi_angles(aatype, batch["template_all_atom_positions"].float(),
                                    batch["template_all_atom_mask"].float())
    feats = torch.cat([F.one_hot(aatype, 22).float(), torch.sin(chi) * mask, torch.cos(chi) * mask, mask], dim=-1)
    return feats, mask[..., 0]


# ---------------------------------------------------------------------------------------------
# The embedder
# ---------------------------------------------------------------------------------------------

class MultimerEmbeddingsAndEvoformer(nn.Module):
    """modules_multimer.EmbeddingsAndEvoformer: same interface and outputs as
    model.trunk.EmbeddingsAndEvoformer, on the raw multimer features (aatype, residue_index,
    asym_id, entity_id, sym_id, seq_mask, msa, deletion_matrix, msa_mask, cluster_bias_mask,
    template_aatype, template_all_atom_positions, template_all_atom_mask)."""

    def __init__(self, cfg: Config, num_evoformer: int, num_extra: int, num_template: int):
        super().__init__()
        c = cfg
        cm, cz, ce = c.msa_channel, c.pair_channel, c.extra_msa_channel
        self.cfg = cfg
        self.sampling = MsaSampling()
        self.preprocess_1d = Linear(21, cm)
        self.preprocess_msa = Linear(49, cm)
        self.left_single = Linear(21, cz)
        self.right_single = Linear(21, cz)
        self.prev_pos_linear = Linear(c.prev_pos.num_bins, cz)
        self.prev_msa_first_row_norm = LayerNorm(cm)
        self.prev_pair_norm = LayerNorm(cz)
        self.relative_encoding = nn.Module()  # AlphaFold's `~_relative_encoding` scope
        n_rel = 2 * c.max_relative_idx + 2 + 1 + 2 * c.max_relative_chain + 2 if c.use_chain_relative \
            else 2 * c.max_relative_idx + 1
        self.relative_encoding.position_activations = Linear(n_rel, cz)
        if c.template.enabled:
            self.template_embedding = MultimerTemplateEmbedding(c.template, cz, num_template)
            self.template_single_embedding = Linear(34, cm)
            self.template_projection = Linear(cm, cm)
        self.extra_msa_activations = Linear(25, ce)
        self.extra_msa_stack = nn.ModuleList([EvoformerIteration(c.evoformer, ce, cz, True) for _ in range(num_extra)])
        self.evoformer_iteration = nn.ModuleList(
            [EvoformerIteration(c.evoformer, cm, cz, False) for _ in range(num_evoformer)])
        self.single_activations = Linear(cm, c.seq_channel)
        self._gen: Optional[torch.Generator] = None

    def reset_sampling(self):
        """Restart the random MSA draws from `sampling.seed` (the model does it per forward call)."""
        self._gen = torch.Generator().manual_seed(int(self.sampling.seed))

    def relative_position_rows(self, batch, r0: int, r1: int, dt) -> torch.Tensor:
        """Chain-relative position encoding @ position_activations for pair rows r0:r1, as a
        row lookup of the one-hot features (relative position or 'other chain', same entity,
        relative sym_id or 'other entity')."""
        c = self.cfg
        lin = self.relative_encoding.position_activations
        w, b = lin.weights.to(dt), lin.bias.to(dt)
        ri = batch["residue_index"].long()
        offset = torch.clamp(ri[r0:r1, None] - ri[None, :] + c.max_relative_idx, 0, 2 * c.max_relative_idx)
        if not c.use_chain_relative:
            return w[offset] + b
        asym, ent, sym = (batch[k].long() for k in ("asym_id", "entity_id", "sym_id"))
        n_pos = 2 * c.max_relative_idx + 2
        offset = torch.where(asym[r0:r1, None] == asym[None, :], offset, torch.full_like(offset, n_pos - 1))
        same_entity = ent[r0:r1, None] == ent[None, :]
        rel_chain = torch.clamp(sym[r0:r1, None] - sym[None, :] + c.max_relative_chain, 0, 2 * c.max_relative_chain)
        rel_chain = torch.where(same_entity, rel_chain, torch.full_like(rel_chain, 2 * c.max_relative_chain + 1))
        return w[offset] + same_entity[..., None].to(dt) * w[n_pos] + w[n_pos + 1 + rel_chain] + b

    def forward(self, batch: Dict[str, torch.Tensor], prev: Dict[str, torch.Tensor], rt: Runtime, memo=None):
        """batch: raw multimer features (no ensemble axis); prev: prev_pos [N, 37, 3],
        prev_msa_first_row [N, C_m], prev_pair [N, N, C_z] (DAP: this rank's row shard of the
        padded pair, as returned in "pair"). memo: unused (the monomer's `TemplateMemo`: this
        template stack reads the pair, so nothing carries over between passes).

        Returns dict(single [N, C_s], pair [N, N, C_z], msa [S, N, C_m] (cluster rows),
        msa_first_row [N, C_m]); under DAP pair and msa are this rank's row shards (msa_rows: the
        S to keep), as model.trunk.EmbeddingsAndEvoformer returns them.

        DAP (rt.shard): the MSA sample is drawn before sharding, on every rank from the same seeded
        generator (CPU draws: the same sample on every rank); then the pair, templates, extra MSA
        and MSA are padded and sharded with the monomer trunk's helpers (model/trunk.py)."""
        c = self.cfg
        dt = rt.dtype
        sh = rt.shard
        if self._gen is None:
            self.reset_sampling()
        feats = sample_features(batch, c, self.sampling, self._gen)
        target_feat = F.one_hot(batch["aatype"].long(), 21).to(dt)
        left, right = self.left_single(target_feat), self.right_single(target_feat)
        z, mask_2d = embed_pair_shard(self, batch, prev, rt, left, right,
                                      lambda r0, r1: self.relative_position_rows(batch, r0, r1, dt))
        n_pad = mask_2d.shape[0]
        rt = rt.with_masks(pair=mask_2d)

        if c.template.enabled:
            z = z + self.template_embedding(z, batch, mask_2d, rt)

        e, extra_mask = embed_extra_shard(sh, lambda f: self.extra_msa_activations(f.to(dt)),
                                          [feats["extra_msa_feat"]], feats["extra_msa_mask"].to(dt), n_pad,
                                          rt.chunk("extra_row_att"))
        rt_e = rt.with_masks(msa=extra_mask)
        for block in self.extra_msa_stack[:rt.max_blocks]:
            e, z = block(e, z, extra_mask, mask_2d, rt_e)
        del e

        m = initial_msa(self, target_feat, feats["msa_feat"], prev, dt)
        msa_mask = feats["msa_mask"].to(dt)
        n_seq = m.shape[0]
        if c.template.enabled:
            tf, tmask = template_single_features(batch)
            ta = self.template_projection(torch.relu(self.template_single_embedding(tf.to(dt))))
            m = torch.cat([m, ta], dim=0)
            msa_mask = torch.cat([msa_mask, tmask.to(dt)], dim=0)

        m, msa_mask = shard_msa(sh, m, msa_mask, n_pad)
        rt = rt.with_masks(msa=msa_mask)
        for block in self.evoformer_iteration[:rt.max_blocks]:
            m, z = block(m, z, msa_mask, mask_2d, rt)
        return trunk_outputs(sh, m, z, batch["aatype"].shape[0], n_seq, self.single_activations)
