# Copyright 2021 DeepMind Technologies Limited
# Modifications copyright 2026 the FastFold authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""All-atom geometry for inference, in PyTorch.

A port of the inference parts of AlphaFold 2.3 ``alphafold/model/all_atom.py``,
``r3.py``, ``quat_affine.py`` and ``modules.pseudo_beta_fn`` (DeepMind,
Apache-2.0).

Conventions
-----------
* A rigid transform is a pair ``(rot, trans)``: ``rot`` [..., 3, 3] with
  ``rot[..., i, j]`` = row i, column j, and ``trans`` [..., 3].  It maps a
  local point x to ``rot @ x + trans``.  (AlphaFold's ``r3.Rots`` fields
  ``xx, xy, xz, yx, ...`` are ``rot[..., 0, 0], rot[..., 0, 1], ...``.)
* Quaternions are [..., 4] in (w, x, y, z) order, as in ``quat_affine``.
* ``aatype`` is an integer tensor in AlphaFold's order (0..19 amino acids,
  20 = UNK).  Values above 20 are clamped to 20 (JAX gathers clamp
  out-of-range indices; ``atom37_to_torsion_angles`` does it explicitly).
* Every function takes arbitrary leading batch dims ``[*]``; the residue axis
  is the one named N in the docstrings.

Numerics
--------
The 3x3 products are written out element-wise in AlphaFold's order of terms
instead of calling ``matmul``: the results match AlphaFold's float32 numbers
to rounding, and are not affected by TF32 matmul or autocast settings.
Computation happens in the dtype of the floating-point inputs (use float32).

Constant tables from ``model.residue_constants`` are turned into tensors
once per (device, dtype) by small ``lru_cache``'d builders; nothing else is
global state.  Under ``torch.compile`` the tables are read from CPU originals
(graph constants) and moved to the input's device; everything traces with
``fullgraph=True``.
"""

import functools
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from . import residue_constants as rc

__all__ = [
    'rot_mul_rot', 'rot_vec_mul', 'rot_transpose', 'rigid_compose',
    'rigid_apply', 'rigid_invert', 'rigid_invert_apply', 'robust_normalize',
    'rot_from_two_vecs', 'rigid_from_three_points', 'quat_to_rot',
    'rot_to_quat', 'quat_multiply', 'quat_multiply_by_vec', 'rigid_to_flat12',
    'rigid_from_flat12', 'rigid_from_tensor4x4', 'torsion_angles_to_frames',
    'frames_to_atom14', 'atom14_to_atom37', 'atom37_to_atom14', 'atom37_mask',
    'atom14_mask', 'atom37_to_torsion_angles', 'pseudo_beta',
    # AlphaFold-Multimer geometry (geometry/*.py, all_atom_multimer.py, folding_multimer.py)
    'vec_norm', 'vec_normalized', 'rot_from_quaternion', 'rot_from_two_vectors', 'backbone_frames',
    'dihedral_angle', 'chi_angles',
]


# ----------------------------------------------------------------------------
# Constant tables (cached per device / dtype).
# ----------------------------------------------------------------------------

def _as_tensor(array: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Built outside inference mode so that a table first made inside
    # torch.inference_mode() can still be used later by autograd code.
    with torch.inference_mode(False):
        return torch.tensor(np.asarray(array), dtype=dtype, device=device)


@functools.lru_cache(maxsize=None)
def _int_tables(device: torch.device) -> Dict[str, torch.Tensor]:
    """Integer index tables on `device` (int64)."""
    t = functools.partial(_as_tensor, device=device, dtype=torch.long)
    return {
        'atom14_to_group': t(rc.restype_atom14_to_rigid_group),        # [21, 14]
        'atom37_to_atom14': t(rc.restype_atom37_to_atom14),            # [21, 37]
        'atom14_to_atom37': t(rc.restype_atom14_to_atom37),            # [21, 14]
        'chi_atom_indices': t(rc.restype_chi_angles_atom_indices),     # [21, 4, 4]
    }


@functools.lru_cache(maxsize=None)
def _float_tables(device: torch.device, dtype: torch.dtype) -> Dict[str, torch.Tensor]:
    """Floating-point constant tables on `device` in `dtype`."""
    t = functools.partial(_as_tensor, device=device, dtype=dtype)
    default_frame = rc.restype_rigid_group_default_frame              # [21, 8, 4, 4]
    return {
        'default_rot': t(default_frame[..., :3, :3]),                  # [21, 8, 3, 3]
        'default_trans': t(default_frame[..., :3, 3]),                 # [21, 8, 3]
        'atom14_lit_positions': t(rc.restype_atom14_rigid_group_positions),  # [21, 14, 3]
        'atom14_mask': t(rc.restype_atom14_mask),                      # [21, 14]
        'atom37_mask': t(rc.restype_atom37_mask),                      # [21, 37]
        'chi_angles_mask': t(rc.restype_chi_angles_mask),              # [21, 4]
        'chi_pi_periodic': t(rc.restype_chi_pi_periodic),              # [21, 4]
        'psi_mirror': t(np.array([1., 1., -1., 1., 1., 1., 1.], np.float32)),  # [7]
    }


_CPU = torch.device('cpu')


def _is_compiling() -> bool:
    compiler = getattr(torch, 'compiler', None)
    return bool(compiler is not None and hasattr(compiler, 'is_compiling')
                and compiler.is_compiling())


def _int_table(name: str, device: torch.device) -> torch.Tensor:
    if _is_compiling():
        # Under torch.compile, read the CPU copy (a graph constant) and move it,
        # instead of tracing the cached builder's numpy construction.
        return _CPU_INT_TABLES[name].to(device)
    return _int_tables(device)[name]


def _float_table(name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if _is_compiling():
        return _CPU_FLOAT_TABLES[name].to(device=device, dtype=dtype)
    return _float_tables(device, dtype)[name]


# CPU float32 / int64 originals (never modified), used while torch.compile traces.
_CPU_INT_TABLES = _int_tables(_CPU)
_CPU_FLOAT_TABLES = _float_tables(_CPU, torch.float32)


def _clamp_aatype(aatype: torch.Tensor) -> torch.Tensor:
    return aatype.long().clamp(0, rc.restype_num)


# ----------------------------------------------------------------------------
# Rotations and rigid transforms (r3.py).
# ----------------------------------------------------------------------------

def rot_mul_rot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rotation composition a @ b.  a, b: [..., 3, 3] (broadcast) -> [..., 3, 3]."""
    return (a[..., :, 0:1] * b[..., 0:1, :]
            + a[..., :, 1:2] * b[..., 1:2, :]
            + a[..., :, 2:3] * b[..., 2:3, :])


