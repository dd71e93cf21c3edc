"""AlphaFold-Multimer feature processing in numpy: per-chain raw features -> the complex's features.

Re-implements AlphaFold 2.3's `data/pipeline_multimer.py` (chain ids, `convert_monomer_features`,
`add_assembly_features`, `pad_msa`), `data/feature_processing.py` (`pair_and_merge`, cropping,
`process_final`) and `data/msa_pairing.py` (species pairing, `reorder_paired_rows`, dedup of
unpaired rows, block-diagonal unpaired MSAs, `merge_chain_features`) without pandas/scipy.
The arrays equal AlphaFold's (tests/pipeline/test_multimer_pipeline.py runs against arrays made by
AlphaFold's own code). Ties in the species sort are broken exactly as pandas' `sort_values`
(numpy quicksort on the reversed array), so rows with equal similarity are paired as AlphaFold does
on the same numpy and CPU (numpy's SIMD quicksort orders ties CPU-dependently, in AlphaFold too).

Entry points:
  `multimer_features(raw_chains)`  -> AlphaFold's multimer `features.pkl` dict (its keys and dtypes)
  `network_batch(features)`        -> the batch the multimer network consumes: the keys and dtypes
                                      of the multimer reference fixtures' `features.npz`
  `chain_map(raw_chains, names)`   -> which FASTA record became which asym_id / chain id

Shapes: N = residues of the complex (chains concatenated, grouped by entity), N_c = residues of
one chain, S = merged MSA rows (>= 512, AlphaFold's `pad_msa`), P = paired rows, T = 4 templates
per chain (`MAX_TEMPLATES`), 37 atom types. Per-chain raw input (`pipeline.features.make_raw_features`,
AlphaFold's monomer features.pkl): aatype (N_c, 21) one-hot, msa (S_c, N_c) HHblits codes,
deletion_matrix_int (S_c, N_c), template_* (T_c, N_c, ...), sequence (1,) bytes; heteromer chains
also msa_all_seq (U_c, N_c), deletion_matrix_int_all_seq (U_c, N_c), msa_species_identifiers_all_seq
(U_c,) bytes (the UniProt hits, query first).
"""
from __future__ import annotations

import collections
import copy
import string
from typing import Mapping, MutableMapping, Sequence

import numpy as np

from model import residue_constants as rc

FeatureDict = MutableMapping[str, np.ndarray]

# AlphaFold's constants (feature_processing.py, msa_pairing.py, pipeline_multimer.py, protein.py)
MAX_TEMPLATES = 4
MSA_CROP_SIZE = 2048
MIN_MSA_ROWS = 512                 # pad_msa: avoids a zero-sized extra MSA in the network
MAX_SPECIES_ROWS = 600             # species with more rows in any chain are not paired
PDB_CHAIN_IDS = string.ascii_uppercase + string.ascii_lowercase + string.digits
PDB_MAX_CHAINS = len(PDB_CHAIN_IDS)  # 62
MSA_GAP_IDX = rc.restypes_with_x_and_gap.index("-")  # 21
MSA_PAD_VALUES = {"msa_all_seq": MSA_GAP_IDX, "msa_mask_all_seq": 1, "deletion_matrix_all_seq": 0,
                  "deletion_matrix_int_all_seq": 0, "msa": MSA_GAP_IDX, "msa_mask": 1,
                  "deletion_matrix": 0, "deletion_matrix_int": 0}
MSA_FEATURES = ("msa", "msa_mask", "deletion_matrix", "deletion_matrix_int")
SEQ_FEATURES = ("residue_index", "aatype", "all_atom_positions", "all_atom_mask", "seq_mask",
                "between_segment_residues", "has_alt_locations", "has_hetatoms", "asym_id", "entity_id",
                "sym_id", "entity_mask", "deletion_mean", "prediction_atom_mask", "literature_positions",
                "atom_indices_to_group_indices", "rigid_group_default_frame")
