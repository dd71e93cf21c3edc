"""Running the network within a memory budget: plan chunk sizes for a feature batch, run, and on an
out-of-memory error re-plan with a smaller budget and run again (instead of failing an hour in)."""
from __future__ import annotations

import logging
from typing import Dict, Optional

import torch

from model.alphafold import AlphaFold
from model.planner import GB, Plan, PlanError, Problem, plan

log = logging.getLogger(__name__)


def problem_for(model: AlphaFold, batch: Dict, precision: str, backend: str) -> Problem:
    """The sizes the planner needs, read off a feature batch and the model."""
    e = model.cfg.embeddings_and_evoformer
    n = int(batch["aatype"].shape[-1])
    templ = int(batch["template_aatype"].shape[-2]) if (e.template.enabled and "template_aatype" in batch) else 0
    trunk = sum(p.numel() for p in model.evoformer.parameters())
    total = sum(p.numel() for p in model.parameters())
    if getattr(model, "multimer", False):  # the network samples its cluster / extra rows from the raw MSA
        s = model.evoformer.sampling
        rows = int(batch["msa"].shape[-2])
        n_seq = min(rows, s.num_msa if s.num_msa is not None else e.num_msa)
        n_extra = min(rows - n_seq, s.num_extra_msa if s.num_extra_msa is not None else e.num_extra_msa)
        return Problem(n_res=n, n_seq=n_seq, n_extra=n_extra, n_templ=templ, precision=precision, backend=backend,
                       c_m=e.msa_channel, c_z=e.pair_channel, c_e=e.extra_msa_channel, num_params=total,
                       trunk_params=trunk, keep_templates=False)
    return Problem(n_res=n, n_seq=int(batch["msa_feat"].shape[-3]), n_extra=int(batch["extra_msa"].shape[-2]),
                   n_templ=templ, precision=precision, backend=backend, c_m=e.msa_channel, c_z=e.pair_channel,
                   c_e=e.extra_msa_channel, num_params=total, trunk_params=trunk)


def default_budget(device) -> float:
    """Free memory on a CUDA device minus a margin for the allocator and cuBLAS workspaces."""
    device = torch.device(device)
    if device.type != "cuda":
        return 1e15  # no practical limit on the host
    free, _ = torch.cuda.mem_get_info(device)
    return free - 1.5 * GB


def make_plan(model: AlphaFold, batch: Dict, precision: str = "fp32", backend: str = "torch",
              max_memory: Optional[float] = None, device="cpu") -> Plan:
    """A chunk plan for this batch within `max_memory` bytes (default: free device memory)."""
    budget = max_memory if max_memory is not None else default_budget(device)
    return plan(problem_for(model, batch, precision, backend), budget)


def run_planned(model: AlphaFold, batch: Dict, precision: str = "fp32", backend: str = "torch",
                max_memory: Optional[float] = None, retries: int = 2, shard=None, **forward_kw):
    """Plan, run; on CUDA out-of-memory re-plan with 75% of the budget and try again.

    shard: this process's DAP ShardSpec (model/dap.py), or None. The plan is then the one-rank
    memory model of that world size, and there is no retry: a rank that re-planned alone would
    leave the others waiting in a collective.
    Returns (outputs, plan used). Raises PlanError when it cannot fit."""
    from dataclasses import replace

    from model import dap

    device = next(model.parameters()).device
    budget = max_memory if max_memory is not None else default_budget(device)
    if dap.active(shard):
        retries = 0
    for attempt in range(retries + 1):
        p = plan(replace(problem_for(model, batch, precision, backend), world=dap.world(shard)), budget)
        try:
            return model(batch, p.runtime(shard=shard), **forward_kw), p
        except torch.cuda.OutOfMemoryError:
            if attempt == retries:
                raise PlanError(f"out of GPU memory at N={p.problem.n_res} even with a "
                                f"{budget / GB:.1f} GiB plan; try --max-memory lower or fewer MSA rows")
            torch.cuda.empty_cache()
            budget *= 0.75
            log.warning("out of GPU memory; re-planning with a %.1f GiB budget", budget / GB)
