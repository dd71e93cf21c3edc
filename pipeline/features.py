"""AlphaFold features in numpy (no TensorFlow).

Two stages, as in AlphaFold 2.3:

1. `make_raw_features` -> the raw feature dict AlphaFold pickles as `features.pkl`
   (`data/pipeline.py`: sequence features, `make_msa_features`, template features).
2. `process_features` -> the processed batch the monomer network takes, AlphaFold's eval-mode
   `model/tf/input_pipeline.py` re-done in numpy: MSA cluster sampling, BERT masking, nearest-
   neighbour cluster profiles, extra-MSA cropping, `msa_feat` / `target_feat`, atom14/atom37 tables,
   template pseudo-beta, fixed-size padding. Keys and shapes match the AlphaFold fixtures'
   `features.npz`; with `ensemble_axis=True` a leading recycle axis of num_recycle+1 independent
   samples is added (AlphaFold's `resample_msa_in_recycling`).

Random draws use `numpy.random.Generator(PCG64(seed))`: deterministic for a seed, not TF's streams.
Where AlphaFold is deterministic (sequence/MSA features, profiles given a sample, tables) the
arrays are AlphaFold's.

Shapes: N residues, S MSA rows, M cluster rows, E extra rows, T templates.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from model import residue_constants as rc
from pipeline.parsers import Msa, species_identifier

TEMPLATE_FEATURES = {
    "template_aatype": np.float32,
    "template_all_atom_masks": np.float32,
    "template_all_atom_positions": np.float32,
    "template_domain_names": object,
    "template_sequence": object,
    "template_sum_probs": np.float32,
}

# --- raw features (features.pkl) ---------------------------------------------------------------


def make_sequence_features(sequence: str, description: str, num_res: int | None = None) -> dict:
    """AlphaFold's `make_sequence_features`: aatype one-hot (N, 21) int32 (AF order + X),
    between_segment_residues (N,), domain_name (1,) bytes, residue_index (N,) 0..N-1,
    seq_length (N,) = N repeated, sequence (1,) bytes."""
    num_res = len(sequence) if num_res is None else num_res
    return {
        "aatype": rc.sequence_to_onehot(sequence=sequence, mapping=rc.restype_order_with_x,
                                        map_unknown_to_x=True),
        "between_segment_residues": np.zeros((num_res,), dtype=np.int32),
        "domain_name": np.array([description.encode("utf-8")], dtype=object),
        "residue_index": np.arange(num_res, dtype=np.int32),
        "seq_length": np.full((num_res,), num_res, dtype=np.int32),
        "sequence": np.array([sequence.encode("utf-8")], dtype=object),
    }


def make_msa_features(msas: Sequence[Msa]) -> dict:
    """AlphaFold's `make_msa_features`: concatenate MSAs in the given order (uniref90, bfd, mgnify),
    dropping any aligned row already seen (exact string match, first occurrence wins).

    Returns msa (S, N) int32 in HHblits encoding (0-21), deletion_matrix_int (S, N) int32,
    num_alignments (N,) = S, msa_species_identifiers (S,) bytes."""
    if not msas:
        raise ValueError("At least one MSA must be provided.")
    rows: list[str] = []
    deletions: list[Sequence[int]] = []
    species: list[bytes] = []
    seen: set[str] = set()
    for i, msa in enumerate(msas):
        if not msa:
            raise ValueError(f"MSA {i} must contain at least one sequence.")
        for seq, dels, desc in zip(msa.sequences, msa.deletion_matrix, msa.descriptions):
            if seq in seen:
                continue
            seen.add(seq)
            rows.append(seq)
            deletions.append(dels)
            species.append(species_identifier(desc).encode("utf-8"))
    num_res = len(msas[0].sequences[0])
    if any(len(r) != num_res for r in rows):
        raise ValueError("MSA rows differ in length from the query")
    # HHBLITS_AA_TO_ID through a byte lookup table (a Python loop is seconds for 10^4 x 10^3)
    lut = np.full(256, -1, dtype=np.int32)
    for aa, idx in rc.HHBLITS_AA_TO_ID.items():
        lut[ord(aa)] = idx
    codes = lut[np.frombuffer("".join(rows).encode("latin-1"), dtype=np.uint8)].reshape(len(rows), num_res)
    if (codes < 0).any():
        r, c = np.argwhere(codes < 0)[0]
        raise KeyError(f"MSA row {r} column {c}: {rows[r][c]!r} is not an HHblits residue code")
    return {
        "deletion_matrix_int": np.array(deletions, dtype=np.int32).reshape(len(rows), num_res),
        "msa": codes,
        "num_alignments": np.full((num_res,), len(rows), dtype=np.int32),
        "msa_species_identifiers": np.array(species, dtype=object),
    }


def empty_template_features(num_res: int) -> dict:
    """What AlphaFold's HHsearch featurizer returns with no usable hit: every template key an
    empty array of its dtype (shape (0,))."""
    return {k: np.array([], dtype=dt) for k, dt in TEMPLATE_FEATURES.items()}


def make_raw_features(sequence: str, description: str, msas: Sequence[Msa],
                      template_features: Mapping[str, np.ndarray] | None = None) -> dict:
    """The raw feature dict AlphaFold writes to features.pkl for one chain (monomer layout).
    `msas` in AlphaFold's order: uniref90, bfd (or small_bfd), mgnify. Single-sequence mode: pass
    `[Msa([sequence], [[0]*N], ['query'])]`."""
    num_res = len(sequence)
    feats = make_sequence_features(sequence, description, num_res)
    feats.update(make_msa_features(msas))
    feats.update(template_features if template_features is not None else empty_template_features(num_res))
    return feats


def single_sequence_msa(sequence: str) -> Msa:
    """The one-row MSA used with `--msa-mode single-sequence`."""
    return Msa([sequence], [[0] * len(sequence)], ["query"])


# --- processed batch (AlphaFold eval input pipeline) ---------------------------------------------


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """The data-config values of an AlphaFold monomer preset that shape the processed batch."""
    max_msa_clusters: int = 512
    max_extra_msa: int = 5120
    max_templates: int = 4
    use_templates: bool = True
    reduce_msa_clusters_by_max_templates: bool = True
    num_recycle: int = 3
    replace_fraction: float = 0.15  # BERT masking (eval: masked_msa_replace_fraction)
    uniform_prob: float = 0.1
    profile_prob: float = 0.1
    same_prob: float = 0.1

    @property
    def num_clusters(self) -> int:
        """Cluster rows M: 508 for template presets (512 - max_templates), else 512."""
        if self.use_templates and self.reduce_msa_clusters_by_max_templates:
            return self.max_msa_clusters - self.max_templates
        return self.max_msa_clusters


def preset_config(model_name: str, **overrides) -> FeatureConfig:
    """FeatureConfig of an AlphaFold monomer model (`model_1`..`model_5`, `_ptm` variants):
    models 1-2 use templates (508 clusters); extra MSA 5120 for models 1, 3, 4 and 1024 for 2, 5."""
    base = model_name.replace("_ptm", "")
    if base not in {f"model_{i}" for i in range(1, 6)}:
        raise ValueError(f"unknown monomer model preset {model_name!r}")
    k = int(base[-1])
    cfg = FeatureConfig(max_extra_msa=5120 if k in (1, 3, 4) else 1024,
                        use_templates=k in (1, 2), reduce_msa_clusters_by_max_templates=k in (1, 2))
    return dataclasses.replace(cfg, **overrides)


def atom_tables(aatype: np.ndarray) -> dict:
    """AlphaFold's `make_atom14_masks` for aatype (N,) in AF order (20 = X/UNK): atom14_atom_exists
    (N,14) f32, residx_atom14_to_atom37 (N,14) i32, residx_atom37_to_atom14 (N,37) i32,
    atom37_atom_exists (N,37) f32."""
    a14_to_37 = np.asarray(rc.restype_atom14_to_atom37, dtype=np.int32)
    a37_to_14 = np.asarray(rc.restype_atom37_to_atom14, dtype=np.int32)
    a14_mask = np.asarray(rc.restype_atom14_mask, dtype=np.float32)
    a37_mask = np.asarray(rc.restype_atom37_mask, dtype=np.float32)
    return {
        "atom14_atom_exists": a14_mask[aatype],
        "residx_atom14_to_atom37": a14_to_37[aatype],
        "residx_atom37_to_atom14": a37_to_14[aatype],
        "atom37_atom_exists": a37_mask[aatype],
    }


def pseudo_beta(aatype: np.ndarray, positions: np.ndarray, masks: np.ndarray):
    """CB position (CA for glycine) and its mask: aatype (..., N), positions (..., N, 37, 3),
    masks (..., N, 37) -> ((..., N, 3) f32, (..., N) f32)."""
    is_gly = aatype == rc.restype_order["G"]
    ca, cb = rc.atom_order["CA"], rc.atom_order["CB"]
    pb = np.where(is_gly[..., None], positions[..., ca, :], positions[..., cb, :])
    pb_mask = np.where(is_gly, masks[..., ca], masks[..., cb])
    return pb.astype(np.float32), pb_mask.astype(np.float32)


def _deletion_value(d: np.ndarray) -> np.ndarray:
    """atan(d/3)*2/pi, AlphaFold's squashing of deletion counts into [0, 1)."""
    return (np.arctan(d.astype(np.float32) / np.float32(3.0)) * np.float32(2.0 / np.pi)).astype(np.float32)


