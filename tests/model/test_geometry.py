"""model.residue_constants and model.all_atom against AlphaFold 2.3 reference numbers.

The references live in tests/data/afref_geometry/ (see SOURCE.md there; made by
scripts/make_geometry_reference.py with AlphaFold's own JAX functions).
"""

import functools
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from model import all_atom as aa
from model import residue_constants as rc

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    'data', 'afref_geometry')
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@functools.lru_cache(maxsize=None)
def _load(name):
    with np.load(os.path.join(DATA, name)) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope='module')
def ref():
    return _load('reference.npz')


@pytest.fixture(scope='module')
def fixture():
    return _load('fixture_model_1_ptm_small.npz')


def t(x):
    return torch.from_numpy(np.ascontiguousarray(x))


def assert_close(actual, expected, atol, rtol=0.0, what=''):
    actual = actual.detach().cpu().numpy() if torch.is_tensor(actual) else np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bound = atol + rtol * np.abs(expected.astype(np.float64))
    assert np.all(err <= bound), f'{what}: max abs err {err.max():.3g}'


# ----------------------------------------------------------------------------
# residue_constants
# ----------------------------------------------------------------------------

@pytest.mark.parametrize('name', [
    'restype_atom14_to_rigid_group', 'restype_atom14_mask',
    'restype_atom14_rigid_group_positions', 'restype_rigid_group_default_frame',
    'restype_atom37_mask', 'restype_atom37_to_rigid_group',
    'restype_atom37_rigid_group_positions', 'chi_angles_atom_indices',
    'chi_atom_1_one_hot', 'chi_atom_2_one_hot', 'STANDARD_ATOM_MASK'])
def test_derived_arrays_identical(ref, name):
    ours = getattr(rc, name)
    theirs = ref['rc_' + name]
    assert ours.dtype == theirs.dtype, (ours.dtype, theirs.dtype)
    np.testing.assert_array_equal(ours, theirs)


def test_tables_identical(ref):
    np.testing.assert_array_equal(np.asarray(rc.chi_angles_mask, np.float32), ref['rc_chi_angles_mask'])
    np.testing.assert_array_equal(rc.restype_chi_angles_mask[:20], ref['rc_chi_angles_mask'])
    assert not rc.restype_chi_angles_mask[20].any()
    np.testing.assert_array_equal(np.asarray(rc.chi_pi_periodic, np.float32), ref['rc_chi_pi_periodic'])
    np.testing.assert_array_equal(rc.restype_chi_pi_periodic, ref['rc_chi_pi_periodic'])
    np.testing.assert_array_equal(rc.restype_chi_angles_atom_indices, ref['rc_get_chi_atom_indices'])
    assert rc.restypes == list(ref['rc_restypes'])
    assert rc.restypes_with_x == list(ref['rc_restypes_with_x'])
    assert rc.atom_types == list(ref['rc_atom_types'])
    assert rc.atom_order == {a: i for i, a in enumerate(ref['rc_atom_types'])}
    assert rc.atom_type_num == 37 and rc.restype_num == 20
    assert rc.resnames == list(ref['rc_resnames'])
    assert rc.resname_to_idx == {r: i for i, r in enumerate(ref['rc_resnames'])}
    assert list(rc.restype_1to3.items()) == list(zip(ref['rc_restype_1to3_keys'],
                                                     ref['rc_restype_1to3_values']))
    assert rc.restype_3to1 == dict(zip(ref['rc_restype_1to3_values'], ref['rc_restype_1to3_keys']))
    assert list(rc.restype_name_to_atom14_names) == list(ref['rc_atom14_names_resnames'])
    assert [list(v) for v in rc.restype_name_to_atom14_names.values()] == \
        [list(v) for v in ref['rc_atom14_names']]
    assert list(rc.HHBLITS_AA_TO_ID.items()) == [
        (k, int(v)) for k, v in zip(ref['rc_hhblits_keys'], ref['rc_hhblits_values'])]
    assert [rc.ID_TO_HHBLITS_AA[i] for i in range(22)] == list(ref['rc_id_to_hhblits'])
    assert rc.MAP_HHBLITS_AATYPE_TO_OUR_AATYPE == tuple(int(x) for x in ref['rc_map_hhblits_to_ours'])
    assert [f'{res}:{i}:{"-".join(atoms)}' for res, chis in rc.chi_angles_atoms.items()
            for i, atoms in enumerate(chis)] == list(ref['rc_chi_angles_atoms_flat'])
    assert [f'{res}:{name}:{group}' for res, rows in rc.rigid_group_atom_positions.items()
            for name, group, _ in rows] == list(ref['rc_rigid_group_atom_positions_flat'])
    np.testing.assert_array_equal(
        np.array([pos for rows in rc.rigid_group_atom_positions.values() for _, _, pos in rows],
                 np.float64), ref['rc_rigid_group_atom_positions_xyz'])
    onehot = rc.sequence_to_onehot('ARNDCQEGHILKMFPSTWYVXBZUJO', rc.restype_order_with_x,
                                   map_unknown_to_x=True)
    assert onehot.dtype == ref['rc_sequence_to_onehot'].dtype
    np.testing.assert_array_equal(onehot, ref['rc_sequence_to_onehot'])