TEMPLATE_FEATURES = ("template_aatype", "template_all_atom_positions", "template_all_atom_mask")
CHAIN_FEATURES = ("num_alignments", "seq_length")
REQUIRED_FEATURES = frozenset({
    "aatype", "all_atom_mask", "all_atom_positions", "all_chains_entity_ids", "all_crops_all_chains_mask",
    "all_crops_all_chains_positions", "all_crops_all_chains_residue_ids", "assembly_num_chains", "asym_id",
    "bert_mask", "cluster_bias_mask", "deletion_matrix", "deletion_mean", "entity_id", "entity_mask",
    "mem_peak", "msa", "msa_mask", "num_alignments", "num_templates", "queue_size", "residue_index",
    "resolution", "seq_length", "seq_mask", "sym_id", "template_aatype", "template_all_atom_mask",
    "template_all_atom_positions"})

#: The batch the multimer network consumes (reference fixtures' features.npz): key -> dtype.
NETWORK_FEATURES = {
    "aatype": np.int32,                       # (N,) AlphaFold order, 20 = X
    "residue_index": np.int32,                # (N,) 0-based within each chain
    "asym_id": np.int32,                      # (N,) 1..chains, one per chain
    "entity_id": np.int32,                    # (N,) 1..entities, one per distinct sequence
    "sym_id": np.int32,                       # (N,) 1..copies within an entity
    "seq_mask": np.float32,                   # (N,)
    "msa": np.int32,                          # (S, N) AlphaFold order, 21 = gap
    "deletion_matrix": np.float32,            # (S, N) raw deletion counts
    "msa_mask": np.float32,                   # (S, N) 0 on pad_msa rows
    "cluster_bias_mask": np.float32,          # (S,) 1 on row 0 (and on each entity's query row when unpaired)
    "bert_mask": np.float32,                  # (S, N) 1 where a residue may be BERT-masked
    "template_aatype": np.int32,              # (T, N) AlphaFold order
    "template_all_atom_positions": np.float32,  # (T, N, 37, 3)
    "template_all_atom_mask": np.float32,     # (T, N, 37)
    "all_atom_positions": np.float32,         # (N, 37, 3) zeros (AlphaFold's dummy)
    "all_atom_mask": np.float32,              # (N, 37) standard atoms of aatype
}


class MultimerInputError(ValueError):
    """Per-chain features that cannot form a complex (no chains, too many, inconsistent shapes)."""


# --- chain ids, per-chain conversion, assembly features (pipeline_multimer.py) ------------------

def chain_ids(num_chains: int) -> list[str]:
    """AlphaFold's PDB chain ids of a FASTA with `num_chains` records: A..Z, a..z, 0..9 (at most 62)."""
    if num_chains < 1:
        raise MultimerInputError("a complex needs at least one chain")
    if num_chains > PDB_MAX_CHAINS:
        raise MultimerInputError(f"Cannot process more chains than the PDB format supports "
                                 f"({PDB_MAX_CHAINS}). Got {num_chains} chains.")
    return list(PDB_CHAIN_IDS[:num_chains])


def int_id_to_str_id(num: int) -> str:
    """Reverse spreadsheet naming of entity ids: 1 -> A, 26 -> Z, 27 -> AA, 28 -> BA."""
    if num <= 0:
        raise ValueError(f"Only positive integers allowed, got {num}.")
    num -= 1
    out = []
    while num >= 0:
        out.append(chr(num % 26 + ord("A")))
        num = num // 26 - 1
    return "".join(out)


def _templates_as_arrays(raw: Mapping[str, np.ndarray], num_res: int) -> dict:
    """Empty template features ((0,)-shaped, the monomer HHsearch featurizer's "no hit" or
    --no-templates) as zero-template arrays of the right rank; AlphaFold's hmmsearch featurizer
    never returns them (it gives one all-zero template), after padding to 4 both are all zeros."""
    out = {}
    shapes = {"template_aatype": (0, num_res, 22), "template_all_atom_masks": (0, num_res, rc.atom_type_num),
              "template_all_atom_positions": (0, num_res, rc.atom_type_num, 3)}
    for k, shape in shapes.items():
        v = np.asarray(raw[k]) if k in raw else np.zeros(shape, np.float32)
        out[k] = v.reshape(shape).astype(np.float32) if v.size == 0 else v
    return out


