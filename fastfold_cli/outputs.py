"""What `fastfold predict` leaves in the output directory, in AlphaFold 2.3's formats.

Plain functions over numpy arrays (N residues, atom37 layout of `model.residue_constants`):

- `to_pdb` / `to_mmcif` / `from_pdb_string`: structures (pLDDT in the B-factor column);
- `confidence_json` / `pae_json`: AlphaFold's per-model confidence files;
- `ranking`: AlphaFold's model order and `ranking_debug.json` content;
- `write_prediction_outputs` (one model) and `write_ranked` (after all models): the files, each
  written atomically (`write_atomic`) so an interrupted run never leaves a half-written file that a
  rerun would mistake for a finished one.

gemmi (mmCIF, PDB parsing) and `model.residue_constants` are imported lazily so importing this
module costs nothing on a machine that only runs the network.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Mapping, Optional

import numpy as np

# AlphaFold's `protein.PDB_CHAIN_IDS`: the single-character chain ids a PDB file can hold.
PDB_CHAIN_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _rc():
    # Lazy: model/ pulls in torch-side modules we don't need to write a text file.
    from model import residue_constants
    return residue_constants


def write_atomic(path, data) -> Path:
    """Write `data` (str or bytes) to `path` through a temporary file in the same directory and
    `os.replace`, so readers (and a resumed run) see either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "wb" if isinstance(data, (bytes, bytearray)) else "w"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


# ----------------------------------------------------------------------------------------- structures

def _resname(aatype: int) -> str:
    rc = _rc()
    restypes = rc.restypes + ["X"]
    return rc.restype_1to3.get(restypes[aatype], "UNK")


def _check_structure(aatype, atom_positions, atom_mask, residue_index, b_factors, chain_index):
    aatype = np.asarray(aatype).astype(np.int64)
    n = aatype.shape[0]
    atom_positions = np.asarray(atom_positions, dtype=np.float64)
    atom_mask = np.asarray(atom_mask)
    residue_index = np.asarray(residue_index).astype(np.int64)
    b_factors = np.asarray(b_factors, dtype=np.float64)
    if b_factors.ndim == 1:  # per-residue values (pLDDT) -> every atom of the residue
        b_factors = np.repeat(b_factors[:, None], atom_mask.shape[-1], axis=-1)
    chain_index = np.zeros(n, np.int64) if chain_index is None else np.asarray(chain_index).astype(np.int64)
    rc = _rc()
    if aatype.ndim != 1 or n == 0:
        raise ValueError(f"aatype must be [N] with N > 0, got shape {aatype.shape}")
    if atom_positions.shape != (n, rc.atom_type_num, 3) or atom_mask.shape != (n, rc.atom_type_num):
        raise ValueError(f"expected atom37 arrays [N,37,3] and [N,37] for N={n}, got "
                         f"{atom_positions.shape} and {atom_mask.shape}")
    if residue_index.shape != (n,) or b_factors.shape != atom_mask.shape or chain_index.shape != (n,):
        raise ValueError("residue_index [N], b_factors [N] or [N,37] and chain_index [N] must match aatype")
    if aatype.min() < 0 or aatype.max() > rc.restype_num:
        raise ValueError("Invalid aatypes.")
    if chain_index.min() < 0 or chain_index.max() >= len(PDB_CHAIN_IDS):
        raise ValueError(f"The PDB format supports at most {len(PDB_CHAIN_IDS)} chains.")
    return aatype, atom_positions, atom_mask, residue_index, b_factors, chain_index


