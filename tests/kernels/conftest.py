"""Fixtures for the kernel tests.

CPU tests run the Triton kernels under Triton's interpreter. Triton fixes interpreter-vs-compiled when
it is first imported, so on a machine without CUDA this conftest imports triton with
TRITON_INTERPRET=1 (then restores the environment); the `interpret` fixture sets TRITON_INTERPRET=1
for its test only, so the rest of the session (other test packages) keeps the plain CPU reference path.
On a CUDA machine triton stays in compiled mode: the interpreter tests skip, the GPU tests run.
The interpreter is slow and gets bf16 wrong, so CPU tests use small shapes and fp32/fp16.
"""
import os
import sys

import pytest
import torch

if not torch.cuda.is_available() and "triton" not in sys.modules:
    _saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        import triton.language  # noqa: F401  (decorates Triton's library for the interpreter)
    except Exception:
        pass
    finally:
        if _saved is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = _saved

from kernels._triton_loader import triton_mode  # noqa: E402


@pytest.fixture
def interpret(monkeypatch):
    """Run Triton kernels on the CPU interpreter for this test only."""
    if triton_mode() != "interpret":
        pytest.skip("triton was imported in compiled mode (CUDA machine, or imported before this conftest)")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    yield


@pytest.fixture
def compiled(monkeypatch):
    """GPU tests: compiled kernels (skips if triton was imported for the interpreter)."""
    if triton_mode() != "compile":
        pytest.skip("triton was imported in interpreter mode")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    yield
