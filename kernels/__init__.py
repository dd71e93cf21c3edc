"""Compute kernels. Each operation has a plain PyTorch reference and (optionally) a Triton kernel;
`backend` picks one. This package imports neither `model/` nor `pipeline/`."""
from kernels.attention import attention
from kernels.gated_projection import gated_projection, gated_projection_fuses_norm
from kernels.layer_norm import layer_norm
from kernels.linear_residual import linear_residual
from kernels.norm_project import norm_project
from kernels.opm_projection import opm_projection
from kernels.transition import transition
from kernels.transition import fused_available as transition_fits
from kernels.tri_mul_output import tri_mul_output

__all__ = ["attention", "gated_projection", "gated_projection_fuses_norm", "layer_norm", "linear_residual", "norm_project", "opm_projection", "transition", "transition_fits",
           "tri_mul_output"]