def convert_monomer_features(raw: Mapping[str, np.ndarray], chain_id: str) -> dict:
    """AlphaFold's `convert_monomer_features`: drop the leading dim of sequence/domain_name/
    num_alignments/seq_length, aatype one-hot (N_c, 21) -> indices (N_c,) int32, template_aatype
    one-hot (T, N_c, 22) HHblits order -> indices (T, N_c) in AlphaFold order,
    template_all_atom_masks -> template_all_atom_mask. Adds auth_chain_id."""
    missing = [k for k in ("aatype", "sequence", "msa", "deletion_matrix_int", "residue_index", "seq_length")
               if k not in raw]
    if missing:
        raise MultimerInputError(f"chain {chain_id}: raw features lack {', '.join(missing)}")
    num_res = int(np.asarray(raw["seq_length"]).reshape(-1)[0])
    feats = dict(raw)
    feats.update(_templates_as_arrays(raw, num_res))
    converted = {"auth_chain_id": np.asarray(chain_id, dtype=object)}
    for name, feature in feats.items():
        if name in ("sequence", "domain_name", "num_alignments", "seq_length"):
            feature = np.asarray(feature[0], dtype=feature.dtype)
        elif name == "aatype":
            feature = np.argmax(feature, axis=-1).astype(np.int32)
        elif name == "template_aatype":
            feature = np.argmax(feature, axis=-1).astype(np.int32)
            feature = np.take(rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE, feature, axis=0)
        elif name == "template_all_atom_masks":
            name = "template_all_atom_mask"
        converted[name] = feature
    if converted["aatype"].shape != (num_res,) or converted["msa"].shape[1:] != (num_res,):
        raise MultimerInputError(f"chain {chain_id}: aatype {converted['aatype'].shape} / msa "
                                 f"{converted['msa'].shape} do not match seq_length {num_res}")
    return converted


def add_assembly_features(all_chain_features: Mapping[str, FeatureDict]) -> dict[str, FeatureDict]:
    """AlphaFold's `add_assembly_features`: chains grouped by sequence (entity, first-seen order),
    keys `<entity letter>_<sym_id>` ordered by entity then copy; adds asym_id (running 1..C in that
    order), sym_id, entity_id as float64 (N_c,) arrays. NB the merged complex follows this order,
    not the FASTA order: FASTA A=x, B=y, C=x gives asym 1 = A, 2 = C, 3 = B."""
    seq_to_entity: dict[str, int] = {}
    grouped: dict[int, list] = collections.defaultdict(list)
    for feats in all_chain_features.values():
        seq = str(feats["sequence"])
        seq_to_entity.setdefault(seq, len(seq_to_entity) + 1)
        grouped[seq_to_entity[seq]].append(feats)
    out: dict[str, FeatureDict] = {}
    asym = 1
    for entity_id, group in grouped.items():
        for sym_id, feats in enumerate(group, start=1):
            out[f"{int_id_to_str_id(entity_id)}_{sym_id}"] = feats
            n = feats["seq_length"]
            feats["asym_id"] = asym * np.ones(n)
            feats["sym_id"] = sym_id * np.ones(n)
            feats["entity_id"] = entity_id * np.ones(n)
            asym += 1
    return out


