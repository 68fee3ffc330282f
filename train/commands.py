"""`hybrid train` and `hybrid info`. Heavy imports (torch) happen inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hybrid.runtime.errors import HybridError


def info(preset: Optional[str] = typer.Argument(None, help="Preset name; all presets when omitted."),
         config: Optional[Path] = typer.Option(None, help="A model config JSON (or a run's config.json).")):
    """Parameters per block type and in total, for one preset / config or all presets."""
    from hybrid.train.config import PRESETS, load_model_config, preset as get_preset
    from hybrid.train.model import HybridLM, count_parameters

    if config is not None:
        cfgs = [load_model_config(config)]
    elif preset is not None:
        cfgs = [get_preset(preset)]
    else:
        cfgs = [get_preset(n) for n in PRESETS]
    cols = ["embedding", "attention", "feed-forward", "qrnn", "other", "total"]
    typer.echo(f"{'model':<20} {'pattern':<26} " + " ".join(f"{c:>13}" for c in cols))
    for cfg in cfgs:
        counts = count_parameters(HybridLM(cfg))
        typer.echo(f"{cfg.name:<20} {cfg.pattern:<26} " + " ".join(f"{counts[c]:>13,}" for c in cols))


def _default_run_dir(preset_name: str) -> Path:
    base = Path("runs") / preset_name
    if not base.exists():
        return base
    n = 2
    while Path(f"{base}-{n}").exists():
        n += 1
    return Path(f"{base}-{n}")


def train(
    preset: str = typer.Option("hybrid-tiny", help="Model preset (see `hybrid info`)."),
    config: Optional[Path] = typer.Option(None, help="Model config JSON; overrides --preset."),
    corpus: Optional[str] = typer.Option(None, help="enwik8, wikitext-103, wikitext-2, or a path to your own text "
                                                    "file or folder (default: the built-in Tiny Shakespeare)."),
    data_path: Optional[Path] = typer.Option(None, "--path", help="Where the named corpus lies locally (else $HYBRID_DATA, ./data, the hub)."),
    tokenizer: Optional[str] = typer.Option(None, help="byte or word (default: word for WikiText, byte otherwise)."),
    recipe: Optional[Path] = typer.Option(None, help="A recipe JSON (recipes/*/*.json): model, training and data "
                                                     "settings together; --steps, --out and --path still apply."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: runs/<preset>, numbered if taken)."),
    steps: Optional[int] = typer.Option(None, help="Optimizer steps (default 1200, or the recipe's)."),
    batch_size: int = typer.Option(16, help="Parallel contiguous streams per step."),
    seq_len: int = typer.Option(128, help="Segment length T."),
    lr: float = typer.Option(2e-3, help="Peak learning rate."),
    warmup: int = typer.Option(100, help="Warm-up steps."),
    eval_every: int = typer.Option(200, help="Validate every N steps."),
    save_every: int = typer.Option(200, help="Checkpoint every N steps."),
    seed: int = typer.Option(1234),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    resume: bool = typer.Option(False, help="Continue from the last valid checkpoint in --out."),
    overwrite: bool = typer.Option(False, help="Start afresh in an existing --out."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    grad_accum: int = typer.Option(1, help="Micro-batches per step and process: splits the batch to save memory; "
                                           "the global batch stays --batch-size."),
    keep_last: int = typer.Option(2, help="Newest checkpoints to keep (0 = all)."),
    keep_best: bool = typer.Option(True, help="Also keep the checkpoint with the best validation loss."),
    max_bad_steps: int = typer.Option(5, help="Stop after this many steps in a row with a non-finite loss or gradient."),
    tensorboard: bool = typer.Option(True, help="Also log to RUN_DIR/tensorboard if the tensorboard package is installed."),
    log_every: int = typer.Option(10, help="Write a metrics.jsonl record every N steps."),
):
    """Train a model. With no arguments: the tiny Hybrid Transformer on Tiny Shakespeare, on the CPU."""
    import shutil

    from hybrid.train.config import TrainConfig, load_model_config, preset as get_preset
    from hybrid.train.data import load_text_corpus
    from hybrid.train.model import HybridLM
    from hybrid.train.distributed import launch_env
    from hybrid.train.trainer import pick_device, train as run_training

    recipe_cfgs = None
    if recipe is not None:
        from hybrid.train.sources import read_recipe

        recipe_cfgs = read_recipe(recipe)
    if steps is None:
        steps = recipe_cfgs[1].steps if recipe_cfgs else 1200
    for name, v in (("--steps", steps), ("--batch-size", batch_size), ("--seq-len", seq_len),
                    ("--eval-every", eval_every), ("--save-every", save_every), ("--grad-accum", grad_accum),
                    ("--max-bad-steps", max_bad_steps), ("--log-every", log_every)):
        if v <= 0:
            raise HybridError(f"{name} must be positive, got {v}")
    if lr <= 0:
        raise HybridError(f"--lr must be positive, got {lr}")
    if keep_last < 0:
        raise HybridError(f"--keep-last must be >= 0, got {keep_last}")
    rank = launch_env()[0]  # under torchrun: only rank 0 touches the run directory
    dev = pick_device(device)
    if recipe_cfgs is not None:
        from hybrid.train.sources import load_recipe_corpus

        data = load_recipe_corpus(recipe, data_path, progress=progress, log=typer.echo)
        model_cfg = recipe_cfgs[0]
    else:
        if corpus is None:
            data = load_text_corpus(None, tokenizer or "byte")
        else:
            from hybrid.train.sources import load_source

            data = load_source(corpus, data_path, tokenizer, seq_len=seq_len, progress=progress, log=typer.echo)
        model_cfg = load_model_config(config) if config else get_preset(preset)
    if model_cfg.vocab_size != data.tokenizer.vocab_size:
        model_cfg.vocab_size = data.tokenizer.vocab_size
    name = model_cfg.name if model_cfg.name != "custom" else preset
    if out is None:
        out = _default_run_dir(name) if not resume else Path("runs") / name
    elif out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise HybridError(f"{out}: run directory exists; pass --resume to continue it or --overwrite to start afresh")
    if overwrite and out.exists() and rank == 0:
        shutil.rmtree(out)
    if recipe_cfgs is not None:
        import dataclasses

        train_cfg = dataclasses.replace(recipe_cfgs[1], steps=steps)
    else:
        train_cfg = TrainConfig(batch_size=batch_size, seq_len=seq_len, steps=steps, lr=lr, warmup_steps=warmup,
                                eval_every=eval_every, save_every=save_every, seed=seed, grad_accum=grad_accum,
                                keep_last=keep_last, keep_best=keep_best, max_bad_steps=max_bad_steps,
                                tensorboard=tensorboard, log_every=log_every)
    echo = typer.echo if rank == 0 else (lambda *a, **k: None)
    echo(data.describe())
    echo(f"model {name}: pattern {model_cfg.pattern}, "
         f"{sum(p.numel() for p in HybridLM(model_cfg).parameters()):,} parameters; "
         f"device {dev}; run dir {out}")
    result = run_training(out, model_cfg, train_cfg, data, resume=resume, device=dev, progress=progress, log=typer.echo)
    if result.interrupted:
        raise typer.Exit(130)
    echo(f"done: step {result.step}, valid {result.metric} {result.valid_metric:.4f}  ({result.run_dir})")


def register(app: typer.Typer) -> None:
    app.command()(info)
    app.command()(train)
