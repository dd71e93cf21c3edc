"""Structure module (AlphaFold 2.3 folding.py): invariant point attention, transition, backbone
update on quaternion affines, side-chain torsion resnet, frames -> atom14 -> atom37.

Backbone frames are kept as AlphaFold keeps them: a unit quaternion [N, 4] (w, x, y, z), its rotation
matrix [N, 3, 3] and a translation [N, 3] in internal units (Å / position_scale).

`cfg.multimer` switches to AlphaFold-Multimer's folding_multimer.py: frames are rotation matrices
composed with a quaternion-free update (`quat_rigid`: (1, x, y, z) normalised, R <- R @ dR,
t <- R dt + t), IPA projections without biases in per-head point layout, position_scale 20 from the
config, trajectory and side-chain frames as [.., 3, 4] [R | t] arrays, atom masks from aatype.
"""
from __future__ import annotations

import math
from typing import Dict

import torch
from torch import nn

from model import all_atom, dap
from model.config import Config, Runtime
from model.primitives import LayerNorm, Linear, chunked


def pre_compose(quat: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor, update: torch.Tensor):
    """AlphaFold's QuatAffine.pre_compose: apply the update (3 quaternion-vector + 3 translation
    components, in the current frame) before the current transform. Returns (quat, rot, trans) with
    the quaternion normalised and the rotation recomputed from it."""
    new_q = quat + all_atom.quat_multiply_by_vec(quat, update[..., :3])
    new_t = trans + torch.einsum("...ij,...j->...i", rot, update[..., 3:])
    new_q = new_q / torch.linalg.norm(new_q, dim=-1, keepdim=True)
    return new_q, all_atom.quat_to_rot(new_q, normalize=False), new_t


class LinearND(nn.Module):
    """haiku Linear with a multi-axis output: weights [in, *out], bias [*out] (multimer IPA)."""

    def __init__(self, num_input: int, out_shape, use_bias: bool = True):
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.weights = nn.Parameter(torch.empty(num_input, *self.out_shape))
        self.bias = nn.Parameter(torch.empty(*self.out_shape)) if use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(x, self.weights.reshape(self.weights.shape[0], -1)).reshape(*x.shape[:-1], *self.out_shape)
        return y if self.bias is None else y + self.bias


def quat_rigid_update(rot: torch.Tensor, trans: torch.Tensor, update: torch.Tensor):
    """AlphaFold-Multimer's backbone update (QuatRigid, then Rigid3Array composition rigid @ update):
    update [N, 6] = (x, y, z, dt); dR from the quaternion (1, x, y, z) normalised; returns
    (R @ dR, R dt + t)."""
    qx, qy, qz = update[..., 0], update[..., 1], update[..., 2]
    d_rot = all_atom.rot_from_quaternion(torch.ones_like(qx), qx, qy, qz, normalize=True)
    return all_atom.rot_mul_rot(rot, d_rot), all_atom.rot_vec_mul(rot, update[..., 3:]) + trans


def apply_to_point(rot, trans, p):
    """rot: [N, 3, 3]; trans: [N, 3]; p: [N, K, 3] local points -> global [N, K, 3]."""
    return torch.einsum("nij,nkj->nki", rot, p) + trans[:, None, :]


def invert_point(rot, trans, p):
    """Inverse of `apply_to_point`."""
    return torch.einsum("nji,nkj->nki", rot, p - trans[:, None, :])


