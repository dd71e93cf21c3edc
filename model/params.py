"""Import of AlphaFold's official parameter files (`params_model_*.npz`).

Keys are `alphafold/alphafold_iteration/<haiku scope>//<param name>`; parameters of stacked blocks
carry a leading block axis. Our module attribute names equal the haiku scope names, so the key of a
parameter is derived from its name in `named_parameters()`: numeric path parts (ModuleList indices)
select a slice of the block axis. Nothing is listed by hand, so no parameter can be forgotten, and
`map_parameters` checks that every key is used exactly once with the right shape.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

import numpy as np
import torch

import configs
from model.alphafold import PARAM_PREFIX, AlphaFold
from model.config import Config


class ParamsError(ValueError):
    """A parameter file that cannot be used; the message is one line naming the problem."""


_STACKS = {
    "evoformer": "evoformer/evoformer_iteration/",
    "extra": "evoformer/extra_msa_stack/",
    "template": "template_pair_stack/__layer_stack_no_state/",
    "template_multimer": "single_template_embedding/template_embedding_iteration/",
}
# Module attribute names that are not haiku scope names: haiku names the parameters created in the
# method `_relative_encoding` of the multimer embedder `~_relative_encoding`.
_SCOPE_NAMES = {"relative_encoding": "~_relative_encoding"}
_MULTIMER_MARKERS = ("~_relative_encoding", "template_embedding_iteration", "quat_rigid", "/projection//")


def preset_from_filename(path) -> Optional[str]:
    """`params_model_3_ptm.npz` -> `model_3_ptm`; None if the name says nothing."""
    m = re.search(r"(model_[1-5](?:_ptm|_multimer_v\d)?)", Path(path).name)
    return m.group(1) if m else None


def param_key(name: str) -> Tuple[str, Tuple[int, ...]]:
    """torch parameter name -> (npz key, indices into the key's leading block axes)."""
    parts = name.split(".")
    index = tuple(int(p) for p in parts[:-1] if p.isdigit())
    scope = "/".join(_SCOPE_NAMES.get(p, p) for p in parts[:-1] if not p.isdigit())
    return f"{PARAM_PREFIX}{scope}//{parts[-1]}", index


def block_counts(shapes: Mapping[str, Tuple[int, ...]]) -> Dict[str, int]:
    """Number of Evoformer / extra-MSA / template-stack blocks in a parameter file (0 if absent)."""
    counts = {}
    for name, marker in _STACKS.items():
        lead = {shape[0] for key, shape in shapes.items() if marker in key}
        if len(lead) > 1:
            raise ParamsError(f"inconsistent block counts under {marker!r}: {sorted(lead)}")
        counts[name] = lead.pop() if lead else 0
    multimer_templates = counts.pop("template_multimer")
    counts["template"] = counts["template"] or multimer_templates
    return counts


def check_monomer_file(shapes: Mapping[str, Tuple[int, ...]], preset: str, source: str = "parameter file") -> None:
    """Raise ParamsError if the keys are not those of an AlphaFold monomer file matching `preset`."""
    keys = list(shapes)
    if not keys or not all(k.startswith(PARAM_PREFIX) for k in keys):
        raise ParamsError(f"{source} is not an AlphaFold parameter file (keys are not under '{PARAM_PREFIX}')")
    if any(marker in k for k in keys for marker in _MULTIMER_MARKERS):
        raise ParamsError(f"{source} holds AlphaFold-Multimer parameters; preset {preset} is a monomer model")
    cfg = configs.load_preset(preset)
    has_templates = any("/template_embedding/" in k for k in keys)
    if has_templates != cfg["embeddings_and_evoformer"]["template"]["enabled"]:
        raise ParamsError(f"{source} {'has' if has_templates else 'has no'} template parameters but preset "
                          f"{preset} {'uses no' if not cfg['embeddings_and_evoformer']['template']['enabled'] else 'uses'} templates")
    has_pae = any("predicted_aligned_error_head" in k for k in keys)
    if has_pae != cfg["heads"]["predicted_aligned_error"]["enabled"]:
        raise ParamsError(f"{source} {'has' if has_pae else 'has no'} a predicted-aligned-error head but preset "
                          f"{preset} {'is not' if has_pae else 'is'} a _ptm preset")


def check_multimer_file(shapes: Mapping[str, Tuple[int, ...]], preset: str, source: str = "parameter file") -> None:
    """Raise ParamsError unless the keys are those of an AlphaFold-Multimer (v3) file."""
    keys = list(shapes)
    if not keys or not all(k.startswith(PARAM_PREFIX) for k in keys):
        raise ParamsError(f"{source} is not an AlphaFold parameter file (keys are not under '{PARAM_PREFIX}')")
    if not any("~_relative_encoding" in k for k in keys):
        raise ParamsError(f"{source} holds monomer AlphaFold parameters; preset {preset} is an AlphaFold-Multimer model")
    if not any("/projection//" in k for k in keys):
        raise ParamsError(f"{source} has unfused triangle multiplication weights (multimer v1/v2?); "
                          f"preset {preset} needs the v3 parameters (params_{preset}.npz)")


def build_model(preset: str, shapes: Mapping[str, Tuple[int, ...]], device="cpu") -> AlphaFold:
    """An AlphaFold of `preset` with the block counts found in `shapes` (uninitialised weights)."""
    counts = block_counts(shapes)
    cfg = Config(configs.load_preset(preset))
    with torch.device(device):
        return AlphaFold(cfg, counts["evoformer"], counts["extra"], counts["template"] or None)


def map_parameters(model: torch.nn.Module, shapes: Mapping[str, Tuple[int, ...]]) -> Dict[str, Tuple[str, tuple]]:
    """name -> (key, index) for every model parameter; raises ParamsError unless every key of the
    file is used, each block slice exactly once, with matching shapes."""
    mapping, used = {}, {}
    problems = []
    for name, p in model.named_parameters():
        key, index = param_key(name)
        if key not in shapes:
            problems.append(f"missing {key}")
            continue
        shape = tuple(shapes[key])
        if tuple(shape[len(index):]) != tuple(p.shape) or any(i >= s for i, s in zip(index, shape)):
            problems.append(f"{key}: file shape {list(shape)}, model expects {list(p.shape)} at block {index}")
            continue
        used.setdefault(key, set()).add(index)
        mapping[name] = (key, index)
    unused = [k for k in shapes if k not in used]
    problems += [f"unused {k}" for k in unused]
    for key, idx in used.items():
        shape = tuple(shapes[key])
        lead = shape[: len(next(iter(idx)))]
        expected = int(np.prod(lead)) if lead else 1
        if len(idx) != expected:
            problems.append(f"{key}: {len(idx)} model blocks for {list(lead)} in the file")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ParamsError(f"parameter file does not match the model: {problems[0]}{more}")
    return mapping


def read_npz(path) -> Dict[str, np.ndarray]:
    """All arrays of an npz file, with one-line errors for missing, foreign or broken files."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"parameter file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ParamsError(f"{path} is not an .npz parameter file")
            return {k: data[k] for k in data.files}
    except ParamsError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, zipfile.LargeZipFile) as e:
        raise ParamsError(f"{path} is not a readable .npz parameter file (truncated or corrupt?): "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")) from None
    except Exception as e:  # zlib errors and the like from a damaged archive member
        raise ParamsError(f"{path} is damaged: {type(e).__name__}: {e}") from None


def load_model(path, preset: Optional[str] = None, device="cpu") -> AlphaFold:
    """Build the model for `preset` (monomer or multimer v3; default: from the file name) and load
    the file's parameters into it. Block counts come from the file."""
    preset = preset or preset_from_filename(path)
    if preset is None:
        raise ParamsError(f"cannot tell the preset from the file name {Path(path).name}; pass --preset")
    if preset not in configs.MONOMER_PRESETS + configs.MULTIMER_PRESETS:
        raise ParamsError(f"unknown preset {preset!r}; known: "
                          f"{', '.join(configs.MONOMER_PRESETS + configs.MULTIMER_PRESETS)}")
    arrays = read_npz(path)
    shapes = {k: tuple(v.shape) for k, v in arrays.items()}
    if preset in configs.MULTIMER_PRESETS:
        check_multimer_file(shapes, preset, source=str(path))
    else:
        check_monomer_file(shapes, preset, source=str(path))
    model = build_model(preset, shapes, device="cpu")
    mapping = map_parameters(model, shapes)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, (key, index) in mapping.items():
            params[name].copy_(torch.from_numpy(np.asarray(arrays[key][index], dtype=np.float32)))
    return model.to(device).eval()
