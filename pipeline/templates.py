"""Template featurization: hhsearch hits -> AlphaFold template features, read from mmCIF files.

Follows AlphaFold 2.3 `alphafold/data/templates.py` (HhsearchHitFeaturizer) and
`mmcif_parsing.py`: hits sorted by sum_probs, prefilter (release date, align ratio, near-duplicate,
length), obsolete-PDB remapping, chain lookup (exact chain, any chain, X-wildcard regex, else kalign
realignment accepted at >= 90% identity), atom37 coordinates of the first model (MSE Se -> SD, ARG
NH1/NH2 fix), at most `max_hits` templates (AlphaFold: 20; the model uses the first 4).

Differences, on purpose: a hit whose mmCIF is missing or unreadable is skipped with a warning
(AlphaFold stops the run), and after a kalign realignment query residues whose template residue
is unaligned are left empty (AlphaFold maps them to the chain's last residue through index -1).
mmCIF files are read with gemmi; `<id>.cif` or `<id>.cif.gz` are accepted.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re
from typing import Mapping, Sequence

import numpy as np

from model import residue_constants as rc
from pipeline.features import TEMPLATE_FEATURES, empty_template_features
from pipeline.parsers import TemplateHit

log = logging.getLogger(__name__)

MAX_TEMPLATE_HITS = 20


class TemplateError(Exception):
    """A hit that cannot be featurized (it is skipped, with this message as the warning)."""


class PrefilterError(TemplateError):
    """A hit AlphaFold drops silently before reading its mmCIF (date, coverage, duplicate, length)."""


# --- mmCIF --------------------------------------------------------------------------------------

@dataclasses.dataclass
class MmcifChains:
    """What the featurizer needs from one mmCIF entry: release date, per author chain the SEQRES
    one-letter sequence, and per SEQRES index the atoms of the first model (None = unobserved)."""
    file_id: str
    release_date: datetime.date | None
    chain_to_seqres: dict[str, str]
    residues: dict[str, list[dict[str, tuple[np.ndarray, str]] | None]]  # atom name -> (xyz, resname)


def _three_to_one() -> Mapping[str, str]:
    try:  # Biopython's SCOP-derived table, the one AlphaFold uses (SCOPData moved to PDBData)
        from Bio.Data.PDBData import protein_letters_3to1_extended
        return protein_letters_3to1_extended
    except ImportError:  # pragma: no cover
        return {}


_3TO1 = _three_to_one()


def _one_letter(mon_id: str) -> str:
    code = _3TO1.get(mon_id, "X")
    return code if len(code) == 1 else "X"


def find_mmcif(mmcif_dir: str, pdb_id: str) -> str | None:
    """Path of `<pdb_id>.cif` (or `.cif.gz`) in `mmcif_dir`, None if absent."""
    for name in (f"{pdb_id}.cif", f"{pdb_id}.cif.gz", f"{pdb_id.upper()}.cif", f"{pdb_id.upper()}.cif.gz"):
        path = os.path.join(mmcif_dir, name)
        if os.path.exists(path):
            return path
    return None


def parse_mmcif(path: str, file_id: str) -> MmcifChains:
    """Read an mmCIF file as AlphaFold's `mmcif_parsing.parse` does, keeping only protein chains
    (an entity with any 'peptide' chem_comp type), author chain ids, first model only, and for a
    disordered atom the alternate location with the highest occupancy."""
    import gemmi
    block = gemmi.cif.read(path).sole_block()

    dates = [d for d in block.find_values("_pdbx_audit_revision_history.revision_date") if d not in ("?", ".")]
    release = min(datetime.date.fromisoformat(gemmi.cif.as_string(d)) for d in dates) if dates else None

    chem_type = {gemmi.cif.as_string(r[0]): gemmi.cif.as_string(r[1]).lower()
                 for r in block.find("_chem_comp.", ["id", "type"])}
    entity_seq: dict[str, list[tuple[int, str]]] = {}
    for r in block.find("_entity_poly_seq.", ["entity_id", "num", "mon_id"]):
        entity_seq.setdefault(r[0], []).append((int(r[1]), gemmi.cif.as_string(r[2])))
    valid: dict[str, list[tuple[int, str]]] = {}  # label_asym_id -> monomers
    for r in block.find("_struct_asym.", ["id", "entity_id"]):
        seq = entity_seq.get(r[1])
        if seq and any("peptide" in chem_type.get(mon, "") for _, mon in seq):
            valid[r[0]] = seq
    seq_start = {c: min(n for n, _ in seq) for c, seq in valid.items()}

    cols = ["label_atom_id", "label_comp_id", "auth_asym_id", "label_asym_id", "label_seq_id",
            "Cartn_x", "Cartn_y", "Cartn_z", "occupancy", "pdbx_PDB_model_num"]
    table = block.find("_atom_site.", cols)
    label_to_auth: dict[str, str] = {}
    atoms: dict[tuple[str, int], dict[str, tuple[np.ndarray, str, float]]] = {}
    first_model = None
    for r in table:
        model = r[9]
        if first_model is None:
            first_model = model
        if model != first_model:
            continue
        label = r[3]
        label_to_auth[label] = gemmi.cif.as_string(r[2])
        if label not in valid or r[4] in (".", "?"):
            continue
        idx = int(r[4]) - seq_start[label]
        name = gemmi.cif.as_string(r[0])
        occ = float(r[8]) if r[8] not in ("?", ".") else 1.0
        res = atoms.setdefault((label_to_auth[label], idx), {})
        if name not in res or occ > res[name][2]:
            res[name] = (np.array([float(r[5]), float(r[6]), float(r[7])], np.float32),
                         gemmi.cif.as_string(r[1]), occ)

    chain_to_seqres: dict[str, str] = {}
    residues: dict[str, list] = {}
    for label, seq in valid.items():
        if label not in label_to_auth:
            continue  # a protein chain without any atom in the first model
        auth = label_to_auth[label]
        chain_to_seqres[auth] = "".join(_one_letter(mon) for _, mon in seq)
        residues[auth] = [
            ({k: (v[0], v[1]) for k, v in atoms[(auth, i)].items()} if (auth, i) in atoms else None)
            for i in range(len(seq))]
    return MmcifChains(file_id, release, chain_to_seqres, residues)


def atom_positions(mmcif: MmcifChains, chain_id: str) -> tuple[np.ndarray, np.ndarray]:
    """atom37 positions (L, 37, 3) and mask (L, 37) of a chain's SEQRES residues."""
    res_list = mmcif.residues[chain_id]
    pos = np.zeros((len(res_list), rc.atom_type_num, 3), np.float32)
    mask = np.zeros((len(res_list), rc.atom_type_num), np.float32)
    cd, nh1, nh2 = rc.atom_order["CD"], rc.atom_order["NH1"], rc.atom_order["NH2"]
    for i, res in enumerate(res_list):
        if res is None:
            continue
        resname = next(iter(res.values()))[1]
        for name, (xyz, rname) in res.items():
            if name in rc.atom_order:
                pos[i, rc.atom_order[name]] = xyz
                mask[i, rc.atom_order[name]] = 1.0
            elif name.upper() == "SE" and rname == "MSE":
                pos[i, rc.atom_order["SD"]] = xyz  # selenomethionine: Se in the S column
                mask[i, rc.atom_order["SD"]] = 1.0
        # some ARG entries name NH1/NH2 the wrong way round (NH2 closer to CD)
        if resname == "ARG" and mask[i, [cd, nh1, nh2]].all() and \
                np.linalg.norm(pos[i, nh1] - pos[i, cd]) > np.linalg.norm(pos[i, nh2] - pos[i, cd]):
            pos[i, [nh1, nh2]] = pos[i, [nh2, nh1]]
    return pos, mask


