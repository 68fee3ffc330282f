"""The PyTorch paths of the runtime's commands, kept here so that runtime/ imports nothing above
it: `hybrid eval RUN_DIR FILE` (a training run scored by the same protocol, for comparison with
its export) and `hybrid bench MODEL_DIR --run-dir RUN_DIR` (eager PyTorch timed side by side).

runtime/commands.py declares the options; train/commands.py's register() hands it these
functions (runtime.commands.PYTORCH_PATHS). torch is imported inside them only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import typer

from hybrid.runtime.errors import HybridError
from hybrid.runtime.files import read_json
from hybrid.runtime.tokenizer import load_tokenizer


def eval_run(run_dir: Path, file: Path, streams: int, segment: int, max_tokens: int, json_out: bool) -> None:
    """The same protocol (B streams, carried state, whole file) in eager PyTorch on a checkpoint, so
    a checkpoint and its export can be compared number for number."""
    from hybrid.runtime.scoring import metric_for, metric_value
    from hybrid.runtime.textfile import open_text
    from hybrid.train.trainer import evaluate as torch_evaluate, load_run_model

    model, tok = load_run_model(run_dir)
    # The runtime's reader: the same checks (text, UTF-8, not empty) and the same tokens as `eval`
    # on an export, read once.
    source = open_text(file, tok)
    try:
        tokens = source.read(0, source.n)
    finally:
        source.close()
    if max_tokens:
        tokens = tokens[: max_tokens + 1]
    start = time.perf_counter()
    nll, n = torch_evaluate(model, tokens, streams, segment)
    seconds = time.perf_counter() - start
    metric = metric_for(tok.kind)
    res = {
        "metric": metric,
        metric: metric_value(nll, metric),
        "nll": nll,
        "tokens": n,
        "tokens_per_s": n / max(seconds, 1e-9),
        "streams": streams,
        "segment": segment,
        "variant": "pytorch",
        "file": str(file),
    }
    if json_out:
        typer.echo(json.dumps(res, indent=2))
    else:
        typer.echo(
            f"{file}: {metric} {res[metric]:.4f}  ({n:,} tokens scored; {streams} streams x {segment}-token "
            f"segments; PyTorch checkpoint; {res['tokens_per_s']:,.0f} tokens/s)"
        )


class TorchBackend:
    """Eager PyTorch fp32 on the training checkpoint, in the plainest fast loop (inference_mode)."""

    backend, variant = "torch", "fp32"

    def __init__(self, run_dir: Path, threads: int):
        import torch

        from hybrid.train.trainer import load_run_model

        self.torch = torch
        self.model, _ = load_run_model(run_dir)
        self.threads = threads

    def task(self, kind: str, ids: np.ndarray):
        if kind == "tg-run":
            return None
        torch, m, threads = self.torch, self.model, self.threads
        x = torch.from_numpy(ids)
        T = ids.shape[1]

        def run(fn):
            def go():
                torch.set_num_threads(threads)  # global in torch: set before every timed run
                with torch.inference_mode():
                    fn()

            return go

        if kind in ("pp", "ev"):
            with torch.inference_mode():
                state = m.initial_state(ids.shape[0])
                if kind == "ev":
                    _, state = m(x, state)
            return run(lambda: m(x, state))

        def gen():
            state, tok = m.initial_state(1), torch.zeros(1, 1, dtype=torch.long)
            for _ in range(T):
                logits, state = m(tok, state)
                tok = logits[:, -1].argmax(-1, keepdim=True)

        return run(gen)


def check_run_dir(run_dir: Path, md) -> None:
    """Before any measurement: the run must exist, torch must be importable, and the run must be
    the model's own (same tokenizer and architecture), or the eager ratios would compare two
    different models."""
    if not run_dir.is_dir():
        raise HybridError(f"{run_dir}: run directory not found")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise HybridError("--run-dir needs PyTorch (pip install 'hybrid[train]')") from None
    try:
        run_model = read_json(run_dir / "config.json", "config.json")["model"]
        if not isinstance(run_model, dict):
            raise KeyError("model")
    except (HybridError, KeyError):
        raise HybridError(f"{run_dir}: not a training run (no readable config.json with a model)") from None
    if load_tokenizer(run_dir / "tokenizer.json").to_json() != load_tokenizer(md.tokenizer_path).to_json():
        raise HybridError(
            f"{run_dir}: its tokenizer differs from {md.path}'s; pass the run this model was exported from"
        )
    keys = ("vocab_size", "d_model", "n_heads", "d_inner", "pattern", "mem_len")
    differ = [k for k in keys if run_model.get(k) != md.model.get(k)]
    if differ:
        k = differ[0]
        raise HybridError(
            f"{run_dir}: {k} is {run_model.get(k)!r} in the run but {md.model.get(k)!r} in {md.path}; "
            f"pass the run this model was exported from"
        )


def run_bench(model_dir, run_dir=None, **options) -> dict:
    """runtime.bench.run_bench, with eager PyTorch on `run_dir` (checked first) side by side."""
    from hybrid.runtime.bench import run_bench as run_onnx_bench
    from hybrid.runtime.modeldir import open_model_dir

    if run_dir is None:
        return run_onnx_bench(model_dir, **options)
    run_dir = Path(run_dir)
    check_run_dir(run_dir, open_model_dir(model_dir))
    return run_onnx_bench(model_dir, eager=lambda threads: TorchBackend(run_dir, threads), **options)
