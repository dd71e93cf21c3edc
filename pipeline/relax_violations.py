"""AlphaFold's structural-violation check in numpy, for the Amber relaxation (`pipeline.relax`).

A port of the pieces of AlphaFold 2.3 that `alphafold/relax/amber_minimize.py::find_violations`
uses: `folding.find_structural_violations` and `folding.compute_violation_metrics` (JAX) with
`all_atom.between_residue_bond_loss`, `all_atom.between_residue_clash_loss`,
`all_atom.within_residue_violations` and `all_atom.extreme_ca_ca_distance_violations`, and the
bond-geometry tables of `residue_constants` that `model/residue_constants.py` leaves out
(`load_stereo_chemical_props`, `make_atom14_dists_bounds`, the between-residue C-N constants).

The tables below are AlphaFold's `stereo_chemical_props.txt` (Engh & Huber literature values, as
distributed with OpenStructure and AlphaFold) with the bond and angle sections rewritten one entry a
line as ``RESNAME ATOMS MEAN STDDEV``; the file's third section (non-bonded minimum distances) is not
used by AlphaFold's violation check (it uses van der Waals radii instead) and is not carried.

Deliberate differences from AlphaFold, all no-ops for a single chain numbered 1..N:
  * the between-residue clash check runs over blocks of existing atoms instead of an
    [N, N, 14, 14] tensor, so memory stays small for long proteins;
  * with several chains, residues are ordered by a global index that puts a gap between chains,
    so each inter-chain atom pair is checked once for clashes and no peptide bond is assumed across
    a chain break (AlphaFold compares raw residue numbers, which restart in every chain).
Quirks kept on purpose to give the same answers as AlphaFold: the CA-C-N angle uses the C-N bond
length's standard deviation, and the disulfide exemption from clashes covers every pair of atoms in
atom14 slot 5 (CYS SG's slot) whatever the residue types, as AlphaFold's one-hot mask does.
"""
from __future__ import annotations

import collections
import functools
from typing import Dict, Mapping, Optional

import numpy as np

from model import residue_constants as rc

# From AlphaFold's model config, as amber_minimize.find_violations passes them.
VIOLATION_TOLERANCE_FACTOR = 12.0
CLASH_OVERLAP_TOLERANCE = 1.5

# Between-residue bond lengths for general bonds (first element) and for proline (second element).
between_res_bond_length_c_n = [1.329, 1.341]
between_res_bond_length_stddev_c_n = [0.014, 0.016]
# Between-residue cos angles (mean, stddev).
between_res_cos_angles_c_n_ca = [-0.5203, 0.0353]  # degrees: 121.352 +- 2.315
between_res_cos_angles_ca_c_n = [-0.4473, 0.0311]  # degrees: 116.568 +- 1.995

Bond = collections.namedtuple("Bond", ["atom1_name", "atom2_name", "length", "stddev"])
BondAngle = collections.namedtuple("BondAngle", ["atom1_name", "atom2_name", "atom3name", "angle_rad", "stddev"])