def nearest_neighbor_clusters(msa: np.ndarray, msa_mask: np.ndarray, extra_msa: np.ndarray,
                              extra_mask: np.ndarray, gap_agreement_weight: float = 0.0,
                              chunk: int = 1024) -> np.ndarray:
    """Assign each extra row (E, N) to the cluster row (M, N) it agrees with at most positions
    (AlphaFold's `nearest_neighbor_clusters`: amino-acid agreement weight 1, gap agreement
    `gap_agreement_weight`, the BERT mask token 22 never agrees; ties -> lowest index).
    Returns (E,) int32. Counts are exact integers in float32, so the argmax equals AlphaFold's."""
    m, n = msa.shape
    # classes with zero weight (the BERT mask token; gaps unless weighted) never add agreement,
    # so their one-hot columns are left out of the matmul
    k = 22 if gap_agreement_weight else 21
    weights = np.concatenate([np.ones(21, np.float32), [gap_agreement_weight]]).astype(np.float32)[:k]
    eye = np.eye(23, dtype=np.float32)[:, :k]
    sample = (eye[msa] * msa_mask[..., None] * weights).reshape(m, n * k)
    out = np.empty(extra_msa.shape[0], dtype=np.int32)
    for s in range(0, extra_msa.shape[0], chunk):
        e = extra_msa[s:s + chunk]
        one_hot = (eye[e] * extra_mask[s:s + chunk, :, None]).reshape(len(e), n * k)
        out[s:s + chunk] = np.argmax(one_hot @ sample.T, axis=1)
    return out