def rot_vec_mul(r: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Apply rotation: r [..., 3, 3], v [..., 3] (broadcast) -> r @ v [..., 3]."""
    return (r[..., :, 0] * v[..., 0, None]
            + r[..., :, 1] * v[..., 1, None]
            + r[..., :, 2] * v[..., 2, None])


def rot_transpose(r: torch.Tensor) -> torch.Tensor:
    """Inverse of a rotation: r [..., 3, 3] -> r^T [..., 3, 3]."""
    return r.transpose(-1, -2)


def rigid_compose(rot_a: torch.Tensor, trans_a: torch.Tensor,
                  rot_b: torch.Tensor, trans_b: torch.Tensor
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Group composition a ∘ b (apply b first), as r3.rigids_mul_rigids.

    rot_* [..., 3, 3], trans_* [..., 3] -> (rot [..., 3, 3], trans [..., 3]).
    """
    return rot_mul_rot(rot_a, rot_b), trans_a + rot_vec_mul(rot_a, trans_b)


def rigid_apply(rot: torch.Tensor, trans: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """rot [..., 3, 3], trans [..., 3], x [..., 3] -> rot @ x + trans [..., 3]."""
    return rot_vec_mul(rot, x) + trans


def rigid_invert(rot: torch.Tensor, trans: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Inverse transform, as r3.invert_rigids: (R^T, -(R^T t))."""
    inv_rot = rot_transpose(rot)
    return inv_rot, -rot_vec_mul(inv_rot, trans)


def rigid_invert_apply(rot: torch.Tensor, trans: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply the inverse transform: R^T x - R^T t (AlphaFold's order), [..., 3]."""
    inv_rot, inv_trans = rigid_invert(rot, trans)
    return rot_vec_mul(inv_rot, x) + inv_trans


def robust_normalize(v: torch.Tensor, epsilon: float = 1e-8) -> torch.Tensor:
    """v / sqrt(|v|^2 + epsilon), as r3.vecs_robust_normalize.  v: [..., 3]."""
    x, y, z = v.unbind(-1)
    norm = torch.sqrt(x * x + y * y + z * z + epsilon)
    return v / norm[..., None]


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    ax, ay, az = a.unbind(-1)
    bx, by, bz = b.unbind(-1)
    return torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], dim=-1)


def rot_from_two_vecs(e0_unnormalized: torch.Tensor, e1_unnormalized: torch.Tensor) -> torch.Tensor:
    """Gram-Schmidt rotation, as r3.rots_from_two_vecs.

    Args:
      e0_unnormalized: [..., 3] vector along the new x axis.
      e1_unnormalized: [..., 3] vector in the new xy plane.
    Returns:
      rot [..., 3, 3] whose columns are the unit vectors e0, e1, e2 = e0 x e1.
    """
    e0 = robust_normalize(e0_unnormalized)
    c = (e1_unnormalized[..., 0] * e0[..., 0] + e1_unnormalized[..., 1] * e0[..., 1]
         + e1_unnormalized[..., 2] * e0[..., 2])
    e1 = robust_normalize(e1_unnormalized - c[..., None] * e0)
    e2 = _cross(e0, e1)
    return torch.stack([e0, e1, e2], dim=-1)


def rigid_from_three_points(n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor
                            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Frame from three points, as r3.rigids_from_3_points (Suppl. Alg. 21).

    Args:
      n:  [..., 3] point on the negative x axis (point_on_neg_x_axis).
      ca: [..., 3] origin.
      c:  [..., 3] point in the xy plane with positive y (point_on_xy_plane).
    Returns:
      (rot [..., 3, 3], trans [..., 3] = ca): local frame -> global.
    """
    rot = rot_from_two_vecs(ca - n, c - ca)
    return rot, ca


def rigid_from_tensor4x4(m: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Homogeneous [..., 4, 4] -> (rot [..., 3, 3], trans [..., 3])."""
    return m[..., :3, :3], m[..., :3, 3]


def rigid_to_flat12(rot: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """(rot [..., 3, 3], trans [..., 3]) -> [..., 12]: 9 rotation entries
    row-major then the translation (r3.rigids_to_tensor_flat12 layout, used by
    AlphaFold's ``sidechains/frames`` output)."""
    return torch.cat([rot.flatten(-2), trans], dim=-1)


def rigid_from_flat12(m: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """[..., 12] (row-major rotation, translation) -> (rot [..., 3, 3], trans [..., 3])."""
    return m[..., :9].unflatten(-1, (3, 3)), m[..., 9:]


# ----------------------------------------------------------------------------
# Quaternions (quat_affine.py), (w, x, y, z) order.
# ----------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _quat_tables(device: torch.device, dtype: torch.dtype) -> Dict[str, torch.Tensor]:
    quat_to_rot = np.zeros((4, 4, 3, 3), dtype=np.float32)
    quat_to_rot[0, 0] = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]     # rr
    quat_to_rot[1, 1] = [[1, 0, 0], [0, -1, 0], [0, 0, -1]]   # ii
    quat_to_rot[2, 2] = [[-1, 0, 0], [0, 1, 0], [0, 0, -1]]   # jj
    quat_to_rot[3, 3] = [[-1, 0, 0], [0, -1, 0], [0, 0, 1]]   # kk
    quat_to_rot[1, 2] = [[0, 2, 0], [2, 0, 0], [0, 0, 0]]     # ij
    quat_to_rot[1, 3] = [[0, 0, 2], [0, 0, 0], [2, 0, 0]]     # ik
    quat_to_rot[2, 3] = [[0, 0, 0], [0, 0, 2], [0, 2, 0]]     # jk
    quat_to_rot[0, 1] = [[0, 0, 0], [0, 0, -2], [0, 2, 0]]    # ir
    quat_to_rot[0, 2] = [[0, 0, 2], [0, 0, 0], [-2, 0, 0]]    # jr
    quat_to_rot[0, 3] = [[0, -2, 0], [2, 0, 0], [0, 0, 0]]    # kr

    quat_multiply = np.zeros((4, 4, 4), dtype=np.float32)
    quat_multiply[:, :, 0] = [[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 0], [0, 0, 0, -1]]
    quat_multiply[:, :, 1] = [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, -1, 0]]
    quat_multiply[:, :, 2] = [[0, 0, 1, 0], [0, 0, 0, -1], [1, 0, 0, 0], [0, 1, 0, 0]]
    quat_multiply[:, :, 3] = [[0, 0, 0, 1], [0, 0, 1, 0], [0, -1, 0, 0], [1, 0, 0, 0]]
    t = functools.partial(_as_tensor, device=device, dtype=dtype)
    return {
        'quat_to_rot': t(quat_to_rot.reshape(4, 4, 9)),
        'quat_multiply': t(quat_multiply),
        'quat_multiply_by_vec': t(quat_multiply[:, 1:, :]),
    }


def _quat_table(name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    if _is_compiling():
        return _CPU_QUAT_TABLES[name].to(device=device, dtype=dtype)
    return _quat_tables(device, dtype)[name]


_CPU_QUAT_TABLES = _quat_tables(_CPU, torch.float32)


def quat_to_rot(q: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Quaternion (w, x, y, z) [..., 4] -> rotation [..., 3, 3].

    With normalize=True (default) q is first divided by its L2 norm, as
    ``QuatAffine(quaternion, ...)`` does before calling ``quat_to_rot``; then
    the rotation is AlphaFold's quadratic form sum_ij QUAT_TO_ROT[i, j] q_i q_j.
    """
    if normalize:
        q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    table = _quat_table('quat_to_rot', q.device, q.dtype)         # [4, 4, 9]
    rot = (table * q[..., :, None, None] * q[..., None, :, None]).sum(dim=(-3, -2))
    return rot.unflatten(-1, (3, 3))


def rot_to_quat(rot: torch.Tensor) -> torch.Tensor:
    """Rotation [..., 3, 3] -> unit quaternion (w, x, y, z) [..., 4].

    As quat_affine.rot_to_quat (eigenvector of the largest eigenvalue of the
    symmetric 4x4 matrix K/3).  The sign of an eigenvector is arbitrary; here
    it is fixed so that w >= 0.  Uses torch.linalg.eigh (slow on GPU).
    """
    xx, xy, xz = rot[..., 0, 0], rot[..., 0, 1], rot[..., 0, 2]
    yx, yy, yz = rot[..., 1, 0], rot[..., 1, 1], rot[..., 1, 2]
    zx, zy, zz = rot[..., 2, 0], rot[..., 2, 1], rot[..., 2, 2]
    k = [[xx + yy + zz, zy - yz, xz - zx, yx - xy],
         [zy - yz, xx - yy - zz, xy + yx, xz + zx],
         [xz - zx, xy + yx, yy - xx - zz, yz + zy],
         [yx - xy, xz + zx, yz + zy, zz - xx - yy]]
    k = (1. / 3.) * torch.stack([torch.stack(row, dim=-1) for row in k], dim=-2)
    _, vecs = torch.linalg.eigh(k)
    q = vecs[..., -1]
    return torch.where(q[..., :1] < 0, -q, q)


def quat_multiply(q1: torch.Tensor, q2: torch.Tensor) -> torch.Tensor:
    """Hamilton product q1 * q2: [..., 4] x [..., 4] -> [..., 4]."""
    table = _quat_table('quat_multiply', q1.device, q1.dtype)     # [4, 4, 4]
    return (table * q1[..., :, None, None] * q2[..., None, :, None]).sum(dim=(-3, -2))


def quat_multiply_by_vec(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q * (0, v): quaternion [..., 4] times pure-vector quaternion [..., 3] -> [..., 4]."""
    table = _quat_table('quat_multiply_by_vec', q.device, q.dtype)  # [4, 3, 4]
    return (table * q[..., :, None, None] * v[..., None, :, None]).sum(dim=(-3, -2))


# ----------------------------------------------------------------------------
# Side-chain frames and atom positions (all_atom.py).
# ----------------------------------------------------------------------------

def torsion_angles_to_frames(aatype: torch.Tensor, bb_rot: torch.Tensor,
                             bb_trans: torch.Tensor, angles_sin_cos: torch.Tensor
                             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rigid-group frames from torsion angles (Suppl. Alg. 24 lines 2-10).

    As AlphaFold's ``all_atom.torsion_angles_to_frames``.

    Args:
      aatype: [*, N] integer residue types.
      bb_rot: [*, N, 3, 3] backbone rotation (backbone frame -> global).
      bb_trans: [*, N, 3] backbone translation, in the units wanted for the
        output (Angstrom in the structure module: the affine translation
        times position_scale).
      angles_sin_cos: [*, N, 7, 2] (sin, cos) of the torsions
        [pre_omega, phi, psi, chi1, chi2, chi3, chi4] (normalised).
    Returns:
      (rot [*, N, 8, 3, 3], trans [*, N, 8, 3]): group -> global frames for the
      8 rigid groups [backbone, pre_omega, phi, psi, chi1, chi2, chi3, chi4].
    """
    aatype = _clamp_aatype(aatype)
    device, dtype = angles_sin_cos.device, angles_sin_cos.dtype
    default_rot = _float_table('default_rot', device, dtype)[aatype]      # [*, N, 8, 3, 3]
    default_trans = _float_table('default_trans', device, dtype)[aatype]  # [*, N, 8, 3]

    sin = angles_sin_cos[..., 0]
    cos = angles_sin_cos[..., 1]
    # Zero rotation for the backbone group.
    sin = torch.cat([torch.zeros_like(sin[..., :1]), sin], dim=-1)  # [*, N, 8]
    cos = torch.cat([torch.ones_like(cos[..., :1]), cos], dim=-1)
    zeros = torch.zeros_like(sin)
    ones = torch.ones_like(sin)
    # Rotations about the x axis: [[1, 0, 0], [0, c, -s], [0, s, c]].
    rots = torch.stack([ones, zeros, zeros,
                        zeros, cos, -sin,
                        zeros, sin, cos], dim=-1).unflatten(-1, (3, 3))

    frame_rot = rot_mul_rot(default_rot, rots)                      # [*, N, 8, 3, 3]
    frame_trans = default_trans

    # chi2, chi3 and chi4 frames map to the previous chi frame: chain them.
    chain_rot = [frame_rot[..., 4, :, :]]
    chain_trans = [frame_trans[..., 4, :]]
    for g in (5, 6, 7):
        r, t = rigid_compose(chain_rot[-1], chain_trans[-1],
                             frame_rot[..., g, :, :], frame_trans[..., g, :])
        chain_rot.append(r)
        chain_trans.append(t)
    to_bb_rot = torch.cat([frame_rot[..., :5, :, :], torch.stack(chain_rot[1:], dim=-3)], dim=-3)
    to_bb_trans = torch.cat([frame_trans[..., :5, :], torch.stack(chain_trans[1:], dim=-2)], dim=-2)

    return rigid_compose(bb_rot[..., None, :, :], bb_trans[..., None, :], to_bb_rot, to_bb_trans)


def frames_to_atom14(aatype: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """Atom14 positions from the rigid-group frames (Suppl. Alg. 24 line 11).

    As AlphaFold's ``all_atom.frames_and_literature_positions_to_atom14_pos``.

    Args:
      aatype: [*, N] integer residue types.
      rot: [*, N, 8, 3, 3] group -> global rotations.
      trans: [*, N, 8, 3] group -> global translations.
    Returns:
      [*, N, 14, 3] atom positions, zero where the atom does not exist.
    """
    aatype = _clamp_aatype(aatype)
    group = _int_table('atom14_to_group', rot.device)[aatype]     # [*, N, 14]
    atom_rot = torch.take_along_dim(rot, group[..., None, None], dim=-3)   # [*, N, 14, 3, 3]
    atom_trans = torch.take_along_dim(trans, group[..., None], dim=-2)     # [*, N, 14, 3]
    lit = _float_table('atom14_lit_positions', rot.device, rot.dtype)[aatype]  # [*, N, 14, 3]
    pos = rigid_apply(atom_rot, atom_trans, lit)
    return pos * _float_table('atom14_mask', rot.device, rot.dtype)[aatype][..., None]


def atom37_mask(aatype: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[*, N] aatype -> [*, N, 37] atom existence mask (AlphaFold's atom37_atom_exists)."""
    return _float_table('atom37_mask', aatype.device, dtype)[_clamp_aatype(aatype)]


def atom14_mask(aatype: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[*, N] aatype -> [*, N, 14] atom existence mask (AlphaFold's atom14_atom_exists)."""
    return _float_table('atom14_mask', aatype.device, dtype)[_clamp_aatype(aatype)]


def _gather_atoms(data: torch.Tensor, index: torch.Tensor, trailing: bool) -> torch.Tensor:
    if trailing:
        return torch.take_along_dim(data, index[..., None], dim=-2)
    return torch.take_along_dim(data, index, dim=-1)


def atom14_to_atom37(atom14: torch.Tensor, aatype: torch.Tensor) -> torch.Tensor:
    """Atom14 -> atom37 layout, as AlphaFold's ``all_atom.atom14_to_atom37``.

    Args:
      atom14: [*, N, 14, 3] (or [*, N, 14] per-atom values, e.g. a mask).
      aatype: [*, N] integer residue types.
    Returns:
      [*, N, 37, 3] (or [*, N, 37]), zero where the atom does not exist.
    """
    aatype = _clamp_aatype(aatype)
    trailing = atom14.dim() == aatype.dim() + 2
    index = _int_table('atom37_to_atom14', atom14.device)[aatype]  # [*, N, 37]
    out = _gather_atoms(atom14, index, trailing)
    mask = atom37_mask(aatype, atom14.dtype if atom14.is_floating_point() else torch.float32)
    if not atom14.is_floating_point():
        return out * mask.to(out.dtype)
    return out * (mask[..., None] if trailing else mask)


def atom37_to_atom14(atom37: torch.Tensor, aatype: torch.Tensor) -> torch.Tensor:
    """Atom37 -> atom14 layout, as AlphaFold's ``all_atom.atom37_to_atom14``.

    Args:
      atom37: [*, N, 37, 3] (or [*, N, 37]).
      aatype: [*, N] integer residue types.
    Returns:
      [*, N, 14, 3] (or [*, N, 14]), zero where the atom does not exist.
    """
    aatype = _clamp_aatype(aatype)
    trailing = atom37.dim() == aatype.dim() + 2
    index = _int_table('atom14_to_atom37', atom37.device)[aatype]  # [*, N, 14]
    out = _gather_atoms(atom37, index, trailing)
    mask = atom14_mask(aatype, atom37.dtype if atom37.is_floating_point() else torch.float32)
    if not atom37.is_floating_point():
        return out * mask.to(out.dtype)
    return out * (mask[..., None] if trailing else mask)


def atom37_to_torsion_angles(aatype: torch.Tensor, all_atom_pos: torch.Tensor,
                             all_atom_mask: torch.Tensor,
                             placeholder_for_undefined: bool = False
                             ) -> Dict[str, torch.Tensor]:
    """The 7 torsion angles (sin, cos) of each residue from atom37 coordinates.

    As AlphaFold 2.3's ``all_atom.atom37_to_torsion_angles`` (there the leading
    dim is templates, [T, N]); any leading dims are accepted here.  Torsion
    order: [pre_omega, phi, psi, chi1, chi2, chi3, chi4]; pre_omega is the omega
    between the previous residue (index i-1 along N) and this one.

    With placeholder_for_undefined=False (AlphaFold's monomer template
    embedding: ``not zero_init``) torsions whose mask is 0 are NOT zeroed: they
    hold whatever the degenerate geometry gives, often rounding noise of
    arbitrary direction (e.g. pre_omega/phi of the first residue).  They
    cannot be expected to agree with AlphaFold's numbers bit for bit.

    Args:
      aatype: [*, N] integer residue types (values > 20 are mapped to 20).
      all_atom_pos: [*, N, 37, 3] atom coordinates.
      all_atom_mask: [*, N, 37] atom mask (0/1).
      placeholder_for_undefined: if True, masked torsions are set to
        (sin, cos) = (1, 0).
    Returns:
      dict with
        'torsion_angles_sin_cos': [*, N, 7, 2],
        'alt_torsion_angles_sin_cos': [*, N, 7, 2] (pi-periodic chis shifted by pi),
        'torsion_angles_mask': [*, N, 7].
    """
    aatype = _clamp_aatype(aatype)
    dtype = all_atom_pos.dtype
    device = all_atom_pos.device
    all_atom_mask = all_atom_mask.to(dtype)

    prev_pos = torch.cat([torch.zeros_like(all_atom_pos[..., :1, :, :]),
                          all_atom_pos[..., :-1, :, :]], dim=-3)
    prev_mask = torch.cat([torch.zeros_like(all_atom_mask[..., :1, :]),
                           all_atom_mask[..., :-1, :]], dim=-2)

    # Four atoms of each backbone torsion, [*, N, 4, 3].
    pre_omega_atom_pos = torch.cat([prev_pos[..., 1:3, :],        # prev CA, C
                                    all_atom_pos[..., 0:2, :]],   # this N, CA
                                   dim=-2)
    phi_atom_pos = torch.cat([prev_pos[..., 2:3, :],              # prev C
                              all_atom_pos[..., 0:3, :]],         # this N, CA, C
                             dim=-2)
    psi_atom_pos = torch.cat([all_atom_pos[..., 0:3, :],          # this N, CA, C
                              all_atom_pos[..., 4:5, :]],         # this O
                             dim=-2)

    pre_omega_mask = (torch.prod(prev_mask[..., 1:3], dim=-1)
                      * torch.prod(all_atom_mask[..., 0:2], dim=-1))
    phi_mask = prev_mask[..., 2] * torch.prod(all_atom_mask[..., 0:3], dim=-1)
    psi_mask = torch.prod(all_atom_mask[..., 0:3], dim=-1) * all_atom_mask[..., 4]

    # Chi angle atoms, [*, N, chis=4, atoms=4].
    atom_indices = _int_table('chi_atom_indices', device)[aatype]
    flat_index = atom_indices.flatten(-2)                          # [*, N, 16]
    chis_atom_pos = torch.take_along_dim(all_atom_pos, flat_index[..., None], dim=-2)
    chis_atom_pos = chis_atom_pos.unflatten(-2, (4, 4))           # [*, N, 4, 4, 3]

    chis_mask = _float_table('chi_angles_mask', device, dtype)[aatype]            # [*, N, 4]
    chi_angle_atoms_mask = torch.take_along_dim(all_atom_mask, flat_index, dim=-1)
    chi_angle_atoms_mask = torch.prod(chi_angle_atoms_mask.unflatten(-1, (4, 4)), dim=-1)
    chis_mask = chis_mask * chi_angle_atoms_mask

    torsions_atom_pos = torch.cat([pre_omega_atom_pos[..., None, :, :],
                                   phi_atom_pos[..., None, :, :],
                                   psi_atom_pos[..., None, :, :],
                                   chis_atom_pos], dim=-3)        # [*, N, 7, 4, 3]
    torsion_angles_mask = torch.cat([pre_omega_mask[..., None],
                                     phi_mask[..., None],
                                     psi_mask[..., None],
                                     chis_mask], dim=-1)           # [*, N, 7]

    # Frame from the first three atoms: atom 1 on the negative x axis, atom 2
    # the origin, atom 0 in the xy plane; the 4th atom's (y, z) give the angle.
    frame_rot, frame_trans = rigid_from_three_points(
        n=torsions_atom_pos[..., 1, :],
        ca=torsions_atom_pos[..., 2, :],
        c=torsions_atom_pos[..., 0, :])
    forth_atom_rel_pos = rigid_invert_apply(frame_rot, frame_trans,
                                            torsions_atom_pos[..., 3, :])

    sin_cos = torch.stack([forth_atom_rel_pos[..., 2], forth_atom_rel_pos[..., 1]], dim=-1)
    sin_cos = sin_cos / torch.sqrt(
        torch.sum(torch.square(sin_cos), dim=-1, keepdim=True) + 1e-8)

    # Mirror psi, because it is computed from the oxygen atom.
    sin_cos = sin_cos * _float_table('psi_mirror', device, dtype)[:, None]

    chi_is_ambiguous = _float_table('chi_pi_periodic', device, dtype)[aatype]     # [*, N, 4]
    mirror = torch.cat([torch.ones_like(chi_is_ambiguous[..., :3]),
                        1.0 - 2.0 * chi_is_ambiguous], dim=-1)     # [*, N, 7]
    alt_sin_cos = sin_cos * mirror[..., None]

    if placeholder_for_undefined:
        placeholder = torch.stack([torch.ones_like(torsion_angles_mask),
                                   torch.zeros_like(torsion_angles_mask)], dim=-1)
        m = torsion_angles_mask[..., None]
        sin_cos = sin_cos * m + placeholder * (1 - m)
        alt_sin_cos = alt_sin_cos * m + placeholder * (1 - m)

    return {
        'torsion_angles_sin_cos': sin_cos,
        'alt_torsion_angles_sin_cos': alt_sin_cos,
        'torsion_angles_mask': torsion_angles_mask,
    }


def pseudo_beta(aatype: torch.Tensor, all_atom_positions: torch.Tensor,
                all_atom_mask: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Pseudo-Cβ (Cα for glycine), as AlphaFold's ``modules.pseudo_beta_fn``.

    Args:
      aatype: [*, N] integer residue types.
      all_atom_positions: [*, N, 37, 3].
      all_atom_mask: [*, N, 37] or None.
    Returns:
      (positions [*, N, 3], mask [*, N] or None).  Unlike AlphaFold, the
      mask-less call also returns a pair, with None as the mask.
    """
    is_gly = aatype == rc.restype_order['G']
    ca_idx = rc.atom_order['CA']
    cb_idx = rc.atom_order['CB']
    positions = torch.where(is_gly[..., None],
                            all_atom_positions[..., ca_idx, :],
                            all_atom_positions[..., cb_idx, :])
    if all_atom_mask is None:
        return positions, None
    mask = torch.where(is_gly, all_atom_mask[..., ca_idx], all_atom_mask[..., cb_idx])
    if not mask.is_floating_point():
        mask = mask.float()
    return positions, mask


# ----------------------------------------------------------------------------
# AlphaFold-Multimer geometry (geometry/vector.py, geometry/rotation_matrix.py,
# all_atom_multimer.py, folding_multimer.make_backbone_affine).  These clip
# norms from below (sqrt(max(|v|^2, eps^2))) where r3 adds an epsilon.
# ----------------------------------------------------------------------------

def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def vec_norm(v: torch.Tensor, epsilon: float = 1e-6) -> torch.Tensor:
    """|v| clipped to at least epsilon, as Vec3Array.norm.  v: [..., 3] -> [...]."""
    n2 = _dot(v, v)
    if epsilon:
        n2 = torch.clamp(n2, min=epsilon ** 2)
    return torch.sqrt(n2)


def vec_normalized(v: torch.Tensor, epsilon: float = 1e-6) -> torch.Tensor:
    """v / vec_norm(v), as Vec3Array.normalized.  v: [..., 3]."""
    return v / vec_norm(v, epsilon)[..., None]


def rot_from_quaternion(w: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor,
                        normalize: bool = True, epsilon: float = 1e-6) -> torch.Tensor:
    """Rotation [..., 3, 3] from quaternion components [...], as Rot3Array.from_quaternion
    (normalised by rsqrt(max(eps, |q|^2)))."""
    if normalize:
        inv = torch.rsqrt(torch.clamp(w * w + x * x + y * y + z * z, min=epsilon))
        w, x, y, z = w * inv, x * inv, y * inv, z * inv
    rows = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))


def rot_from_two_vectors(e0: torch.Tensor, e1: torch.Tensor) -> torch.Tensor:
    """Rot3Array.from_two_vectors: e0 on the +x axis, e1 in the xy plane (+y).  [..., 3] -> [..., 3, 3]."""
    e0 = vec_normalized(e0)
    c = _dot(e1, e0)
    e1 = vec_normalized(e1 - c[..., None] * e0)
    e2 = _cross(e0, e1)
    return torch.stack([e0, e1, e2], dim=-1)


def backbone_frames(atom_pos: torch.Tensor, atom_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backbone frames from N, CA, C as folding_multimer.make_backbone_affine
    (all_atom_multimer.make_transform_from_reference): x along C - CA, N in the xy plane,
    origin CA.  atom_pos [*, N, 37, 3]; atom_mask [*, N, 37] -> (rot [*, N, 3, 3],
    trans [*, N, 3], mask [*, N] float)."""
    n, ca, c = (rc.atom_order[a] for a in ('N', 'CA', 'C'))
    mask = (atom_mask[..., n] * atom_mask[..., ca] * atom_mask[..., c]).float()
    rot = rot_from_two_vectors(atom_pos[..., c, :] - atom_pos[..., ca, :],
                               atom_pos[..., n, :] - atom_pos[..., ca, :])
    return rot, atom_pos[..., ca, :], mask


def dihedral_angle(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Torsion angle of the points a, b, c, d in radians, as geometry.dihedral_angle.  [..., 3] -> [...]."""
    v1, v2, v3 = a - b, b - c, d - c
    c1 = _cross(v1, v2)
    c2 = _cross(v3, v2)
    c3 = _cross(c2, c1)
    return torch.atan2(_dot(c3, v2), vec_norm(v2) * _dot(c1, c2))


def chi_angles(aatype: torch.Tensor, atom_pos: torch.Tensor, atom_mask: torch.Tensor
               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The four chi angles and their mask, as all_atom_multimer.compute_chi_angles.

    aatype [*, N] (values > 20 count as UNK); atom_pos [*, N, 37, 3]; atom_mask [*, N, 37]
    -> (angles [*, N, 4] in radians, mask [*, N, 4] float: the residue has the chi and its
    four atoms are present)."""
    aatype = _clamp_aatype(aatype)
    idx = _int_table('chi_atom_indices', atom_pos.device)[aatype].flatten(-2)          # [*, N, 16]
    pos = torch.take_along_dim(atom_pos, idx[..., None], dim=-2).unflatten(-2, (4, 4))  # [*, N, 4, 4, 3]
    angles = dihedral_angle(pos[..., 0, :], pos[..., 1, :], pos[..., 2, :], pos[..., 3, :])
    mask = _float_table('chi_angles_mask', atom_pos.device, torch.float32)[aatype]
    atoms = torch.take_along_dim(atom_mask.float(), idx, dim=-1).unflatten(-1, (4, 4))
    return angles, mask * torch.prod(atoms, dim=-1)
