"""`fastfold bench --probe-blocks` (Runtime.max_blocks: only the first K blocks of each stack run,
every parameter stays loaded) and the `--find-max-length` search (planner bisection, then isolated
trials), on the CPU with a reduced-depth random model and mocked trials."""
import io
from collections import Counter

import pytest
import torch

from fastfold_cli.bench import _table, failure_reason, search_max_length
from model.benchmark import bench_one
from model.config import Runtime
from model.random_params import random_features, random_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # model_1: templates on (2 template pair blocks); 3 Evoformer and 2 extra-MSA blocks
    return random_model("model_1", num_evoformer=3, num_extra=2)


def _stacks(model):
    ev = model.evoformer
    return {"evoformer": list(ev.evoformer_iteration), "extra": list(ev.extra_msa_stack),
            "template_pair": list(ev.template_embedding.single_template_embedding.blocks())}


def _count_calls(model, fn):
    calls = Counter()
    handles = [blk.register_forward_hook(lambda mod, a, o, key=(name, i): calls.update([key]))
               for name, blocks in _stacks(model).items() for i, blk in enumerate(blocks)]
    try:
        fn()
    finally:
        for h in handles:
            h.remove()
    return calls


def test_max_blocks_runs_one_block_of_each_stack_with_all_parameters(model):
    stacks = _stacks(model)
    assert {k: len(v) for k, v in stacks.items()} == {"evoformer": 3, "extra": 2, "template_pair": 2}
    n_params = sum(p.numel() for p in model.parameters())
    batch = random_features("model_1", 8, 3, 5, 2, seed=1)

    with torch.no_grad():
        probe = _count_calls(model, lambda: model(batch, Runtime(max_blocks=1), num_recycle=0))
        full = _count_calls(model, lambda: model(batch, Runtime(), num_recycle=0))
    for name, blocks in stacks.items():
        assert probe[(name, 0)] >= 1, name
        assert all(probe[(name, i)] == 0 for i in range(1, len(blocks))), (name, probe)
        assert all(full[(name, i)] == full[(name, 0)] >= 1 for i in range(len(blocks))), (name, full)
    assert probe[("template_pair", 0)] == 2  # once per template, as in the full network
    assert probe[("evoformer", 0)] == probe[("extra", 0)] == 1
    # nothing was removed: the probe's weights are the full model's
    assert sum(p.numel() for p in model.parameters()) == n_params
    with pytest.raises(ValueError):
        Runtime(max_blocks=0)


def test_bench_one_probe_fields(model):
    row = bench_one(model, 8, precision="fp32", n_seq=3, n_extra=5, n_templ=2, recycles=0, breakdown=False,
                    warmup=False, probe_blocks=1)
    assert "error" not in row
    assert row["probe_blocks"] == 1 and "probe" in row["note"]
    assert row["probe_seconds"] > 0 and len(row["probe_seconds_per_pass"]) == 1
    # not a full-network time: no seconds / FLOP / TFLOP/s fields
    assert not {"seconds", "seconds_per_pass", "tflops", "pflop"} & set(row)
    from rich.console import Console

    buf = io.StringIO()
    _table([row], Console(file=buf, width=200))
    text = buf.getvalue()
    assert "MEMORY PROBE" in text and "probe1" in text and "(probe)" in text


def _planner(limit):
    return lambda n: None if n <= limit else f"N={n} does not fit in 77.00 GiB: tri_att needs 80.00 GiB"


def _trials(oom_above, calls):
    def trial(n):
        calls.append(n)
        return {"n_res": n, "peak_allocated_gib": 70.0} if n <= oom_above else {"n_res": n, "error": "out of memory"}
    return trial


def test_search_planner_limit_confirmed_by_one_trial():
    calls = []
    r = search_max_length(8000, 16000, _planner(12345), _trials(99999, calls), step=64)
    assert r["planner_limit"] == 12288 and r["planner_first_refused"] == 12352  # the grid 8000 + 64k
    assert calls == [12288]  # planner-guided: one trial, at the planner's limit
    assert r["find_max_length"] == 12288
    assert r["first_failed"]["n_res"] == 12352 and r["first_failed"]["reason"] == "planner refusal"


def test_search_oom_trial_bisects_below_the_planner_limit():
    calls = []
    r = search_max_length(8000, 16000, _planner(12345), _trials(11000, calls), step=256, max_trials=8)
    assert r["planner_limit"] == 12096  # the grid 8000 + 256k
    assert calls[0] == 12096 and r["trials"][12096]["error"] == "out of memory"
    assert len(calls) <= 8 and all(8000 <= n < 12096 for n in calls[1:])
    best, ff = r["find_max_length"], r["first_failed"]
    assert best is not None and 11000 - 256 < best <= 11000
    assert ff["reason"] == "CUDA OOM" and best < ff["n_res"] <= best + 256
    assert failure_reason({"error": "out of memory"}) == "CUDA OOM"
    assert failure_reason({"error": "x", "timeout": True}) == "timeout"
    assert failure_reason({"error": "N=9 does not fit in 1 GiB", "plan_error": True}) == "planner refusal"


def test_search_everything_fits_and_nothing_fits():
    calls = []
    r = search_max_length(8000, 16000, _planner(10 ** 6), _trials(10 ** 6, calls))
    assert r["find_max_length"] == 16000 and r["first_failed"] is None and calls == [16000]
    r = search_max_length(8000, 16000, _planner(100), _trials(10 ** 6, calls))
    assert r["find_max_length"] is None and r["first_failed"]["reason"] == "planner refusal"
    assert calls == [16000]  # no trial when the planner refuses the whole range
    r = search_max_length(8000, 16000, _planner(10 ** 6), _trials(100, []), step=1000, max_trials=3)
    assert r["find_max_length"] is None and r["first_failed"]["reason"] == "CUDA OOM"
    assert r["trials_run"] <= 3