def test_atom14_atom37_tables_match_make_atom14_masks(ref):
    np.testing.assert_array_equal(rc.restype_atom14_to_atom37, ref['mk_residx_atom14_to_atom37'])
    np.testing.assert_array_equal(rc.restype_atom37_to_atom14, ref['mk_residx_atom37_to_atom14'])
    np.testing.assert_array_equal(rc.restype_atom14_mask, ref['mk_atom14_atom_exists'])
    np.testing.assert_array_equal(rc.restype_atom37_mask, ref['mk_atom37_atom_exists'])
    aatype = torch.arange(21)
    np.testing.assert_array_equal(aa.atom14_mask(aatype).numpy(), ref['mk_atom14_atom_exists'])
    np.testing.assert_array_equal(aa.atom37_mask(aatype).numpy(), ref['mk_atom37_atom_exists'])


def test_residue_constants_imports_numpy_only():
    code = ('import sys; import model.residue_constants; '
            'bad = [m for m in ("torch", "jax", "tree", "tensorflow") if m in sys.modules]; '
            'assert not bad, bad')
    subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True)


# ----------------------------------------------------------------------------
# rigid / quaternion helpers
# ----------------------------------------------------------------------------

def test_quat_to_rot(ref):
    rot = aa.quat_to_rot(t(ref['rf_quat']))                      # unnormalised input
    assert_close(rot, ref['rf_bb_rot'], atol=1e-6, what='quat_to_rot')
    rot_unit = aa.quat_to_rot(t(ref['quat_unit']), normalize=False)
    assert_close(rot_unit, ref['rf_bb_rot'], atol=1e-6, what='quat_to_rot(unit, normalize=False)')
    eye = rot @ rot.transpose(-1, -2)
    assert_close(eye, np.broadcast_to(np.eye(3), eye.shape), atol=1e-5, what='orthonormal')
    assert_close(torch.linalg.det(rot), np.ones(rot.shape[0]), atol=1e-5, what='det')


def test_rot_to_quat_roundtrip(ref):
    q = t(ref['quat_unit']).double()
    q = q / q.norm(dim=-1, keepdim=True)
    q2 = aa.rot_to_quat(aa.quat_to_rot(q))
    sign = torch.sign((q * q2).sum(-1, keepdim=True))
    assert_close(q2 * sign, q.numpy(), atol=1e-10, what='rot_to_quat')
    assert (q2[..., 0] >= 0).all()