# Bond lengths [Angstrom]: residue, bond, mean, stddev.
_BONDS = """
ALA CA-CB 1.520 0.021
ALA N-CA 1.459 0.020
ALA CA-C 1.525 0.026
ALA C-O 1.229 0.019
ARG CA-CB 1.535 0.022
ARG CB-CG 1.521 0.027
ARG CG-CD 1.515 0.025
ARG CD-NE 1.460 0.017
ARG NE-CZ 1.326 0.013
ARG CZ-NH1 1.326 0.013
ARG CZ-NH2 1.326 0.013
ARG N-CA 1.459 0.020
ARG CA-C 1.525 0.026
ARG C-O 1.229 0.019
ASN CA-CB 1.527 0.026
ASN CB-CG 1.506 0.023
ASN CG-OD1 1.235 0.022
ASN CG-ND2 1.324 0.025
ASN N-CA 1.459 0.020
ASN CA-C 1.525 0.026
ASN C-O 1.229 0.019
ASP CA-CB 1.535 0.022
ASP CB-CG 1.513 0.021
ASP CG-OD1 1.249 0.023
ASP CG-OD2 1.249 0.023
ASP N-CA 1.459 0.020
ASP CA-C 1.525 0.026
ASP C-O 1.229 0.019
CYS CA-CB 1.526 0.013
CYS CB-SG 1.812 0.016
CYS N-CA 1.459 0.020
CYS CA-C 1.525 0.026
CYS C-O 1.229 0.019
GLU CA-CB 1.535 0.022
GLU CB-CG 1.517 0.019
GLU CG-CD 1.515 0.015
GLU CD-OE1 1.252 0.011
GLU CD-OE2 1.252 0.011
GLU N-CA 1.459 0.020
GLU CA-C 1.525 0.026
GLU C-O 1.229 0.019
GLN CA-CB 1.535 0.022
GLN CB-CG 1.521 0.027
GLN CG-CD 1.506 0.023
GLN CD-OE1 1.235 0.022
GLN CD-NE2 1.324 0.025
GLN N-CA 1.459 0.020
GLN CA-C 1.525 0.026
GLN C-O 1.229 0.019
GLY N-CA 1.456 0.015
GLY CA-C 1.514 0.016
GLY C-O 1.232 0.016
HIS CA-CB 1.535 0.022
HIS CB-CG 1.492 0.016
HIS CG-ND1 1.369 0.015
HIS CG-CD2 1.353 0.017
HIS ND1-CE1 1.343 0.025
HIS CD2-NE2 1.415 0.021
HIS CE1-NE2 1.322 0.023
HIS N-CA 1.459 0.020
HIS CA-C 1.525 0.026
HIS C-O 1.229 0.019
ILE CA-CB 1.544 0.023
ILE CB-CG1 1.536 0.028
ILE CB-CG2 1.524 0.031
ILE CG1-CD1 1.500 0.069
ILE N-CA 1.459 0.020
ILE CA-C 1.525 0.026
ILE C-O 1.229 0.019
LEU CA-CB 1.533 0.023
LEU CB-CG 1.521 0.029
LEU CG-CD1 1.514 0.037
LEU CG-CD2 1.514 0.037
LEU N-CA 1.459 0.020
LEU CA-C 1.525 0.026
LEU C-O 1.229 0.019
LYS CA-CB 1.535 0.022
LYS CB-CG 1.521 0.027
LYS CG-CD 1.520 0.034
LYS CD-CE 1.508 0.025
LYS CE-NZ 1.486 0.025
LYS N-CA 1.459 0.020
LYS CA-C 1.525 0.026
LYS C-O 1.229 0.019
MET CA-CB 1.535 0.022
MET CB-CG 1.509 0.032
MET CG-SD 1.807 0.026
MET SD-CE 1.774 0.056
MET N-CA 1.459 0.020
MET CA-C 1.525 0.026
MET C-O 1.229 0.019
PHE CA-CB 1.535 0.022
PHE CB-CG 1.509 0.017
PHE CG-CD1 1.383 0.015
PHE CG-CD2 1.383 0.015
PHE CD1-CE1 1.388 0.020
PHE CD2-CE2 1.388 0.020
PHE CE1-CZ 1.369 0.019
PHE CE2-CZ 1.369 0.019
PHE N-CA 1.459 0.020
PHE CA-C 1.525 0.026
PHE C-O 1.229 0.019
PRO CA-CB 1.531 0.020
PRO CB-CG 1.495 0.050
PRO CG-CD 1.502 0.033
PRO CD-N 1.474 0.014
PRO N-CA 1.468 0.017
PRO CA-C 1.524 0.020
PRO C-O 1.228 0.020
SER CA-CB 1.525 0.015
SER CB-OG 1.418 0.013
SER N-CA 1.459 0.020
SER CA-C 1.525 0.026
SER C-O 1.229 0.019
THR CA-CB 1.529 0.026
THR CB-OG1 1.428 0.020
THR CB-CG2 1.519 0.033
THR N-CA 1.459 0.020
THR CA-C 1.525 0.026
THR C-O 1.229 0.019
TRP CA-CB 1.535 0.022
TRP CB-CG 1.498 0.018
TRP CG-CD1 1.363 0.014
TRP CG-CD2 1.432 0.017
TRP CD1-NE1 1.375 0.017
TRP NE1-CE2 1.371 0.013
TRP CD2-CE2 1.409 0.012
TRP CD2-CE3 1.399 0.015
TRP CE2-CZ2 1.393 0.017
TRP CE3-CZ3 1.380 0.017
TRP CZ2-CH2 1.369 0.019
TRP CZ3-CH2 1.396 0.016
TRP N-CA 1.459 0.020
TRP CA-C 1.525 0.026
TRP C-O 1.229 0.019
TYR CA-CB 1.535 0.022
TYR CB-CG 1.512 0.015
TYR CG-CD1 1.387 0.013
TYR CG-CD2 1.387 0.013
TYR CD1-CE1 1.389 0.015
TYR CD2-CE2 1.389 0.015
TYR CE1-CZ 1.381 0.013
TYR CE2-CZ 1.381 0.013
TYR CZ-OH 1.374 0.017
TYR N-CA 1.459 0.020
TYR CA-C 1.525 0.026
TYR C-O 1.229 0.019
VAL CA-CB 1.543 0.021
VAL CB-CG1 1.524 0.021
VAL CB-CG2 1.524 0.021
VAL N-CA 1.459 0.020
VAL CA-C 1.525 0.026
VAL C-O 1.229 0.019
"""

