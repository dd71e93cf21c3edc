"""Whole-network benchmark: wall time (total, per pass), per-module time, peak GPU memory against
the planner's prediction, and achieved TFLOP/s against a FLOP model. Used by `fastfold bench`;
imports only torch and numpy (the GPU machine has nothing else)."""
from __future__ import annotations

import time
from collections import defaultdict
from typing import Dict, List, Optional

import torch

from model.alphafold import AlphaFold
from model.config import Runtime
from model.planner import GB, PlanError
from model.random_params import random_features, random_model
from model.runner import make_plan


def af2_flops(n: int, s: int = 512, e: int = 5120, t: int = 4, r: int = 4) -> float:
    """AlphaFold2 monomer inference FLOPs (2 per multiply-add, matmuls only; r = passes).

    From the per-module formulas in shared/notes/performance.md §3.2 (model_1 channel sizes)."""
    evo = 1536 * n ** 3 + 3072 * s * n ** 2 + 1024 * n * s ** 2 + 2_392_064 * s * n + 1_249_280 * n ** 2
    extra = 1536 * n ** 3 + 2304 * e * n ** 2 + 133_376 * e * n + 1_249_280 * n ** 2
    tpair = t * (2 * (768 * n ** 3 + 214_016 * n ** 2) + 11_264 * n ** 2)
    tpw = (32_768 + 16_640 * t) * n ** 2 if t else 0
    emb = 2 * n * n * (65 + 15) * 128 + 2 * s * n * 49 * 256 + 2 * e * n * 25 * 64
    sm = 8 * (7_776 * n ** 2 + 3_391_488 * n)
    heads = 32_768 * n ** 2 + 11_776 * s * n
    return r * (48 * evo + 4 * extra + tpw + emb + sm + tpair) + heads


# Module class -> label in the per-module breakdown.
_LABELS = {
    "MSARowAttentionWithPairBias": "msa_row_att", "MSAColumnAttention": "msa_col_att",
    "MSAColumnGlobalAttention": "extra_col_att", "Transition": "transition", "OuterProductMean": "opm",
    "TriangleMultiplication": "tri_mul", "TriangleAttention": "tri_att", "TemplateEmbedding": "templates",
    "StructureModule": "structure_module",
}


class ModuleTimer:
    """CUDA-event timing of the network's ops through forward hooks (no host syncs while running)."""

    def __init__(self, model: torch.nn.Module):
        self.events: List = []
        self.handles = []
        for name, mod in model.named_modules():
            label = _LABELS.get(type(mod).__name__)
            if label is None:
                continue
            if "extra_msa_stack" in name:
                label = "extra." + label
            elif "template_embedding" in name and label != "templates":
                continue  # counted inside "templates"
            self.handles.append(mod.register_forward_pre_hook(self._pre(label)))
            self.handles.append(mod.register_forward_hook(self._post()))
        self._stack: List = []
        self.peaks: Dict[str, int] = {}

    def _pre(self, label):
        def hook(mod, args):
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self._stack.append((label, ev))
        return hook

    def _post(self):
        def hook(mod, args, out):
            label, start = self._stack.pop()
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events.append((label, start, end))
            # Allocator statistics are host-side: the peak since the last reset is exact per module
            # (attributed to the innermost labelled module that finished), with no device sync.
            peak = torch.cuda.max_memory_allocated()
            self.peaks[label] = max(self.peaks.get(label, 0), peak)
            torch.cuda.reset_peak_memory_stats()
        return hook

    def totals(self) -> Dict[str, float]:
        torch.cuda.synchronize()
        out = defaultdict(float)
        for label, s, e in self.events:
            out[label] += s.elapsed_time(e) / 1000.0
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def close(self):
        for h in self.handles:
            h.remove()


def peak_allocated(timer: Optional[ModuleTimer]) -> int:
    """Peak CUDA bytes allocated since the last reset. A module timer resets the allocator's peak
    after each module, so the run's peak is then the largest it saw."""
    seen = max(timer.peaks.values()) if (timer and timer.peaks) else 0
    return max(torch.cuda.max_memory_allocated(), seen)