# --- obsolete PDB entries ---------------------------------------------------------------------

def parse_obsolete(path: str | None) -> dict[str, str | None]:
    """`obsolete.dat` -> {old id: replacement id or None (removed without replacement)}."""
    out: dict[str, str | None] = {}
    if not path or not os.path.exists(path):
        return out
    with open(path) as fh:
        for line in fh:
            if line.startswith("OBSLTE"):
                parts = line.split()
                if len(parts) >= 3:
                    out[parts[2].lower()] = parts[3].lower() if len(parts) >= 4 else None
    return out


# --- per hit ----------------------------------------------------------------------------------

def _pdb_id_and_chain(hit: TemplateHit) -> tuple[str, str]:
    m = re.match(r"[a-zA-Z\d]{4}_[a-zA-Z0-9.]+", hit.name)
    if not m:
        raise TemplateError(f"hit name does not start with PDBID_chain: {hit.name!r}")
    pdb_id, chain = m.group(0).split("_")
    return pdb_id.lower(), chain


def _assess_hit(hit: TemplateHit, query: str, max_subsequence_ratio=0.95, min_align_ratio=0.1) -> None:
    template = hit.hit_sequence.replace("-", "")
    if hit.aligned_cols / len(query) <= min_align_ratio:
        raise PrefilterError(f"proportion of residues aligned to query too small ({hit.aligned_cols / len(query):.3f})")
    if template in query and len(template) / len(query) > max_subsequence_ratio:
        raise PrefilterError("template is an exact subsequence of the query (duplicate)")
    if len(template) < 10:
        raise PrefilterError(f"template too short ({len(template)})")


