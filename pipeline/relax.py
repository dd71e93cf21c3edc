"""Amber relaxation of a predicted structure: AlphaFold 2.3's protocol through OpenMM + PDBFixer.

`relax_pdb(pdb_string)` reproduces `alphafold/relax` (`relax.AmberRelaxation.process` over
`amber_minimize.run_pipeline`) step by step:

1. parse the PDB into AlphaFold's atom37 layout (heavy atoms of the 20 standard residues, first
   model; input hydrogens are dropped, as `protein.from_pdb_string` does) and check that every
   residue holds exactly its residue type's heavy atoms (OXT aside): AlphaFold relaxes complete
   model outputs, not partial experimental structures;
2. clean up with PDBFixer: add the terminal OXT and all hydrogens (pH 7), never add residues;
   check that no existing atom moved;
3. minimise with OpenMM: Amber99sb (``amber99sb.xml``), no solvent and no cutoff (the force field's
   defaults, as AlphaFold), bonds to hydrogen constrained, a harmonic restraint
   ``0.5 k |x - x0|^2`` (k = `stiffness` kcal/mol/A^2) on every heavy atom outside
   `exclude_residues`, L-BFGS (`Simulation.minimizeEnergy`) to `tolerance` kcal/mol/A or
   `max_iterations` steps (0 = until converged); a failed minimisation is retried (AlphaFold's
   `max_attempts`);
4. check structural violations (AlphaFold's `find_violations`, numpy port in
   `pipeline.relax_violations`); while any residue violates and fewer than `max_outer_iterations`
   rounds ran, drop the restraints of the violating residues, re-place the hydrogens and minimise
   again from the minimised heavy atoms;
5. write the minimised structure with hydrogens (as AlphaFold's relaxed PDBs) and carry each
   residue's input B-factor (pLDDT) over to all of its atoms.

Differences from AlphaFold, none of which changes the result for a model output numbered 1..N:
chain ids and residue numbers of the input are kept in the output (AlphaFold renumbers through
OpenMM's writer), single-residue chains and non-standard residues are refused with a `RelaxError`
instead of failing later, and PDBFixer's non-standard-residue and heterogen steps are skipped because
the cleaned input holds only standard protein residues.

OpenMM and PDBFixer are the optional ``relax`` extra (``pip install 'fastfold[relax]'``) and are
imported only when a relaxation runs.
"""
from __future__ import annotations

import functools
import io
import logging
import time
from typing import Any, Dict, Sequence, Tuple

import numpy as np

from model import residue_constants as rc
from pipeline.errors import InputError
from pipeline.relax_violations import find_structural_violations

log = logging.getLogger(__name__)

# AlphaFold's run_alphafold.py settings (RELAX_MAX_ITERATIONS, ... ), the defaults of relax_pdb.
MAX_ITERATIONS = 0
TOLERANCE = 2.39  # kcal/mol/A
STIFFNESS = 10.0  # kcal/mol/A^2
MAX_OUTER_ITERATIONS = 3
MAX_ATTEMPTS = 100  # amber_minimize.run_pipeline's default

_OXT = rc.atom_order["OXT"]


class RelaxError(InputError):
    """The structure cannot be relaxed (or OpenMM/PDBFixer are missing); the message is one line.

    A subclass of `InputError` so the CLI prints it as one line, and a `ValueError` as AlphaFold's
    relax raises."""


# ---------------------------------------------------------------------------------------- OpenMM

def _openmm():
    """Import OpenMM and PDBFixer lazily; a clear one-line error when the relax extra is missing."""
    try:
        import openmm
        import pdbfixer
        from openmm import app, unit
    except ImportError as e:
        raise RelaxError(f"Amber relaxation needs OpenMM and PDBFixer ({e}); install them with "
                         "pip install 'fastfold[relax]' (or: pip install openmm pdbfixer)") from None
    return openmm, app, unit, pdbfixer


@functools.lru_cache(maxsize=1)
def _force_field():
    # Parsing the XML takes a noticeable fraction of a small relax; the ForceField is read-only.
    _, app, _, _ = _openmm()
    return app.ForceField("amber99sb.xml")


def _platform(use_gpu: bool):
    openmm, _, _, _ = _openmm()
    name = "CUDA" if use_gpu else "CPU"
    available = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if name not in available:
        hint = "; relax on CPU instead (use_gpu=False)" if use_gpu else ""
        raise RelaxError(f"OpenMM has no {name} platform here (available: {', '.join(available)}){hint}")
    return openmm.Platform.getPlatformByName(name)


# ------------------------------------------------------------------------------------ PDB <-> atom37