def process_unmerged_features(all_chain_features: Mapping[str, FeatureDict]) -> None:
    """AlphaFold's `process_unmerged_features` (in place): deletion_matrix[_all_seq] float32 from
    the int counts, deletion_mean (N_c,), dummy all_atom_positions (N_c, 37, 3) zeros and
    all_atom_mask (N_c, 37) standard atoms, assembly_num_chains, entity_mask."""
    num_chains = len(all_chain_features)
    for feats in all_chain_features.values():
        feats["deletion_matrix"] = np.asarray(feats.pop("deletion_matrix_int"), dtype=np.float32)
        if "deletion_matrix_int_all_seq" in feats:
            feats["deletion_matrix_all_seq"] = np.asarray(feats.pop("deletion_matrix_int_all_seq"),
                                                          dtype=np.float32)
        feats["deletion_mean"] = np.mean(feats["deletion_matrix"], axis=0)
        all_atom_mask = rc.STANDARD_ATOM_MASK[feats["aatype"]]
        feats["all_atom_mask"] = all_atom_mask
        feats["all_atom_positions"] = np.zeros(list(all_atom_mask.shape) + [3])
        feats["assembly_num_chains"] = np.asarray(num_chains)
    for feats in all_chain_features.values():
        feats["entity_mask"] = (feats["entity_id"] != 0).astype(np.int32)


# --- species pairing (msa_pairing.py) ------------------------------------------------------------

def _argsort_descending_like_pandas(values: np.ndarray) -> np.ndarray:
    """Indices sorting `values` descending exactly as pandas' `sort_values(ascending=False)`
    (nargsort: reverse, numpy quicksort, map back, reverse), ties included."""
    idx = np.arange(len(values))[::-1]
    return idx[values[::-1].argsort(kind="quicksort")][::-1]


def _species_groups(chain: Mapping[str, np.ndarray]) -> dict:
    """species id -> (rows (k,) in MSA order, similarity to the query (k,)) of one chain's
    `_all_seq` MSA: what AlphaFold's `_make_msa_df` + `groupby` give."""
    msa = chain["msa_all_seq"]
    similarity = np.sum(msa[0][None] == msa, axis=-1) / float(msa.shape[1])
    rows: dict = collections.defaultdict(list)
    for i, sp in enumerate(chain["msa_species_identifiers_all_seq"]):
        rows[sp].append(i)
    return {sp: (np.asarray(r), similarity[r]) for sp, r in rows.items()}


def pair_sequences(chains: Sequence[Mapping[str, np.ndarray]]) -> dict[int, np.ndarray]:
    """AlphaFold's `pair_sequences`: for every species (sorted) found in >= 2 chains and with at
    most 600 rows in every chain, pair each chain's rows of that species by descending similarity
    to its query, as many as the smallest chain has; a chain without the species contributes its
    padding row -1. Returns {number of chains paired: (k, C) int rows}; key C also holds the query
    row (all 0) first."""
    num = len(chains)
    groups = [_species_groups(c) for c in chains]
    common = sorted(set().union(*groups))
    # AlphaFold removes b'' (the query's) and crashes if absent; the query always has b'' here
    common = [s for s in common if s]
    paired: dict[int, list] = {k: [] for k in range(num)}
    paired[num] = [np.zeros(num, int)]
    for species in common:
        present = [g.get(species) for g in groups]
        n_present = sum(p is not None for p in present)
        if n_present <= 1:
            continue
        if any(len(p[0]) > MAX_SPECIES_ROWS for p in present if p is not None):
            continue
        take = min(len(p[0]) for p in present if p is not None)
        cols = []
        for p in present:
            if p is None:
                cols.append(np.full(take, -1, dtype=int))
            else:
                rows, sim = p
                cols.append(rows[_argsort_descending_like_pandas(sim)][:take])
        paired[n_present].extend(list(np.array(cols).transpose()))
    return {k: np.array(v) for k, v in paired.items()}


def reorder_paired_rows(paired: Mapping[int, np.ndarray]) -> np.ndarray:
    """AlphaFold's `reorder_paired_rows`: rows pairing more chains first; within a count, by
    |product of the row indices| (numpy quicksort, as AlphaFold). Returns (P, C) int."""
    out = []
    for k in sorted(paired, reverse=True):
        rows = paired[k]
        product = abs(np.array([np.prod(r) for r in rows]))
        out.extend(rows[np.argsort(product)])
    return np.array(out)