# Bond angles [degrees]: residue, atoms, mean, stddev.
_ANGLES = """
ALA N-CA-CB 110.1 1.4
ALA CB-CA-C 110.1 1.5
ALA N-CA-C 111.0 2.7
ALA CA-C-O 120.1 2.1
ARG N-CA-CB 110.6 1.8
ARG CB-CA-C 110.4 2.0
ARG CA-CB-CG 113.4 2.2
ARG CB-CG-CD 111.6 2.6
ARG CG-CD-NE 111.8 2.1
ARG CD-NE-CZ 123.6 1.4
ARG NE-CZ-NH1 120.3 0.5
ARG NE-CZ-NH2 120.3 0.5
ARG NH1-CZ-NH2 119.4 1.1
ARG N-CA-C 111.0 2.7
ARG CA-C-O 120.1 2.1
ASN N-CA-CB 110.6 1.8
ASN CB-CA-C 110.4 2.0
ASN CA-CB-CG 113.4 2.2
ASN CB-CG-ND2 116.7 2.4
ASN CB-CG-OD1 121.6 2.0
ASN ND2-CG-OD1 121.9 2.3
ASN N-CA-C 111.0 2.7
ASN CA-C-O 120.1 2.1
ASP N-CA-CB 110.6 1.8
ASP CB-CA-C 110.4 2.0
ASP CA-CB-CG 113.4 2.2
ASP CB-CG-OD1 118.3 0.9
ASP CB-CG-OD2 118.3 0.9
ASP OD1-CG-OD2 123.3 1.9
ASP N-CA-C 111.0 2.7
ASP CA-C-O 120.1 2.1
CYS N-CA-CB 110.8 1.5
CYS CB-CA-C 111.5 1.2
CYS CA-CB-SG 114.2 1.1
CYS N-CA-C 111.0 2.7
CYS CA-C-O 120.1 2.1
GLU N-CA-CB 110.6 1.8
GLU CB-CA-C 110.4 2.0
GLU CA-CB-CG 113.4 2.2
GLU CB-CG-CD 114.2 2.7
GLU CG-CD-OE1 118.3 2.0
GLU CG-CD-OE2 118.3 2.0
GLU OE1-CD-OE2 123.3 1.2
GLU N-CA-C 111.0 2.7
GLU CA-C-O 120.1 2.1
GLN N-CA-CB 110.6 1.8
GLN CB-CA-C 110.4 2.0
GLN CA-CB-CG 113.4 2.2
GLN CB-CG-CD 111.6 2.6
GLN CG-CD-OE1 121.6 2.0
GLN CG-CD-NE2 116.7 2.4
GLN OE1-CD-NE2 121.9 2.3
GLN N-CA-C 111.0 2.7
GLN CA-C-O 120.1 2.1
GLY N-CA-C 113.1 2.5
GLY CA-C-O 120.6 1.8
HIS N-CA-CB 110.6 1.8
HIS CB-CA-C 110.4 2.0
HIS CA-CB-CG 113.6 1.7
HIS CB-CG-ND1 123.2 2.5
HIS CB-CG-CD2 130.8 3.1
HIS CG-ND1-CE1 108.2 1.4
HIS ND1-CE1-NE2 109.9 2.2
HIS CE1-NE2-CD2 106.6 2.5
HIS NE2-CD2-CG 109.2 1.9
HIS CD2-CG-ND1 106.0 1.4
HIS N-CA-C 111.0 2.7
HIS CA-C-O 120.1 2.1
ILE N-CA-CB 110.8 2.3
ILE CB-CA-C 111.6 2.0
ILE CA-CB-CG1 111.0 1.9
ILE CB-CG1-CD1 113.9 2.8
ILE CA-CB-CG2 110.9 2.0
ILE CG1-CB-CG2 111.4 2.2
ILE N-CA-C 111.0 2.7
ILE CA-C-O 120.1 2.1
LEU N-CA-CB 110.4 2.0
LEU CB-CA-C 110.2 1.9
LEU CA-CB-CG 115.3 2.3
LEU CB-CG-CD1 111.0 1.7
LEU CB-CG-CD2 111.0 1.7
LEU CD1-CG-CD2 110.5 3.0
LEU N-CA-C 111.0 2.7
LEU CA-C-O 120.1 2.1
LYS N-CA-CB 110.6 1.8
LYS CB-CA-C 110.4 2.0
LYS CA-CB-CG 113.4 2.2
LYS CB-CG-CD 111.6 2.6
LYS CG-CD-CE 111.9 3.0
LYS CD-CE-NZ 111.7 2.3
LYS N-CA-C 111.0 2.7
LYS CA-C-O 120.1 2.1
MET N-CA-CB 110.6 1.8
MET CB-CA-C 110.4 2.0
MET CA-CB-CG 113.3 1.7
MET CB-CG-SD 112.4 3.0
MET CG-SD-CE 100.2 1.6
MET N-CA-C 111.0 2.7
MET CA-C-O 120.1 2.1
PHE N-CA-CB 110.6 1.8
PHE CB-CA-C 110.4 2.0
PHE CA-CB-CG 113.9 2.4
PHE CB-CG-CD1 120.8 0.7
PHE CB-CG-CD2 120.8 0.7
PHE CD1-CG-CD2 118.3 1.3
PHE CG-CD1-CE1 120.8 1.1
PHE CG-CD2-CE2 120.8 1.1
PHE CD1-CE1-CZ 120.1 1.2
PHE CD2-CE2-CZ 120.1 1.2
PHE CE1-CZ-CE2 120.0 1.8
PHE N-CA-C 111.0 2.7
PHE CA-C-O 120.1 2.1
PRO N-CA-CB 103.3 1.2
PRO CB-CA-C 111.7 2.1
PRO CA-CB-CG 104.8 1.9
PRO CB-CG-CD 106.5 3.9
PRO CG-CD-N 103.2 1.5
PRO CA-N-CD 111.7 1.4
PRO N-CA-C 112.1 2.6
PRO CA-C-O 120.2 2.4
SER N-CA-CB 110.5 1.5
SER CB-CA-C 110.1 1.9
SER CA-CB-OG 111.2 2.7
SER N-CA-C 111.0 2.7
SER CA-C-O 120.1 2.1
THR N-CA-CB 110.3 1.9
THR CB-CA-C 111.6 2.7
THR CA-CB-OG1 109.0 2.1
THR CA-CB-CG2 112.4 1.4
THR OG1-CB-CG2 110.0 2.3
THR N-CA-C 111.0 2.7
THR CA-C-O 120.1 2.1
TRP N-CA-CB 110.6 1.8
TRP CB-CA-C 110.4 2.0
TRP CA-CB-CG 113.7 1.9
TRP CB-CG-CD1 127.0 1.3
TRP CB-CG-CD2 126.6 1.3
TRP CD1-CG-CD2 106.3 0.8
TRP CG-CD1-NE1 110.1 1.0
TRP CD1-NE1-CE2 109.0 0.9
TRP NE1-CE2-CD2 107.3 1.0
TRP CE2-CD2-CG 107.3 0.8
TRP CG-CD2-CE3 133.9 0.9
TRP NE1-CE2-CZ2 130.4 1.1
TRP CE3-CD2-CE2 118.7 1.2
TRP CD2-CE2-CZ2 122.3 1.2
TRP CE2-CZ2-CH2 117.4 1.0
TRP CZ2-CH2-CZ3 121.6 1.2
TRP CH2-CZ3-CE3 121.2 1.1
TRP CZ3-CE3-CD2 118.8 1.3
TRP N-CA-C 111.0 2.7
TRP CA-C-O 120.1 2.1
TYR N-CA-CB 110.6 1.8
TYR CB-CA-C 110.4 2.0
TYR CA-CB-CG 113.4 1.9
TYR CB-CG-CD1 121.0 0.6
TYR CB-CG-CD2 121.0 0.6
TYR CD1-CG-CD2 117.9 1.1
TYR CG-CD1-CE1 121.3 0.8
TYR CG-CD2-CE2 121.3 0.8
TYR CD1-CE1-CZ 119.8 0.9
TYR CD2-CE2-CZ 119.8 0.9
TYR CE1-CZ-CE2 119.8 1.6
TYR CE1-CZ-OH 120.1 2.7
TYR CE2-CZ-OH 120.1 2.7
TYR N-CA-C 111.0 2.7
TYR CA-C-O 120.1 2.1
VAL N-CA-CB 111.5 2.2
VAL CB-CA-C 111.4 1.9
VAL CA-CB-CG1 110.9 1.5
VAL CA-CB-CG2 110.9 1.5
VAL CG1-CB-CG2 110.9 1.6
VAL N-CA-C 111.0 2.7
VAL CA-C-O 120.1 2.1
"""