class InvariantPointAttention(nn.Module):
    """Suppl. Alg. 22. Attention over residues from scalar, point (in each residue's frame) and pair
    terms; output combines scalar values, points mapped back to local frames and the pair values."""

    def __init__(self, cfg: Config, c_s: int, c_z: int):
        super().__init__()
        h, sq, sv, pq, pv = cfg.num_head, cfg.num_scalar_qk, cfg.num_scalar_v, cfg.num_point_qk, cfg.num_point_v
        self.h, self.sq, self.sv, self.pq, self.pv = h, sq, sv, pq, pv
        self.multimer = bool(cfg.get("multimer", False))
        if self.multimer:  # folding_multimer.InvariantPointAttention parameter layout
            self.q_scalar_projection = LinearND(c_s, (h, sq), use_bias=False)
            self.k_scalar_projection = LinearND(c_s, (h, sq), use_bias=False)
            self.v_scalar_projection = LinearND(c_s, (h, sv), use_bias=False)
            for name, count in (("q", pq), ("k", pq), ("v", pv)):
                proj = nn.Module()
                proj.point_projection = LinearND(c_s, (h, 3 * count))
                self.add_module(f"{name}_point_projection", proj)
        else:
            self.q_scalar = Linear(c_s, h * sq)
            self.kv_scalar = Linear(c_s, h * (sv + sq))
            self.q_point_local = Linear(c_s, h * 3 * pq)
            self.kv_point_local = Linear(c_s, h * 3 * (pq + pv))
        self.trainable_point_weights = nn.Parameter(torch.empty(h))
        self.attention_2d = Linear(c_z, h)
        self.output_projection = Linear(h * (sv + pv * 4 + c_z), cfg.num_channel)

    def forward(self, s, pair_rows, mask, rot, trans, rt: Runtime):
        """s: [N, C_s]; pair_rows(r0, r1) -> LayerNorm'd pair rows [r, N, C_z] (float32; formed per
        chunk so no normalised copy of the pair is kept); mask: [N]; rot [N, 3, 3], trans [N, 3].
        Returns [N, C]."""
        n = s.shape[0]
        h, sq, sv, pq, pv = self.h, self.sq, self.sv, self.pq, self.pv
        if self.multimer:
            q_scalar = self.q_scalar_projection(s)
            k_scalar, v_scalar = self.k_scalar_projection(s), self.v_scalar_projection(s)

            def mpoints(name, count):
                # [N, H, 3*count] split into x, y, z blocks of `count` per head.
                local = getattr(self, f"{name}_point_projection").point_projection(s)
                local = local.reshape(n, h, 3, count).permute(0, 1, 3, 2).reshape(n, h * count, 3)
                return apply_to_point(rot, trans, local).reshape(n, h, count, 3)

            q_point, k_point, v_point = mpoints("q", pq), mpoints("k", pq), mpoints("v", pv)
        else:
            q_scalar = self.q_scalar(s).reshape(n, h, sq)
            k_scalar, v_scalar = self.kv_scalar(s).reshape(n, h, sv + sq).split([sq, sv], dim=-1)

            def points(lin, count):
                # AlphaFold splits the projection into x, y, z blocks of h*count each.
                local = lin(s).reshape(n, 3, h * count).transpose(1, 2)
                return apply_to_point(rot, trans, local).reshape(n, h, count, 3)

            q_point = points(self.q_point_local, pq)
            k_point, v_point = points(self.kv_point_local, pq + pv).split([pq, pv], dim=2)

        scalar_weights = math.sqrt(1.0 / (3 * max(sq, 1)))
        point_weights = math.sqrt(1.0 / (3 * max(pq, 1) * 9.0 / 2))
        point_weights = point_weights * torch.nn.functional.softplus(self.trainable_point_weights)  # [H]
        att2d_weights = math.sqrt(1.0 / 3)

        q = (scalar_weights * q_scalar).permute(1, 0, 2)      # [H, N, sq]
        k = k_scalar.permute(1, 0, 2)                          # [H, N, sq]
        v = v_scalar.permute(1, 0, 2)                          # [H, N, sv]
        qp = q_point.permute(1, 0, 2, 3)                       # [H, N, pq, 3]
        kp = k_point.permute(1, 0, 2, 3)
        vp = v_point.permute(1, 0, 2, 3)                       # [H, N, pv, 3]
        mask = mask.float()
        # Squared point distances summed over the points, sum_p |q_ip - k_jp|^2 = |q_i|^2 + |k_j|^2
        # - 2 q_i . k_j, as one [H, n, 3 pq] x [H, 3 pq, N] product instead of an [H, n, N, pq, 3]
        # difference tensor (12x the logits' size, about half of IPA's GPU time at N = 1,024). In
        # float64, so the expansion's cancellation (coordinates far from the origin) costs nothing
        # measurable, and so TF32 never applies; the product is tiny (3 pq = 12 deep).
        kp64 = kp.reshape(h, n, pq * 3).double()                             # [H, N, 3 pq]
        kk = (kp64 ** 2).sum(-1)                                             # [H, N]

        def rows(qc, qpc, r, mask_c):  # query rows i of this chunk; r: [2] row range
            z_c = pair_rows(int(r[0]), int(r[-1]) + 1)
            qp64 = qpc.reshape(h, -1, pq * 3).double()                       # [H, n, 3 pq]
            d2 = torch.baddbmm((qp64 ** 2).sum(-1)[:, :, None] + kk[:, None, :], qp64, kp64.transpose(1, 2),
                               alpha=-2.0)                                   # [H, n, N]
            logits = torch.matmul(qc, k.transpose(-1, -2))
            logits = logits - (0.5 * point_weights.double()[:, None, None] * d2).to(logits.dtype)
            logits = logits + att2d_weights * self.attention_2d(z_c).permute(2, 0, 1)
            logits = logits - 1e5 * (1.0 - mask_c[None, :, None] * mask[None, None, :])
            attn = torch.softmax(logits, dim=-1)                            # [H, n, N]
            res_scalar = torch.matmul(attn, v)                               # [H, n, sv]
            res_point = torch.einsum("hij,hjpc->hipc", attn, vp)            # [H, n, pv, 3]
            res_2d = torch.einsum("hij,ijc->ihc", attn, z_c)                 # [n, H, C_z]
            return torch.cat([res_scalar.permute(1, 0, 2).reshape(-1, h * sv),
                              res_point.permute(1, 0, 2, 3).reshape(-1, h * pv, 3).reshape(-1, h * pv * 3),
                              res_2d.reshape(res_2d.shape[0], -1)], dim=-1)

        # DAP: each rank attends from the query rows of its own pair rows (the pair stays a row
        # shard); the per-row results [N/P, H*(sv + 3 pv + C_z)] are all-gathered (small).
        lo, hi = dap.local_range(rt.shard, dap.padded(rt.shard, n))
        mine = slice(min(lo, n), min(hi, n))
        width = h * (sv + 3 * pv + self.attention_2d.weights.shape[0])
        res = chunked(lambda a, b, c, d: rows(a.transpose(0, 1), b.transpose(0, 1), c, d),
                      [q.transpose(0, 1)[mine], qp.transpose(0, 1)[mine], torch.arange(n)[mine], mask[mine]],
                      rt.chunk("ipa"), dim=0) if mine.stop > mine.start else q.new_zeros(0, width)
        res = dap.gather(rt.shard, dap.pad(res, (hi - lo,)), 0)[:n]
        res_scalar = res[:, : h * sv]
        res_point = res[:, h * sv: h * sv + h * pv * 3].reshape(n, h * pv, 3)
        res_2d = res[:, h * sv + h * pv * 3:]
        local = invert_point(rot, trans, res_point)                         # [N, H*pv, 3]
        if self.multimer:  # Vec3Array.norm(1e-8): clipped, not offset
            norm = torch.sqrt(torch.clamp((local ** 2).sum(-1), min=1e-16))
        else:
            norm = torch.sqrt(1e-8 + (local ** 2).sum(-1))
        feats = torch.cat([res_scalar, local[..., 0], local[..., 1], local[..., 2], norm, res_2d], dim=-1)
        return self.output_projection(feats)


