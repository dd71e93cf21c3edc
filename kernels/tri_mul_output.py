"""Triangle multiplication's output stage: the product p's LayerNorm and output projection, gated by
the pair's own LayerNorm'd projection, added to the pair:

    out = z + (LN_p(p)^T W_out + b_out) * sigmoid(LN_z(z) W_g + b_g)

p: [c, *rows] channel-major (the [c, r, N] product of a row block: each channel's positions one
contiguous run), z and out: [*rows, C_z] with the positions flattenable (out may be z: in place);
ln_p = (scale [c], offset [c], eps), ln_z = (scale [C_z], offset [C_z], eps); w_out [c, C_z],
b_out [C_z], w_g [C_z, C_z], b_g [C_z]. The reference is AlphaFold's sequence of passes, each
rounded to the storage dtype (two LayerNorms, two GEMMs, sigmoid, product, sum: seven kernels and
four update-sized temporaries); the Triton kernel reads p and z once, keeps both GEMM tiles in
float32 on chip and writes out once, rounded once.
"""
from __future__ import annotations

import torch

from kernels._common import TRITON_DTYPES, add_residual, fused_dispatch, pow2_in, require
from kernels.layer_norm import layer_norm_reference


def tri_mul_output_reference(p, z, ln_p, w_out, b_out, ln_z, w_g, b_g, out):
    """The math as the network ran it before the kernel (same passes, same roundings). Returns out."""
    dt = z.dtype
    c = p.shape[0]
    pc = layer_norm_reference(p, ln_p[0], ln_p[1], ln_p[2], dim=0).reshape(c, -1)
    upd = torch.addmm(b_out.to(dt), pc.t(), w_out.to(dt))  # [P, C_z]
    del pc
    x = layer_norm_reference(z, ln_z[0], ln_z[1], ln_z[2]).reshape(upd.shape[0], -1)
    gate = torch.addmm(b_g.to(dt), x, w_g.to(dt))
    del x
    upd.mul_(torch.sigmoid_(gate))
    return add_residual(z, upd.view(z.shape), out)


def _kernel(p, z, out):
    """The Triton module that can run on these tensors here, or None (then the reference runs)."""
    c, cz = p.shape[0], z.shape[-1]
    if not (p.dtype in TRITON_DTYPES and z.dtype == p.dtype and out.dtype == p.dtype
            and pow2_in(c, 16, 256) and pow2_in(cz, 16, 256)):
        return None
    npos = z.numel() // cz
    try:  # positions flattened to one strided axis in each operand
        pv, zv, ov = p.view(c, npos), z.view(npos, cz), out.view(npos, cz)
    except RuntimeError:
        return None
    if pv.stride(1) != 1 or zv.stride(1) != 1 or ov.stride(1) != 1:
        return None
    from kernels._triton_loader import module_for
    return module_for("_tri_tri_mul_output", [p, z, out])


def tri_mul_output_triton(p, z, ln_p, w_out, b_out, ln_z, w_g, b_g, out, config=None):
    """The Triton kernel itself (`kernels/_tri_tri_mul_output.py`); raises if it can't run here."""
    mod = require(_kernel(p, z, out), "triangle-multiplication output stage")
    return mod.tri_mul_output(p, z, ln_p, w_out, b_out, ln_z, w_g, b_g, out, config=config)


def tri_mul_output(p, z, ln_p, w_out, b_out, ln_z, w_g, b_g, out, backend: str = "torch"):
    """Dispatch: "torch" the reference; "triton" the fused kernel where it can run (CUDA, or CPU
    under TRITON_INTERPRET=1; c and C_z powers of two in 16..256; fp32/bf16/fp16; its tiles fit
    the GPU), else the reference. Shapes as in the module docstring. Returns out."""
    args = (p, z, ln_p, w_out, b_out, ln_z, w_g, b_g, out)
    return fused_dispatch("tri_mul_output", backend, lambda: _kernel(p, z, out),
                          lambda mod: mod.tri_mul_output(*args), lambda: tri_mul_output_reference(*args))
