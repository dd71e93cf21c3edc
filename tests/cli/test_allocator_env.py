"""The CLI asks PyTorch for expandable CUDA allocator segments (long sequences fragment the caching
allocator otherwise), unless the user chose an allocator configuration."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = ("import os; from fastfold_cli.main import cli\n"
         "try:\n    cli(['bench', '--lengths', 'x', '--device', 'cpu'], standalone_mode=False)\n"
         "except Exception:\n    pass\n"
         "print(os.environ.get('PYTORCH_CUDA_ALLOC_CONF'))")


def _conf(env_value):
    import os
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_CUDA_ALLOC_CONF"}
    if env_value is not None:
        env["PYTORCH_CUDA_ALLOC_CONF"] = env_value
    p = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    return p.stdout.strip().splitlines()[-1]


def test_expandable_segments_by_default():
    assert _conf(None) == "expandable_segments:True"


def test_user_setting_kept():
    assert _conf("max_split_size_mb:512") == "max_split_size_mb:512"