def summarize_clusters(msa, msa_mask, deletion_matrix, extra_msa, extra_mask, extra_deletion, assignment):
    """AlphaFold's `summarize_clusters`: per cluster row, the 23-class profile (M, N, 23) and the
    mean deletion count (M, N) over the row itself and its assigned extra rows.

    Sums go through `np.bincount` (integer counts, exact in any float type), then the same float32
    additions and division as AlphaFold's TF code."""
    m, n = msa.shape
    extra_mask = extra_mask.astype(np.float32)
    cell = (np.asarray(assignment, np.int64)[:, None] * n + np.arange(n)[None, :]).ravel()  # (E*N,)
    count = np.bincount(cell, weights=extra_mask.ravel(), minlength=m * n).reshape(m, n)
    aa_sum = np.bincount(cell * 23 + np.asarray(extra_msa, np.int64).ravel(), weights=extra_mask.ravel(),
                         minlength=m * n * 23).reshape(m, n, 23)
    del_sum = np.bincount(cell, weights=(extra_mask * extra_deletion.astype(np.float32)).ravel(),
                          minlength=m * n).reshape(m, n)
    mask_counts = (np.float32(1e-6) + msa_mask.astype(np.float32)) + count.astype(np.float32)
    msa_sum = aa_sum.astype(np.float32) + np.eye(23, dtype=np.float32)[msa]
    del_total = del_sum.astype(np.float32) + deletion_matrix.astype(np.float32)
    return (msa_sum / mask_counts[..., None]).astype(np.float32), (del_total / mask_counts).astype(np.float32)


