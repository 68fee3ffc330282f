"""`hybrid plot RUN_DIR`: the curves of a run's metrics.jsonl as one PNG.

Four panels: training and validation loss; bits per character (byte models) or perplexity (word
models); the learning rate; throughput in tokens per second. Needs matplotlib (the `plot` extra),
drawn with the Agg backend, so no display is needed. Torch-free.
"""

from __future__ import annotations

import io

import json
from pathlib import Path

from hybrid.runtime.errors import HybridError
from hybrid.runtime.files import atomic_write_bytes
from hybrid.runtime.scoring import metric_value
from hybrid.train.metrics import read_metrics


def _metric_of(run_dir: Path, records: list[dict]) -> str:
    for r in records:
        for m in ("bpc", "ppl"):
            if f"valid_{m}" in r:
                return m
    try:
        kind = json.loads((run_dir / "config.json").read_text())["corpus"]["tokenizer"]
    except (OSError, ValueError, KeyError, TypeError):
        kind = "byte"
    return "bpc" if kind == "byte" else "ppl"


def _series(records: list[dict], key: str, where=lambda r: True) -> tuple[list[int], list[float]]:
    pts = [
        (r["step"], r[key])
        for r in records
        if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) and where(r)
    ]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def _draw_panels(axes, records: list[dict], metric: str) -> None:
    """Loss, the metric, the learning rate and throughput, one panel each."""
    periodic = lambda r: not r.get("final")  # noqa: E731  (the final evaluation covers the whole split)
    final = lambda r: bool(r.get("final"))  # noqa: E731
    ax = axes[0, 0]
    s, v = _series(records, "loss")
    ax.plot(s, v, lw=1, label="train")
    s, v = _series(records, "valid_loss", periodic)
    if s:
        ax.plot(s, v, "o-", ms=3, label="valid")
    s, v = _series(records, "valid_loss", final)
    if s:
        ax.plot(s, v, "*", ms=10, label="valid (final, whole split)")
    ax.set_title("loss (nats per token)")

    ax = axes[0, 1]
    s, v = _series(records, "loss")
    ax.plot(s, [metric_value(x, metric) for x in v], lw=1, label="train")
    s, v = _series(records, f"valid_{metric}", periodic)
    if s:
        ax.plot(s, v, "o-", ms=3, label="valid")
    s, v = _series(records, f"valid_{metric}", final)
    if s:
        ax.plot(s, v, "*", ms=10, label=f"valid (final): {v[-1]:.4g}")
    ax.set_title("bits per character" if metric == "bpc" else "perplexity")
    if metric == "ppl":
        ax.set_yscale("log")

    ax = axes[1, 0]
    s, v = _series(records, "lr")
    ax.plot(s, v, lw=1)
    ax.set_title("learning rate")

    ax = axes[1, 1]
    s, v = _series(records, "tokens_per_s")
    ax.plot(s, v, lw=1)
    ax.set_title("throughput (tokens / s)")
    ax.set_ylim(bottom=0)


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's curves to `out` (default RUN_DIR/curves.png); returns the path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise HybridError(f"{run_dir}: run directory not found")
    records = read_metrics(run_dir)
    if not any("loss" in r for r in records):
        raise HybridError(f"{run_dir / 'metrics.jsonl'}: no training steps logged yet")
    try:
        import matplotlib
    except ImportError:
        raise HybridError("hybrid plot needs matplotlib: pip install 'hybrid[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = _metric_of(run_dir, records)
    out = Path(out) if out is not None else run_dir / "curves.png"
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), constrained_layout=True)
    _draw_panels(axes, records, metric)
    skipped = [r["step"] for r in records if r.get("skipped")]
    for ax in axes.flat:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        for st in skipped:  # steps skipped for a non-finite loss or gradient
            ax.axvline(st, color="red", alpha=0.3, lw=0.8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"{run_dir.resolve().name}" + (f"  ({len(skipped)} skipped steps)" if skipped else ""))
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110)
    finally:
        plt.close(fig)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise HybridError(f"{out.parent}: cannot create ({e.strerror or e})") from None
    atomic_write_bytes(out, buf.getvalue())
    return out
