"""Input embedding, recycling embedding, templates, extra-MSA stack and the Evoformer stack
(AlphaFold 2.3 `EmbeddingsAndEvoformer`, `SingleTemplateEmbedding`, `TemplateEmbedding`).

Module attribute names equal AlphaFold's haiku scope names, so the official parameter keys map onto
`named_parameters()` mechanically (see model/params.py).

DAP (`rt.shard`, model/dap.py): N and the MSA depths are padded to multiples of the world size
(zero activations, mask entries dap.PAD_MASK); each rank embeds only its own rows of the pair (and of the extra
MSA), runs the template, extra-MSA and Evoformer stacks on row shards, and the pair stays a row
shard [N_pad/P, N_pad, C_z] from the recycling embedder to the end of the Evoformer.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from model import all_atom, dap
from model import residue_constants as rc
from model.config import Config, Runtime
from model.evoformer import EvoformerIteration, TemplatePairBlock
from model.primitives import Attention, LayerNorm, Linear, chunked, on_host, owns_storage


def dgram_from_positions(positions: torch.Tensor, num_bins: int, min_bin: float, max_bin: float,
                         rows: slice = slice(None)) -> torch.Tensor:
    """One-hot distance bins. positions: [N, 3] -> [N, N, num_bins] (float32, as AlphaFold);
    `rows` selects a block of rows [r, N, num_bins]."""
    lower = torch.linspace(min_bin, max_bin, num_bins, device=positions.device, dtype=torch.float32) ** 2
    upper = torch.cat([lower[1:], lower.new_tensor([1e8])])
    p = positions.float()
    dist2 = ((p[rows, None, :] - p[None, :, :]) ** 2).sum(-1, keepdim=True)
    return ((dist2 > lower) & (dist2 < upper)).float()


# ----------------------------------------------------------------------------------------------
# DAP layout helpers, shared by this embedder and the multimer one (model/multimer.py): with
# rt.shard None each returns the unpadded, unsharded layout.
# ----------------------------------------------------------------------------------------------

def embed_pair_shard(mod: nn.Module, batch: Dict[str, torch.Tensor], prev: Dict[str, torch.Tensor], rt: Runtime,
                     left: torch.Tensor, right: torch.Tensor, relpos):
    """The recycling embedder's pair on this rank's rows: left_i + right_j (+ prev_pos_linear of the
    recycled positions' distogram, + prev_pair_norm of the recycled pair) + relpos(r0, r1) (the
    relative-position rows [r1 - r0, N, C_z] of global rows r0:r1). `mod` holds cfg, prev_pos_linear
    and prev_pair_norm. Padding (DAP) is zero.

    Returns (z, mask_2d): z [N, N, C_z], under DAP this rank's row shard [N_pad/P, N_pad, C_z] (it
    takes over the storage of prev["prev_pair"] when `rt.inplace` allows), and the pair mask
    [N_pad, N_pad] (whole; padding dap.PAD_MASK)."""
    c, dt, sh = mod.cfg, rt.dtype, rt.shard
    n = batch["aatype"].shape[0]
    n_pad = dap.padded(sh, n)
    lo, hi = dap.local_range(sh, n_pad)  # this rank's pair rows (padded coordinates)
    hi_real = max(lo, min(hi, n))
    rows = rt.chunk("pair_rows") or n
    seq_mask = batch["seq_mask"].to(dt)
    mask_2d = dap.pad(seq_mask[:, None] * seq_mask[None, :], (n_pad, n_pad), dap.PAD_MASK)  # whole, every rank
    if c.recycle_pos:
        pb = all_atom.pseudo_beta(batch["aatype"], prev["prev_pos"].float(), None)[0]
    # The recycled pair is consumed row by row, so the new pair can take over its storage.
    prev_pair = prev["prev_pair"]
    shape = (hi - lo, n_pad, left.shape[-1])
    prev_lo = lo if prev_pair.shape[0] != prev_pair.shape[1] else 0  # a DAP row shard or whole
    z = prev_pair if (prev_pair.dtype == dt and prev_pair.is_contiguous() and rt.inplace
                      and tuple(prev_pair.shape) == shape) else \
        torch.empty(shape, dtype=dt, device=left.device)
    if n_pad != n:  # padding: zero activations (masked everywhere)
        z[:, n:] = 0
        z[hi_real - lo:] = 0
    for r0 in range(lo, hi_real, rows):
        r1 = min(hi_real, r0 + rows)
        blk = left[r0:r1, None] + right[None, :]
        if c.recycle_pos:
            dgram = dgram_from_positions(pb, **c.prev_pos, rows=slice(r0, r1)).to(dt)
            blk = blk + mod.prev_pos_linear(dgram)
            del dgram
        if c.recycle_features:
            # on the runtime's backend (the Triton LayerNorm reads the stored dtype, float32 statistics)
            blk = blk + mod.prev_pair_norm(prev_pair[r0 - prev_lo:r1 - prev_lo, :n], rt.backend).to(dt)
        z[r0 - lo:r1 - lo, :n] = blk + relpos(r0, r1)
        del blk  # row-block temporaries must not outlive the loop
    del prev_pair
    return z, mask_2d


def embed_extra_shard(sh, embed, feats, extra_mask: torch.Tensor, n_pad: int, chunk):
    """This rank's rows of the embedded extra MSA: embed(*row blocks of feats) on its rows only
    (chunks of `chunk` rows), padded to [E_pad/P, N_pad, C_e]; and the whole padded extra-MSA mask
    [E_pad, N_pad]. feats: tensors [E, N, ...]; extra_mask: [E, N] in the runtime dtype."""
    n_extra = extra_mask.shape[0]
    e_pad = dap.padded(sh, n_extra)
    e_lo, e_hi = dap.local_range(sh, e_pad)
    e_rows = slice(min(e_lo, n_extra), min(e_hi, n_extra))
    e = chunked(embed, [f[e_rows] for f in feats], chunk, dim=0)
    return dap.pad(e, (e_hi - e_lo, n_pad)), dap.pad(extra_mask, (e_pad, n_pad), dap.PAD_MASK)


def shard_msa(sh, m: torch.Tensor, msa_mask: torch.Tensor, n_pad: int):
    """DAP: the MSA [S, N, C_m] padded to [S_pad, N_pad] and this rank's rows kept (a copy: the
    whole MSA can go), and the whole padded mask [S_pad, N_pad]. Without DAP (m, msa_mask)."""
    if not dap.active(sh):
        return m, msa_mask
    s_pad = dap.padded(sh, m.shape[0])
    return (dap.scatter(sh, dap.pad(m, (s_pad, n_pad)), 0).clone(),
            dap.pad(msa_mask, (s_pad, n_pad), dap.PAD_MASK))


def initial_msa(mod: nn.Module, target_feat: torch.Tensor, msa_feat: torch.Tensor, prev: Dict[str, torch.Tensor],
                dt: torch.dtype) -> torch.Tensor:
    """The MSA activations [S, N, C_m] from the target and MSA features, with the recycled first
    row added (`mod` holds cfg, preprocess_1d/_msa, prev_msa_first_row_norm). Formed only after the
    extra-MSA stack: not needed while the templates and that stack run, it would only add to their
    peaks."""
    m = mod.preprocess_1d(target_feat)[None] + mod.preprocess_msa(msa_feat.to(dt))
    if mod.cfg.recycle_features:
        m[0] += mod.prev_msa_first_row_norm(prev["prev_msa_first_row"].float()).to(dt)
    return m


def trunk_outputs(sh, m: torch.Tensor, z: torch.Tensor, n: int, n_seq: int, single_activations) -> dict:
    """The embedder's outputs after the Evoformer: single (single_activations of the first MSA
    row), pair, msa (the first n_seq rows; DAP: this rank's row shard and msa_rows = n_seq) and
    msa_first_row (DAP: broadcast from rank 0, which holds row 0)."""
    if dap.active(sh):
        first = dap.broadcast(sh, m[0, :n].contiguous() if sh.rank == 0 else m.new_empty(n, m.shape[-1]))
        return {"single": single_activations(first), "pair": z, "msa": m, "msa_rows": n_seq,
                "msa_first_row": first}
    return {"single": single_activations(m[0]), "pair": z, "msa": m[:n_seq], "msa_first_row": m[0]}


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

    def features(self, aatype, pseudo_beta, pseudo_beta_mask, atom_pos, atom_mask, dtype,
                 rows: slice = slice(None)) -> torch.Tensor:
        """Template pair features [N, N, 88] of one template (AlphaFold order); `rows` selects a
        block of rows i -> [r, N, 88] (a DAP rank's rows).

        aatype: [N] (long); pseudo_beta: [N, 3]; pseudo_beta_mask: [N]; atom_pos: [N, 37, 3];
        atom_mask: [N, 37].
        """
        cfg = self.cfg
        n = aatype.shape[0]
        r = len(range(n)[rows])
        pb_mask_2d = (pseudo_beta_mask[rows, None] * pseudo_beta_mask[None, :]).to(dtype)
        dgram = dgram_from_positions(pseudo_beta, **cfg.dgram_features, rows=rows).to(dtype)
        onehot = F.one_hot(aatype.long(), 22).to(dtype)
        ni, cai, ci = (rc.atom_order[a] for a in ("N", "CA", "C"))
        bb_mask = atom_mask[:, ni] * atom_mask[:, cai] * atom_mask[:, ci]
        bb_mask_2d = (bb_mask[rows, None] * bb_mask[None, :])
        if cfg.use_template_unit_vector:
            pos = atom_pos.float()
            rot, trans = all_atom.rigid_from_three_points(pos[:, ni], pos[:, cai], pos[:, ci])
            # Position of residue j in the local frame of residue i.
            local = torch.einsum("iba,ijb->ija", rot[rows], trans[None, :, :] - trans[rows, None, :])
            inv_dist = torch.rsqrt(1e-6 + (local ** 2).sum(-1)) * bb_mask_2d.float()
            unit = (local * inv_dist[..., None]).to(dtype)
        else:
            unit = torch.zeros(r, n, 3, dtype=dtype, device=aatype.device)
        bb_mask_2d = bb_mask_2d.to(dtype)
        act = torch.cat([dgram, pb_mask_2d[..., None], onehot[None, :, :].expand(r, n, 22),
                         onehot[rows, None, :].expand(r, n, 22), unit, bb_mask_2d[..., None]], dim=-1)
        return act * bb_mask_2d[..., None]

    def forward(self, feats_rows, n_rows: int, mask_2d: torch.Tensor, rt: Runtime) -> torch.Tensor:
        """feats_rows(i0, i1): the pair features [i1 - i0, N, 88] of rows i0:i1 (DAP: of this
        rank's rows, padded); mask_2d: [N, N] (whole) -> [n_rows, N, C_t] (DAP: row shard).

        The [N, N, 88] features are never whole: each block of `rt.chunk("template_att")` rows is
        formed and embedded in turn (at N=12,000 in bf16 they would be 25 GB)."""
        rows = rt.chunk("template_att") or n_rows
        t = None
        for i0 in range(0, n_rows, rows):
            i1 = min(n_rows, i0 + rows)
            blk = self.embedding2d(feats_rows(i0, i1))
            if t is None:
                t = blk.new_empty(n_rows, blk.shape[1], blk.shape[2])
            t[i0:i1] = blk
            del blk
        for block in self.blocks()[:rt.max_blocks]:
            t = block(t, mask_2d, rt)
        return self.output_layer_norm(t, rt.backend)


TEMPLATE_KEYS = ("template_aatype", "template_pseudo_beta", "template_pseudo_beta_mask",
                 "template_all_atom_positions", "template_all_atom_masks", "template_mask")


class TemplateMemo:
    """The template pair stack's outputs of one prediction, kept for its later passes.

    In the monomer network the template pair stack reads only the template features and the pair
    mask, never the recycled pair (AlphaFold 2.3 SingleTemplateEmbedding: the query embedding gives
    only the dtype there), so every recycling pass recomputes the same [N, N, C_t] embedding per
    template. A memo made by `AlphaFold.forward` (Runtime.keep_templates) holds them, T x [N, N,
    C_t] (DAP: this rank's rows), and later passes skip the stacks; the point-wise attention, which
    reads the pair, still runs every pass. The embeddings are reused only while the template
    features, the pair mask and the dtype equal those they were computed from (a leading pass axis
    may hold different templates per pass); otherwise they are dropped and recomputed."""

    def __init__(self):
        self._key = None
        self.emb: Dict[int, torch.Tensor] = {}

    def check(self, batch: Dict[str, torch.Tensor], mask_2d: torch.Tensor, dtype: torch.dtype) -> None:
        """Drop the kept embeddings unless they were computed from these inputs."""
        key = [batch[k] for k in TEMPLATE_KEYS if k in batch] + [mask_2d]
        old = self._key
        same = (old is not None and old[0] == dtype and len(old[1]) == len(key)
                and all(a is b or (a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b))
                        for a, b in zip(old[1], key)))
        if not same:
            self.emb = {}
            self._key = (dtype, key)


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
                rt: Runtime, memo: Optional[TemplateMemo] = None) -> torch.Tensor:
        """z: [N, N, C_z] query pair representation -> z + template embedding (in place if allowed).
        memo: the embeddings of an earlier pass of the same prediction (`TemplateMemo`), used and
        filled.
        DAP: z is the row shard [N_pad/P, N_pad, C_z] and mask_2d the whole padded [N_pad, N_pad];
        each template is embedded and attended to on the same rows only (point-wise: no collective
        besides those of the template pair stack).

        Templates are embedded one at a time and the point-wise attention over them is accumulated
        with an online softmax, so no [T, N, N, C_t] tensor is ever held."""
        dtype = z.dtype
        template_mask = batch["template_mask"].float()
        n_templ, n, n_all = template_mask.shape[0], z.shape[0], z.shape[1]
        n_res = batch["template_aatype"].shape[1]
        lo, hi = dap.local_range(rt.shard, n_all)
        if n_templ == 0 or float(template_mask.sum()) == 0:
            return z  # AlphaFold multiplies the embedding by 0 when no template exists
        ste, att = self.single_template_embedding, self.attention
        rows = rt.chunk("template_att") or n
        h, dk = att.query_w.shape[1], att.query_w.shape[2]
        dv = att.value_w.shape[2]
        scale = dk ** -0.5
        wq = att.query_w.to(dtype).reshape(-1, h * dk)
        wk = att.key_w.to(dtype).reshape(-1, h * dk)
        wv = att.value_w.to(dtype).reshape(-1, h * dv)
        w_out = att.output_w.to(dtype).reshape(h * dv, -1)

        if memo is not None:
            memo.check(batch, mask_2d, dtype)

        def embed(t, rt_=rt):
            if memo is not None and t in memo.emb:
                return memo.emb[t]
            args = (batch["template_aatype"][t], batch["template_pseudo_beta"][t], batch["template_pseudo_beta_mask"][t],
                    batch["template_all_atom_positions"][t], batch["template_all_atom_masks"][t], dtype)

            def feats_rows(i0, i1):  # this rank's rows i0:i1 (padded coordinates lo + i)
                rows_real = slice(min(lo + i0, n_res), min(lo + i1, n_res))
                return dap.pad(ste.features(*args, rows=rows_real), (i1 - i0, n_all))

            emb = ste(feats_rows, n, mask_2d, rt_)  # [N, N, C_t]
            if memo is not None:
                memo.emb[t] = emb
            return emb

        def logits(emb, t, r0, r1, zr):  # [r, N, H] float32; zr: the pair's rows r0:r1
            q = torch.matmul(zr, wq).reshape(r1 - r0, n_all, h, dk)
            k = torch.matmul(emb[r0:r1], wk).reshape(r1 - r0, n_all, h, dk)
            return (q.float() * scale * k.float()).sum(-1) + 1e9 * (template_mask[t] - 1.0)

        target = z if rt.inplace else z.clone()
        # The longest sequences (Runtime.offload_pair): the pair waits in host memory while the
        # templates are embedded (nothing in the template stacks reads it), so their own stacks run
        # without offloading; the logits read its rows back, and the weighted values are summed in
        # an [N, N, H*D] buffer that updates the pair once it is back.
        offloaded = rt.offload_pair and rt.inplace and not dap.active(rt.shard) and owns_storage(z)
        if rt.recompute_templates or offloaded:
            # Two passes: all logits first ([T, N, N, H], small), then each template's embedding is
            # recomputed and its weighted values added straight into the pair. Costs a second
            # template stack, saves the [N, N, H, D] accumulator.
            rt_t = rt.with_(offload_pair=False) if offloaded else rt
            o_sum = None
            # src: the pair's values wherever they are (host copy while offloaded, else z itself)
            with on_host(z) if offloaded else contextlib.nullcontext(z) as src:
                lg = torch.empty(n_templ, n, n_all, h, device=z.device)
                for t in range(n_templ):
                    emb = embed(t, rt_t)
                    for r0 in range(0, n, rows):
                        r1 = min(n, r0 + rows)
                        lg[t, r0:r1] = logits(emb, t, r0, r1, src[r0:r1].to(z.device))
                    del emb
                lg -= lg.amax(0, keepdim=True)  # softmax over templates, in place: no second [T, N, N, H]
                lg.exp_()
                lg /= lg.sum(0, keepdim=True)
                if offloaded:
                    o_sum = torch.zeros(n, n_all, h * dv, dtype=dtype, device=z.device)
                for t in range(n_templ):
                    emb = embed(t, rt_t)
                    for r0 in range(0, n, rows):
                        r1 = min(n, r0 + rows)
                        v = torch.matmul(emb[r0:r1], wv).reshape(r1 - r0, n_all, h, dv)
                        o = (lg[t, r0:r1, ..., None] * v.float()).to(dtype).reshape(r1 - r0, n_all, h * dv)
                        if offloaded:
                            o_sum[r0:r1] += o
                        else:
                            upd = torch.matmul(o, w_out)
                            target[r0:r1] += upd + att.output_b.to(dtype) if t == 0 else upd
                    del emb
                del lg
            if offloaded:  # sum_t o_t W + b: the output projection is linear
                for r0 in range(0, n, rows):
                    r1 = min(n, r0 + rows)
                    target[r0:r1] += torch.matmul(o_sum[r0:r1], w_out) + att.output_b.to(dtype)
            return target
        # One pass, online softmax: running max, normaliser and weighted values per (pair, head).
        run_max = torch.full((n, n_all, h), float("-inf"), device=z.device)
        run_sum = torch.zeros(n, n_all, h, device=z.device)
        acc = torch.zeros(n, n_all, h, dv, device=z.device)
        for t in range(n_templ):
            emb = embed(t)
            for r0 in range(0, n, rows):
                r1 = min(n, r0 + rows)
                logit = logits(emb, t, r0, r1, z[r0:r1])
                v = torch.matmul(emb[r0:r1], wv).reshape(r1 - r0, n_all, h, dv)
                new_max = torch.maximum(run_max[r0:r1], logit)
                corr = torch.exp(run_max[r0:r1] - new_max)
                p = torch.exp(logit - new_max)
                run_sum[r0:r1] = run_sum[r0:r1] * corr + p
                acc[r0:r1] = acc[r0:r1] * corr[..., None] + p[..., None] * v.float()
                run_max[r0:r1] = new_max
            del emb
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            o = (acc[r0:r1] / run_sum[r0:r1, ..., None]).to(dtype).reshape(r1 - r0, n_all, h * dv)
            target[r0:r1] += torch.matmul(o, w_out) + att.output_b.to(dtype)
        return target


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

    def forward(self, batch: Dict[str, torch.Tensor], prev: Dict[str, torch.Tensor], rt: Runtime,
                memo: Optional[TemplateMemo] = None):
        """batch: one ensemble member's processed features (fixture layout, no ensemble axis);
        prev: prev_pos [N, 37, 3], prev_msa_first_row [N, C_m], prev_pair [N, N, C_z] (float32)
        or, under DAP, this rank's row shard of the padded pair [N_pad/P, N_pad, C_z] (as returned
        in "pair_shard").

        Returns dict(single [N, C_s], pair [N, N, C_z], msa [S, N, C_m], msa_first_row [N, C_m]).
        Under DAP, pair is this rank's row shard [N_pad/P, N_pad, C_z] of the padded pair (the
        structure module and heads work on it; recycle it as prev_pair) and msa this rank's row
        shard [S_pad/P, N_pad, C_m] of the padded MSA (template rows included; msa_rows: the S to
        keep), gathered by the heads only; the first row is broadcast from rank 0.
        """
        c = self.cfg
        dt = rt.dtype
        sh = rt.shard
        target_feat = batch["target_feat"].to(dt)
        left, right = self.left_single(target_feat), self.right_single(target_feat)
        ri = batch["residue_index"].long()
        rp = self.pair_activiations

        def relpos(r0, r1):  # relative position one-hot @ W == row lookup of W
            offset = torch.clamp(ri[r0:r1, None] - ri[None, :] + c.max_relative_feature, 0,
                                 2 * c.max_relative_feature)
            return rp.weights.to(dt)[offset] + rp.bias.to(dt)

        z, mask_2d = embed_pair_shard(self, batch, prev, rt, left, right, relpos)
        n_pad = mask_2d.shape[0]
        rt = rt.with_masks(pair=mask_2d)

        if c.template.enabled:
            z = self.template_embedding(z, batch, mask_2d, rt, memo)

        def embed_extra(msa, has_del, del_val):
            feat = torch.cat([F.one_hot(msa.long(), 23).to(dt), has_del.to(dt)[..., None], del_val.to(dt)[..., None]],
                             dim=-1)
            return self.extra_msa_activations(feat)

        e, extra_mask = embed_extra_shard(
            sh, embed_extra, [batch[k] for k in ("extra_msa", "extra_has_deletion", "extra_deletion_value")],
            batch["extra_msa_mask"].to(dt), n_pad, rt.chunk("extra_row_att"))
        rt_e = rt.with_masks(msa=extra_mask)
        for block in self.extra_msa_stack[:rt.max_blocks]:
            e, z = block(e, z, extra_mask, mask_2d, rt_e)
        del e

        m = initial_msa(self, target_feat, batch["msa_feat"], prev, dt)
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

        m, msa_mask = shard_msa(sh, m, msa_mask, n_pad)
        rt = rt.with_masks(msa=msa_mask)
        for block in self.evoformer_iteration[:rt.max_blocks]:
            m, z = block(m, z, msa_mask, mask_2d, rt)
        return trunk_outputs(sh, m, z, batch["aatype"].shape[0], n_seq, self.single_activations)