def to_pdb(aatype, atom_positions, atom_mask, residue_index, b_factors, chain_index=None) -> str:
    """PDB text in AlphaFold's `protein.to_pdb` layout (MODEL 1, ATOM records, TER after each chain,
    ENDMDL, END, lines padded to 80 columns).

    aatype [N] int (AlphaFold order, 20 = X/UNK); atom_positions [N,37,3] Å; atom_mask [N,37];
    residue_index [N] (written as is: pass the feature's 0-based index + 1, as AlphaFold does);
    b_factors [N,37] or [N] (pLDDT); chain_index [N] int, 0 -> 'A', 1 -> 'B', … (None: one chain A).
    """
    aatype, pos, mask, residue_index, b_factors, chain_index = _check_structure(
        aatype, atom_positions, atom_mask, residue_index, b_factors, chain_index)
    atom_types = _rc().atom_types

    def chain_end(atom_index, i):
        return (f"{'TER':<6}{atom_index:>5}      {_resname(aatype[i]):>3} "
                f"{PDB_CHAIN_IDS[chain_index[i]]:>1}{residue_index[i]:>4}")

    lines = ["MODEL     1"]
    atom_index = 1
    for i in range(aatype.shape[0]):
        if i > 0 and chain_index[i] != chain_index[i - 1]:
            lines.append(chain_end(atom_index, i - 1))
            atom_index += 1  # the TER record takes a serial number
        res_name_3 = _resname(aatype[i])
        chain_id = PDB_CHAIN_IDS[chain_index[i]]
        for atom_name, p, m, b in zip(atom_types, pos[i], mask[i], b_factors[i]):
            if m < 0.5:
                continue
            name = atom_name if len(atom_name) == 4 else f" {atom_name}"
            element = atom_name[0]  # protein atoms are C, N, O, S: the first letter is the element
            # PDB is a columnar format: every space matters.
            lines.append(f"{'ATOM':<6}{atom_index:>5} {name:<4}{'':>1}{res_name_3:>3} {chain_id:>1}"
                         f"{residue_index[i]:>4}{'':>1}   {p[0]:>8.3f}{p[1]:>8.3f}{p[2]:>8.3f}"
                         f"{1.0:>6.2f}{b:>6.2f}          {element:>2}{'':>2}")
            atom_index += 1
    lines.append(chain_end(atom_index, aatype.shape[0] - 1))
    lines += ["ENDMDL", "END"]
    return "\n".join(line.ljust(80) for line in lines) + "\n"


def from_pdb_string(pdb_str: str) -> dict:
    """Parse a PDB string (first model, standard atoms only, like AlphaFold's
    `protein.from_pdb_string`) into atom37 arrays through gemmi.

    Returns dict(aatype [N], atom_positions [N,37,3], atom_mask [N,37], residue_index [N],
    b_factors [N,37], chain_index [N], chain_ids [C] str). Waters, ligands and residues with no
    atom37 atom are skipped; non-standard polymer residues (MSE, …) become X (20).
    """
    import gemmi

    rc = _rc()
    st = gemmi.read_pdb_string(pdb_str)
    st.setup_entities()  # classifies residues: polymer vs ligands/waters, which are skipped below
    if len(st) == 0:
        raise ValueError("no model in PDB text")
    aatype, pos, mask, resid, bfac, chain_index, chain_ids = [], [], [], [], [], [], []
    for chain in st[0]:
        for res in chain:
            if res.entity_type not in (gemmi.EntityType.Polymer, gemmi.EntityType.Unknown):
                continue
            if res.seqid.icode != " ":
                raise ValueError(f"insertion code at chain {chain.name} residue {res.seqid.num}: not supported")
            p = np.zeros((rc.atom_type_num, 3))
            m = np.zeros(rc.atom_type_num)
            b = np.zeros(rc.atom_type_num)
            for atom in res:
                j = rc.atom_order.get(atom.name)
                if j is None or m[j]:  # unknown atom, or a second altloc of one we have
                    continue
                p[j] = atom.pos.tolist()
                m[j] = 1.0
                b[j] = atom.b_iso
            if m.sum() < 0.5:
                continue
            if chain.name not in chain_ids:
                chain_ids.append(chain.name)
            aatype.append(rc.restype_order.get(rc.restype_3to1.get(res.name, "X"), rc.restype_num))
            pos.append(p)
            mask.append(m)
            resid.append(res.seqid.num)
            bfac.append(b)
            chain_index.append(chain_ids.index(chain.name))
    if not aatype:
        raise ValueError("no protein atoms in PDB text")
    return dict(aatype=np.array(aatype), atom_positions=np.array(pos), atom_mask=np.array(mask),
                residue_index=np.array(resid), b_factors=np.array(bfac), chain_index=np.array(chain_index),
                chain_ids=chain_ids)


