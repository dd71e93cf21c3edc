"""Input embedding, recycling embedding, templates, extra-MSA stack and the Evoformer stack
(AlphaFold 2.3 `EmbeddingsAndEvoformer`, `SingleTemplateEmbedding`, `TemplateEmbedding`).

Module attribute names equal AlphaFold's haiku scope names, so the official parameter keys map onto
`named_parameters()` mechanically (see model/params.py).
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from model import all_atom
from model import residue_constants as rc
from model.config import Config, Runtime
from model.evoformer import EvoformerIteration, TemplatePairBlock
from model.primitives import Attention, LayerNorm, Linear, chunked


def dgram_from_positions(positions: torch.Tensor, num_bins: int, min_bin: float, max_bin: float) -> torch.Tensor:
    """One-hot distance bins. positions: [N, 3] -> [N, N, num_bins] (float32, as AlphaFold)."""
    lower = torch.linspace(min_bin, max_bin, num_bins, device=positions.device, dtype=torch.float32) ** 2
    upper = torch.cat([lower[1:], lower.new_tensor([1e8])])
    p = positions.float()
    dist2 = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1, keepdim=True)
    return ((dist2 > lower) & (dist2 < upper)).float()


class SingleTemplateEmbedding(nn.Module):
    """Pair features of one template -> embedding2d -> template pair stack -> output LayerNorm."""

    def __init__(self, cfg: Config, num_blocks: int):
        super().__init__()
        c_t = cfg.template_pair_stack.num_channel
        self.cfg = cfg
        n_feat = cfg.dgram_features.num_bins + 1 + 22 + 22 + 3 + 1
        self.embedding2d = Linear(n_feat, c_t)
        self.template_pair_stack = nn.Module()
        self.template_pair_stack.add_module(
            "__layer_stack_no_state",
            nn.ModuleList([TemplatePairBlock(cfg.template_pair_stack, c_t) for _ in range(num_blocks)]))
        self.output_layer_norm = LayerNorm(c_t)

    def blocks(self):
        return getattr(self.template_pair_stack, "__layer_stack_no_state")

    def features(self, aatype, pseudo_beta, pseudo_beta_mask, atom_pos, atom_mask, dtype) -> torch.Tensor:
        """Template pair features [N, N, 88] of one template (AlphaFold order).

        aatype: [N] (long); pseudo_beta: [N, 3]; pseudo_beta_mask: [N]; atom_pos: [N, 37, 3];
        atom_mask: [N, 37].
        """
        cfg = self.cfg
        n = aatype.shape[0]
        pb_mask_2d = (pseudo_beta_mask[:, None] * pseudo_beta_mask[None, :]).to(dtype)
        dgram = dgram_from_positions(pseudo_beta, **cfg.dgram_features).to(dtype)
        onehot = F.one_hot(aatype.long(), 22).to(dtype)
        ni, cai, ci = (rc.atom_order[a] for a in ("N", "CA", "C"))
        bb_mask = atom_mask[:, ni] * atom_mask[:, cai] * atom_mask[:, ci]
        bb_mask_2d = (bb_mask[:, None] * bb_mask[None, :])
        if cfg.use_template_unit_vector:
            pos = atom_pos.float()
            rot, trans = all_atom.rigid_from_three_points(pos[:, ni], pos[:, cai], pos[:, ci])
            # Position of residue j in the local frame of residue i.
            local = torch.einsum("iba,ijb->ija", rot, trans[None, :, :] - trans[:, None, :])
            inv_dist = torch.rsqrt(1e-6 + (local ** 2).sum(-1)) * bb_mask_2d.float()
            unit = (local * inv_dist[..., None]).to(dtype)
        else:
            unit = torch.zeros(n, n, 3, dtype=dtype, device=aatype.device)
        bb_mask_2d = bb_mask_2d.to(dtype)
        act = torch.cat([dgram, pb_mask_2d[..., None], onehot[None, :, :].expand(n, n, 22),
                         onehot[:, None, :].expand(n, n, 22), unit, bb_mask_2d[..., None]], dim=-1)
        return act * bb_mask_2d[..., None]

    def forward(self, feats: torch.Tensor, mask_2d: torch.Tensor, rt: Runtime) -> torch.Tensor:
        """feats: [N, N, 88]; mask_2d: [N, N] -> [N, N, C_t]."""
        t = self.embedding2d(feats)
        for block in self.blocks():
            t = block(t, mask_2d, rt)
        return self.output_layer_norm(t, rt.backend)


class TemplateEmbedding(nn.Module):
    """Embeds every template and attends from each pair position to the templates (Alg. 17)."""

    def __init__(self, cfg: Config, c_z: int, num_blocks: int):
        super().__init__()
        a = cfg.attention
        c_t = cfg.template_pair_stack.num_channel
        self.single_template_embedding = SingleTemplateEmbedding(cfg, num_blocks)
        self.attention = Attention(c_z, c_t, a.num_head, a.key_dim // a.num_head, a.value_dim // a.num_head,
                                   c_z, gating=a.gating)

    def forward(self, z: torch.Tensor, batch: Dict[str, torch.Tensor], mask_2d: torch.Tensor,
                rt: Runtime) -> torch.Tensor:
        """z: [N, N, C_z] query pair representation; returns the template embedding [N, N, C_z]."""
        dtype = z.dtype
        template_mask = batch["template_mask"].to(dtype)
        n_templ = template_mask.shape[0]
        n = z.shape[0]
        ste = self.single_template_embedding
        # One template's pair stack at a time; only the stack outputs [T, N, N, C_t] are kept.
        embeddings = []
        for t in range(n_templ):
            feats = ste.features(batch["template_aatype"][t], batch["template_pseudo_beta"][t],
                                 batch["template_pseudo_beta_mask"][t], batch["template_all_atom_positions"][t],
                                 batch["template_all_atom_masks"][t], dtype)
            embeddings.append(ste(feats, mask_2d, rt))
        templ = torch.stack(embeddings, dim=2)  # [N, N, T, C_t]
        del embeddings
        mask = template_mask[None, None, None, :]  # [1, 1(H), 1(Q), T]

        def rows(z_c, t_c):  # z_c: [n, N, C_z]; t_c: [n, N, T, C_t]
            q = z_c.reshape(-1, 1, z_c.shape[-1])
            kv = t_c.reshape(-1, n_templ, t_c.shape[-1])
            return self.attention(q, kv, [], mask, rt.backend).reshape(z_c.shape)

        out = chunked(rows, [z, templ], rt.chunk("template_att"), dim=0)
        # No templates at all: AlphaFold zeroes the embedding.
        return out * (template_mask.sum() > 0).to(dtype)


class EmbeddingsAndEvoformer(nn.Module):
    """Embeds one recycling iteration's inputs and runs the extra-MSA and Evoformer stacks."""

    def __init__(self, cfg: Config, num_evoformer: int, num_extra: int, num_template: int):
        super().__init__()
        c = cfg
        cm, cz, ce = c.msa_channel, c.pair_channel, c.extra_msa_channel
        self.cfg = cfg
        self.preprocess_1d = Linear(22, cm)
        self.preprocess_msa = Linear(49, cm)
        self.left_single = Linear(22, cz)
        self.right_single = Linear(22, cz)
        self.prev_pos_linear = Linear(c.prev_pos.num_bins, cz)
        self.prev_msa_first_row_norm = LayerNorm(cm)
        self.prev_pair_norm = LayerNorm(cz)
        self.pair_activiations = Linear(2 * c.max_relative_feature + 1, cz)  # AlphaFold's spelling
        if c.template.enabled:
            self.template_embedding = TemplateEmbedding(c.template, cz, num_template)
            if c.template.embed_torsion_angles:
                self.template_single_embedding = Linear(57, cm)
                self.template_projection = Linear(cm, cm)
        self.extra_msa_activations = Linear(25, ce)
        self.extra_msa_stack = nn.ModuleList([EvoformerIteration(c.evoformer, ce, cz, True) for _ in range(num_extra)])
        self.evoformer_iteration = nn.ModuleList(
            [EvoformerIteration(c.evoformer, cm, cz, False) for _ in range(num_evoformer)])
        self.single_activations = Linear(cm, c.seq_channel)

    def forward(self, batch: Dict[str, torch.Tensor], prev: Dict[str, torch.Tensor], rt: Runtime):
        """batch: one ensemble member's processed features (fixture layout, no ensemble axis);
        prev: prev_pos [N, 37, 3], prev_msa_first_row [N, C_m], prev_pair [N, N, C_z] (float32).

        Returns dict(single [N, C_s], pair [N, N, C_z], msa [S, N, C_m], msa_first_row [N, C_m]).
        """
        c = self.cfg
        dt = rt.dtype
        target_feat = batch["target_feat"].to(dt)
        m = self.preprocess_1d(target_feat)[None] + self.preprocess_msa(batch["msa_feat"].to(dt))
        z = self.left_single(target_feat)[:, None] + self.right_single(target_feat)[None, :]
        seq_mask = batch["seq_mask"].to(dt)
        mask_2d = seq_mask[:, None] * seq_mask[None, :]

        if c.recycle_pos:
            pb = all_atom.pseudo_beta(batch["aatype"], prev["prev_pos"], None)[0]
            z = z + self.prev_pos_linear(dgram_from_positions(pb, **c.prev_pos).to(dt))
        if c.recycle_features:
            m0 = self.prev_msa_first_row_norm(prev["prev_msa_first_row"].float()).to(dt)
            m = torch.cat([(m[0] + m0)[None], m[1:]], dim=0)
            z = z + self.prev_pair_norm(prev["prev_pair"].float()).to(dt)

        # Relative position one-hot @ W == row lookup of W.
        ri = batch["residue_index"].long()
        offset = torch.clamp(ri[:, None] - ri[None, :] + c.max_relative_feature, 0, 2 * c.max_relative_feature)
        rp = self.pair_activiations
        z = z + (rp.weights.to(dt)[offset] + rp.bias.to(dt))

        if c.template.enabled:
            z = z + self.template_embedding(z, batch, mask_2d, rt)

        extra_feat = torch.cat([F.one_hot(batch["extra_msa"].long(), 23).to(dt),
                                batch["extra_has_deletion"].to(dt)[..., None],
                                batch["extra_deletion_value"].to(dt)[..., None]], dim=-1)
        e = self.extra_msa_activations(extra_feat)
        del extra_feat
        extra_mask = batch["extra_msa_mask"].to(dt)
        for block in self.extra_msa_stack:
            e, z = block(e, z, extra_mask, mask_2d, rt)
        del e

        msa_mask = batch["msa_mask"].to(dt)
        n_seq = m.shape[0]
        if c.template.enabled and c.template.embed_torsion_angles:
            aat = batch["template_aatype"].long()
            ret = all_atom.atom37_to_torsion_angles(aat, batch["template_all_atom_positions"].float(),
                                                    batch["template_all_atom_masks"].float(),
                                                    placeholder_for_undefined=False)
            t_, n_ = aat.shape
            tf = torch.cat([F.one_hot(aat, 22).float(), ret["torsion_angles_sin_cos"].reshape(t_, n_, 14),
                            ret["alt_torsion_angles_sin_cos"].reshape(t_, n_, 14),
                            ret["torsion_angles_mask"]], dim=-1).to(dt)
            ta = self.template_projection(torch.relu(self.template_single_embedding(tf)))
            m = torch.cat([m, ta], dim=0)
            msa_mask = torch.cat([msa_mask, ret["torsion_angles_mask"][:, :, 2].to(dt)], dim=0)

        for block in self.evoformer_iteration:
            m, z = block(m, z, msa_mask, mask_2d, rt)

        single = self.single_activations(m[0])
        return {"single": single, "pair": z, "msa": m[:n_seq], "msa_first_row": m[0]}