def make_msa_feat(msa, deletion_matrix, cluster_profile, cluster_deletion_mean) -> np.ndarray:
    """msa_feat (M, N, 49): one-hot(msa, 23), has_deletion, atan(d/3)*2/pi, cluster_profile (23),
    atan(mean d/3)*2/pi."""
    d = deletion_matrix.astype(np.float32)
    return np.concatenate([
        np.eye(23, dtype=np.float32)[msa],
        np.clip(d, 0.0, 1.0)[..., None],
        _deletion_value(d)[..., None],
        cluster_profile,
        _deletion_value(cluster_deletion_mean)[..., None],
    ], axis=-1).astype(np.float32)


def make_target_feat(aatype: np.ndarray, between_segment_residues: np.ndarray | None = None) -> np.ndarray:
    """target_feat (N, 22): has_break, then one-hot(aatype, 21)."""
    n = aatype.shape[0]
    brk = np.zeros(n, np.float32) if between_segment_residues is None else \
        np.clip(between_segment_residues.astype(np.float32), 0, 1)
    return np.concatenate([brk[:, None], np.eye(21, dtype=np.float32)[aatype]], axis=-1)


def bert_mask_msa(rng: np.random.Generator, msa: np.ndarray, profile: np.ndarray, cfg: FeatureConfig):
    """AlphaFold's `make_masked_msa`: each position is chosen with probability `replace_fraction`;
    a chosen one becomes a uniform amino acid (p 0.1), a draw from the HHblits profile (0.1), itself
    (0.1) or the mask token 22 (0.7). Returns (masked msa (M,N) i32, bert_mask (M,N) f32)."""
    random_aa = np.array([0.05] * 20 + [0.0, 0.0], dtype=np.float32)
    probs = (cfg.uniform_prob * random_aa + cfg.profile_prob * profile[None]
             + cfg.same_prob * np.eye(22, dtype=np.float32)[msa])
    mask_prob = 1.0 - cfg.profile_prob - cfg.same_prob - cfg.uniform_prob
    probs = np.concatenate([probs, np.full(msa.shape + (1,), mask_prob, np.float32)], axis=-1)
    cdf = np.cumsum(probs, axis=-1)
    u = rng.random(msa.shape + (1,), dtype=np.float32) * cdf[..., -1:]
    sampled = np.minimum((u >= cdf).sum(-1), 22).astype(np.int32)
    chosen = rng.random(msa.shape) < cfg.replace_fraction
    return np.where(chosen, sampled, msa).astype(np.int32), chosen.astype(np.float32)


def _pad(x: np.ndarray, size: int, axis: int = 0) -> np.ndarray:
    if x.shape[axis] >= size:
        return np.take(x, np.arange(size), axis=axis)
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return np.pad(x, widths)