def test_quat_multiply_matches_rotation_composition(ref):
    q = t(ref['quat_unit']).double()
    q1, q2 = q[:20], q[20:40]
    prod = aa.quat_multiply(q1, q2)
    assert_close(aa.quat_to_rot(prod), aa.rot_mul_rot(aa.quat_to_rot(q1), aa.quat_to_rot(q2)).numpy(),
                 atol=1e-12, what='quat_multiply')
    v = q2[:, 1:]
    vq = torch.cat([torch.zeros_like(v[:, :1]), v], dim=-1)
    assert_close(aa.quat_multiply_by_vec(q1, v), aa.quat_multiply(q1, vq).numpy(),
                 atol=1e-12, what='quat_multiply_by_vec')


def test_rigid_from_three_points(ref):
    p = t(ref['r3_points'])
    rot, trans = aa.rigid_from_three_points(p[0], p[1], p[2])
    assert_close(aa.rigid_to_flat12(rot, trans), ref['r3_rigid_flat12'], atol=1e-6,
                 what='rigid_from_three_points')
    rot2, trans2 = aa.rigid_from_flat12(aa.rigid_to_flat12(rot, trans))
    assert torch.equal(rot2, rot) and torch.equal(trans2, trans)
    # Inverse and composition are consistent.
    x = p[0]
    back = aa.rigid_invert_apply(rot, trans, aa.rigid_apply(rot, trans, x))
    assert_close(back, x.numpy(), atol=1e-4, what='invert_apply')
    r_ab, t_ab = aa.rigid_compose(rot, trans, *aa.rigid_invert(rot, trans))
    assert_close(r_ab, np.broadcast_to(np.eye(3), r_ab.shape), atol=1e-6, what='compose')
    assert_close(t_ab, np.zeros(t_ab.shape), atol=1e-5, what='compose')


# ----------------------------------------------------------------------------
# torsion_angles_to_frames / frames_to_atom14 / atom14_to_atom37
# ----------------------------------------------------------------------------

def _random_case(ref, dtype=torch.float32):
    return (t(ref['rf_aatype']).long(), t(ref['rf_bb_rot']).to(dtype),
            t(ref['rf_trans']).to(dtype), t(ref['rf_angles_sin_cos']).to(dtype))


def test_torsion_angles_to_frames(ref):
    aatype, bb_rot, bb_trans, angles = _random_case(ref)
    rot, trans = aa.torsion_angles_to_frames(aatype, bb_rot, bb_trans, angles)
    assert rot.shape == (63, 8, 3, 3) and trans.shape == (63, 8, 3)
    assert rot.dtype == torch.float32
    assert_close(aa.rigid_to_flat12(rot, trans), ref['rf_frames_flat12'], atol=1e-5, rtol=1e-6,
                 what='torsion_angles_to_frames')
    # From the quaternion instead of AlphaFold's rotation matrix.
    rot_q = aa.quat_to_rot(t(ref['rf_quat']))
    rot, trans = aa.torsion_angles_to_frames(aatype, rot_q, bb_trans, angles)
    assert_close(aa.rigid_to_flat12(rot, trans), ref['rf_frames_flat12'], atol=1e-5, rtol=1e-6,
                 what='torsion_angles_to_frames (quaternion)')


def test_frames_to_atom14_and_atom37(ref):
    aatype, bb_rot, bb_trans, angles = _random_case(ref)
    rot, trans = aa.torsion_angles_to_frames(aatype, bb_rot, bb_trans, angles)
    atom14 = aa.frames_to_atom14(aatype, rot, trans)
    assert atom14.shape == (63, 14, 3)
    assert_close(atom14, ref['rf_atom14'], atol=1e-5, rtol=1e-6, what='frames_to_atom14')
    atom37 = aa.atom14_to_atom37(atom14, aatype)
    assert atom37.shape == (63, 37, 3)
    assert_close(atom37, ref['rf_atom37'], atol=1e-5, rtol=1e-6, what='atom14_to_atom37')
    # Exact layout conversions on AlphaFold's own numbers.
    assert_close(aa.atom14_to_atom37(t(ref['rf_atom14']), aatype), ref['rf_atom37'], atol=0,
                 what='atom14_to_atom37 (exact)')
    assert_close(aa.atom37_to_atom14(t(ref['rf_atom37']), aatype), ref['rf_atom14_back'], atol=0,
                 what='atom37_to_atom14 (exact)')
    # Per-atom values ([*, N, 14] without xyz): the masks map onto each other.
    assert torch.equal(aa.atom14_to_atom37(aa.atom14_mask(aatype), aatype), aa.atom37_mask(aatype))
    assert torch.equal(aa.atom37_to_atom14(aa.atom37_mask(aatype), aatype), aa.atom14_mask(aatype))


