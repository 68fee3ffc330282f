"""Observability: metrics.jsonl (read back as one run after a crash), TensorBoard when installed,
and `hybrid plot RUN_DIR` writing a PNG of the curves."""

import json
import struct

import pytest
import typer
from typer.testing import CliRunner

from hybrid.runtime.errors import HybridError
from hybrid.train.metrics import MetricsLog, read_metrics
from hybrid.train.plot import plot_run
from hybrid.train.plot_commands import register


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    """A copy of conftest's tiny run (the plot is written into the run directory)."""
    import shutil

    out = tmp_path_factory.mktemp("plot") / "run"
    shutil.copytree(tiny_run, out)
    return out


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_plot_writes_a_png(run, tmp_path):
    path = plot_run(run)
    assert path == run / "curves.png"
    w, h = png_size(path)
    assert w > 600 and h > 400
    other = plot_run(run, tmp_path / "sub" / "c.png")
    assert png_size(other) == (w, h)


def test_plot_command(run, tmp_path):
    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # two commands, so that `plot` is addressed by name
    res = CliRunner().invoke(app, ["plot", str(run), "--out", str(tmp_path / "x.png")])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == str(tmp_path / "x.png") and png_size(tmp_path / "x.png")


def test_plot_errors_are_one_line(tmp_path):
    with pytest.raises(HybridError, match="run directory not found"):
        plot_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HybridError, match="no metrics file"):
        plot_run(tmp_path / "empty")
    (tmp_path / "empty" / "metrics.jsonl").write_text('{"step": 5, "valid_loss": 2.0}\n')
    with pytest.raises(HybridError, match="no training steps"):
        plot_run(tmp_path / "empty")


def test_metrics_read_back_as_one_run_after_a_crash(tmp_path):
    lines = [
        {"step": 2, "loss": 3.0},
        {"step": 4, "loss": 2.5},
        {"step": 4, "valid_loss": 2.6},
        {"step": 6, "loss": 2.4},
        {"step": 4, "loss": 2.5001},
        {"step": 6, "loss": 2.39},
    ]
    text = "".join(json.dumps(r) + "\n" for r in lines) + '{"step": 8, "lo'  # torn by a kill
    (tmp_path / "metrics.jsonl").write_text(text)
    got = read_metrics(tmp_path)
    assert got == [{"step": 2, "loss": 3.0}, {"step": 4, "loss": 2.5001}, {"step": 6, "loss": 2.39}]
    # A resume from step 4 cuts the file back to what the checkpoint had seen, torn line and all.
    (tmp_path / "metrics.jsonl").write_text(text)
    log = MetricsLog(tmp_path, 4, tensorboard=False)
    log.record({"step": 5, "loss": float("nan")})  # JSON has no NaN: written as null
    log.close()
    assert [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [
        {"step": 2, "loss": 3.0},
        {"step": 4, "loss": 2.5001},
        {"step": 5, "loss": None},
    ]


def test_tensorboard_mirrors_the_jsonl(run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/lr", "train/tokens_per_s", "valid/loss", "valid/bpc"} <= set(tags)
    tb = {e.step: e.value for e in acc.Scalars("train/loss")}
    js = {r["step"]: r["loss"] for r in read_metrics(run) if "loss" in r}
    assert tb.keys() == js.keys() and all(tb[s] == pytest.approx(js[s], rel=1e-6) for s in js)
