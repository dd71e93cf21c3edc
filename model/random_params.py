"""Randomly initialised AlphaFold parameters of a preset's full shapes, for smoke runs and
benchmarks only: the structures they produce are meaningless.

Scales follow haiku's initialisers closely enough that activations stay in a realistic range through
48 blocks (fan-in scaled weights, LayerNorm scale 1 / offset 0, gate biases 1, zero-init final layers
replaced by small weights so every path does work).
"""
from __future__ import annotations

import math
from typing import Optional

import torch

import configs
from model.alphafold import AlphaFold
from model.config import Config


def init_random_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fill every parameter of `model` in place with seeded random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "scale":
                v = torch.ones(p.shape)
            elif leaf in ("offset", "output_b"):
                v = torch.zeros(p.shape)
            elif leaf in ("bias", "gating_b"):
                v = torch.ones(p.shape) if ("gate" in name or "gating" in name) else torch.zeros(p.shape)
            elif leaf == "trainable_point_weights":
                v = torch.full(p.shape, math.log(math.e - 1.0))
            else:
                fan_in = p.shape[0] if p.dim() > 1 else 1
                if leaf == "output_w" and p.dim() == 3 and "outer_product_mean" not in name:
                    fan_in = p.shape[0] * p.shape[1]  # [heads, dim, out]
                elif leaf == "output_w":
                    fan_in = p.shape[0] * p.shape[1]
                std = 1.0 / math.sqrt(max(fan_in, 1))
                if any(s in name for s in ("output_projection", "transition2", "gating_w", "affine_update", "quat_rigid",
                                          "resblock2", "logits", "output_w")):
                    std *= 0.1  # AlphaFold zero-initialises these final layers; keep them small
                v = torch.randn(p.shape, generator=g) * std
            p.copy_(v.to(p.dtype))
    return model


def random_model(preset: str, seed: int = 0, device="cpu", num_evoformer: Optional[int] = None,
                 num_extra: Optional[int] = None) -> AlphaFold:
    """A full-size (or reduced-depth) model of `preset` with random parameters."""
    cfg = Config(configs.load_preset(preset))
    model = AlphaFold(cfg, num_evoformer, num_extra)
    init_random_(model, seed)
    return model.to(device).eval()


def random_features(preset: str, n_res: int, n_seq: int, n_extra: int, n_templates: int = 4, seed: int = 0):
    """A random but well-formed processed feature batch (fixture layout) of the given sizes."""
    import numpy as np

    from model import residue_constants as rc

    rng = np.random.default_rng(seed)
    aatype = rng.integers(0, 20, n_res).astype(np.int32)
    msa = rng.integers(0, 22, (n_seq, n_res))
    msa[0] = aatype
    msa_feat = np.zeros((n_seq, n_res, 49), np.float32)
    msa_feat[np.arange(n_seq)[:, None], np.arange(n_res)[None, :], msa] = 1
    msa_feat[..., 25:48] = rng.dirichlet(np.ones(23), (n_seq, n_res))
    target_feat = np.zeros((n_res, 22), np.float32)
    target_feat[np.arange(n_res), aatype + 1] = 1
    batch = {
        "aatype": aatype, "residue_index": np.arange(n_res, dtype=np.int32), "seq_mask": np.ones(n_res, np.float32),
        "target_feat": target_feat, "msa_feat": msa_feat, "msa_mask": np.ones((n_seq, n_res), np.float32),
        "extra_msa": rng.integers(0, 22, (n_extra, n_res)).astype(np.int32),
        "extra_msa_mask": np.ones((n_extra, n_res), np.float32),
        "extra_has_deletion": (rng.random((n_extra, n_res)) < 0.05).astype(np.float32),
        "extra_deletion_value": np.zeros((n_extra, n_res), np.float32),
        "atom14_atom_exists": rc.restype_atom14_mask[aatype].astype(np.float32),
        "atom37_atom_exists": rc.restype_atom37_mask[aatype].astype(np.float32),
    }
    if configs.load_preset(preset)["embeddings_and_evoformer"]["template"]["enabled"]:
        pos = np.cumsum(rng.normal(0, 2.2, (n_templates, n_res, 1, 3)), axis=1) + rng.normal(0, 1.0, (n_templates, n_res, 37, 3))
        mask = np.tile(rc.restype_atom37_mask[aatype][None], (n_templates, 1, 1)).astype(np.float32)
        batch.update({
            "template_aatype": np.tile(aatype[None], (n_templates, 1)),
            "template_all_atom_positions": (pos * mask[..., None]).astype(np.float32),
            "template_all_atom_masks": mask,
            "template_mask": np.ones(n_templates, np.float32),
            "template_pseudo_beta": pos[:, :, 3].astype(np.float32),
            "template_pseudo_beta_mask": np.ones((n_templates, n_res), np.float32),
        })
    return batch


def random_multimer_features(chain_lens=(40, 30), n_seq: int = 64, n_templates: int = 4, homomer: bool = False,
                             seed: int = 0):
    """A random but well-formed raw AlphaFold-Multimer feature batch (what the multimer network
    consumes; it samples its cluster / extra MSA rows itself): chains of `chain_lens` residues,
    `n_seq` MSA rows (row 0 the query), `n_templates` templates (AlphaFold pads to 4)."""
    import numpy as np

    from model import residue_constants as rc

    rng = np.random.default_rng(seed)
    lens = list(chain_lens)
    if homomer:
        seq = rng.integers(0, 20, lens[0])
        seqs = [seq.copy() for _ in lens]
        entity, sym = [1] * len(lens), list(range(1, len(lens) + 1))
    else:
        seqs = [rng.integers(0, 20, n) for n in lens]
        entity, sym = list(range(1, len(lens) + 1)), [1] * len(lens)
    aatype = np.concatenate(seqs).astype(np.int32)
    n_res = len(aatype)
    msa = np.where(rng.random((n_seq, n_res)) < 0.3, rng.integers(0, 22, (n_seq, n_res)), aatype[None])
    msa[0] = aatype
    pos = np.cumsum(rng.normal(0, 2.2, (n_templates, n_res, 1, 3)), axis=1) + rng.normal(0, 1.0, (n_templates, n_res, 37, 3))
    mask = np.tile(rc.restype_atom37_mask[aatype][None], (n_templates, 1, 1)).astype(np.float32)
    return {
        "aatype": aatype,
        "residue_index": np.concatenate([np.arange(n) for n in lens]).astype(np.int32),
        "asym_id": np.concatenate([np.full(n, i + 1) for i, n in enumerate(lens)]).astype(np.int32),
        "entity_id": np.concatenate([np.full(n, e) for e, n in zip(entity, lens)]).astype(np.int32),
        "sym_id": np.concatenate([np.full(n, s) for s, n in zip(sym, lens)]).astype(np.int32),
        "seq_mask": np.ones(n_res, np.float32),
        "msa": msa.astype(np.int32),
        "deletion_matrix": (rng.random((n_seq, n_res)) < 0.05).astype(np.float32) * rng.integers(1, 5, (n_seq, n_res)),
        "msa_mask": np.ones((n_seq, n_res), np.float32),
        "cluster_bias_mask": np.eye(n_seq, dtype=np.float32)[0],
        "template_aatype": np.tile(aatype[None], (n_templates, 1)),
        "template_all_atom_positions": (pos * mask[..., None]).astype(np.float32),
        "template_all_atom_mask": mask,
    }
