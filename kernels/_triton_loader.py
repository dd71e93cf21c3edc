"""Lazy, guarded loading of the Triton kernel modules.

`import kernels` must work where Triton is missing, so the Triton sources (`kernels/_tri_*.py`) are
only imported on first use, here.

Triton fixes whether `@triton.jit` functions are compiled for the GPU or run by its CPU interpreter
when they are *decorated*, and its own library functions (`tl.cdiv`, `tl.sum`, ...) are decorated when
`triton` is first imported. So the mode is effectively chosen by `TRITON_INTERPRET` at the time
triton is imported. This module:
* reads that mode off Triton's library (`triton_mode()`), and builds our kernels in the same mode
  (each source is loaded as its own module object per mode, so a later change of the environment
  variable can't leave our kernels and Triton's library in different modes);
* runs CPU tensors only when the interpreter is active *and* TRITON_INTERPRET=1 is set now, and CUDA
  tensors with compiled kernels (or with the interpreter, if that is what is active and requested).
Anything else returns None and the caller uses the PyTorch reference.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Iterable, Optional

import torch

_HERE = Path(__file__).resolve().parent


def interpret_requested() -> bool:
    """True when the environment asks for Triton's CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def triton_mode() -> Optional[str]:
    """"interpret" or "compile" as fixed by how triton was first imported; None without triton."""
    try:
        import triton.language as tl
        from triton.runtime.interpreter import InterpretedFunction
    except Exception:  # ImportError, or a broken install that fails while importing
        return None
    return "interpret" if isinstance(tl.cdiv, InterpretedFunction) else "compile"


@functools.lru_cache(maxsize=None)
def load(name: str, interpret: bool) -> Optional[ModuleType]:
    """Import `kernels/<name>.py` with its `@triton.jit` functions built for `interpret` mode."""
    if triton_mode() is None:
        return None
    path = _HERE / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"kernels.{name}__{'interp' if interpret else 'jit'}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        from triton import knobs
    except ImportError:  # older Triton: the environment variable alone decides
        knobs = None
    if knobs is not None:
        with knobs.runtime.scope():  # restores the knob and the environment it mirrors on exit
            knobs.runtime.interpret = interpret
            spec.loader.exec_module(module)
    elif interpret == interpret_requested():
        spec.loader.exec_module(module)
    else:
        return None
    return module


def module_for(name: str, tensors: Iterable) -> Optional[ModuleType]:
    """The Triton module able to run on `tensors`, or None if the reference must be used."""
    devices = {t.device.type for t in tensors if isinstance(t, torch.Tensor)}
    mode = triton_mode()
    if mode is None:
        return None
    if mode == "interpret":
        # The interpreter runs CPU (and CUDA) tensors, but only when asked for right now.
        if interpret_requested() and devices <= {"cpu", "cuda"}:
            return load(name, True)
        return None
    if devices == {"cuda"}:
        return load(name, False)
    return None


def unless_out_of_resources(call):
    """call()'s result, or None when Triton cannot fit the kernel's tiles on this GPU (its
    OutOfResources, raised when the kernel is compiled): the caller then runs the reference
    instead of failing the prediction. Any other error propagates."""
    try:
        return call()
    except Exception as e:
        if type(e).__name__ != "OutOfResources":
            raise
        return None
