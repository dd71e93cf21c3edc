"""`fastfold bench` on the CPU at a tiny size: planned and plain paths run the full-depth network
with random parameters and report time, FLOPs and the planner's prediction."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_cpu_planned_and_plain(tmp_path):
    out = tmp_path / "b.json"
    p = subprocess.run([sys.executable, "-m", "fastfold_cli", "bench", "--device", "cpu", "--lengths", "12,17",
                        "--precision", "fp32", "--preset", "model_3", "--msa-depth", "3", "--extra-depth", "5",
                        "--recycles", "1", "--compare", "plain", "--no-breakdown", "--json", str(out),
                        "--plot", str(tmp_path / "b.png")],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [(r["n_res"], r["path"]) for r in rows] == [(12, "planned"), (12, "plain"), (17, "planned"), (17, "plain")]
    for r in rows:
        assert "error" not in r
        assert len(r["seconds_per_pass"]) == 2 and r["seconds"] > 0 and r["pflop"] > 0
        assert 0 < r["mean_plddt"] < 100
    assert rows[0]["predicted_peak_gib"] > 0 and rows[1]["predicted_peak_gib"] is None
    png = (tmp_path / "b.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    # same random model and features: the planned (chunked, in place) path computes the same thing
    assert abs(rows[0]["mean_plddt"] - rows[1]["mean_plddt"]) < 1e-3


def test_bench_bad_lengths_exit_2():
    p = subprocess.run([sys.executable, "-m", "fastfold_cli", "bench", "--device", "cpu", "--lengths", "ten"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_bench_kernels_bad_case_and_no_gpu_exit_2():
    """`fastfold bench --kernels`: an unknown case is named in one line; without CUDA (this CI) the
    micro-benchmark refuses in one line too. Both exit 2 with no traceback."""
    import torch
    p = subprocess.run([sys.executable, "-m", "fastfold_cli", "bench", "--kernels", "--kernel-cases", "ln,tri999"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 2 and "tri999" in p.stderr and "Traceback" not in p.stderr
    if not torch.cuda.is_available():
        p = subprocess.run([sys.executable, "-m", "fastfold_cli", "bench", "--kernels"],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert p.returncode == 2 and "CUDA" in p.stderr and "Traceback" not in p.stderr


def test_bench_kernel_cases_help_names_every_case():
    """--kernel-cases' help lists the benchmark's cases, the default, as they are."""
    import re

    from kernels.benchmark import CASES
    p = subprocess.run([sys.executable, "-m", "fastfold_cli", "bench", "--help"], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    assert p.returncode == 0
    listed = re.search(r"all of them: ([a-z0-9_, ]+)", " ".join(p.stdout.split())).group(1)
    assert [c.strip() for c in listed.split(",")] == list(CASES)


def test_bench_dap_probe_on_two_cpu_processes(tmp_path):
    """--gpus 2 --probe-blocks 1 on the CPU (gloo): every rank runs the memory probe; the row reports
    probe seconds, no TFLOP/s, and the same pLDDT as the one-process probe (same model, features)."""
    rows = {}
    for gpus in (1, 2):
        out = tmp_path / f"p{gpus}.json"
        p = subprocess.run([sys.executable, "-m", "fastfold_cli", "bench", "--device", "cpu", "--lengths", "13",
                            "--precision", "fp32", "--preset", "model_3", "--msa-depth", "3", "--extra-depth", "5",
                            "--probe-blocks", "1", "--gpus", str(gpus), "--no-breakdown", "--json", str(out)],
                           capture_output=True, text=True, timeout=900, cwd=ROOT)
        assert p.returncode == 0, p.stderr[-2000:]
        (rows[gpus],) = json.loads(out.read_text())
    r = rows[2]
    assert "error" not in r and r["probe_blocks"] == 1 and r["gpus"] == 2
    assert r["probe_seconds"] > 0 and "seconds" not in r and "tflops" not in r
    assert all(x["probe_blocks"] == 1 and "tflops_total" not in x for x in r["ranks"])
    assert rows[1]["probe_blocks"] == 1
    assert abs(r["ranks"][0]["mean_plddt"] - rows[1]["mean_plddt"]) < 1e-3


@pytest.mark.parametrize("compare,second", [("fused", "planned,unfused"), ("masks", "planned,skip_dense_masks=False"),
                                            ("residual", "planned,fused_residual=False"),
                                            ("bias", "planned,fused_bias=False")])
def test_bench_compare(tmp_path, compare, second):
    """--compare fused / masks / residual: the planned path (fused kernels, dense key masks skipped by
    default), then the same without them, in one process (on the CPU the Triton backend falls back to
    the reference); the prediction is the same."""
    out = tmp_path / "f.json"
    p = subprocess.run([sys.executable, "-m", "fastfold_cli", "bench", "--device", "cpu", "--lengths", "13",
                        "--precision", "fp32", "--preset", "model_3", "--msa-depth", "3", "--extra-depth", "5",
                        "--recycles", "0", "--backend", "triton", "--compare", compare, "--no-breakdown",
                        "--json", str(out)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["path"] for r in rows] == ["planned", second]
    assert abs(rows[0]["mean_plddt"] - rows[1]["mean_plddt"]) < 1e-3


def test_bench_compare_attention_options(tmp_path):
    """--compare attention --attention-options JSON: the planned path, then the same with those options
    of the attention kernel (Runtime.attention_options), in one process. On the CPU the Triton backend
    falls back to the reference, so the prediction is the same; the row names the options."""
    out = tmp_path / "a.json"
    p = subprocess.run([sys.executable, "-m", "fastfold_cli", "bench", "--device", "cpu", "--lengths", "13",
                        "--precision", "fp32", "--preset", "model_3", "--msa-depth", "3", "--extra-depth", "5",
                        "--recycles", "0", "--backend", "triton", "--compare", "attention",
                        "--attention-options", '{"head_dims": [32], "paired": true}', "--no-breakdown",
                        "--json", str(out)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["path"] for r in rows] == ["planned", "planned,attention_options={'head_dims': [32], 'paired': True}"]
    assert abs(rows[0]["mean_plddt"] - rows[1]["mean_plddt"]) < 1e-3


@pytest.mark.parametrize("args,needle", [(["--compare", "attention"], "go together"),
                                         (["--attention-options", '{"paired": true}'], "go together"),
                                         (["--compare", "attention", "--attention-options", "{paired"], "not JSON"),
                                         (["--compare", "attention", "--attention-options", "[1]"], "JSON object"),
                                         (["--compare", "attention", "--attention-options", '{"pared": 1}'], "pared"),
                                         (["--compare", "attention", "--attention-options",
                                           '{"sites": ["triangle"], "paired": true}'], "tri_att"),
                                         (["--compare", "plain", "--gpus", "2"], "--compare runs on one GPU"),
                                         (["--compare", "masks", "--find-max-length"], "--compare runs on one GPU")])
def test_bench_compare_errors(args, needle):
    """Options that don't go together: one line on stderr, exit 2, no traceback."""
    p = subprocess.run([sys.executable, "-m", "fastfold_cli", "bench", "--device", "cpu", "--lengths", "13", *args],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 2 and needle in p.stderr and "Traceback" not in p.stderr, p.stderr[-1000:]
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