def parse_pdb_atom37(pdb_string: str) -> Dict[str, Any]:
    """Heavy atoms of the first model of a PDB text in atom37 layout, as AlphaFold's
    `protein.from_pdb_string` reads them (hydrogens and atoms outside atom37 are ignored; of
    alternate locations the first is kept).

    Returns dict(aatype [N], atom_positions [N,37,3] float64 A, atom_mask [N,37], residue_index [N]
    (the file's numbers), chain_index [N], chain_ids [C] str, b_factors [N] (each residue's CA
    B-factor, as AlphaFold's `overwrite_b_factors` reads it; the first atom's when CA is absent)).
    Raises RelaxError on non-standard residues, insertion codes or a file without protein atoms.
    """
    residues: Dict[Tuple[str, int], Dict[str, Any]] = {}
    order = []
    for line in pdb_string.splitlines():
        record = line[:6]
        if record.startswith("ENDMDL"):
            break  # first model only
        if record != "ATOM  ":
            continue
        name = line[12:16].strip()
        resname = line[17:20].strip()
        chain = line[21]
        try:
            resnum = int(line[22:26])
            xyz = [float(line[30:38]), float(line[38:46]), float(line[46:54])]
        except ValueError:
            raise RelaxError(f"malformed ATOM record in PDB: {line.rstrip()!r}") from None
        if line[26] not in (" ", ""):
            raise RelaxError(f"insertion code at chain {chain} residue {resnum}{line[26]}: not supported by relax")
        try:
            bfac = float(line[60:66])
        except ValueError:
            bfac = 0.0
        key = (chain, resnum)
        if key not in residues:
            if resname not in rc.restype_3to1:
                raise RelaxError(f"residue {resname} (chain {chain} {resnum}) is not one of the 20 standard "
                                 "amino acids; Amber relax handles only those")
            residues[key] = {"resname": resname, "pos": np.zeros((rc.atom_type_num, 3)),
                             "mask": np.zeros(rc.atom_type_num), "b": None, "b_first": bfac}
            order.append(key)
        res = residues[key]
        if res["resname"] != resname:
            raise RelaxError(f"chain {chain} residue {resnum} is both {res['resname']} and {resname}")
        j = rc.atom_order.get(name)
        if j is None or res["mask"][j]:  # hydrogen / unknown atom, or a second altloc
            continue
        res["pos"][j] = xyz
        res["mask"][j] = 1.0
        if name == "CA":
            res["b"] = bfac
    order = [k for k in order if residues[k]["mask"].sum() > 0]
    if not order:
        raise RelaxError("no protein heavy atoms in the PDB text")
    chain_ids = []
    for chain, _ in order:
        if chain not in chain_ids:
            chain_ids.append(chain)
    res_list = [residues[k] for k in order]
    return dict(
        aatype=np.array([rc.restype_order[rc.restype_3to1[r["resname"]]] for r in res_list]),
        atom_positions=np.stack([r["pos"] for r in res_list]),
        atom_mask=np.stack([r["mask"] for r in res_list]),
        residue_index=np.array([k[1] for k in order]),
        chain_index=np.array([chain_ids.index(k[0]) for k in order]),
        chain_ids=chain_ids,
        b_factors=np.array([r["b"] if r["b"] is not None else r["b_first"] for r in res_list]),
    )


def _atom37_to_pdb(prot: Dict[str, Any]) -> str:
    """Heavy-atom PDB text (AlphaFold's `protein.to_pdb` layout) with the input's chain ids and
    residue numbers; PDBFixer reads it."""
    lines = []
    serial = 1
    atom_types = rc.atom_types
    n = len(prot["aatype"])
    for i in range(n):
        resname = rc.restype_1to3[rc.restypes[prot["aatype"][i]]]
        chain = prot["chain_ids"][prot["chain_index"][i]]
        resnum = int(prot["residue_index"][i])
        for name, p, m in zip(atom_types, prot["atom_positions"][i], prot["atom_mask"][i]):
            if m < 0.5:
                continue
            padded = name if len(name) == 4 else f" {name}"
            lines.append(f"ATOM  {serial:>5} {padded:<4} {resname:>3} {chain}{resnum:>4}    "
                         f"{p[0]:>8.3f}{p[1]:>8.3f}{p[2]:>8.3f}{1.0:>6.2f}{0.0:>6.2f}          {name[0]:>2}")
            serial += 1
        if i == n - 1 or prot["chain_index"][i + 1] != prot["chain_index"][i]:
            lines.append(f"TER   {serial:>5}      {resname:>3} {chain}{resnum:>4}")
            serial += 1
    lines.append("END")
    return "\n".join(lines) + "\n"