@functools.lru_cache(maxsize=None)
def load_stereo_chemical_props():
    """AlphaFold's `residue_constants.load_stereo_chemical_props` over the embedded tables.

    Returns (residue_bonds, residue_virtual_bonds, residue_bond_angles): dicts resname -> list of
    `Bond` / `BondAngle`. Each bond angle becomes a "virtual bond" between its outer atoms whose
    length follows from the law of cosines, with the uncertainty propagated as AlphaFold does.
    """
    residue_bonds: Dict[str, list] = {}
    for line in _BONDS.split("\n"):
        if not line:
            continue
        resname, bond, length, stddev = line.split()
        atom1, atom2 = bond.split("-")
        residue_bonds.setdefault(resname, []).append(Bond(atom1, atom2, float(length), float(stddev)))
    residue_bonds["UNK"] = []

    residue_bond_angles: Dict[str, list] = {}
    for line in _ANGLES.split("\n"):
        if not line:
            continue
        resname, angle, angle_degree, stddev_degree = line.split()
        atom1, atom2, atom3 = angle.split("-")
        residue_bond_angles.setdefault(resname, []).append(
            BondAngle(atom1, atom2, atom3, float(angle_degree) / 180.0 * np.pi,
                      float(stddev_degree) / 180.0 * np.pi))
    residue_bond_angles["UNK"] = []

    def bond_key(a, b):
        return "-".join(sorted([a, b]))

    residue_virtual_bonds: Dict[str, list] = {}
    for resname, bond_angles in residue_bond_angles.items():
        bond_cache = {bond_key(b.atom1_name, b.atom2_name): b for b in residue_bonds[resname]}
        residue_virtual_bonds[resname] = []
        for ba in bond_angles:
            bond1 = bond_cache[bond_key(ba.atom1_name, ba.atom2_name)]
            bond2 = bond_cache[bond_key(ba.atom2_name, ba.atom3name)]
            # c^2 = a^2 + b^2 - 2ab cos(gamma)
            gamma = ba.angle_rad
            length = np.sqrt(bond1.length ** 2 + bond2.length ** 2
                             - 2 * bond1.length * bond2.length * np.cos(gamma))
            # Propagation of uncertainty assuming uncorrelated errors.
            dl_outer = 0.5 / length
            dl_dgamma = (2 * bond1.length * bond2.length * np.sin(gamma)) * dl_outer
            dl_db1 = (2 * bond1.length - 2 * bond2.length * np.cos(gamma)) * dl_outer
            dl_db2 = (2 * bond2.length - 2 * bond1.length * np.cos(gamma)) * dl_outer
            stddev = np.sqrt((dl_dgamma * ba.stddev) ** 2 + (dl_db1 * bond1.stddev) ** 2
                             + (dl_db2 * bond2.stddev) ** 2)
            residue_virtual_bonds[resname].append(Bond(ba.atom1_name, ba.atom3name, length, stddev))
    return residue_bonds, residue_virtual_bonds, residue_bond_angles


