"""Generate tests/data/afref_geometry/: AlphaFold reference numbers for model/all_atom.py.

Run with an environment that has the AlphaFold 2.3 package (JAX, CPU is fine):

    /tmp/afref-venv/bin/python scripts/make_geometry_reference.py \
        [--pdb-dir /work/shared/data/reference_pipelines/alphafold/alphafold/common/testdata] \
        [--fixture-dir /work/shared/data/af_fixtures/model_1_ptm_small]

Writes
  tests/data/afref_geometry/reference.npz   residue_constants tables, random-frame
      geometry cases and real-protein torsion cases, all computed by AlphaFold's
      own functions (keys documented in SOURCE.md).
  tests/data/afref_geometry/fixture_model_1_ptm_small.npz   a copy of a few
      arrays of the model_1_ptm_small AlphaFold fixture.

Only AlphaFold, JAX and numpy are used; this script does not import FastFold.
"""

import argparse
import os
import sys
import types

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO, 'tests', 'data', 'afref_geometry')


def _stub_tensorflow():
    """AlphaFold's make_atom14_masks lives in a TF module; it only needs tf.gather."""
    tf = types.ModuleType('tensorflow')
    compat = types.ModuleType('tensorflow.compat')
    v1 = types.ModuleType('tensorflow.compat.v1')
    v1.gather = lambda params, indices: np.take(np.asarray(params), np.asarray(indices), axis=0)
    tf.compat = compat
    compat.v1 = v1
    sys.modules.setdefault('tensorflow', tf)
    sys.modules.setdefault('tensorflow.compat', compat)
    sys.modules.setdefault('tensorflow.compat.v1', v1)


_stub_tensorflow()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from alphafold.common import residue_constants as rc  # noqa: E402
from alphafold.model import all_atom  # noqa: E402
from alphafold.model import modules  # noqa: E402
from alphafold.model import quat_affine  # noqa: E402
from alphafold.model import r3  # noqa: E402
from alphafold.model.tf import data_transforms  # noqa: E402

jax.config.update('jax_platform_name', 'cpu')


def atom14_masks(aatype):
    """AlphaFold's data_transforms.make_atom14_masks (numpy via the tf stub)."""
    out = data_transforms.make_atom14_masks({'aatype': np.asarray(aatype)})
    return {k: np.asarray(v) for k, v in out.items() if k != 'aatype'}


def constant_tables():
    ref = {}
    for name in ['restype_atom14_to_rigid_group', 'restype_atom14_mask',
                 'restype_atom14_rigid_group_positions', 'restype_rigid_group_default_frame',
                 'restype_atom37_mask', 'restype_atom37_to_rigid_group',
                 'restype_atom37_rigid_group_positions', 'chi_angles_atom_indices',
                 'chi_atom_1_one_hot', 'chi_atom_2_one_hot', 'STANDARD_ATOM_MASK']:
        ref['rc_' + name] = np.asarray(getattr(rc, name))
    ref['rc_chi_angles_mask'] = np.asarray(rc.chi_angles_mask, np.float32)
    ref['rc_chi_pi_periodic'] = np.asarray(rc.chi_pi_periodic, np.float32)
    ref['rc_get_chi_atom_indices'] = np.asarray(all_atom.get_chi_atom_indices())
    ref['rc_restypes'] = np.array(rc.restypes)
    ref['rc_restypes_with_x'] = np.array(rc.restypes_with_x)
    ref['rc_atom_types'] = np.array(rc.atom_types)
    ref['rc_resnames'] = np.array(rc.resnames)
    ref['rc_restype_1to3_keys'] = np.array(list(rc.restype_1to3.keys()))
    ref['rc_restype_1to3_values'] = np.array(list(rc.restype_1to3.values()))
    ref['rc_atom14_names_resnames'] = np.array(list(rc.restype_name_to_atom14_names.keys()))
    ref['rc_atom14_names'] = np.array(list(rc.restype_name_to_atom14_names.values()))
    ref['rc_hhblits_keys'] = np.array(list(rc.HHBLITS_AA_TO_ID.keys()))
    ref['rc_hhblits_values'] = np.array(list(rc.HHBLITS_AA_TO_ID.values()))
    ref['rc_id_to_hhblits'] = np.array([rc.ID_TO_HHBLITS_AA[i] for i in range(22)])
    ref['rc_map_hhblits_to_ours'] = np.array(rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE)
    ref['rc_chi_angles_atoms_flat'] = np.array(
        [f'{res}:{i}:{"-".join(atoms)}' for res, chis in rc.chi_angles_atoms.items()
         for i, atoms in enumerate(chis)])
    ref['rc_rigid_group_atom_positions_flat'] = np.array(
        [f'{res}:{name}:{group}' for res, rows in rc.rigid_group_atom_positions.items()
         for name, group, _ in rows])
    ref['rc_rigid_group_atom_positions_xyz'] = np.array(
        [pos for rows in rc.rigid_group_atom_positions.values() for _, _, pos in rows],
        np.float64)
    ref['rc_sequence_to_onehot'] = rc.sequence_to_onehot(
        'ARNDCQEGHILKMFPSTWYVXBZUJO', rc.restype_order_with_x, map_unknown_to_x=True)

    # make_atom14_masks per-restype tables (aatype = 0..20).
    masks = atom14_masks(np.arange(21, dtype=np.int32))
    ref['mk_residx_atom14_to_atom37'] = masks['residx_atom14_to_atom37']
    ref['mk_residx_atom37_to_atom14'] = masks['residx_atom37_to_atom14']
    ref['mk_atom14_atom_exists'] = masks['atom14_atom_exists']
    ref['mk_atom37_atom_exists'] = masks['atom37_atom_exists']
    return ref