def _check_relaxable(prot: Dict[str, Any]) -> None:
    """AlphaFold's `_check_atom_mask_is_ideal` (every residue holds exactly its heavy atoms, OXT
    aside) plus a refusal of single-residue chains, for which Amber has no template (AlphaFold's
    cleanup drops them, then fails on the changed atom set)."""
    ideal = rc.STANDARD_ATOM_MASK[prot["aatype"]].astype(bool)
    have = prot["atom_mask"] > 0.5
    bad = np.flatnonzero((ideal != have)[:, :_OXT].any(axis=1) | (ideal != have)[:, _OXT + 1:].any(axis=1))
    if len(bad):
        i = bad[0]
        missing = [rc.atom_types[j] for j in np.flatnonzero(ideal[i] & ~have[i])]
        extra = [rc.atom_types[j] for j in np.flatnonzero(have[i] & ~ideal[i]) if j != _OXT]
        what = (f"missing {','.join(missing)}" if missing else "") + (
            f"{'; ' if missing else ''}unexpected {','.join(extra)}" if extra else "")
        raise RelaxError(f"{len(bad)} residue(s) do not hold exactly their heavy atoms (first: "
                         f"{prot['chain_ids'][prot['chain_index'][i]]} {prot['residue_index'][i]} "
                         f"{rc.restype_1to3[rc.restypes[prot['aatype'][i]]]}: {what}); Amber relax needs "
                         "complete residues, as in a model output")
    counts = np.bincount(prot["chain_index"])
    if (counts == 1).any():
        raise RelaxError(f"chain {prot['chain_ids'][int(np.flatnonzero(counts == 1)[0])]} has a single residue; "
                         "Amber has no template for a residue that is both N- and C-terminal")


def _clean(prot: Dict[str, Any]) -> str:
    """AlphaFold's `clean_protein`: PDBFixer adds the missing terminal OXT and all hydrogens (pH 7)
    to the heavy atoms of `prot`; returns the PDB text and checks no existing atom moved."""
    _, app, _, pdbfixer = _openmm()
    heavy_pdb = _atom37_to_pdb(prot)
    fixer = pdbfixer.PDBFixer(pdbfile=io.StringIO(heavy_pdb))
    fixer.missingResidues = {}  # never build residues: the prediction defines the sequence
    fixer.findMissingAtoms()
    fixer.addMissingAtoms(seed=0)
    fixer.addMissingHydrogens(pH=7.0)
    out = io.StringIO()
    app.PDBFile.writeFile(fixer.topology, fixer.positions, out, keepIds=True)
    cleaned = out.getvalue()
    # AlphaFold's `_check_cleaned_atoms`: the fixer may only add atoms.
    after = parse_pdb_atom37(cleaned)
    mask = prot["atom_mask"] > 0.5
    if (after["aatype"].shape != prot["aatype"].shape or (after["aatype"] != prot["aatype"]).any()
            or not np.allclose(after["atom_positions"][mask], np.round(prot["atom_positions"][mask], 3),
                               rtol=0, atol=1e-6)):
        raise RelaxError("PDBFixer changed the residues or moved existing atoms; cannot relax this structure")
    return cleaned


