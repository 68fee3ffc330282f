"""`hybrid plot`. Imports only typer at the top; matplotlib is loaded inside the command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def plot(
    run_dir: Path = typer.Argument(..., help="A training run directory (holds metrics.jsonl)."),
    out: Optional[Path] = typer.Option(None, help="PNG file to write (default: RUN_DIR/curves.png)."),
):
    """Plot a run's loss, bits per character / perplexity, learning rate and tokens/s to a PNG."""
    from hybrid.train.plot import plot_run

    typer.echo(str(plot_run(run_dir, out)))


def register(app: typer.Typer) -> None:
    app.command()(plot)
