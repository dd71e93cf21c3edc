"""Helpers shared by the kernel tests (imported by name: pytest puts this folder on sys.path)."""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

try:
    import triton  # noqa: F401
    HAVE_TRITON = True
except Exception:
    HAVE_TRITON = False

needs_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton not installed")
needs_cuda = pytest.mark.skipif(not (HAVE_TRITON and torch.cuda.is_available()), reason="needs CUDA and triton")


ROOT = Path(__file__).resolve().parents[2]


def offline_compile(script: str, *args: str, also_skip: tuple = ()) -> str:
    """stdout of scripts/<script> (attention_sass.py, glue_sass.py: kernels compiled for sm_90 without
    a GPU) run in a fresh process, Triton in compiled mode. Skips the test where Triton's bundled
    ptxas can't run here (or stderr names one of `also_skip`, lower-case); asserts success otherwise."""
    env = dict(os.environ, TRITON_INTERPRET="0")
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args],
                         capture_output=True, text=True, env=env, timeout=600)
    if out.returncode and ("ptxas" in out.stderr or any(w in out.stderr.lower() for w in also_skip)):
        pytest.skip(f"Triton's bundled ptxas{' or ' + ', '.join(also_skip) if also_skip else ''} is not usable here")
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN/inf anywhere fails."""
    out = out.double()
    ref = ref.double()
    assert torch.isfinite(out).all(), "non-finite values in kernel output"
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def layer_norm64(x: torch.Tensor, scale, offset, eps: float) -> torch.Tensor:
    """LayerNorm over the last axis in float64, written from the formula (the fused kernels' tests)."""
    x = x.double()
    xn = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
    return xn * scale.double() + offset.double()


def tri_mul_output64(p, z, ln_p, w_out, b_out, ln_z, w_g, b_g) -> torch.Tensor:
    """Triangle multiplication's output stage in float64: z + (LN_p(p)^T W_out + b_out) * sigmoid(LN_z(z) W_g + b_g);
    p [c, *rows] channel-major, z [*rows, C_z]."""
    upd = layer_norm64(p.movedim(0, -1), *ln_p) @ w_out.double() + b_out.double()
    return z.double() + upd * torch.sigmoid(layer_norm64(z, *ln_z) @ w_g.double() + b_g.double())


def transition64(x, ln, w1, b1, w2, b2) -> torch.Tensor:
    """The transition with its residual in float64: x + relu(LN(x) W1 + b1) W2 + b2."""
    h = torch.relu(layer_norm64(x, *ln) @ w1.double() + b1.double())
    return x.double() + h @ w2.double() + b2.double()


def assert_pair_matches(kernel, reference, args, out: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    """A fused kernel writes `out` (and returns it) within `tol` of the float64 `want`; its PyTorch
    reference, which rounds every stage to the storage dtype, within 3 tol."""
    assert kernel(*args, out) is out
    assert rel_err(out, want) < tol
    assert rel_err(reference(*args, torch.empty_like(out)), want) < tol * 3


@functools.lru_cache(maxsize=1)
def fixture_block():
    """The first Evoformer block of the model_3_gap reference fixture (the official parameter layout,
    C_m = 256, C_z = 128, random values): the network's ops with real shapes for the kernel tests.
    Loaded once per session; the tests only run its ops, never change its weights."""
    from model.params import load_model
    fx = Path(__file__).resolve().parents[1] / "data" / "af_fixtures" / "model_3_gap"
    return load_model(next(fx.glob("params_*.npz"))).evoformer.evoformer_iteration[0]


def block_inputs(seed: int, s: int = 3, n: int = 5):
    """Fresh inputs for `fixture_block()`'s ops: m [s, n, 256], z [n, n, 128], msa_mask [s, n] and
    pair_mask [n, n] with about a fifth of the entries masked."""
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(s, n, 256, generator=gen)
    z = torch.randn(n, n, 128, generator=gen)
    msa_mask = (torch.rand(s, n, generator=gen) > 0.2).float()
    pair_mask = (torch.rand(n, n, generator=gen) > 0.2).float()
    return m, z, msa_mask, pair_mask