def _minimize(pdb_str: str, *, max_iterations: int, tolerance: float, stiffness: float,
              exclude_residues: Sequence[int], max_attempts: int, use_gpu: bool) -> Dict[str, Any]:
    """AlphaFold's `_run_one_iteration` + `_openmm_minimize`: one restrained minimisation of a
    cleaned PDB (with hydrogens). Energies in kcal/mol, positions in A."""
    openmm, app, unit, _ = _openmm()
    energy, length = unit.kilocalories_per_mole, unit.angstroms
    pdb = app.PDBFile(io.StringIO(pdb_str))
    try:
        system = _force_field().createSystem(pdb.topology, constraints=app.HBonds)
    except ValueError as e:  # e.g. "No template found for residue ..."
        raise RelaxError(f"Amber99sb cannot parametrise this structure: {str(e).splitlines()[0]}") from None
    if stiffness > 0:
        force = openmm.CustomExternalForce("0.5 * k * ((x-x0)^2 + (y-y0)^2 + (z-z0)^2)")
        force.addGlobalParameter("k", stiffness * energy / length ** 2)
        for p in ("x0", "y0", "z0"):
            force.addPerParticleParameter(p)
        excluded = set(int(r) for r in exclude_residues)
        for i, atom in enumerate(pdb.topology.atoms()):
            # AlphaFold's "non_hydrogen" restraint set.
            if atom.residue.index not in excluded and atom.element.name != "hydrogen":
                force.addParticle(i, pdb.positions[i])
        system.addForce(force)
    platform = _platform(use_gpu)

    start = time.time()
    last_error = None
    for attempt in range(1, max_attempts + 1):
        try:
            # Temperature 0: the integrator is never stepped, Simulation just needs one.
            integrator = openmm.LangevinIntegrator(0, 0.01, 0.0)
            simulation = app.Simulation(pdb.topology, system, integrator, platform)
            simulation.context.setPositions(pdb.positions)
            state = simulation.context.getState(getEnergy=True, getPositions=True)
            einit = state.getPotentialEnergy().value_in_unit(energy)
            posinit = state.getPositions(asNumpy=True).value_in_unit(length)
            # A Quantity, so OpenMM converts to the unit its version expects (kJ/mol/nm in 8.x).
            simulation.minimizeEnergy(maxIterations=max_iterations, tolerance=tolerance * energy / length)
            state = simulation.context.getState(getEnergy=True, getPositions=True)
            efinal = state.getPotentialEnergy().value_in_unit(energy)
            pos = state.getPositions(asNumpy=True).value_in_unit(length)
            if not (np.isfinite(efinal) and np.isfinite(pos).all()):
                raise ArithmeticError(f"minimisation diverged (final energy {efinal})")
            break
        except (openmm.OpenMMException, ArithmeticError) as e:
            # AlphaFold retries; on GPU a failure can be transient.
            last_error = e
            log.info("minimisation attempt %d of %d failed: %s", attempt, max_attempts, e)
    else:
        raise RelaxError(f"Amber minimisation failed after {max_attempts} attempts: "
                         f"{str(last_error).splitlines()[0] if str(last_error) else type(last_error).__name__}")
    out = io.StringIO()
    app.PDBFile.writeFile(simulation.topology, state.getPositions(), out, keepIds=True)
    return {"einit": float(einit), "efinal": float(efinal), "posinit": np.asarray(posinit),
            "pos": np.asarray(pos), "min_pdb": out.getvalue(), "min_attempts": attempt,
            "opt_time": time.time() - start}


def _set_b_factors(pdb_str: str, b_factors: np.ndarray) -> str:
    """Write each residue's B-factor into columns 61-66 of all of its ATOM/HETATM lines
    (AlphaFold's `overwrite_b_factors`: residues matched in order of appearance)."""
    lines = pdb_str.splitlines()
    current, idx = None, -1
    for k, line in enumerate(lines):
        if not line.startswith(("ATOM  ", "HETATM")):
            continue
        resid = line[17:27]  # residue name, chain, number, insertion code
        if resid != current:
            current, idx = resid, idx + 1
            if idx >= len(b_factors):
                raise RelaxError(f"relaxed structure has more residues than the input ({len(b_factors)})")
        lines[k] = f"{line[:60].ljust(60)}{b_factors[idx]:>6.2f}{line[66:]}"
    return "\n".join(lines) + "\n"


def pdb_violations(pdb_string: str) -> Dict[str, Any]:
    """AlphaFold's structural-violation check (`find_violations` + metrics) of a PDB text's heavy
    atoms; see `pipeline.relax_violations.find_structural_violations` for the keys."""
    prot = parse_pdb_atom37(pdb_string)
    return find_structural_violations(prot["aatype"], prot["atom_positions"], prot["atom_mask"],
                                      prot["residue_index"], prot["chain_index"])


def _violations(prot: Dict[str, Any]) -> Dict[str, Any]:
    return find_structural_violations(prot["aatype"], prot["atom_positions"], prot["atom_mask"],
                                      prot["residue_index"], prot["chain_index"])


# ------------------------------------------------------------------------------------------ relax

