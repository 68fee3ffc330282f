"""`hybrid train` and `hybrid info`. Heavy imports (torch) happen inside the commands."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from hybrid.runtime.errors import HybridError
from hybrid.train.corpus_options import command_line_corpus, load_corpus
from hybrid.train.resume_options import resumed_run


def info(
    preset: Optional[str] = typer.Argument(None, help="Preset name; all presets when omitted."),
    config: Optional[Path] = typer.Option(None, help="A model config JSON (or a run's config.json)."),
):
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


def _is_run_dir(path: Path) -> bool:
    """A folder `hybrid train` wrote (config.json of format hybrid-run): the only kind --overwrite deletes."""
    from hybrid.runtime.modeldir import config_format
    from hybrid.train.trainer import RUN_FORMAT

    return config_format(path) == RUN_FORMAT


def train(
    ctx: typer.Context,
    preset: str = typer.Option("hybrid-tiny", help="Model preset (see `hybrid info`)."),
    config: Optional[Path] = typer.Option(None, help="Model config JSON; overrides --preset."),
    corpus: Optional[str] = typer.Option(
        None,
        help="enwik8, wikitext-103, wikitext-2, or a path to your own text "
        "file or folder (default: the built-in Tiny Shakespeare).",
    ),
    data_path: Optional[Path] = typer.Option(
        None, "--path", help="Where the named corpus lies locally (else $HYBRID_DATA, ./data, the hub)."
    ),
    tokenizer: Optional[str] = typer.Option(None, help="byte or word (default: word for WikiText, byte otherwise)."),
    recipe: Optional[Path] = typer.Option(
        None,
        help="A recipe JSON (recipes/*/*.json): model, training and data "
        "settings together; --steps, --out and --path still apply.",
    ),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: runs/<preset>, numbered if taken)."),
    steps: Optional[int] = typer.Option(
        None, help="Optimizer steps (default 1200, or the recipe's; with --resume the run's, and more extend it)."
    ),
    batch_size: int = typer.Option(16, help="Parallel contiguous streams per step."),
    seq_len: int = typer.Option(128, help="Segment length T."),
    lr: float = typer.Option(2e-3, help="Peak learning rate."),
    warmup: int = typer.Option(100, help="Warm-up steps."),
    eval_every: int = typer.Option(200, help="Validate every N steps."),
    save_every: int = typer.Option(200, help="Checkpoint every N steps."),
    seed: int = typer.Option(1234),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    resume: bool = typer.Option(
        False,
        help="Continue from the last valid checkpoint in --out, with the run's own "
        "model, training settings and corpus (its config.json). Other options "
        "given must match them, except --steps, --grad-accum, --eval-every, "
        "--save-every, --keep-last, --keep-best, --max-bad-steps, --log-every, "
        "--tensorboard, --progress, --device and --path, which may change.",
    ),
    overwrite: bool = typer.Option(False, help="Start afresh in an existing --out."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    grad_accum: int = typer.Option(
        1,
        help="Micro-batches per step and process: splits the batch to save memory; "
        "the global batch stays --batch-size.",
    ),
    keep_last: int = typer.Option(2, help="Newest checkpoints to keep (0 = all)."),
    keep_best: bool = typer.Option(True, help="Also keep the checkpoint with the best validation loss."),
    max_bad_steps: int = typer.Option(
        5, help="Stop after this many steps in a row with a non-finite loss or gradient."
    ),
    tensorboard: bool = typer.Option(
        True, help="Also log to RUN_DIR/tensorboard if the tensorboard package is installed."
    ),
    log_every: int = typer.Option(10, help="Write a metrics.jsonl record every N steps."),
):
    """Train a model. With no arguments: the tiny Hybrid Transformer on Tiny Shakespeare, on the CPU.

    With --resume, a run continues exactly as it was configured (model, settings and corpus from its
    config.json); a corpus that changed since is refused."""
    from hybrid.train.config import load_model_config, preset as get_preset
    from hybrid.train.distributed import launch_env
    from hybrid.train.preflight import parameter_count
    from hybrid.train.rundir import prepare_run_dir
    from hybrid.train.trainer import pick_device, read_run_config, train as run_training

    values = dict(ctx.params)
    recipe_cfgs = None
    if recipe is not None:
        from hybrid.train.sources import read_recipe

        recipe_cfgs = read_recipe(recipe)
    if resume and overwrite:
        raise HybridError("--overwrite with --resume: --overwrite deletes the run that --resume continues; pass one")
    # The model the command line names (the run directory's default name comes from it).
    cli_model = recipe_cfgs[0] if recipe_cfgs else (load_model_config(config) if config else get_preset(preset))
    name = cli_model.name if cli_model.name != "custom" else preset
    out = _claim_run_dir(ctx, out, name, resume, overwrite)
    saved = read_run_config(out) if resume and (out / "config.json").is_file() else None
    if steps is None:
        steps = saved[1].steps if saved else recipe_cfgs[1].steps if recipe_cfgs else 1200
    _check_numbers(values, steps)
    # How the corpus is chosen on the command line (None: by the run's config.json on --resume).
    corpus_spec, given, corpus_tokenizer = command_line_corpus(recipe_cfgs, corpus, data_path, tokenizer, saved)
    rank = launch_env()[0]  # under torchrun: only rank 0 touches the run directory
    dev = pick_device(device)
    if saved is not None:
        model_cfg, train_cfg, data = resumed_run(
            ctx, out, saved, steps, cli_model, recipe_cfgs, corpus_spec, given, corpus_tokenizer, values
        )
    else:
        model_cfg, train_cfg, data = _new_run(
            cli_model, recipe_cfgs, corpus_spec, given, corpus_tokenizer, steps, values
        )
    prepare_run_dir(out, overwrite, model_cfg, train_cfg, data, dev)  # every check first; --overwrite deletes last
    echo = typer.echo if rank == 0 else (lambda *a, **k: None)
    if saved is not None:
        echo(f"resuming {out} with its own model, settings and corpus ({out / 'config.json'})")
    echo(data.describe())
    name = model_cfg.name if model_cfg.name != "custom" else preset
    echo(
        f"model {name}: pattern {model_cfg.pattern}, "
        f"{parameter_count(model_cfg):,} parameters; "
        f"device {dev}; run dir {out}"
    )
    result = run_training(out, model_cfg, train_cfg, data, resume=resume, device=dev, progress=progress, log=typer.echo)
    if result.interrupted:
        raise typer.Exit(130)
    echo(
        f"done: step {result.step}, valid {result.metric} {result.valid_metric:.4f} "
        f"(final, the whole valid split: {result.valid_tokens:,} tokens)  ({result.run_dir})"
    )


def _claim_run_dir(ctx: typer.Context, out: Optional[Path], name: str, resume: bool, overwrite: bool) -> Path:
    """The run directory (default runs/<name>, numbered if taken; with --resume runs/<name> itself),
    locked before anything reads or changes it (one writer per run directory), and refused when it
    holds something that neither --resume continues nor --overwrite may replace."""
    from hybrid.train.rundir import lock_run_dir

    if out is None:
        out = _default_run_dir(name) if not resume else Path("runs") / name
    lock_run_dir(ctx, out)
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise HybridError(f"{out}: run directory exists; pass --resume to continue it or --overwrite to start afresh")
    elif overwrite and out.exists() and any(out.iterdir()) and not _is_run_dir(out):
        raise HybridError(
            f"{out}: is not a training run directory; --overwrite replaces only those (choose another --out)"
        )
    return out


def _check_numbers(values: dict, steps: int) -> None:
    """The numeric options, before anything is loaded: one line naming the first bad one."""
    for opt, v in (
        ("--steps", steps),
        ("--batch-size", values["batch_size"]),
        ("--seq-len", values["seq_len"]),
        ("--eval-every", values["eval_every"]),
        ("--save-every", values["save_every"]),
        ("--grad-accum", values["grad_accum"]),
        ("--max-bad-steps", values["max_bad_steps"]),
        ("--log-every", values["log_every"]),
    ):
        if v <= 0:
            raise HybridError(f"{opt} must be positive, got {v}")
    if values["lr"] <= 0:
        raise HybridError(f"--lr must be positive, got {values['lr']}")
    if values["keep_last"] < 0:
        raise HybridError(f"--keep-last must be >= 0, got {values['keep_last']}")


def _new_run(cli_model, recipe_cfgs, corpus_spec, given, corpus_tokenizer, steps: int, values: dict):
    """A new run: the model and settings from the command line (or the recipe), and its corpus."""
    from hybrid.train.config import TrainConfig

    data = load_corpus(corpus_spec, corpus_tokenizer, values["seq_len"], values["progress"], given)
    model_cfg = dataclasses.replace(cli_model)
    if model_cfg.vocab_size != data.tokenizer.vocab_size:
        model_cfg.vocab_size = data.tokenizer.vocab_size
    if recipe_cfgs is not None:
        train_cfg = dataclasses.replace(recipe_cfgs[1], steps=steps)
    else:
        train_cfg = TrainConfig(
            batch_size=values["batch_size"],
            seq_len=values["seq_len"],
            steps=steps,
            lr=values["lr"],
            warmup_steps=values["warmup"],
            eval_every=values["eval_every"],
            save_every=values["save_every"],
            seed=values["seed"],
            grad_accum=values["grad_accum"],
            keep_last=values["keep_last"],
            keep_best=values["keep_best"],
            max_bad_steps=values["max_bad_steps"],
            tensorboard=values["tensorboard"],
            log_every=values["log_every"],
        )
    return model_cfg, train_cfg, data


def _eager(name: str):
    """train/eager.py's function `name`, imported when called (the CLI starts without numpy)."""

    def call(*args, **kwargs):
        from hybrid.train import eager

        return getattr(eager, name)(*args, **kwargs)

    return call


def register(app: typer.Typer) -> None:
    from hybrid.runtime import commands as runtime_commands

    app.command()(info)
    app.command()(train)
    # The runtime's commands take a training run too (eval RUN_DIR, bench --run-dir): in PyTorch, here.
    runtime_commands.PYTORCH_PATHS.update(eval_run=_eager("eval_run"), run_bench=_eager("run_bench"))