def bench_one(model: AlphaFold, n_res: int, *, precision: str, backend: str = "torch", n_seq: int = 508,
              n_extra: int = 5120, n_templ: int = 4, recycles: int = 3, plain: bool = False,
              max_memory: Optional[float] = None, breakdown: bool = True, warmup: bool = True,
              seed: int = 0, probe_blocks: Optional[int] = None, fused: bool = True,
              overrides: Optional[Dict] = None) -> Dict:
    """Time one full forward at length n_res. plain=True runs the unchunked, not-in-place path;
    overrides: Runtime fields set on the planned runtime (an A/B of one option).

    probe_blocks=K: a memory probe: only the first K blocks of each stack (Evoformer, extra MSA,
    template pair) run (Runtime.max_blocks), every parameter stays loaded and every other stage
    runs as usual. The peak is the full network's (a stack's blocks update the same activations
    in place, so its peak is one block's); the times are not: they are reported as
    `probe_seconds` / `probe_seconds_per_pass`, with no `seconds`, `pflop` or `tflops`."""
    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    preset = model.cfg.get("preset", "model_1")
    batch = random_features(preset, n_res, n_seq, n_extra, n_templ, seed=seed)
    row = {"n_res": n_res, "precision": precision, "backend": backend, "path": "plain" if plain else "planned",
           "n_seq": n_seq, "n_extra": n_extra, "n_templ": n_templ if model.cfg.embeddings_and_evoformer.template.enabled else 0,
           "recycles": recycles}
    if probe_blocks is not None:
        row.update(probe_blocks=probe_blocks, note=f"memory probe: only the first {probe_blocks} block(s) of each "
                   "stack ran (all parameters loaded); times are not full-network times")
    if plain:
        rt = Runtime(precision=precision, backend=backend)
        row["predicted_peak_gib"] = None
    else:
        try:
            p = make_plan(model, batch, precision, backend, max_memory, device)
        except PlanError as e:
            row["error"] = str(e)
            row["plan_error"] = True
            return row
        rt = p.runtime()
        row["predicted_peak_gib"] = p.predicted_peak / GB
        row["chunks"] = {k: v for k, v in p.chunks.items() if v}
        row["recompute_templates"] = rt.recompute_templates
        row["offload_pair"] = bool(getattr(rt, "offload_pair", False))
    if plain or not fused:  # the plain path is the unfused PyTorch one
        rt = rt.with_(fused_tri_mul=False, fused_transition=False, fused_residual=False, fused_bias=False)
        if not plain:
            row["path"] += ",unfused"
    if plain:  # the plain path applies every mask, as AlphaFold does
        rt = rt.with_(skip_dense_masks=False)
    if overrides:  # Runtime fields of an A/B (fastfold bench --compare)
        rt = rt.with_(**overrides)
        row["path"] += "," + ",".join(f"{k}={v}" for k, v in overrides.items())
    if probe_blocks is not None:
        rt = rt.with_(max_blocks=probe_blocks)
    row["keep_templates"] = rt.keep_templates
    try:
        if warmup:
            model(batch, rt, num_recycle=0, pair_outputs=False)  # kernel selection / Triton compilation out of the timing
    except torch.cuda.OutOfMemoryError as e:
        row["error"] = "out of memory"
        _oom_details(row, e, None, None if plain else p)
        return row
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    timer = ModuleTimer(model) if (breakdown and cuda) else None
    marks = []

    def on_pass(i, sm):
        if cuda:
            torch.cuda.synchronize()
        marks.append(time.perf_counter())

    try:
        t0 = time.perf_counter()
        out = model(batch, rt, num_recycle=recycles, callback=on_pass, pair_outputs=False)
        if cuda:
            torch.cuda.synchronize()
        t1 = time.perf_counter()
    except torch.cuda.OutOfMemoryError as e:
        row["error"] = "out of memory"
        _oom_details(row, e, timer, None if plain else p)
        if timer:
            timer.close()
        return row
    passes = [b - a for a, b in zip([t0] + marks[:-1], marks)]
    pre = "probe_" if probe_blocks is not None else ""
    row.update({pre + "seconds": t1 - t0, pre + "seconds_per_pass": passes, pre + "heads_seconds": t1 - marks[-1],
                "mean_plddt": float(out["plddt"].mean())})
    if cuda:
        row["peak_allocated_gib"] = peak_allocated(timer) / GB
        row["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / GB
    if probe_blocks is None:  # the FLOP model is the full network's
        flops = af2_flops(n_res, n_seq + row["n_templ"], n_extra, row["n_templ"], recycles + 1)
        row["pflop"] = flops / 1e15
        row["tflops"] = flops / (t1 - t0) / 1e12
    if timer:
        row["modules_seconds"] = timer.totals()
        row["modules_peak_gib"] = {k: v / GB for k, v in sorted(timer.peaks.items(), key=lambda kv: -kv[1])}
        if not plain:
            row["planner_op_gib"] = {op: (p.persistent + t) / GB for op, t in p.transients.items()}
        timer.close()
    del out
    return row


def _oom_details(row: Dict, err: Exception, timer: Optional[ModuleTimer], p) -> None:
    """What a failed memory trial tells the planner's next calibration: the allocator's message
    (how much was asked for and held), the labelled modules the run was inside (innermost last),
    the per-module peaks reached before, and the planner's per-op predictions."""
    row["oom_message"] = str(err).strip().splitlines()[0][:400]
    first = err
    while first.__context__ is not None and isinstance(first.__context__, torch.cuda.OutOfMemoryError):
        first = first.__context__  # e.g. primitives.on_host restoring the pair after the block ran out
    if first is not err:
        row["first_oom_message"] = str(first).strip().splitlines()[0][:400]
    row["allocated_at_oom_gib"] = torch.cuda.memory_allocated() / GB
    if timer is not None:
        row["oom_inside"] = [label for label, _ in timer._stack]
        row["modules_peak_gib"] = {k: v / GB for k, v in sorted(timer.peaks.items(), key=lambda kv: -kv[1])}
    if p is not None:
        row["planner_op_gib"] = {op: (p.persistent + t) / GB for op, t in p.transients.items()}
        row["offload_pair"] = bool(getattr(p.runtime(), "offload_pair", False))


def cap_allocator(cap_bytes: float, device=None) -> float:
    """Cap this process's CUDA allocator on `device` at cap_bytes (at most the card), so that a larger
    card runs as one with that much memory would. Returns the cap applied, in bytes."""
    total = torch.cuda.get_device_properties(device).total_memory
    cap = min(cap_bytes, total)
    torch.cuda.set_per_process_memory_fraction(cap / total, device)
    return cap


def make_bench_model(preset: str, precision: str, device, seed: int = 0) -> AlphaFold:
    model = random_model(preset, seed=seed, device=device)
    model.prepare(Runtime(precision=precision))
    return model