def relax_pdb(pdb_string: str, *, max_iterations: int = MAX_ITERATIONS, tolerance: float = TOLERANCE,
              stiffness: float = STIFFNESS, exclude_residues: Sequence[int] = (),
              max_outer_iterations: int = MAX_OUTER_ITERATIONS, use_gpu: bool = False,
              max_attempts: int = MAX_ATTEMPTS) -> Tuple[str, Dict[str, Any]]:
    """Relax a predicted structure with AlphaFold's Amber protocol (see the module docstring).

    Args:
      pdb_string: PDB text of a complete protein model (e.g. `unrelaxed_<model>.pdb`; pLDDT in the
        B-factor column). Hydrogens in it are ignored and placed anew.
      max_iterations: L-BFGS steps per minimisation; 0 = until converged (AlphaFold's default).
      tolerance: kcal/mol/A, the minimiser's convergence tolerance (2.39, as AlphaFold).
      stiffness: kcal/mol/A^2, spring constant of the heavy-atom restraints (10, as AlphaFold).
      exclude_residues: 0-based residue positions whose atoms are never restrained.
      max_outer_iterations: rounds of minimisation while violations remain (3, as run_alphafold).
      use_gpu: minimise on OpenMM's CUDA platform instead of CPU.
      max_attempts: retries of a failed minimisation (AlphaFold's `max_attempts`).

    Returns:
      (relaxed PDB text with hydrogens and the input's per-residue B-factors, debug_info) where
      debug_info is JSON-serialisable: AlphaFold's `initial_energy`, `final_energy` (kcal/mol),
      `attempts` and `rmsd` (all atoms, A) of the last minimisation round; its relax_metrics.json
      entries `remaining_violations` (per-residue 0/1 list) and `remaining_violations_count`; and
      `violations_before` / `violations_after` (residues in violation in the input / output),
      `heavy_atom_rmsd` (A, relaxed vs input heavy atoms), `outer_iterations`, `excluded_residues`
      (restraint-free residues of the last round), `platform` and `time_s`.

    Raises:
      RelaxError (an `InputError`, one-line message): OpenMM/PDBFixer missing, the CUDA platform
      missing with `use_gpu`, an incomplete or non-standard structure, or minimisation failure.
    """
    started = time.time()
    _openmm()  # fail first, and clearly, when the extra is missing
    prot = parse_pdb_atom37(pdb_string)
    _check_relaxable(prot)
    before = _violations(prot)

    exclude = set(int(r) for r in exclude_residues)
    pdb_in = _clean(prot)
    violations = np.inf
    iteration = 0
    ret: Dict[str, Any] = {}
    while violations > 0 and iteration < max_outer_iterations:
        ret = _minimize(pdb_in, max_iterations=max_iterations, tolerance=tolerance, stiffness=stiffness,
                        exclude_residues=sorted(exclude), max_attempts=max_attempts, use_gpu=use_gpu)
        minimized = parse_pdb_atom37(ret["min_pdb"])
        viol = _violations(minimized)
        ret["violations"] = viol
        ret["excluded"] = sorted(exclude)
        log.info("relax round %d: E %.2f -> %.2f kcal/mol in %.1f s, %d residue(s) in violation, %d excluded",
                 iteration + 1, ret["einit"], ret["efinal"], ret["opt_time"], viol["num_residue_violations"],
                 len(exclude))
        violations = viol["violations_per_residue"]
        exclude |= set(int(r) for r in viol["residue_violations"])
        iteration += 1
        if violations > 0 and iteration < max_outer_iterations:
            # AlphaFold's place_hydrogens_every_iteration: restart from the minimised heavy atoms.
            minimized["b_factors"] = prot["b_factors"]
            pdb_in = _clean(minimized)

    relaxed = parse_pdb_atom37(ret["min_pdb"])
    # AlphaFold's final `assert_equal_nonterminal_atom_types`: same residues and heavy atoms (OXT aside).
    keep = np.arange(rc.atom_type_num) != _OXT
    if relaxed["aatype"].shape != prot["aatype"].shape or not np.array_equal(
            relaxed["atom_mask"][:, keep], prot["atom_mask"][:, keep]):
        raise RelaxError("the relaxed structure's residues or heavy atoms differ from the input's")
    both = (relaxed["atom_mask"] > 0.5) & (prot["atom_mask"] > 0.5)
    heavy_rmsd = float(np.sqrt(np.mean(np.sum((relaxed["atom_positions"][both]
                                               - prot["atom_positions"][both]) ** 2, axis=-1))))
    pos, posinit = ret["pos"], ret["posinit"]
    remaining = ret["violations"]["total_per_residue_violations_mask"].astype(int)
    debug_info = {
        "initial_energy": ret["einit"],
        "final_energy": ret["efinal"],
        "attempts": int(ret["min_attempts"]),
        "rmsd": float(np.sqrt(np.sum((posinit - pos) ** 2) / posinit.shape[0])),
        "remaining_violations": remaining.tolist(),
        "remaining_violations_count": int(remaining.sum()),
        "violations_before": int(before["num_residue_violations"]),
        "violations_after": int(remaining.sum()),
        "heavy_atom_rmsd": heavy_rmsd,
        "outer_iterations": iteration,
        "excluded_residues": ret["excluded"],
        "platform": "CUDA" if use_gpu else "CPU",
        "time_s": time.time() - started,
    }
    return _set_b_factors(ret["min_pdb"], prot["b_factors"]), debug_info