class MultiRigidSidechain(nn.Module):
    """Torsion angles from the single representation, then all-atom frames and atom14 positions."""

    def __init__(self, cfg: Config, c_s: int):
        super().__init__()
        c = cfg.num_channel
        self.input_projection = Linear(c_s, c)
        self.input_projection_1 = Linear(c_s, c)
        self.num_block = cfg.num_residual_block
        for i in range(self.num_block):
            sfx = "" if i == 0 else f"_{i}"
            self.add_module(f"resblock1{sfx}", Linear(c, c))
            self.add_module(f"resblock2{sfx}", Linear(c, c))
        self.unnormalized_angles = Linear(c, 14)

    def forward(self, act, initial_act, aatype, rot, trans_angstrom):
        """act, initial_act: [N, C_s]; rot [N, 3, 3]; trans_angstrom [N, 3] (Å)."""
        a = self.input_projection(torch.relu(act)) + self.input_projection_1(torch.relu(initial_act))
        for i in range(self.num_block):
            sfx = "" if i == 0 else f"_{i}"
            old = a
            a = getattr(self, f"resblock1{sfx}")(torch.relu(a))
            a = getattr(self, f"resblock2{sfx}")(torch.relu(a))
            a = a + old
        n = a.shape[0]
        unnorm = self.unnormalized_angles(torch.relu(a)).reshape(n, 7, 2)
        angles = unnorm / torch.sqrt(torch.clamp((unnorm ** 2).sum(-1, keepdim=True), min=1e-12))
        frot, ftrans = all_atom.torsion_angles_to_frames(aatype, rot, trans_angstrom, angles)
        atom_pos = all_atom.frames_to_atom14(aatype, frot, ftrans)
        return {"angles_sin_cos": angles, "unnormalized_angles_sin_cos": unnorm, "atom_pos": atom_pos,
                "frames": torch.cat([frot.reshape(*frot.shape[:-2], 9), ftrans], dim=-1)}