def random_rotation_quats(rng, n):
    q = rng.normal(size=(n, 4)).astype(np.float32)
    return q


def random_frames_case(rng):
    """All 21 aatypes (x3), random backbone frames and random torsions."""
    aatype = np.tile(np.arange(21, dtype=np.int32), 3)
    rng.shuffle(aatype)
    n = aatype.shape[0]
    # Unnormalised quaternions; QuatAffine(normalize=True) normalises them.
    quat = random_rotation_quats(rng, n) * rng.uniform(0.5, 2.0, size=(n, 1)).astype(np.float32)
    trans = (rng.normal(size=(n, 3)) * 15.0).astype(np.float32)
    affine = quat_affine.QuatAffine(jnp.asarray(quat), jnp.asarray(trans), unstack_inputs=True)
    bb = r3.rigids_from_quataffine(affine)
    unnorm = rng.normal(size=(n, 7, 2)).astype(np.float32)
    angles = unnorm / np.sqrt(np.sum(unnorm ** 2, axis=-1, keepdims=True))
    angles = angles.astype(np.float32)

    frames = all_atom.torsion_angles_to_frames(jnp.asarray(aatype), bb, jnp.asarray(angles))
    atom14 = all_atom.frames_and_literature_positions_to_atom14_pos(jnp.asarray(aatype), frames)
    atom14 = np.asarray(r3.vecs_to_tensor(atom14))
    batch = {k: jnp.asarray(v) for k, v in atom14_masks(aatype).items()}
    atom37 = np.asarray(all_atom.atom14_to_atom37(jnp.asarray(atom14), batch))
    # Back-conversion (atom37 -> atom14) and the mask-valued (2-D) variants.
    atom14_back = np.asarray(all_atom.atom37_to_atom14(jnp.asarray(atom37), batch))

    # rigids_from_3_points on random points.
    pts = (rng.normal(size=(3, n, 3)) * 3.0).astype(np.float32)
    r3pts = r3.rigids_from_3_points(*(r3.vecs_from_tensor(jnp.asarray(p)) for p in pts))

    return {
        'rf_aatype': aatype,
        'rf_quat': quat,
        'rf_trans': trans,
        'rf_bb_rot': np.asarray(jnp.stack(list(bb.rot), axis=-1)).reshape(n, 3, 3),
        'rf_angles_sin_cos': angles,
        'rf_frames_flat12': np.asarray(r3.rigids_to_tensor_flat12(frames)),
        'rf_atom14': atom14,
        'rf_atom37': atom37,
        'rf_atom14_back': atom14_back,
        'r3_points': pts,
        'r3_rigid_flat12': np.asarray(r3.rigids_to_tensor_flat12(r3pts)),
        'quat_unit': np.asarray(affine.quaternion),
    }


def parse_pdb(path, chain=None):
    """Tiny PDB parser: first model, ATOM records, altloc ' ' or 'A'.

    Returns aatype [N] int32, atom37 positions [N, 37, 3] float32, mask [N, 37] float32.
    """
    residues = []   # (key, resname, {atom: xyz})
    index = {}
    with open(path) as f:
        for line in f:
            if line.startswith('ENDMDL'):
                break
            if not line.startswith('ATOM'):
                continue
            altloc = line[16]
            if altloc not in (' ', 'A'):
                continue
            ch = line[21]
            if chain is not None and ch != chain:
                continue
            key = (ch, line[22:27])
            resname = line[17:20].strip()
            name = line[12:16].strip()
            xyz = (float(line[30:38]), float(line[38:46]), float(line[46:54]))
            if key not in index:
                index[key] = len(residues)
                residues.append((key, resname, {}))
            residues[index[key]][2].setdefault(name, xyz)
    n = len(residues)
    aatype = np.zeros(n, np.int32)
    pos = np.zeros((n, 37, 3), np.float32)
    mask = np.zeros((n, 37), np.float32)
    for i, (_, resname, atoms) in enumerate(residues):
        aatype[i] = rc.resname_to_idx.get(resname, rc.unk_restype_index)
        for name, xyz in atoms.items():
            if name in rc.atom_order:
                pos[i, rc.atom_order[name]] = xyz
                mask[i, rc.atom_order[name]] = 1.0
    return aatype, pos, mask