def _pad_all_seq(feature: np.ndarray, name: str) -> np.ndarray:
    """AlphaFold's `pad_features`: one padding row (gap / 0 / b'') appended, selected by row -1."""
    if name in ("msa_all_seq", "msa_mask_all_seq", "deletion_matrix_all_seq", "deletion_matrix_int_all_seq"):
        padding = MSA_PAD_VALUES[name] * np.ones([1, feature.shape[1]], feature.dtype)
    elif name == "msa_species_identifiers_all_seq":
        padding = [b""]
    else:
        return feature
    return np.concatenate([feature, padding], axis=0)


def create_paired_features(chains: Sequence[FeatureDict]) -> list[FeatureDict]:
    """AlphaFold's `create_paired_features`: every `*_all_seq` feature replaced by its paired rows
    (P, N_c) (same P for all chains), plus num_alignments_all_seq = P."""
    chains = list(chains)
    if len(chains) < 2:
        return chains
    rows = reorder_paired_rows(pair_sequences(chains))
    keys = list(chains[0].keys())
    out = []
    for i, chain in enumerate(chains):
        new = {k: v for k, v in chain.items() if "_all_seq" not in k}
        for k in keys:
            if k.endswith("_all_seq"):
                new[k] = _pad_all_seq(chain[k], k)[rows[:, i]]
        new["num_alignments_all_seq"] = np.asarray(len(rows[:, i]))
        out.append(new)
    return out


def deduplicate_unpaired_sequences(chains: Sequence[FeatureDict]) -> list[FeatureDict]:
    """AlphaFold's `deduplicate_unpaired_sequences`: drop unpaired MSA rows equal to a paired row
    of the same chain."""
    for chain in chains:
        paired = {row.tobytes() for row in np.asarray(chain["msa_all_seq"], dtype=np.int64)}
        keep = [i for i, row in enumerate(np.asarray(chain["msa"], dtype=np.int64)) if row.tobytes() not in paired]
        for k in MSA_FEATURES:
            if k in chain:
                chain[k] = chain[k][keep]
        chain["num_alignments"] = np.array(chain["msa"].shape[0], dtype=np.int32)
    return list(chains)


# --- cropping and merging (feature_processing.py, msa_pairing.py) -----------------------------