def to_mmcif(aatype, atom_positions, atom_mask, residue_index, b_factors, chain_index=None, *,
             plddt=None, name: str = "fastfold_prediction") -> str:
    """mmCIF text built with gemmi: entity, entity_poly, entity_poly_seq, chem_comp, struct_asym,
    atom_site (B-factor column = `b_factors`), and, when `plddt` [N] is given, ModelCIF's pLDDT
    metrics as AlphaFold writes them (`_ma_qa_metric`, `_ma_qa_metric_global`, `_ma_qa_metric_local`).

    Arrays as in `to_pdb`. Chains with the same sequence share one entity (homomers). Every residue
    of the input is in the entity sequence; residues with no atoms are left out of atom_site only.
    """
    import gemmi

    aatype, pos, mask, residue_index, b_factors, chain_index = _check_structure(
        aatype, atom_positions, atom_mask, residue_index, b_factors, chain_index)
    atom_types = _rc().atom_types
    st = gemmi.Structure()
    st.name = name
    model = gemmi.Model(1)
    entity_of_seq: dict[tuple, gemmi.Entity] = {}
    metric_rows = []
    for c in dict.fromkeys(chain_index.tolist()):  # chains in order of first appearance
        rows = np.nonzero(chain_index == c)[0]
        chain_id = PDB_CHAIN_IDS[c]
        seq = tuple(_resname(a) for a in aatype[rows])
        entity = entity_of_seq.get(seq)
        if entity is None:
            entity = gemmi.Entity(str(len(entity_of_seq) + 1))
            entity.entity_type = gemmi.EntityType.Polymer
            entity.polymer_type = gemmi.PolymerType.PeptideL
            entity.full_sequence = list(seq)
            entity_of_seq[seq] = entity
        entity.subchains = list(entity.subchains) + [chain_id]
        chain = gemmi.Chain(chain_id)
        for k, i in enumerate(rows):
            res = gemmi.Residue()
            res.name = seq[k]
            res.seqid = gemmi.SeqId(int(residue_index[i]), " ")
            res.subchain = chain_id  # label_asym_id = auth chain id: one polymer per chain
            res.entity_id = entity.name
            res.entity_type = gemmi.EntityType.Polymer
            res.label_seq = k + 1
            res.het_flag = "A"
            for atom_name, p, m, b in zip(atom_types, pos[i], mask[i], b_factors[i]):
                if m < 0.5:
                    continue
                atom = gemmi.Atom()
                atom.name = atom_name
                atom.element = gemmi.Element(atom_name[0])
                # 3 decimals as in PDB/AlphaFold's mmCIF: float32 noise below 1 mÅ is not information.
                atom.pos = gemmi.Position(*(round(float(x), 3) for x in p))
                atom.b_iso = round(float(b), 2)
                atom.occ = 1.0
                res.add_atom(atom)
            if len(res):
                chain.add_residue(res)
            if plddt is not None:
                metric_rows.append((chain_id, seq[k], k + 1, round(float(plddt[i]), 2)))
        model.add_chain(chain)
    st.add_model(model)
    for entity in entity_of_seq.values():
        st.entities.append(entity)

    groups = gemmi.MmcifOutputGroups(True)
    groups.cell = groups.symmetry = False  # a prediction has no crystal cell; gemmi would write 1 Å
    block = st.make_mmcif_document(groups).sole_block()
    # gemmi leaves chem_comp.type unknown ('.'); viewers and validators want the polymer linkage.
    comps = sorted({r for seq in entity_of_seq for r in seq})
    block.set_mmcif_category("_chem_comp.", {
        "id": comps,
        "type": ["peptide linking" if r == "GLY" else "L-peptide linking" for r in comps]})
    # As ColabFold: AlphaFold's template featuriser needs a release date to read an mmCIF, so with
    # this (1971, before any --max-template-date) a prediction can be reused as a custom template.
    block.set_mmcif_category("_pdbx_audit_revision_history.", {
        "ordinal": [1], "data_content_type": ["Structure model"], "major_revision": [1],
        "minor_revision": [0], "revision_date": ["1971-01-01"]})
    if plddt is not None:
        mean = round(float(np.mean(np.asarray(plddt, dtype=np.float64))), 2)
        block.set_mmcif_category("_ma_qa_metric.", {
            "id": [1, 2], "mode": ["global", "local"], "name": ["pLDDT", "pLDDT"], "type": ["pLDDT", "pLDDT"]})
        block.set_mmcif_category("_ma_qa_metric_global.", {
            "metric_id": [1], "metric_value": [mean], "model_id": [1], "ordinal_id": [1]})
        block.set_mmcif_category("_ma_qa_metric_local.", {
            "label_asym_id": [r[0] for r in metric_rows], "label_comp_id": [r[1] for r in metric_rows],
            "label_seq_id": [r[2] for r in metric_rows], "metric_id": [2] * len(metric_rows),
            "metric_value": [r[3] for r in metric_rows], "model_id": [1] * len(metric_rows),
            "ordinal_id": list(range(1, len(metric_rows) + 1))})
    return block.as_string()