def torsion_case(prefix, aatype, pos, mask):
    """AlphaFold's atom37_to_torsion_angles (both placeholder settings) and pseudo_beta."""
    out = {f'{prefix}_aatype': aatype, f'{prefix}_pos': pos, f'{prefix}_mask': mask}
    for placeholder in (False, True):
        ret = all_atom.atom37_to_torsion_angles(
            jnp.asarray(aatype), jnp.asarray(pos), jnp.asarray(mask),
            placeholder_for_undefined=placeholder)
        tag = 'ph' if placeholder else 'noph'
        for k, v in ret.items():
            out[f'{prefix}_{tag}_{k}'] = np.asarray(v)
    pb, pbm = modules.pseudo_beta_fn(jnp.asarray(aatype), jnp.asarray(pos), jnp.asarray(mask))
    out[f'{prefix}_pseudo_beta'] = np.asarray(pb)
    out[f'{prefix}_pseudo_beta_mask'] = np.asarray(pbm)
    return out


def real_protein_cases(pdb_dir, rng):
    ref = {}
    # Case 1: glucagon as template stack [T=2, N=29]: the original, and a copy
    # with missing atoms / residues (positions zeroed where masked, as in
    # AlphaFold template features) plus UNK and gap (21, clamped to 20) types.
    aatype, pos, mask = parse_pdb(os.path.join(pdb_dir, 'glucagon.pdb'))
    aatype2, pos2, mask2 = aatype.copy(), pos.copy(), mask.copy()
    mask2[5] = 0.0                               # whole residue missing
    mask2[0, 1] = 0.0                            # first residue CA missing
    mask2[12, 4] = 0.0                           # a carbonyl O missing (psi)
    mask2[17, 2] = 0.0                           # a C missing (psi, next phi, omega)
    side = [(i, a) for i in range(len(aatype)) for a in range(5, 37) if mask[i, a]]
    for j in rng.choice(len(side), size=12, replace=False):
        mask2[side[j]] = 0.0                     # random side-chain atoms missing
    drop = rng.random(mask2.shape) < 0.03
    mask2[drop] = 0.0                            # a few more random atoms
    pos2 = pos2 * mask2[..., None]
    aatype2[20] = 20                             # UNK
    aatype2[21] = 21                             # gap: AlphaFold clamps to UNK
    ref.update(torsion_case('glu', np.stack([aatype, aatype2]), np.stack([pos, pos2]),
                            np.stack([mask, mask2])))
    # Case 2: 2rbg chain A [1, N] (real data, some incomplete residues possible).
    aatype, pos, mask = parse_pdb(os.path.join(pdb_dir, '2rbg.pdb'), chain='A')
    ref.update(torsion_case('rbg', aatype[None], pos[None], mask[None]))
    return ref


def fixture_copy(fixture_dir):
    out = np.load(os.path.join(fixture_dir, 'outputs.npz'))
    feats = np.load(os.path.join(fixture_dir, 'features.npz'))
    keys = ['structure_module_traj', 'structure_module_sidechains_angles_sin_cos',
            'structure_module_sidechains_frames', 'structure_module_sidechains_atom_pos',
            'final_atom_positions', 'final_atom14_positions', 'final_atom_mask']
    ref = {k: out[k] for k in keys}
    ref['aatype'] = feats['aatype']
    for k in ['template_aatype', 'template_all_atom_positions', 'template_all_atom_masks',
              'template_pseudo_beta', 'template_pseudo_beta_mask']:
        ref[k] = feats[k]
    return ref


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--pdb-dir', default='/work/shared/data/reference_pipelines/'
                        'alphafold/alphafold/common/testdata')
    parser.add_argument('--fixture-dir',
                        default='/work/shared/data/af_fixtures/model_1_ptm_small')
    parser.add_argument('--seed', type=int, default=20260228)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    ref = {}
    ref.update(constant_tables())
    ref.update(random_frames_case(rng))
    ref.update(real_protein_cases(args.pdb_dir, rng))
    # The fixture's (synthetic) templates, [T=2, N=24], with gap residues.
    fix = fixture_copy(args.fixture_dir)
    ref.update(torsion_case('tpl', fix['template_aatype'], fix['template_all_atom_positions'],
                            fix['template_all_atom_masks']))
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, 'reference.npz')
    np.savez_compressed(path, **ref)
    print(f'wrote {path} ({os.path.getsize(path)} bytes, {len(ref)} arrays)')

    path = os.path.join(OUT_DIR, 'fixture_model_1_ptm_small.npz')
    np.savez_compressed(path, **fix)
    print(f'wrote {path} ({os.path.getsize(path)} bytes, {len(fix)} arrays)')


if __name__ == '__main__':
    main()