@functools.lru_cache(maxsize=None)
def make_atom14_dists_bounds(overlap_tolerance: float = 1.5,
                             bond_length_tolerance_factor: float = 15) -> Mapping[str, np.ndarray]:
    """AlphaFold's `residue_constants.make_atom14_dists_bounds`: per residue type [21, 14, 14]
    lower/upper bounds on intra-residue atom distances (bonds and angles from the tables within
    `bond_length_tolerance_factor` standard deviations; every other pair at least the sum of van der
    Waals radii minus `overlap_tolerance`). Cached: treat the returned arrays as read-only."""
    lower_bound = np.zeros([21, 14, 14], np.float32)
    upper_bound = np.zeros([21, 14, 14], np.float32)
    stddev = np.zeros([21, 14, 14], np.float32)
    residue_bonds, residue_virtual_bonds, _ = load_stereo_chemical_props()
    for restype, restype_letter in enumerate(rc.restypes):
        resname = rc.restype_1to3[restype_letter]
        atom_list = rc.restype_name_to_atom14_names[resname]
        for i, name1 in enumerate(atom_list):
            if not name1:
                continue
            r1 = rc.van_der_waals_radius[name1[0]]
            for j, name2 in enumerate(atom_list):
                if not name2 or i == j:
                    continue
                r2 = rc.van_der_waals_radius[name2[0]]
                lower_bound[restype, i, j] = lower_bound[restype, j, i] = r1 + r2 - overlap_tolerance
                upper_bound[restype, i, j] = upper_bound[restype, j, i] = 1e10
        for b in residue_bonds[resname] + residue_virtual_bonds[resname]:
            i = atom_list.index(b.atom1_name)
            j = atom_list.index(b.atom2_name)
            lower_bound[restype, i, j] = lower_bound[restype, j, i] = b.length - bond_length_tolerance_factor * b.stddev
            upper_bound[restype, i, j] = upper_bound[restype, j, i] = b.length + bond_length_tolerance_factor * b.stddev
            stddev[restype, i, j] = stddev[restype, j, i] = b.stddev
    return {"lower_bound": lower_bound, "upper_bound": upper_bound, "stddev": stddev}