class FoldIteration(nn.Module):
    """One structure-module layer (weights shared by all 8): IPA, transition, backbone update, side chains."""

    def __init__(self, cfg: Config, c_s: int, c_z: int):
        super().__init__()
        self.cfg = cfg
        self.invariant_point_attention = InvariantPointAttention(cfg, c_s, c_z)
        self.attention_layer_norm = LayerNorm(cfg.num_channel)
        for i in range(cfg.num_layer_in_transition):
            self.add_module("transition" if i == 0 else f"transition_{i}", Linear(cfg.num_channel, cfg.num_channel))
        self.transition_layer_norm = LayerNorm(cfg.num_channel)
        if cfg.get("multimer", False):
            self.quat_rigid = nn.Module()
            self.quat_rigid.rigid = Linear(cfg.num_channel, 6)
        else:
            self.affine_update = Linear(cfg.num_channel, 6)
        self.rigid_sidechain = MultiRigidSidechain(cfg.sidechain, cfg.num_channel)


class StructureModule(nn.Module):
    """Suppl. Alg. 20. Outputs the trajectory of backbone frames, side chains and final atoms."""

    def __init__(self, cfg: Config, c_s: int, c_z: int):
        super().__init__()
        self.cfg = cfg
        self.single_layer_norm = LayerNorm(c_s)
        self.initial_projection = Linear(c_s, cfg.num_channel)
        self.pair_layer_norm = LayerNorm(c_z)
        self.fold_iteration = FoldIteration(cfg, cfg.num_channel, c_z)

    def forward(self, single, pair, batch: Dict[str, torch.Tensor], rt: Runtime) -> Dict[str, torch.Tensor]:
        """single: [N, C_s]; pair: [N, N, C_z] (any float dtype; DAP: this rank's row shard of the
        padded pair [N_pad/P, N_pad, C_z]) -> dict of structure outputs."""
        cfg = self.cfg
        fi = self.fold_iteration
        aatype = batch["aatype"].long()
        n = single.shape[0]
        seq_mask = batch["seq_mask"].float()
        initial_act = self.single_layer_norm(single)
        act = self.initial_projection(initial_act)

        lo = dap.local_range(rt.shard, dap.padded(rt.shard, n))[0]  # DAP: first row of the shard

        def pair_rows(r0, r1):
            return self.pair_layer_norm(pair[r0 - lo:r1 - lo, :n].float(), rt.backend)
        multimer = bool(cfg.get("multimer", False))
        quat = torch.zeros(n, 4, dtype=act.dtype, device=act.device)
        quat[:, 0] = 1.0
        rot = all_atom.quat_to_rot(quat, normalize=False)
        trans = torch.zeros(n, 3, dtype=act.dtype, device=act.device)
        traj, sc_out = [], []
        for _ in range(cfg.num_layer):
            act = act + fi.invariant_point_attention(act, pair_rows, seq_mask, rot, trans, rt)
            act = fi.attention_layer_norm(act)
            inp = act
            for i in range(cfg.num_layer_in_transition):
                act = getattr(fi, "transition" if i == 0 else f"transition_{i}")(act)
                if i < cfg.num_layer_in_transition - 1:
                    act = torch.relu(act)
            act = fi.transition_layer_norm(act + inp)
            if multimer:
                rot, trans = quat_rigid_update(rot, trans, fi.quat_rigid.rigid(act))
            else:
                quat, rot, trans = pre_compose(quat, rot, trans, fi.affine_update(act))
            sc_out.append(fi.rigid_sidechain(act, initial_act, aatype, rot, trans * cfg.position_scale))
            if multimer:
                traj.append(torch.cat([rot, (trans * cfg.position_scale)[..., None]], dim=-1))
            else:
                traj.append(torch.cat([quat, trans * cfg.position_scale], dim=-1))
        out = {"traj": torch.stack(traj), "single": act}
        for k in sc_out[0]:
            out["sidechains_" + k] = torch.stack([s[k] for s in sc_out])
        atom14 = out["sidechains_atom_pos"][-1]
        out["final_atom14_positions"] = atom14
        if multimer:  # masks from aatype and seq_mask (folding_multimer.StructureModule)
            mask14 = all_atom.atom14_mask(aatype) * seq_mask[:, None]
            mask37 = all_atom.atom37_mask(aatype) * seq_mask[:, None]
            f = out["sidechains_frames"]  # [L, N, 8, 12] -> [L, N, 8, 3, 4]
            out["sidechains_frames"] = torch.cat([f[..., :9].unflatten(-1, (3, 3)), f[..., 9:, None]], dim=-1)
        else:
            mask14, mask37 = batch["atom14_atom_exists"].float(), batch["atom37_atom_exists"].float()
        out["final_atom14_mask"] = mask14
        atom37 = all_atom.atom14_to_atom37(atom14, aatype)
        out["final_atom_positions"] = atom37 * mask37[..., None]
        out["final_atom_mask"] = mask37
        out["final_rigids" if multimer else "final_affines"] = out["traj"][-1]
        return out
