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

from kernels.layer_norm import layer_norm_reference
from kernels.transition import _residual


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
    return _residual(z, upd.view(z.shape), out)


_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _pow2(n: int) -> bool:
    return 16 <= n <= 256 and n & (n - 1) == 0


def _triton_ok(p, z, out) -> bool:
    c, cz = p.shape[0], z.shape[-1]
    if not (p.dtype in _DTYPES and z.dtype == p.dtype and out.dtype == p.dtype and _pow2(c) and _pow2(cz)):
        return False
    npos = z.numel() // cz
    try:  # positions flattened to one strided axis in each operand
        p.view(c, npos), z.view(npos, cz), out.view(npos, cz)
    except RuntimeError:
        return False
    return p.view(c, npos).stride(1) == 1 and z.stride(-1) == 1 and out.stride(-1) == 1


def tri_mul_output_triton(p, z, ln_p, w_out, b_out, ln_z, w_g, b_g, out, config=None):
    """The Triton kernel itself (`kernels/_tri_tri_mul_output.py`); raises if it can't run here."""
    from kernels._triton_loader import module_for

    mod = module_for("_tri_tri_mul_output", [p, z, w_out, w_g, out])
    if mod is None or not _triton_ok(p, z, out):
        raise RuntimeError("Triton triangle-multiplication output stage can't run on these tensors here")
    return mod.tri_mul_output(p, z, ln_p, w_out, b_out, ln_z, w_g, b_g, out, config=config)


def tri_mul_output(p, z, ln_p, w_out, b_out, ln_z, w_g, b_g, out, backend: str = "torch"):
    """Dispatch: "torch" the reference; "triton" the fused kernel where it can run (CUDA, or CPU
    under TRITON_INTERPRET=1; c and C_z powers of two in 16..256; fp32/bf16/fp16), else the
    reference. Shapes as in the module docstring. Returns out."""
    if backend == "triton":
        if _triton_ok(p, z, out):
            from kernels._triton_loader import module_for

            mod = module_for("_tri_tri_mul_output", [p, z, w_out, w_g, out])
            if mod is not None:
                try:
                    return mod.tri_mul_output(p, z, ln_p, w_out, b_out, ln_z, w_g, b_g, out)
                except Exception as e:  # a tile too large for this GPU's shared memory: the reference
                    if type(e).__name__ != "OutOfResources":
                        raise
    elif backend != "torch":
        raise ValueError(f"unknown tri_mul_output backend {backend!r}")
    return tri_mul_output_reference(p, z, ln_p, w_out, b_out, ln_z, w_g, b_g, out)