def _nonensembled(raw: Mapping[str, np.ndarray], cfg: FeatureConfig) -> dict:
    """Per-chain work done once: restype remap, masks, HHblits profile, templates, atom tables."""
    aatype = np.asarray(raw["aatype"])
    aatype = aatype.argmax(-1).astype(np.int32) if aatype.ndim == 2 else aatype.astype(np.int32)
    n = aatype.shape[0]
    hh_to_af = np.asarray(rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE, dtype=np.int32)
    msa = hh_to_af[np.asarray(raw["msa"], dtype=np.int32)]
    deletion = np.asarray(raw.get("deletion_matrix_int", raw.get("deletion_matrix")), dtype=np.float32)
    f = {
        "aatype": aatype,
        "residue_index": np.asarray(raw["residue_index"], dtype=np.int32),
        "seq_length": np.asarray(n, dtype=np.int32),
        "seq_mask": np.ones(n, np.float32),
        "between_segment_residues": np.asarray(raw.get("between_segment_residues", np.zeros(n)), np.int32),
        "msa": msa,
        "deletion_matrix": deletion,
        "msa_mask": np.ones(msa.shape, np.float32),
        "msa_row_mask": np.ones(msa.shape[0], np.float32),
        # profile over all rows before sampling, used by BERT masking
        "hhblits_profile": np.eye(22, dtype=np.float32)[msa].mean(0),
    }
    f.update(atom_tables(aatype))
    if cfg.use_templates:
        f.update(_template_batch(raw, n, cfg.max_templates))
    return f


def _template_batch(raw: Mapping[str, np.ndarray], n: int, max_templates: int) -> dict:
    """Template features padded/cropped to `max_templates`: aatype (T,N) i32 in AF order,
    positions (T,N,37,3), masks (T,N,37), template_mask (T,), pseudo-beta (T,N,3)/(T,N), sum_probs (T,1)."""
    t_aatype = np.asarray(raw.get("template_aatype", np.zeros((0,))))
    t = t_aatype.shape[0] if t_aatype.ndim == 3 else 0
    hh_to_af = np.asarray(rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE, dtype=np.int32)
    if t:
        aat = hh_to_af[t_aatype.argmax(-1)].astype(np.int32)
        pos = np.asarray(raw["template_all_atom_positions"], np.float32)
        masks = np.asarray(raw.get("template_all_atom_masks", raw.get("template_all_atom_mask")), np.float32)
        sum_probs = np.asarray(raw["template_sum_probs"], np.float32).reshape(t, 1)
    else:
        aat = np.zeros((0, n), np.int32)
        pos = np.zeros((0, n, 37, 3), np.float32)
        masks = np.zeros((0, n, 37), np.float32)
        sum_probs = np.zeros((0, 1), np.float32)
    tmask = np.ones(t, np.float32)
    pb, pb_mask = pseudo_beta(aat, pos, masks)
    out = {"template_aatype": aat, "template_all_atom_positions": pos, "template_all_atom_masks": masks,
           "template_mask": tmask, "template_pseudo_beta": pb, "template_pseudo_beta_mask": pb_mask,
           "template_sum_probs": sum_probs}
    return {k: _pad(v, max_templates) for k, v in out.items()}