def crop_chain(chain: FeatureDict, msa_crop_size: int, pair_msa_sequences: bool,
               max_templates: int) -> FeatureDict:
    """AlphaFold's `_crop_single_chain`: paired rows <= msa_crop_size // 2 (1024); unpaired rows <=
    msa_crop_size minus this chain's non-gap paired rows; templates <= max_templates. Sets
    num_alignments, num_templates, num_alignments_all_seq."""
    msa_size = chain["num_alignments"]
    if pair_msa_sequences:
        crop_all_seq = np.minimum(chain["num_alignments_all_seq"], msa_crop_size // 2)
        msa_all_seq = chain["msa_all_seq"][:crop_all_seq, :]
        non_gapped = np.sum(np.any(msa_all_seq != MSA_GAP_IDX, axis=1))
        non_gapped = np.minimum(non_gapped, crop_all_seq)
        crop = np.minimum(msa_size, np.maximum(msa_crop_size - non_gapped, 0))
    else:
        crop = np.minimum(msa_size, msa_crop_size)
    include_templates = "template_aatype" in chain and max_templates
    if include_templates:
        templates_crop = np.minimum(chain["template_aatype"].shape[0], max_templates)
    for k in chain:
        base = k.split("_all_seq")[0]
        if base in TEMPLATE_FEATURES:
            chain[k] = chain[k][:templates_crop, :]
        elif base in MSA_FEATURES:
            chain[k] = chain[k][:crop_all_seq, :] if ("_all_seq" in k and pair_msa_sequences) else chain[k][:crop, :]
    chain["num_alignments"] = np.asarray(crop, dtype=np.int32)
    if include_templates:
        chain["num_templates"] = np.asarray(templates_crop, dtype=np.int32)
    if pair_msa_sequences:
        chain["num_alignments_all_seq"] = np.asarray(crop_all_seq, dtype=np.int32)
    return chain


def block_diag(*arrs: np.ndarray, pad_value: float = 0.0) -> np.ndarray:
    """Block-diagonal stack of 2-D arrays (rows_i, cols_i) -> (sum rows, sum cols), off-diagonal
    entries `pad_value` (AlphaFold's `block_diag` over scipy's; dtype = result type of the inputs)."""
    dtype = np.result_type(*arrs)
    out = np.full((sum(a.shape[0] for a in arrs), sum(a.shape[1] for a in arrs)),
                  np.asarray(pad_value).astype(dtype), dtype=dtype)
    r = c = 0
    for a in arrs:
        out[r:r + a.shape[0], c:c + a.shape[1]] = a
        r += a.shape[0]
        c += a.shape[1]
    return out


def _merge_features(chains: Sequence[FeatureDict], pair_msa_sequences: bool) -> FeatureDict:
    """AlphaFold's `_merge_features_from_multiple_chains`: MSA features side by side (paired or
    `_all_seq`) or block-diagonal (unpaired, pad gap/0); per-residue features and templates
    concatenated along residues; num_alignments/seq_length summed; anything else from chain 0."""
    merged = {}
    for name in chains[0]:
        feats = [c[name] for c in chains]
        base = name.split("_all_seq")[0]
        if base in MSA_FEATURES:
            if pair_msa_sequences or "_all_seq" in name:
                merged[name] = np.concatenate(feats, axis=1)
            else:
                merged[name] = block_diag(*feats, pad_value=MSA_PAD_VALUES[name])
        elif base in SEQ_FEATURES:
            merged[name] = np.concatenate(feats, axis=0)
        elif base in TEMPLATE_FEATURES:
            merged[name] = np.concatenate(feats, axis=1)
        elif base in CHAIN_FEATURES:
            merged[name] = np.sum(feats).astype(np.int32)
        else:
            merged[name] = feats[0]
    return merged


def _pad_templates(chains: Sequence[FeatureDict], max_templates: int) -> None:
    for chain in chains:
        for k, v in chain.items():
            if k in TEMPLATE_FEATURES:
                chain[k] = np.pad(v, [(0, max_templates - v.shape[0])] + [(0, 0)] * (v.ndim - 1))


def merge_chain_features(chains: Sequence[FeatureDict], pair_msa_sequences: bool,
                         max_templates: int) -> FeatureDict:
    """AlphaFold's `merge_chain_features`: templates padded to max_templates per chain; copies of
    one entity merged densely (MSAs side by side); entities merged block-diagonally; paired rows
    (P, N) stacked above the unpaired block; cluster_bias_mask (S,) and bert_mask (S, N)."""
    chains = list(chains)
    _pad_templates(chains, max_templates)
    by_entity: dict = collections.defaultdict(list)
    for chain in chains:
        by_entity[chain["entity_id"][0]].append(chain)
    entities = [_merge_features(by_entity[e], pair_msa_sequences=True) for e in sorted(by_entity)]
    ex = _merge_features(entities, pair_msa_sequences=False)
    if pair_msa_sequences:
        for name in MSA_FEATURES:
            if name in ex:
                ex[name] = np.concatenate([ex[name + "_all_seq"], ex[name]], axis=0)
    ex["seq_length"] = np.asarray(ex["aatype"].shape[0], dtype=np.int32)
    ex["num_alignments"] = np.asarray(ex["msa"].shape[0], dtype=np.int32)
    unpaired_masks = [np.ones(e["msa"].shape, dtype=np.float32) for e in entities]
    if not pair_msa_sequences:
        bias = []
        for e in entities:  # each entity's query row is always a cluster centre
            m = np.zeros(e["msa"].shape[0])
            m[0] = 1
            bias.append(m)
        ex["cluster_bias_mask"] = np.concatenate(bias)
        ex["bert_mask"] = block_diag(*unpaired_masks, pad_value=0)
    else:
        ex["cluster_bias_mask"] = np.zeros(ex["msa"].shape[0])
        ex["cluster_bias_mask"][0] = 1
        paired_masks = [np.ones(e["msa_all_seq"].shape, dtype=np.float32) for e in entities]
        ex["bert_mask"] = np.concatenate([np.concatenate(paired_masks, axis=1),
                                          block_diag(*unpaired_masks, pad_value=0)], axis=0)
    return ex


def process_final(ex: FeatureDict) -> FeatureDict:
    """AlphaFold's `process_final`: msa to AlphaFold's residue order (int32), seq_mask and
    msa_mask from entity_id > 0, only REQUIRED_FEATURES kept."""
    ex["msa"] = np.take(rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE, ex["msa"], axis=0).astype(np.int32)
    seq_mask = (ex["entity_id"] > 0).astype(np.float32)
    ex["seq_mask"] = seq_mask
    ex["msa_mask"] = np.ones_like(ex["msa"], dtype=np.float32) * seq_mask[None]
    return {k: v for k, v in ex.items() if k in REQUIRED_FEATURES}


def _is_homomer_or_monomer(chains: Sequence[FeatureDict]) -> bool:
    return len(np.unique(np.concatenate([np.unique(c["entity_id"][c["entity_id"] > 0]) for c in chains]))) == 1


def pair_and_merge(all_chain_features: MutableMapping[str, FeatureDict]) -> FeatureDict:
    """AlphaFold's `feature_processing.pair_and_merge` on assembly-keyed chains (`add_assembly_features`
    output): pair (heteromers), dedup unpaired rows, crop (2048 rows, 4 templates), merge, finalize."""
    process_unmerged_features(all_chain_features)
    chains = list(all_chain_features.values())
    pair = not _is_homomer_or_monomer(chains)
    if pair:
        chains = deduplicate_unpaired_sequences(create_paired_features(chains))
    chains = [crop_chain(c, MSA_CROP_SIZE, pair, MAX_TEMPLATES) for c in chains]
    return process_final(merge_chain_features(chains, pair, MAX_TEMPLATES))


def pad_msa(ex: Mapping[str, np.ndarray], min_num_seq: int = MIN_MSA_ROWS) -> dict:
    """AlphaFold's `pad_msa`: zero rows (msa 0, masks 0) up to `min_num_seq` rows."""
    ex = dict(ex)
    num_seq = ex["msa"].shape[0]
    if num_seq < min_num_seq:
        for k in ("msa", "deletion_matrix", "bert_mask", "msa_mask"):
            ex[k] = np.pad(ex[k], ((0, min_num_seq - num_seq), (0, 0)))
        ex["cluster_bias_mask"] = np.pad(ex["cluster_bias_mask"], ((0, min_num_seq - num_seq),))
    return ex


# --- whole complex ---------------------------------------------------------------------------

def _query_only_all_seq(chain: Mapping[str, np.ndarray]) -> dict:
    """`_all_seq` features holding only the query row (a heteromer chain searched without UniProt,
    e.g. --msa-mode single-sequence): it pairs with nothing but the other queries."""
    return {"msa_all_seq": np.asarray(chain["msa"][:1]),
            "deletion_matrix_int_all_seq": np.asarray(chain["deletion_matrix_int"][:1]),
            "msa_species_identifiers_all_seq": np.array([b""], dtype=object)}


def multimer_features(raw_chains: Sequence[Mapping[str, np.ndarray]]) -> dict:
    """AlphaFold-Multimer's `DataPipeline.process` after the searches: raw per-chain features in
    FASTA order (chain ids A, B, ...; identical sequences may share one dict, they are copied)
    -> AlphaFold's multimer features.pkl dict, what the network consumes:

      aatype (N,) i32, residue_index (N,) i32, asym_id/sym_id/entity_id (N,) f64, seq_mask (N,) f32,
      entity_mask (N,) i32, deletion_mean (N,) f32, all_atom_positions (N, 37, 3) f64 zeros,
      all_atom_mask (N, 37) i32, msa (S, N) i32, deletion_matrix (S, N) f32, msa_mask (S, N) f32,
      bert_mask (S, N) f32, cluster_bias_mask (S,) f64, template_aatype (4, N) i32,
      template_all_atom_positions (4, N, 37, 3) f32, template_all_atom_mask (4, N, 37) f32,
      num_alignments, seq_length, num_templates, assembly_num_chains () ints.

    Heteromer chains need the UniProt `*_all_seq` features (a chain without them pairs only its
    query row). Raises MultimerInputError for bad input."""
    raw_chains = list(raw_chains)
    ids = chain_ids(len(raw_chains))
    sequences = []
    for cid, raw in zip(ids, raw_chains):
        if not isinstance(raw, Mapping):
            raise MultimerInputError(f"chain {cid}: features must be a dict, got {type(raw).__name__}")
        if "sequence" not in raw:
            raise MultimerInputError(f"chain {cid}: raw features lack sequence")
        sequences.append(bytes(np.asarray(raw["sequence"]).reshape(-1)[0]))
    heteromer = len(set(sequences)) > 1
    all_chain_features: dict[str, FeatureDict] = {}
    converted: dict[bytes, FeatureDict] = {}
    for cid, seq, raw in zip(ids, sequences, raw_chains):
        if seq in converted:  # AlphaFold deep-copies the features of an identical earlier chain
            all_chain_features[cid] = copy.deepcopy(converted[seq])
            continue
        raw = {k: v for k, v in raw.items() if heteromer or not k.endswith("_all_seq")}
        if heteromer and "msa_all_seq" not in raw:
            raw.update(_query_only_all_seq(raw))
        if heteromer:
            if raw["msa_all_seq"].shape[1:] != raw["msa"].shape[1:]:
                raise MultimerInputError(f"chain {cid}: msa_all_seq {raw['msa_all_seq'].shape} and msa "
                                         f"{raw['msa'].shape} differ in length")
            n_sp, n_rows = len(raw.get("msa_species_identifiers_all_seq", ())), raw["msa_all_seq"].shape[0]
            if n_sp != n_rows:
                raise MultimerInputError(f"chain {cid}: species ids for {n_sp} of {n_rows} UniProt rows")
        feats = convert_monomer_features(raw, cid)
        all_chain_features[cid] = feats
        converted[seq] = feats
    ex = pair_and_merge(add_assembly_features(all_chain_features))
    return pad_msa(ex, MIN_MSA_ROWS)


def network_batch(features: Mapping[str, np.ndarray]) -> dict:
    """The multimer network's input (the reference fixtures' features.npz layout): the 16 keys of
    `NETWORK_FEATURES` from `multimer_features`' dict, cast to the fixtures' dtypes (int32 ids,
    float32 masks/positions). Values are unchanged."""
    missing = [k for k in NETWORK_FEATURES if k not in features]
    if missing:
        raise MultimerInputError(f"multimer features lack {', '.join(missing)}")
    return {k: np.ascontiguousarray(np.asarray(features[k]).astype(dt)) for k, dt in NETWORK_FEATURES.items()}


def chain_map(raw_chains: Sequence[Mapping[str, np.ndarray]], names: Sequence[str] | None = None) -> list[dict]:
    """Where each FASTA record ends up in the merged complex, in asym_id order: [{asym_id, chain_id
    (AlphaFold's PDB id of the record: A, B, ... in FASTA order), name (FASTA name), entity_id,
    sym_id, start, end (residue slice of the merged arrays)}]."""
    ids = chain_ids(len(raw_chains))
    names = list(names) if names is not None else ids
    seqs = [bytes(np.asarray(r["sequence"]).reshape(-1)[0]) for r in raw_chains]
    entity: dict[bytes, int] = {}
    for s in seqs:
        entity.setdefault(s, len(entity) + 1)
    order = sorted(range(len(seqs)), key=lambda i: (entity[seqs[i]], i))
    out, start, copies = [], 0, collections.Counter()
    for asym, i in enumerate(order, start=1):
        copies[seqs[i]] += 1
        n = len(seqs[i])
        out.append({"asym_id": asym, "chain_id": ids[i], "name": names[i], "entity_id": entity[seqs[i]],
                    "sym_id": copies[seqs[i]], "start": start, "end": start + n})
        start += n
    return out