def _atom14_tables():
    """[21, 14] atom-exists mask, [21, 14] atom37 index and [21, 14] van der Waals radius per
    residue type (row 20 = UNK, all zeros), as AlphaFold's `make_atom14_positions` builds them."""
    exists = np.zeros([21, 14], np.float32)
    radius = np.zeros([21, 14], np.float32)
    for restype, letter in enumerate(rc.restypes):
        for k, name in enumerate(rc.restype_name_to_atom14_names[rc.restype_1to3[letter]]):
            if name:
                exists[restype, k] = 1.0
                radius[restype, k] = rc.van_der_waals_radius[name[0]]
    return exists, rc.restype_atom14_to_atom37, radius


def atom37_to_atom14(aatype: np.ndarray, atom37_positions: np.ndarray, atom37_mask: np.ndarray):
    """Dense atom14 layout: (positions [N, 14, 3] zero where the atom is absent, atom14_atom_exists
    [N, 14] from the residue type (not the input mask, as in AlphaFold), radius [N, 14])."""
    exists_t, to37_t, radius_t = _atom14_tables()
    to37 = to37_t[aatype]
    exists = exists_t[aatype]
    gt_mask = exists * np.take_along_axis(atom37_mask, to37, axis=1).astype(np.float32)
    pos = gt_mask[..., None] * np.take_along_axis(atom37_positions, to37[..., None], axis=1)
    return pos, exists, exists * radius_t[aatype]


def _global_residue_index(residue_index: np.ndarray, chain_index: Optional[np.ndarray]) -> np.ndarray:
    """Residue numbers made unique across chains: chain c is shifted past chain c-1 with a gap of at
    least 2, so no peptide bond is assumed across a chain break. One chain: unchanged."""
    residue_index = np.asarray(residue_index, np.int64)
    if chain_index is None:
        return residue_index
    chain_index = np.asarray(chain_index, np.int64)
    out = residue_index.copy()
    offset = 0
    prev_max = None
    for c in np.unique(chain_index):  # chains in ascending id order, as written
        sel = chain_index == c
        if prev_max is not None:
            offset = prev_max + 2 - residue_index[sel].min()
        out[sel] = residue_index[sel] + offset
        prev_max = out[sel].max()
    return out


def between_residue_bond_violations(pos, exists, residue_index, aatype, tolerance_factor=VIOLATION_TOLERANCE_FACTOR):
    """AlphaFold's `between_residue_bond_loss` (peptide C-N length, CA-C-N and C-N-CA angles) with
    soft = hard tolerance: returns mean losses, per-residue loss sum and violation mask [N]."""
    this_ca, this_c = pos[:-1, 1], pos[:-1, 2]
    next_n, next_ca = pos[1:, 0], pos[1:, 1]
    this_ca_m, this_c_m = exists[:-1, 1], exists[:-1, 2]
    next_n_m, next_ca_m = exists[1:, 0], exists[1:, 1]
    no_gap = ((residue_index[1:] - residue_index[:-1]) == 1).astype(np.float64)

    c_n_len = np.sqrt(1e-6 + np.sum((this_c - next_n) ** 2, axis=-1))
    next_is_pro = (aatype[1:] == rc.resname_to_idx["PRO"]).astype(np.float64)
    gt_len = (1 - next_is_pro) * between_res_bond_length_c_n[0] + next_is_pro * between_res_bond_length_c_n[1]
    gt_std = ((1 - next_is_pro) * between_res_bond_length_stddev_c_n[0]
              + next_is_pro * between_res_bond_length_stddev_c_n[1])
    c_n_err = np.sqrt(1e-6 + (c_n_len - gt_len) ** 2)
    c_n_loss_per = np.maximum(c_n_err - tolerance_factor * gt_std, 0)
    mask = this_c_m * next_n_m * no_gap
    c_n_loss = np.sum(mask * c_n_loss_per) / (np.sum(mask) + 1e-6)
    c_n_viol = mask * (c_n_err > tolerance_factor * gt_std)

    ca_c_len = np.sqrt(1e-6 + np.sum((this_ca - this_c) ** 2, axis=-1))
    n_ca_len = np.sqrt(1e-6 + np.sum((next_n - next_ca) ** 2, axis=-1))
    c_ca_unit = (this_ca - this_c) / ca_c_len[:, None]
    c_n_unit = (next_n - this_c) / c_n_len[:, None]
    n_ca_unit = (next_ca - next_n) / n_ca_len[:, None]

    ca_c_n_cos = np.sum(c_ca_unit * c_n_unit, axis=-1)
    # AlphaFold uses the C-N bond-length stddev for this angle; kept for identical violations.
    gt_angle, gt_std = between_res_cos_angles_ca_c_n[0], between_res_bond_length_stddev_c_n[0]
    ca_c_n_err = np.sqrt(1e-6 + (ca_c_n_cos - gt_angle) ** 2)
    ca_c_n_loss_per = np.maximum(ca_c_n_err - tolerance_factor * gt_std, 0)
    mask = this_ca_m * this_c_m * next_n_m * no_gap
    ca_c_n_loss = np.sum(mask * ca_c_n_loss_per) / (np.sum(mask) + 1e-6)
    ca_c_n_viol = mask * (ca_c_n_err > tolerance_factor * gt_std)

    c_n_ca_cos = np.sum(-c_n_unit * n_ca_unit, axis=-1)
    gt_angle, gt_std = between_res_cos_angles_c_n_ca
    c_n_ca_err = np.sqrt(1e-6 + (c_n_ca_cos - gt_angle) ** 2)
    c_n_ca_loss_per = np.maximum(c_n_ca_err - tolerance_factor * gt_std, 0)
    mask = this_c_m * next_n_m * next_ca_m * no_gap
    c_n_ca_loss = np.sum(mask * c_n_ca_loss_per) / (np.sum(mask) + 1e-6)
    c_n_ca_viol = mask * (c_n_ca_err > tolerance_factor * gt_std)

    # Each peptide bond's loss and violation count for both residues it joins.
    per_res_loss = c_n_loss_per + ca_c_n_loss_per + c_n_ca_loss_per
    per_res_loss = 0.5 * (np.pad(per_res_loss, (0, 1)) + np.pad(per_res_loss, (1, 0)))
    viol = np.max(np.stack([c_n_viol, ca_c_n_viol, c_n_ca_viol]), axis=0)
    viol = np.maximum(np.pad(viol, (0, 1)), np.pad(viol, (1, 0)))
    return {"c_n_loss_mean": float(c_n_loss), "ca_c_n_loss_mean": float(ca_c_n_loss),
            "c_n_ca_loss_mean": float(c_n_ca_loss), "per_residue_loss_sum": per_res_loss,
            "per_residue_violation_mask": viol}


