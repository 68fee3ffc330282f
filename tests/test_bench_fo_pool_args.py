"""tools/bench_fo_pool.py: a malformed --plans or --chunks is one usage line, not a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench_fo_pool.py"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--plans", "32,x,4"], "--plans / --chunks: invalid literal"),
        (["--plans", "32,64"], "--plans takes block_t,block_d,num_warps"),
        (["--plans", "32,64,0"], "all positive"),
        (["--chunks", "256,-1"], "all positive"),
    ],
)
def test_bad_sweep_plans_are_one_line(args, needle):
    proc = subprocess.run([sys.executable, str(TOOL), "--sweep", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr
