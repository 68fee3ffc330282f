"""tools/bench_train.py: training speed side by side, each model in a process of its own, through
the real training loop (on the CPU with the tiny presets here; the paper-scale GPU run is the same
code with --device cuda)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "bench_train.py"


def test_two_models_measured_side_by_side(tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(TOOL),
            "--scale",
            "tiny",
            "--device",
            "cpu",
            "--models",
            "hybrid,transformer",
            "--steps",
            "6",
            "--warmup",
            "2",
            "--log-every",
            "2",
            "--batch-size",
            "4",
            "--seq-len",
            "32",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["hybrid", "transformer"]
    for r in rows:
        assert r["pattern"] and r["parameters"] > 0 and (r["batch_size"], r["seq_len"]) == (4, 32)
        assert r["tokens_per_s"] > 0 and r["peak_mib"] > 0 and r["windows"] == 2
        assert abs(r["step_ms"] - 1e3 * 4 * 32 / r["tokens_per_s"]) < 1e-6
    assert "| Hybrid Transformer | QFAFQFQF |" in proc.stdout and "| Transformer | AFAFAFAF |" in proc.stdout


def test_unknown_model_is_one_clear_error():
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--models", "hybrid,lstm", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "unknown model(s) ['lstm']" in proc.stderr