def test_frames_batched_and_float64(ref):
    aatype, bb_rot, bb_trans, angles = _random_case(ref)
    rot, trans = aa.torsion_angles_to_frames(aatype, bb_rot, bb_trans, angles)
    atom14 = aa.frames_to_atom14(aatype, rot, trans)
    # Leading batch dims [2, 3, N] give the same numbers.
    perm = torch.randperm(63, generator=torch.Generator().manual_seed(0))
    stack = lambda x: torch.stack([torch.stack([x, x[perm], x])] * 2)  # noqa: E731
    rot_b, trans_b = aa.torsion_angles_to_frames(stack(aatype), stack(bb_rot), stack(bb_trans),
                                                 stack(angles))
    assert rot_b.shape == (2, 3, 63, 8, 3, 3)
    assert torch.equal(rot_b[1, 1], rot[perm]) and torch.equal(trans_b[0, 2], trans)
    atom14_b = aa.frames_to_atom14(stack(aatype), rot_b, trans_b)
    assert torch.equal(atom14_b[1, 1], atom14[perm])
    atom37_b = aa.atom14_to_atom37(atom14_b, stack(aatype))
    assert atom37_b.shape == (2, 3, 63, 37, 3)
    assert torch.equal(atom37_b[0, 1], aa.atom14_to_atom37(atom14, aatype)[perm])
    # float64 in, float64 out, and it agrees with AlphaFold's float32 numbers.
    aatype, bb_rot, bb_trans, angles = _random_case(ref, torch.float64)
    rot, trans = aa.torsion_angles_to_frames(aatype, bb_rot, bb_trans, angles)
    atom14 = aa.frames_to_atom14(aatype, rot, trans)
    assert rot.dtype == torch.float64 and atom14.dtype == torch.float64
    assert_close(atom14, ref['rf_atom14'], atol=2e-5, what='float64 atom14')


def test_unknown_and_gap_aatype_have_no_atoms(ref):
    aatype = torch.tensor([20, 21, 0])
    rot = torch.eye(3).expand(3, 3, 3)
    trans = torch.ones(3, 3)
    angles = torch.tensor([0.0, 1.0]).expand(3, 7, 2)
    frot, ftrans = aa.torsion_angles_to_frames(aatype, rot, trans, angles)
    atom14 = aa.frames_to_atom14(aatype, frot, ftrans)
    assert not atom14[:2].any() and atom14[2, :5].abs().sum() > 0
    assert not aa.atom14_to_atom37(atom14, aatype)[:2].any()


