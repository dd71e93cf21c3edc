"""Memory planner and planned runs: chunk sizes follow the budget, impossible problems are refused up
front with one line, and an out-of-memory error triggers a re-plan with a smaller budget."""
from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import CHUNK_OPS, Runtime
from model.params import load_model
from model.planner import GB, PlanError, Problem, op_bytes, persistent_bytes, plan
from model.runner import run_planned

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "af_fixtures" / "model_3_gap"


def test_smaller_budget_gives_smaller_chunks_and_peak():
    p = Problem(2048, precision="bf16")
    roomy, tight = plan(p, 70 * GB), plan(p, 7 * GB)
    assert tight.predicted_peak <= 7 * GB < roomy.predicted_peak
    for op in CHUNK_OPS:
        a, b = roomy.chunks[op], tight.chunks[op]
        assert (b or 1 << 30) <= (a or 1 << 30), op


def test_transients_shrink_with_chunk_and_peak_grows_with_length():
    p = Problem(1024, precision="fp32")
    for op in ("tri_att", "msa_row_att", "extra_row_att", "opm", "transition", "tri_mul", "ipa"):
        assert op_bytes(op, 8, p) < op_bytes(op, None, p), op
    peaks = [plan(Problem(n, precision="bf16"), 1e15).predicted_peak for n in (256, 512, 1024, 2048)]
    assert peaks == sorted(peaks)
    assert persistent_bytes(Problem(1024, precision="fp32")) > persistent_bytes(Problem(1024, precision="bf16"))


def test_refuses_up_front_with_one_line():
    with pytest.raises(PlanError) as e:
        plan(Problem(30000, precision="fp32"), 78 * GB)
    assert "N=30000" in str(e.value) and "\n" not in str(e.value)


def test_plan_runtime_realises_the_plan():
    pl = plan(Problem(3000, precision="bf16"), 20 * GB)
    rt = pl.runtime()
    assert rt.inplace and rt.precision == "bf16" and rt.outputs_device == "cpu"
    assert dict(rt.chunks) == pl.chunks


def test_out_of_memory_replans_with_a_smaller_budget(monkeypatch):
    model = load_model(next(FIXTURE.glob("params_*.npz")))
    batch = dict(np.load(FIXTURE / "features.npz"))
    calls = []
    real_forward = type(model).forward

    def flaky(self, batch, rt=None, **kw):
        calls.append(rt)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(self, batch, rt, **kw)

    monkeypatch.setattr(type(model), "forward", flaky)
    out, used = run_planned(model, batch, "fp32", "torch", max_memory=0.2 * GB, num_recycle=0)
    assert len(calls) == 2 and np.isfinite(out["plddt"].numpy()).all()
    first_rows = calls[0].chunks.get("msa_row_att") or 1 << 30
    assert (calls[1].chunks.get("msa_row_att") or 1 << 30) <= first_rows


def test_out_of_memory_every_time_gives_plan_error(monkeypatch):
    model = load_model(next(FIXTURE.glob("params_*.npz")))
    batch = dict(np.load(FIXTURE / "features.npz"))

    def always(self, *a, **kw):
        raise torch.cuda.OutOfMemoryError("simulated")

    monkeypatch.setattr(type(model), "forward", always)
    with pytest.raises(PlanError, match="out of GPU memory"):
        run_planned(model, batch, "fp32", "torch", max_memory=0.2 * GB, retries=1)


def test_pair_offload_only_when_nothing_else_fits():
    """The host offload of the pair (Runtime.offload_pair) is chosen only where the pair plus the
    triangle-multiplication product cannot fit; never when offload=False or under DAP."""
    small = plan(Problem(1024, precision="bf16"), 78 * GB)
    assert not small.problem.offload_pair and not small.runtime().offload_pair
    long = Problem(12000, precision="bf16")
    with pytest.raises(PlanError):
        plan(long, 78 * GB, offload=False)
    big = plan(long, 78 * GB)
    assert big.problem.offload_pair and big.runtime().offload_pair and big.predicted_peak <= 78 * GB
    assert not plan(Problem(12000, precision="bf16", world=4), 78 * GB).problem.offload_pair


def _traced_peak_blocks(fn, block_bytes):
    """Peak bytes allocated while fn() runs (CPU allocation trace), in activation blocks."""
    from torch.profiler import ProfilerActivity, profile
    memprof = pytest.importorskip("torch.profiler._memory_profiler")
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                                  with_stack=True) as prof:
        fn()
    cur = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action == memprof.Action.CREATE:
            cur += size
        elif action == memprof.Action.DESTROY:
            cur -= size
        peak = max(peak, cur)
    return peak / block_bytes