def between_residue_clashes(pos, exists, radius, residue_index, overlap_tolerance=CLASH_OVERLAP_TOLERANCE,
                            block: int = 1024):
    """AlphaFold's `between_residue_clash_loss` (soft = hard tolerance) over flattened existing atoms
    in blocks of `block` rows: a pair of atoms of different residues (i < j) clashes when closer than
    the sum of their van der Waals radii minus `overlap_tolerance`; the peptide C-N bond and slot-5
    pairs (CYS SG disulfides) are exempt. Returns mean loss, per-atom loss sum and clash mask [N, 14]."""
    n = pos.shape[0]
    res, slot = np.nonzero(exists > 0)
    xyz = pos[res, slot].astype(np.float64)
    rad = radius[res, slot].astype(np.float64)
    rid = residue_index[res]
    loss_sum = np.zeros(len(res))
    clash = np.zeros(len(res), bool)
    total_error = 0.0
    total_pairs = 0.0
    for start in range(0, len(res), block):
        sl = slice(start, start + block)
        d = np.sqrt(1e-10 + np.sum((xyz[sl, None, :] - xyz[None, :, :]) ** 2, axis=-1))
        m = rid[sl, None] < rid[None, :]
        c_n_bond = (rid[sl, None] + 1 == rid[None, :]) & (slot[sl, None] == 2) & (slot[None, :] == 0)
        disulfide = (slot[sl, None] == 5) & (slot[None, :] == 5)
        m &= ~c_n_bond & ~disulfide
        lower = rad[sl, None] + rad[None, :]
        err = np.where(m, np.maximum(lower - overlap_tolerance - d, 0), 0.0)
        total_error += err.sum()
        total_pairs += m.sum()
        loss_sum[sl] += err.sum(axis=1)
        loss_sum += err.sum(axis=0)
        cm = m & (d < lower - overlap_tolerance)
        clash[sl] |= cm.any(axis=1)
        clash |= cm.any(axis=0)
    per_atom_loss = np.zeros((n, 14))
    per_atom_clash = np.zeros((n, 14))
    per_atom_loss[res, slot] = loss_sum
    per_atom_clash[res, slot] = clash
    return {"mean_loss": float(total_error / (1e-6 + total_pairs)),
            "per_atom_loss_sum": per_atom_loss, "per_atom_clash_mask": per_atom_clash}