def _query_to_hit_mapping(hit: TemplateHit, query: str) -> dict[int, int]:
    """Query residue index -> hit residue index (0-based within the hit's aligned sequence)."""
    if not hit.query:
        return {}
    hh_query = hit.query.replace("-", "")
    hit_seq = hit.hit_sequence.replace("-", "")
    offset = query.find(hh_query)
    min_h = min(x for x in hit.indices_hit if x > -1)
    min_q = min(x for x in hit.indices_query if x > -1)
    mapping = {}
    for qi, ti in zip(hit.indices_query, hit.indices_hit):
        if qi != -1 and ti != -1:
            qi, ti = qi - min_q, ti - min_h
            if ti >= len(hit_seq) or qi + offset >= len(query):
                continue
            mapping[qi + offset] = ti
    return mapping


def _find_template_in_pdb(chain_id: str, template: str, mmcif: MmcifChains) -> tuple[str, str, int]:
    seq = mmcif.chain_to_seqres.get(chain_id)
    if seq and template in seq:
        return seq, chain_id, seq.find(template)
    for cid, seq in mmcif.chain_to_seqres.items():
        if seq and template in seq:
            return seq, cid, seq.find(template)
    regex = re.compile("".join("." if aa == "X" else f"(?:{aa}|X)" for aa in template))
    for cid, seq in mmcif.chain_to_seqres.items():
        m = regex.search(seq)
        if m:
            return seq, cid, m.start()
    raise LookupError


def _realign(old_template: str, chain_id: str, mmcif: MmcifChains, old_mapping: dict[int, int]):
    from pipeline.tools import kalign
    new = mmcif.chain_to_seqres.get(chain_id, "")
    if not new:
        if len(mmcif.chain_to_seqres) != 1:
            raise TemplateError(f"chain {chain_id} not in {mmcif.file_id} and it has several chains")
        new = next(iter(mmcif.chain_to_seqres.values()))
    try:
        old_aln, new_aln = kalign([old_template, new])
    except Exception as exc:
        raise TemplateError(f"kalign realignment of {mmcif.file_id}_{chain_id} failed: {exc}") from exc
    old_to_new: dict[int, int] = {}
    oi = ni = -1
    same = 0
    for a, b in zip(old_aln, new_aln):
        oi += a != "-"
        ni += b != "-"
        if a != "-" and b != "-":
            old_to_new[oi] = ni
            same += a == b
    if same / min(len(old_template), len(new)) < 0.9:
        raise TemplateError(f"realigned {mmcif.file_id}_{chain_id} has < 90% identity to the hit")
    return new, {q: old_to_new[t] for q, t in old_mapping.items() if t in old_to_new}


def featurize_hit(hit: TemplateHit, query: str, mmcif_dir: str, max_template_date: datetime.date,
                  obsolete: Mapping[str, str | None] | None = None) -> tuple[dict | None, str | None]:
    """Features of one hit, or (None, reason). Prefilter failures give (None, None) (silent, as in
    AlphaFold); other failures give (None, warning)."""
    obsolete = obsolete or {}
    try:
        pdb_id, chain = _pdb_id_and_chain(hit)
    except TemplateError as exc:
        return None, str(exc)
    if pdb_id in obsolete:
        if obsolete[pdb_id] is None:
            return None, f"{pdb_id} is obsolete"
        pdb_id = obsolete[pdb_id]
    try:
        _assess_hit(hit, query)
    except PrefilterError as exc:
        log.debug("hit %s_%s did not pass prefilter: %s", pdb_id, chain, exc)
        return None, None
    path = find_mmcif(mmcif_dir, pdb_id)
    if path is None:
        return None, f"{pdb_id}_{chain}: no mmCIF file {pdb_id}.cif in {mmcif_dir}"
    try:
        mmcif = parse_mmcif(path, pdb_id)
    except Exception as exc:  # a broken file must not stop the run
        return None, f"{pdb_id}_{chain}: cannot parse {path}: {exc}"
    if mmcif.release_date is None:
        return None, f"{pdb_id}_{chain}: no release date in {path}"
    if mmcif.release_date > max_template_date:
        log.debug("template %s released %s > %s", pdb_id, mmcif.release_date, max_template_date)
        return None, None
    if not mmcif.chain_to_seqres:
        return None, f"{pdb_id}_{chain}: no protein chains"
    template = hit.hit_sequence.replace("-", "")
    mapping = _query_to_hit_mapping(hit, query)
    warning = None
    try:
        seqres, chain_id, offset = _find_template_in_pdb(chain, template, mmcif)
    except LookupError:
        chain_id = chain
        warning = f"{pdb_id}_{chain}: hit sequence not found in the mmCIF, realigned with kalign"
        try:
            seqres, mapping = _realign(template, chain, mmcif, mapping)
        except TemplateError as exc:
            return None, str(exc)
        template, offset = seqres, 0
    if chain_id not in mmcif.residues:
        return None, f"{pdb_id}_{chain_id}: chain has no atoms"
    pos37, mask37 = atom_positions(mmcif, chain_id)
    n = len(query)
    positions = np.zeros((n, rc.atom_type_num, 3), np.float32)
    masks = np.zeros((n, rc.atom_type_num), np.float32)
    out_seq = ["-"] * n
    for q, t in mapping.items():
        positions[q] = pos37[t + offset]
        masks[q] = mask37[t + offset]
        out_seq[q] = template[t]
    if masks.sum() < 5:  # alanine, the smallest residue, has 5 heavy atoms
        return None, f"{pdb_id}_{chain_id}: template atom mask is all zeros"
    seq = "".join(out_seq)
    feats = {
        "template_all_atom_positions": positions,
        "template_all_atom_masks": masks,
        "template_sequence": seq.encode(),
        "template_aatype": rc.sequence_to_onehot(seq, rc.HHBLITS_AA_TO_ID),
        "template_domain_names": f"{pdb_id}_{chain_id}".encode(),
        "template_sum_probs": [hit.sum_probs if hit.sum_probs is not None else 0.0],
    }
    return feats, warning