# ----------------------------------------------------------------------------------------- confidence

def _confidence_category(score: float) -> str:
    """AlphaFold's pLDDT bands: disordered (D) < 50 <= low (L) < 70 <= medium (M) < 90 <= high (H)."""
    if 0 <= score < 50:
        return "D"
    if 50 <= score < 70:
        return "L"
    if 70 <= score < 90:
        return "M"
    if 90 <= score <= 100:
        return "H"
    raise ValueError(f"Invalid pLDDT score {score}")


def confidence_json(plddt, chain_scores: Optional[Mapping] = None) -> str:
    """AlphaFold's `confidence_<model>.json`: residueNumber (1-based), confidenceScore (2 decimals),
    confidenceCategory (D/L/M/H). plddt: [N] in 0–100. For complexes `chain_scores` ({"chains":
    {chain id: {mean_plddt, ptm}}, "interfaces": {"A-B": ipTM}}) is added under those two keys;
    AlphaFold's three keys stay as they are."""
    plddt = np.asarray(plddt)
    if plddt.ndim != 1:
        raise ValueError(f"The plddt array must be rank 1, got: {plddt.shape}.")
    doc = {
        "residueNumber": list(range(1, len(plddt) + 1)),
        "confidenceScore": [round(float(s), 2) for s in plddt],
        "confidenceCategory": [_confidence_category(float(s)) for s in plddt],
    }
    if chain_scores:
        doc["chains"] = {k: {kk: round(float(vv), 4) for kk, vv in v.items()} for k, v in chain_scores["chains"].items()}
        doc["interfaces"] = {k: round(float(v), 4) for k, v in chain_scores["interfaces"].items()}
    return json.dumps(doc, indent=None, separators=(",", ":"))


def pae_json(pae, max_pae: float) -> str:
    """AlphaFold's `pae_<model>.json` (the AFDB layout, values to 1 decimal):
    [{"predicted_aligned_error": [[...N]...N], "max_predicted_aligned_error": max_pae}]. pae: [N,N] Å."""
    pae = np.asarray(pae)
    if pae.ndim != 2 or pae.shape[0] != pae.shape[1]:
        raise ValueError(f"PAE must be a square matrix, got {pae.shape}")
    return json.dumps([{
        "predicted_aligned_error": np.round(pae.astype(np.float64), decimals=1).tolist(),
        "max_predicted_aligned_error": float(max_pae),
    }], indent=None, separators=(",", ":"))


def ranking_confidence(result: Mapping) -> float:
    """AlphaFold's `ranking_confidence`: 0.8·ipTM + 0.2·pTM when the result has `iptm` (multimer),
    else mean pLDDT (monomer presets, pTM or not)."""
    if "iptm" in result:
        return float(0.8 * float(result["iptm"]) + 0.2 * float(result["ptm"]))
    return float(np.mean(np.asarray(result["plddt"], dtype=np.float64)))


def ranking(results: Mapping[str, Mapping]) -> tuple[list[str], dict]:
    """Model order, best first, and the `ranking_debug.json` dict, as AlphaFold's run_alphafold.py:
    ({"plddts": {model: mean pLDDT}, "order": [...]}) or ({"iptm+ptm": {...}, "order": [...]}).

    results: model name -> result dict; only `plddt` [N] (and `ptm`, `iptm` scalars for multimer)
    are read. Ties keep the insertion order (Python's stable sort, as AlphaFold)."""
    if not results:
        raise ValueError("no model results to rank")
    scores = {name: ranking_confidence(r) for name, r in results.items()}
    order = [name for name, _ in sorted(scores.items(), key=lambda x: x[1], reverse=True)]
    label = "iptm+ptm" if any("iptm" in r for r in results.values()) else "plddts"
    return order, {label: scores, "order": order}


# ----------------------------------------------------------------------------------------- files