def test_gradients_flow():
    gen = torch.Generator().manual_seed(0)
    aatype = torch.arange(21)
    q = torch.randn(21, 4, generator=gen, dtype=torch.float64)
    trans = torch.randn(21, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    raw = torch.randn(21, 7, 2, generator=gen, dtype=torch.float64, requires_grad=True)

    def fn(trans, raw):
        angles = raw / raw.norm(dim=-1, keepdim=True)
        rot, tr = aa.torsion_angles_to_frames(aatype, aa.quat_to_rot(q), trans, angles)
        return aa.frames_to_atom14(aatype, rot, tr)

    assert torch.autograd.gradcheck(fn, (trans, raw))


def test_constant_tables_are_not_inference_tensors():
    with torch.inference_mode():
        table = aa._as_tensor(rc.restype_atom14_mask, torch.device('cpu'), torch.float32)
    assert not table.is_inference()


# ----------------------------------------------------------------------------
# atom37_to_torsion_angles / pseudo_beta on real proteins
# ----------------------------------------------------------------------------

def _torsion_conditioning(aatype, pos):
    """float64: smallest of |e0|, |e1 ⟂ e0|, |atom4 ⟂ axis| (Å) for each torsion [*, N, 7]."""
    aatype = np.minimum(aatype, 20)
    pos = pos.astype(np.float64)
    prev = np.concatenate([np.zeros_like(pos[..., :1, :, :]), pos[..., :-1, :, :]], axis=-3)
    backbone = [np.concatenate([prev[..., 1:3, :], pos[..., 0:2, :]], -2),
                np.concatenate([prev[..., 2:3, :], pos[..., 0:3, :]], -2),
                np.concatenate([pos[..., 0:3, :], pos[..., 4:5, :]], -2)]
    idx = rc.restype_chi_angles_atom_indices[aatype]                       # [*, N, 4, 4]
    chis = np.take_along_axis(pos[..., None, :, :], idx[..., None], axis=-2)
    p = np.concatenate([b[..., None, :, :] for b in backbone] + [chis], axis=-3)
    e0 = p[..., 2, :] - p[..., 1, :]
    n0 = np.linalg.norm(e0, axis=-1)
    u0 = e0 / np.maximum(n0, 1e-12)[..., None]

    def perp(v):
        return np.linalg.norm(v - np.sum(v * u0, -1, keepdims=True) * u0, axis=-1)

    return np.minimum(np.minimum(n0, perp(p[..., 0, :] - p[..., 2, :])),
                      perp(p[..., 3, :] - p[..., 2, :]))


@pytest.mark.parametrize('case', ['glu', 'rbg', 'tpl'])
@pytest.mark.parametrize('placeholder', [False, True])
def test_atom37_to_torsion_angles(ref, case, placeholder):
    aatype, pos, mask = ref[f'{case}_aatype'], ref[f'{case}_pos'], ref[f'{case}_mask']
    tag = 'ph' if placeholder else 'noph'
    out = aa.atom37_to_torsion_angles(t(aatype).long(), t(pos), t(mask),
                                      placeholder_for_undefined=placeholder)
    exp_mask = ref[f'{case}_{tag}_torsion_angles_mask']
    np.testing.assert_array_equal(out['torsion_angles_mask'].numpy(), exp_mask)
    defined = exp_mask > 0
    assert defined.sum() > 0.5 * defined.size
    well_conditioned = _torsion_conditioning(aatype, pos) > 0.5
    for key in ['torsion_angles_sin_cos', 'alt_torsion_angles_sin_cos']:
        got = out[key].numpy()
        exp = ref[f'{case}_{tag}_{key}']
        assert got.shape == exp.shape == exp_mask.shape + (2,)
        err = np.abs(got - exp).max(-1)
        assert err[defined].max() <= 2e-5, (key, err[defined].max())
        assert np.isfinite(got).all() and (np.linalg.norm(got, axis=-1) <= 1 + 1e-5).all()
        if placeholder:
            assert err.max() <= 2e-5
            np.testing.assert_array_equal(got[~defined], np.broadcast_to([1.0, 0.0], got[~defined].shape))
        else:
            # Undefined torsions (mask 0) are not zeroed: compare them loosely,
            # and only where the geometry still defines an angle.
            loose = ~defined & well_conditioned
            if loose.any():
                assert err[loose].max() <= 1e-3, (key, err[loose].max())


@pytest.mark.parametrize('case', ['glu', 'rbg'])
def test_atom37_to_torsion_angles_float64(ref, case):
    aatype, pos, mask = ref[f'{case}_aatype'], ref[f'{case}_pos'], ref[f'{case}_mask']
    out = aa.atom37_to_torsion_angles(t(aatype), t(pos).double(), t(mask), False)
    assert out['torsion_angles_sin_cos'].dtype == torch.float64
    defined = ref[f'{case}_noph_torsion_angles_mask'] > 0
    err = np.abs(out['torsion_angles_sin_cos'].numpy()
                 - ref[f'{case}_noph_torsion_angles_sin_cos']).max(-1)
    assert err[defined].max() <= 2e-5


@pytest.mark.parametrize('case', ['glu', 'rbg', 'tpl'])
def test_pseudo_beta(ref, case):
    aatype, pos, mask = t(ref[f'{case}_aatype']), t(ref[f'{case}_pos']), t(ref[f'{case}_mask'])
    pb, pb_mask = aa.pseudo_beta(aatype, pos, mask)
    np.testing.assert_array_equal(pb.numpy(), ref[f'{case}_pseudo_beta'])
    np.testing.assert_array_equal(pb_mask.numpy(), ref[f'{case}_pseudo_beta_mask'])
    pb2, none = aa.pseudo_beta(aatype, pos, None)
    assert none is None and torch.equal(pb2, pb)


def test_pseudo_beta_fixture_templates(fixture):
    pb, pb_mask = aa.pseudo_beta(t(fixture['template_aatype']),
                                 t(fixture['template_all_atom_positions']),
                                 t(fixture['template_all_atom_masks']))
    np.testing.assert_array_equal(pb.numpy(), fixture['template_pseudo_beta'])
    np.testing.assert_array_equal(pb_mask.numpy(), fixture['template_pseudo_beta_mask'])


# ----------------------------------------------------------------------------
# The model_1_ptm_small AlphaFold fixture: structure-module side chains
# ----------------------------------------------------------------------------

def test_fixture_sidechains(fixture):
    aatype = t(fixture['aatype']).long()
    traj = t(fixture['structure_module_traj'])                  # [8, N, 7], translation in Å
    angles = t(fixture['structure_module_sidechains_angles_sin_cos'])
    frames_ref = fixture['structure_module_sidechains_frames']   # [8, N, 8, 12]
    atom_pos_ref = fixture['structure_module_sidechains_atom_pos']
    final_ref = fixture['final_atom_positions']
    scale = np.abs(final_ref).max()

    # Last layer, exactly as the structure module's final sidechain step.
    bb_rot = aa.quat_to_rot(traj[-1, :, :4])
    bb_trans = traj[-1, :, 4:]
    rot, trans = aa.torsion_angles_to_frames(aatype, bb_rot, bb_trans, angles[-1])
    assert_close(aa.rigid_to_flat12(rot, trans), frames_ref[-1], atol=1e-4, rtol=1e-5,
                 what='frames[-1]')
    atom14 = aa.frames_to_atom14(aatype, rot, trans)
    assert_close(atom14, atom_pos_ref[-1], atol=1e-4, rtol=1e-5, what='atom_pos[-1]')
    assert_close(atom14, fixture['final_atom14_positions'], atol=1e-4, rtol=1e-5,
                 what='final_atom14_positions')
    atom37 = aa.atom14_to_atom37(atom14, aatype)
    assert_close(atom37, final_ref, atol=1e-4, rtol=1e-5, what='final_atom_positions')
    assert np.abs(atom37.numpy() - final_ref).max() <= 1e-5 * scale
    np.testing.assert_array_equal(aa.atom37_mask(aatype).numpy(), fixture['final_atom_mask'])

    # All 8 layers at once (leading layer dim).
    layers = aatype.expand(traj.shape[0], -1)
    rot, trans = aa.torsion_angles_to_frames(layers, aa.quat_to_rot(traj[..., :4]),
                                             traj[..., 4:], angles)
    assert_close(aa.rigid_to_flat12(rot, trans), frames_ref, atol=1e-4, rtol=1e-5, what='frames')
    assert_close(aa.frames_to_atom14(layers, rot, trans), atom_pos_ref, atol=1e-4, rtol=1e-5,
                 what='atom_pos')
