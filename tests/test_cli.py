"""The command line as a user meets it: clear one-line errors, info, Ctrl-C and --resume."""

import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_cli


def one_error_line(proc):
    assert proc.returncode != 0
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_info_prints_counts_per_block_type():
    proc = run_cli("info")
    assert proc.returncode == 0, proc.stderr
    assert "transformer-paper" in proc.stdout and "41,084,928" in proc.stdout
    assert "qrnn" in proc.stdout and "feed-forward" in proc.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "--corpus", "does/not/exist.txt"], "does/not/exist.txt: corpus file not found"),
        (["train", "--preset", "nonsense"], "unknown preset 'nonsense'"),
        (["info", "nonsense"], "unknown preset 'nonsense'"),
    ],
)
def test_bad_input_gives_one_clear_line(tmp_path, args, needle):
    line = one_error_line(run_cli(*args, "--out", str(tmp_path / "r")) if args[0] == "train" else run_cli(*args))
    assert needle in line


def test_empty_corpus(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    line = one_error_line(run_cli("train", "--corpus", str(empty), "--out", str(tmp_path / "r")))
    assert "empty.txt: corpus is empty" in line


def test_malformed_config(tmp_path):
    bad = tmp_path / "model.json"
    bad.write_text('{"d_model": 64,, }')
    line = one_error_line(run_cli("train", "--config", str(bad), "--out", str(tmp_path / "r")))
    assert "model.json: malformed JSON" in line
    bad.write_text('{"d_model": 64, "wings": 2}')
    assert "unknown model config keys ['wings']" in one_error_line(run_cli("info", "--config", str(bad)))
    bad.write_text('{"pattern": "AQZ"}')
    assert "unknown block letters" in one_error_line(run_cli("info", "--config", str(bad)))


def test_existing_run_dir_needs_resume_or_overwrite(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "x").write_text("x")
    line = one_error_line(run_cli("train", "--out", str(tmp_path / "r")))
    assert "--resume" in line
    # --overwrite replaces a training run only, never any other folder.
    line = one_error_line(run_cli("train", "--out", str(tmp_path / "r"), "--overwrite"))
    assert "is not a training run directory" in line and (tmp_path / "r" / "x").read_text() == "x"


def test_ctrl_c_saves_and_resume_continues(tmp_path):
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "hybrid",
        "train",
        "--steps",
        "100000",
        "--out",
        str(out),
        "--no-progress",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--save-every",
        "100000",
        "--eval-every",
        "100000",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted: saved" in stdout
    ckpts = sorted((out / "checkpoints").iterdir())
    assert len(ckpts) == 1
    step = json.loads((ckpts[0] / "state.json").read_text())["step"]
    assert step >= 20
    resumed = run_cli(
        "train",
        "--steps",
        str(step + 5),
        "--out",
        str(out),
        "--resume",
        "--no-progress",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--save-every",
        "100000",
        "--eval-every",
        "100000",
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"(step {step})" in resumed.stdout and f"done: step {step + 5}" in resumed.stdout


def test_a_stage_that_is_not_installed_is_named_in_one_line(tmp_path):
    """The base install is the runtime only: commands of the other stages say what to install."""
    blocked = (
        "import sys; sys.modules.update(torch=None, onnx=None); sys.argv = ['hybrid'] + sys.argv[1:]; "
        "from hybrid.cli import main; main()"
    )
    for args, needle in (
        (["info"], "hybrid info needs torch, which is not installed: pip install 'hybrid[train]'"),
        (["train", "--out", str(tmp_path / "r")], "hybrid train needs torch"),
        (["export", str(tmp_path), "--out", str(tmp_path / "m")], "hybrid export needs"),
    ):
        proc = subprocess.run([sys.executable, "-c", blocked, *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
        assert needle in proc.stderr