def test_row_factors_bound_the_traced_peak(monkeypatch):
    """The planner's per-row factors (ATT_ROW, TRANSITION_ROW activation blocks, the LayerNorm'd
    input counted in ATT_ROW) bound what one attention or transition call allocates, traced on the
    CPU; the fused kernel's own footprint (its output) stands in for kernels.attention."""
    from model import planner, primitives
    from model.config import Runtime
    from model.evoformer import Transition

    # the kernel's output layout: [*, L, H, D] memory (free transpose back)
    monkeypatch.setattr(primitives.kernels, "attention",
                        lambda q, k, v, *a, **kw: q.new_empty(*q.shape[:-3], q.shape[-2], q.shape[-3], q.shape[-1])
                        .transpose(-2, -3))
    gen = torch.Generator().manual_seed(3)
    r, l, c = 16, 96, 64
    att = primitives.Attention(c, c, 4, 16, 16, c, gating=True)
    tr = Transition(c, 4)
    for p in list(att.parameters()) + list(tr.parameters()):
        p.data = torch.randn(p.shape, generator=gen) * 0.05
    x = torch.randn(r, l, c, generator=gen)
    block = x.numel() * x.element_size()
    a = _traced_peak_blocks(lambda: att(x, x, [], None), block)
    t = _traced_peak_blocks(lambda: tr(x, Runtime(precision="fp32", inplace=True)), block)
    w_qkvg = (c + 1) * 4 * 64 * x.element_size() / block  # the concatenated q/k/v/gate weight and bias: per call
    assert 4.5 <= a <= planner.ATT_ROW - 1 + 0.1 + w_qkvg, a  # q, k, v, gate, o beyond the input
    assert 4.5 <= t <= planner.TRANSITION_ROW + 0.1, t  # the LN'd input and the 4x hidden


def test_chunked_frees_each_chunk_before_the_next():
    """A chunked op's peak is one chunk's, as the planner counts it: the previous chunk's output is
    not alive while the next chunk runs (an 80 GB GPU probe once ran out of memory by exactly that
    block). Transition over 4 row chunks, in place, CPU allocation trace in blocks of one chunk."""
    from model import planner
    from model.config import Runtime
    from model.evoformer import Transition

    gen = torch.Generator().manual_seed(5)
    r, l, c = 16, 96, 64
    tr = Transition(c, 4)
    for p in tr.parameters():
        p.data = torch.randn(p.shape, generator=gen) * 0.05
    x = torch.randn(4 * r, l, c, generator=gen)
    ref = tr(x.clone(), Runtime(precision="fp32", inplace=True))
    block = r * l * c * x.element_size()
    rt = Runtime(precision="fp32", inplace=True, chunks={"transition": r})
    t = _traced_peak_blocks(lambda: tr(x, rt), block)
    assert 4.5 <= t <= planner.TRANSITION_ROW + 0.1, t
    torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-6)  # the chunked update, in place, is the same


@pytest.mark.parametrize("offload", [False, True])
def test_template_embedding_within_its_model(offload):
    """The planner's template_att transient (two-pass templates, with or without the pair waiting on
    the host) bounds the traced peak of model_1's template embedding (4 templates, bf16, row chunks);
    the host copy of an offloaded pair counts too on the CPU, so the bound is conservative there."""
    from dataclasses import replace

    from model.alphafold import to_tensors
    from model.planner import transient_bytes
    from model.random_params import random_features, random_model
    from model.runner import problem_for
    n, rows, tmc = 40, 6, 16
    model = random_model("model_1", seed=1, num_evoformer=1, num_extra=1)
    model.prepare(Runtime(precision="bf16"))
    batch = to_tensors(random_features("model_1", n, 8, 16, 4, seed=2), "cpu")
    rt = Runtime(precision="bf16", inplace=True, offload_pair=offload, recompute_templates=True,
                 chunks={"template_att": rows, "tri_mul": tmc, "tri_att": rows, "transition": rows})
    z = torch.randn(n, n, 128, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    seq_mask = batch["seq_mask"].to(torch.bfloat16)
    mask_2d = seq_mask[:, None] * seq_mask[None, :]
    pair = z.numel() * 2
    traced = _traced_peak_blocks(lambda: model.evoformer.template_embedding(z, batch, mask_2d, rt), pair)
    p = replace(problem_for(model, batch, "bf16", "triton"), offload_pair=offload, recompute_templates=True)
    predicted = transient_bytes("template_att", rows, p, tri_mul_chunk=tmc) / pair
    assert 1.5 <= traced <= predicted, (traced, predicted)