def prediction_structure(features: Mapping, result: Mapping) -> dict:
    """Arrays for `to_pdb`/`to_mmcif` from a feature batch and a model result, as AlphaFold's
    `protein.from_prediction`: residue_index + 1, pLDDT as B-factors of every atom, chains from
    `asym_id` (1-based, multimer features) when present.

    features: the processed batch (`aatype` [N] or [E,N] int, `residue_index` [N] or [E,N]) or the
    raw pipeline dict (`aatype` one-hot [N,21], `residue_index` [N]); optional `asym_id` [N].
    result: `final_atom_positions` [N,37,3], `final_atom_mask` [N,37], `plddt` [N]."""
    aatype = np.asarray(features["aatype"])
    residue_index = np.asarray(features["residue_index"])
    if residue_index.ndim == 2:  # processed batch with AlphaFold's leading ensemble axis [E,N]
        aatype, residue_index = aatype[0], residue_index[0]
    if aatype.ndim == 2:  # raw pipeline feature: one-hot [N,21]
        aatype = aatype.argmax(-1)
    plddt = np.asarray(result["plddt"])
    atom_mask = np.asarray(result["final_atom_mask"])
    out = dict(aatype=aatype, atom_positions=np.asarray(result["final_atom_positions"]), atom_mask=atom_mask,
               residue_index=residue_index.astype(np.int64) + 1,
               b_factors=np.repeat(plddt[:, None], atom_mask.shape[-1], axis=-1), chain_index=None)
    if "asym_id" in features:
        out["chain_index"] = np.asarray(features["asym_id"]).reshape(-1)[: aatype.shape[0]].astype(np.int64) - 1
    return out


def write_prediction_outputs(out_dir, model_name: str, features: Mapping, result: Mapping) -> dict[str, Path]:
    """Write one model's files into out_dir: `unrelaxed_<model>.pdb` (pLDDT as B-factors),
    `confidence_<model>.json`, and `pae_<model>.json` when the result has `predicted_aligned_error`
    [N,N] and `max_predicted_aligned_error` (pTM and multimer presets). Returns {kind: path}."""
    out_dir = Path(out_dir)
    written = {"unrelaxed_pdb": write_atomic(out_dir / f"unrelaxed_{model_name}.pdb",
                                             to_pdb(**prediction_structure(features, result))),
               "confidence_json": write_atomic(out_dir / f"confidence_{model_name}.json",
                                               confidence_json(result["plddt"], result.get("chain_scores")))}
    if "predicted_aligned_error" in result and "max_predicted_aligned_error" in result:
        written["pae_json"] = write_atomic(out_dir / f"pae_{model_name}.json", pae_json(
            result["predicted_aligned_error"], float(result["max_predicted_aligned_error"])))
    return written


def write_ranked(out_dir, results: Mapping[str, Mapping],
                 relaxed_pdbs: Optional[Mapping[str, str]] = None) -> list[str]:
    """After all models: rank them (`ranking`), write `ranked_{i}.pdb` (the relaxed structure when
    `relaxed_pdbs` has it, else `unrelaxed_<model>.pdb` from out_dir, byte for byte), `ranked_{i}.cif`
    (the same structure through gemmi, pLDDT read back from its B-factors, as AlphaFold builds its
    mmCIF from the relaxed PDB) and `ranking_debug.json`. Returns the order, best first.

    results: model name -> dict with `plddt` [N] (and `ptm`, `iptm` for multimer); the structures
    are read from disk, so a resumed run can pass scores only."""
    out_dir = Path(out_dir)
    relaxed_pdbs = relaxed_pdbs or {}
    order, debug = ranking(results)
    for i, model_name in enumerate(order):
        pdb_str = relaxed_pdbs.get(model_name)
        if pdb_str is None:
            pdb_str = (out_dir / f"unrelaxed_{model_name}.pdb").read_text()
        write_atomic(out_dir / f"ranked_{i}.pdb", pdb_str)
        arrays = from_pdb_string(pdb_str)
        chain_ids = arrays.pop("chain_ids")
        if any(c != PDB_CHAIN_IDS[k] for k, c in enumerate(chain_ids)):
            raise ValueError(f"{model_name}: chain ids {chain_ids} are not A, B, … in order")
        # Per-residue pLDDT = B-factor of the first present atom (all atoms of a residue carry it).
        plddt = arrays["b_factors"][np.arange(len(arrays["aatype"])), arrays["atom_mask"].argmax(-1)]
        write_atomic(out_dir / f"ranked_{i}.cif", to_mmcif(**arrays, plddt=plddt, name=f"ranked_{i}"))
    write_atomic(out_dir / "ranking_debug.json", json.dumps(debug, indent=4))
    return order
