"""What the Triton kernels' fp32 dot products may use (plain Python, shared by the kernel modules)."""
from __future__ import annotations

import torch


def dot_precision(dtype: torch.dtype, device: torch.device) -> str:
    """fp32 inputs follow torch's own matmul policy: TF32 only where torch would use it too."""
    if dtype != torch.float32 or device.type != "cuda":
        return "ieee" if dtype == torch.float32 else "tf32"  # (the value is ignored for 16-bit inputs)
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee"