def _sample(base: Mapping[str, np.ndarray], cfg: FeatureConfig, rng: np.random.Generator, pad: bool) -> dict:
    """One ensemble/recycle sample of AlphaFold's ensembled transforms."""
    msa, deletion = base["msa"], base["deletion_matrix"]
    msa_mask, msa_row_mask = base["msa_mask"], base["msa_row_mask"]
    num_seq = msa.shape[0]
    m_max = cfg.num_clusters
    # sample_msa: the query stays first, the other rows are shuffled; the first M are clusters
    order = np.concatenate([[0], 1 + rng.permutation(num_seq - 1)]).astype(np.int64)
    sel, rest = order[:min(m_max, num_seq)], order[min(m_max, num_seq):]
    cl_true = msa[sel]
    cl_del, cl_mask, cl_row = deletion[sel], msa_mask[sel], msa_row_mask[sel]
    ex_msa, ex_del, ex_mask, ex_row = msa[rest], deletion[rest], msa_mask[rest], msa_row_mask[rest]
    # BERT masking before clustering so the profiles do not leak the masked residues
    cl_msa, bert_mask = bert_mask_msa(rng, cl_true, base["hhblits_profile"], cfg)
    assign = nearest_neighbor_clusters(cl_msa, cl_mask, ex_msa, ex_mask)
    profile, del_mean = summarize_clusters(cl_msa, cl_mask, cl_del, ex_msa, ex_mask, ex_del, assign)
    # crop_extra_msa: a random subset (in random order) after the profiles are made
    keep = rng.permutation(len(rest))[:cfg.max_extra_msa]
    ex_msa, ex_del, ex_mask, ex_row = ex_msa[keep], ex_del[keep], ex_mask[keep], ex_row[keep]
    out = {
        "msa_feat": make_msa_feat(cl_msa, cl_del, profile, del_mean),
        "msa_mask": cl_mask, "msa_row_mask": cl_row, "bert_mask": bert_mask,
        "true_msa": cl_true.astype(np.int32),
        "extra_msa": ex_msa.astype(np.int32), "extra_msa_mask": ex_mask, "extra_msa_row_mask": ex_row,
        "extra_has_deletion": np.clip(ex_del, 0.0, 1.0).astype(np.float32),
        "extra_deletion_value": _deletion_value(ex_del),
    }
    if pad:  # make_fixed_size: zero rows up to the preset's sizes
        for k in ("msa_feat", "msa_mask", "msa_row_mask", "bert_mask", "true_msa"):
            out[k] = _pad(out[k], m_max)
        for k in ("extra_msa", "extra_msa_mask", "extra_msa_row_mask", "extra_has_deletion", "extra_deletion_value"):
            out[k] = _pad(out[k], cfg.max_extra_msa)
    return out


_ORDER = ["aatype", "residue_index", "seq_length", "seq_mask", "target_feat", "msa_feat", "msa_mask",
          "msa_row_mask", "bert_mask", "true_msa", "extra_msa", "extra_msa_mask", "extra_msa_row_mask",
          "extra_has_deletion", "extra_deletion_value", "atom14_atom_exists", "residx_atom14_to_atom37",
          "residx_atom37_to_atom14", "atom37_atom_exists", "template_aatype", "template_all_atom_positions",
          "template_all_atom_masks", "template_mask", "template_pseudo_beta", "template_pseudo_beta_mask",
          "template_sum_probs"]


def process_features(raw: Mapping[str, np.ndarray], config: FeatureConfig | str = "model_1_ptm",
                     seed: int = 0, *, ensemble_axis: bool = False, pad: bool = True) -> dict[str, np.ndarray]:
    """Raw feature dict -> the processed batch of an AlphaFold monomer model (eval mode).

    Without `ensemble_axis`: one sample, keys/shapes as the fixtures' features.npz, e.g.
    msa_feat (M, N, 49), extra_msa (X, N), target_feat (N, 22), template_* (4, N, ...).
    With `ensemble_axis`: every array gets a leading axis R = num_recycle + 1 of independent MSA
    samples (seq_length becomes (R,)), as AlphaFold's TF pipeline returns them.
    `pad=False` keeps the actual cluster/extra depth instead of padding to the preset's sizes.
    """
    cfg = preset_config(config) if isinstance(config, str) else config
    base = _nonensembled(raw, cfg)
    common = {k: base[k] for k in _ORDER if k in base}
    common["target_feat"] = make_target_feat(base["aatype"], base["between_segment_residues"])
    streams = np.random.SeedSequence(seed).spawn(cfg.num_recycle + 1 if ensemble_axis else 1)
    samples = [_sample(base, cfg, np.random.Generator(np.random.PCG64(s)), pad) for s in streams]
    if not ensemble_axis:
        merged = dict(common, **samples[0])
    else:
        merged = {k: np.stack([v] * len(samples)) for k, v in common.items()}
        for k in samples[0]:
            merged[k] = np.stack([s[k] for s in samples])
    return {k: merged[k] for k in _ORDER if k in merged}