def within_residue_violations(pos, exists, lower, upper):
    """AlphaFold's `within_residue_violations` (bounds from `make_atom14_dists_bounds`, no
    tightening): per-atom loss sum and violation mask [N, 14]."""
    masks = (1.0 - np.eye(14))[None] * exists[:, :, None] * exists[:, None, :]
    d = np.sqrt(1e-10 + np.sum((pos[:, :, None, :] - pos[:, None, :, :]) ** 2, axis=-1))
    loss = masks * (np.maximum(lower - d, 0) + np.maximum(d - upper, 0))
    viol = masks * ((d < lower) | (d > upper))
    return {"per_atom_loss_sum": loss.sum(axis=1) + loss.sum(axis=2),
            "per_atom_violations": np.maximum(viol.max(axis=1), viol.max(axis=2))}


def find_structural_violations(aatype, atom37_positions, atom37_mask, residue_index, chain_index=None):
    """AlphaFold's `amber_minimize.find_violations` (= `folding.find_structural_violations` +
    `compute_violation_metrics`) for a structure in atom37 layout.

    Args: aatype [N] (AlphaFold order, 20 = UNK), atom37_positions [N, 37, 3] Angstrom,
    atom37_mask [N, 37], residue_index [N] (increasing within a chain), chain_index [N] or None.

    Returns a dict with AlphaFold's nested `between_residues` / `within_residues` entries,
    `total_per_residue_violations_mask` [N] (1 = the residue takes part in a violation),
    AlphaFold's metrics (`violations_extreme_ca_ca_distance`, `violations_between_residue_bond`,
    `violations_between_residue_clash`, `violations_within_residue`, `violations_per_residue`:
    fractions of residues), `residue_violations` (0-based indices) and `num_residue_violations`.
    """
    aatype = np.asarray(aatype, np.int64)
    # float32 positions as AlphaFold feeds them; the arithmetic below runs in float64.
    pos37 = np.asarray(atom37_positions, np.float32).astype(np.float64)
    mask37 = np.asarray(atom37_mask, np.float32)
    rid = _global_residue_index(residue_index, chain_index)
    pos, exists, radius = atom37_to_atom14(aatype, pos37, mask37)

    connection = between_residue_bond_violations(pos, exists, rid, aatype)
    clashes = between_residue_clashes(pos, exists, radius, rid)
    bounds = make_atom14_dists_bounds(overlap_tolerance=CLASH_OVERLAP_TOLERANCE,
                                      bond_length_tolerance_factor=VIOLATION_TOLERANCE_FACTOR)
    within = within_residue_violations(pos, exists, bounds["lower_bound"][aatype], bounds["upper_bound"][aatype])

    per_residue = np.max(np.stack([connection["per_residue_violation_mask"],
                                   clashes["per_atom_clash_mask"].max(axis=-1),
                                   within["per_atom_violations"].max(axis=-1)]), axis=0)

    # compute_violation_metrics: CA-CA distances > 1.5 A off the trans value, then residue fractions.
    ca_d = np.sqrt(1e-6 + np.sum((pos[:-1, 1] - pos[1:, 1]) ** 2, axis=-1))
    ca_mask = exists[:-1, 1] * exists[1:, 1] * ((rid[1:] - rid[:-1]) == 1)
    extreme = float(np.sum(ca_mask * ((ca_d - rc.ca_ca) > 1.5)) / (1e-10 + np.sum(ca_mask)))
    residue_violations = np.flatnonzero(per_residue)
    return {
        "between_residues": {
            "bonds_c_n_loss_mean": connection["c_n_loss_mean"],
            "angles_ca_c_n_loss_mean": connection["ca_c_n_loss_mean"],
            "angles_c_n_ca_loss_mean": connection["c_n_ca_loss_mean"],
            "connections_per_residue_loss_sum": connection["per_residue_loss_sum"],
            "connections_per_residue_violation_mask": connection["per_residue_violation_mask"],
            "clashes_mean_loss": clashes["mean_loss"],
            "clashes_per_atom_loss_sum": clashes["per_atom_loss_sum"],
            "clashes_per_atom_clash_mask": clashes["per_atom_clash_mask"],
        },
        "within_residues": within,
        "total_per_residue_violations_mask": per_residue,
        "violations_extreme_ca_ca_distance": extreme,
        "violations_between_residue_bond": float(np.mean(connection["per_residue_violation_mask"])),
        "violations_between_residue_clash": float(np.mean(clashes["per_atom_clash_mask"].max(axis=-1))),
        "violations_within_residue": float(np.mean(within["per_atom_violations"].max(axis=-1))),
        "violations_per_residue": float(np.mean(per_residue)),
        "residue_violations": residue_violations,
        "num_residue_violations": int(len(residue_violations)),
    }