def get_template_features(query: str, hits: Sequence[TemplateHit], mmcif_dir: str,
                          max_template_date: datetime.date | str, obsolete_path: str | None = None,
                          max_hits: int = MAX_TEMPLATE_HITS, kind: str = "hhsearch") -> tuple[dict, list[str]]:
    """Template features for the best `max_hits` usable hits.

    kind="hhsearch" (monomer, AlphaFold's HhsearchHitFeaturizer): hits sorted by sum_probs
    (stable); no usable hit gives AlphaFold's empty (0,) arrays.
    kind="hmmsearch" (multimer, HmmsearchHitFeaturizer): hits in hmmsearch order, a template
    sequence seen before is skipped; no usable hit gives one all-zero template (T = 1).

    Returns (features, warnings): template_aatype (T, N, 22) f32 one-hot HHblits order,
    template_all_atom_positions (T, N, 37, 3), template_all_atom_masks (T, N, 37),
    template_domain_names / template_sequence (T,) bytes, template_sum_probs (T, 1)."""
    if isinstance(max_template_date, str):
        max_template_date = datetime.date.fromisoformat(max_template_date)
    obsolete = parse_obsolete(obsolete_path)
    collected: dict[str, list] = {k: [] for k in TEMPLATE_FEATURES}
    warnings: list[str] = []
    if kind == "hhsearch" or (hits and hits[0].sum_probs is not None):
        hits = sorted(hits, key=lambda h: h.sum_probs or 0.0, reverse=True)
    seen: set[bytes] = set()
    for hit in hits:
        if len(collected["template_sequence"]) >= max_hits:
            break
        try:
            feats, warning = featurize_hit(hit, query, mmcif_dir, max_template_date, obsolete)
        except Exception as exc:  # never let one hit kill the run
            feats, warning = None, f"{hit.name.split()[0]}: {exc.__class__.__name__}: {exc}"
        if warning:
            log.warning("template %s", warning)
            warnings.append(warning)
        if feats is None:
            continue
        if kind == "hmmsearch":
            if feats["template_sequence"] in seen:
                continue
            seen.add(feats["template_sequence"])
        for k in collected:
            collected[k].append(feats[k])
    if not collected["template_sequence"]:
        if kind == "hmmsearch":
            n = len(query)
            return {"template_aatype": np.zeros((1, n, 22), np.float32),
                    "template_all_atom_masks": np.zeros((1, n, rc.atom_type_num), np.float32),
                    "template_all_atom_positions": np.zeros((1, n, rc.atom_type_num, 3), np.float32),
                    "template_domain_names": np.array([b""], dtype=object),
                    "template_sequence": np.array([b""], dtype=object),
                    "template_sum_probs": np.array([0], dtype=np.float32)}, warnings
        return empty_template_features(len(query)), warnings
    return {k: np.stack(v).astype(TEMPLATE_FEATURES[k]) if TEMPLATE_FEATURES[k] is not object
            else np.array(v, dtype=object) for k, v in collected.items()}, warnings
