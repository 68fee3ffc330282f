"""`hybrid train` and `hybrid info`. Heavy imports (torch) happen inside the commands."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from hybrid.runtime.errors import HybridError


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


# --resume: the run's config.json gives the model, the training settings and the corpus. Options
# passed with it must agree with the run, except --steps (extends the run), --device, --progress,
# --path (where the corpus lies now) and the train settings TrainConfig marks changeable on resume,
# none of which changes the updates (those without an option here, like eval_tokens, stay as saved).
def _resume_changeable() -> tuple[str, ...]:
    from hybrid.train.config import TrainConfig

    return TrainConfig.resume_fields("changeable")


RESUME_TRAIN_OPTIONS = {
    "batch_size": ("--batch-size", "batch_size"),
    "seq_len": ("--seq-len", "seq_len"),
    "lr": ("--lr", "lr"),
    "warmup": ("--warmup", "warmup_steps"),
    "seed": ("--seed", "seed"),
}


def _explicit(ctx: typer.Context, name: str) -> bool:
    """Whether the user passed option `name` (not its default), by click's parameter source. By the
    member's name: typer may bring its own copy of click, whose ParameterSource is another class."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _corpus_spec(source: Optional[str], path, options: Optional[dict] = None) -> dict:
    """How a corpus is chosen, as stored in a run's config.json (corpus.spec) for --resume: the
    built-in corpus, a named one (enwik8, wikitext-*; `path` where it lay) or your own text (an
    absolute path), plus a recipe's options (raw, min_count, max_vocab)."""
    from hybrid.train.sources import SOURCES

    if source is None:
        spec = {"source": "builtin", "path": None}
    elif source not in SOURCES and path is None and (Path(source).exists() or any(c in source for c in "/\\.")):
        spec = {"source": "text", "path": str(Path(source).resolve())}  # a path: your own text
    else:
        spec = {"source": source, "path": str(Path(path).resolve()) if path is not None else None}
    if options:
        spec["options"] = dict(options)
    return spec


def _is_run_dir(path: Path) -> bool:
    """A folder `hybrid train` wrote (config.json of format hybrid-run): the only kind --overwrite deletes."""
    from hybrid.runtime.modeldir import config_format
    from hybrid.train.trainer import RUN_FORMAT

    return config_format(path) == RUN_FORMAT


def _describe_spec(spec: dict) -> str:
    if spec["source"] == "builtin":
        return "the built-in corpus"
    return spec["path"] if spec["source"] == "text" else spec["source"]


def _load_corpus(spec: dict, tokenizer: Optional[str], seq_len: int, progress: bool, given=None):
    """The corpus of a spec; `given` (source, path) as the user wrote them, for messages that
    name the path as given."""
    from hybrid.train.rundir import corpus_from_spec

    return corpus_from_spec(spec, tokenizer, seq_len, progress, typer.echo, given)


def _check_resume_options(
    ctx: typer.Context,
    out: Path,
    saved_model,
    saved_train,
    saved_corpus: dict,
    cli_model,
    recipe_cfgs,
    corpus_spec: Optional[dict],
    values: dict,
) -> None:
    """Refuse, in one line naming the option and both values, an option passed with --resume that
    differs from the run's config.json (--steps, the settings TrainConfig marks changeable and --device, --progress, --path aside)."""
    from hybrid.train.resume import RESUME_FIXED, model_differences

    where = f"the run in {out}"
    hint = "--resume continues a run with its own settings (drop the option, or start a new run)"
    for name, (option, field) in RESUME_TRAIN_OPTIONS.items():
        if _explicit(ctx, name) and values[name] != getattr(saved_train, field):
            raise HybridError(f"{option} {values[name]}: {where} has {field} {getattr(saved_train, field)}; {hint}")
    # The option that chose the model on the command line: --recipe, else --config, else --preset.
    name = "recipe" if values["recipe"] is not None else "config" if values["config"] is not None else "preset"
    if _explicit(ctx, name):
        option = f"--{name} {values[name]}"
        diffs = model_differences(saved_model, dataclasses.replace(cli_model, vocab_size=saved_model.vocab_size))
        if diffs:
            k, was, now = diffs[0]
            raise HybridError(f"{option}: its model has {k} {now!r}, {where} has {k} {was!r}; {hint}")
        if name == "recipe":
            for k in RESUME_FIXED:
                if getattr(recipe_cfgs[1], k) != getattr(saved_train, k):
                    raise HybridError(
                        f"{option}: its {k} is {getattr(recipe_cfgs[1], k)!r}, {where} has "
                        f"{getattr(saved_train, k)!r}; {hint}"
                    )
    if _explicit(ctx, "tokenizer") and values["tokenizer"] != saved_corpus["tokenizer"]:
        raise HybridError(
            f"--tokenizer {values['tokenizer']}: {where} trains on {saved_corpus['tokenizer']} tokens; {hint}"
        )
    saved_spec = saved_corpus.get("spec")
    if corpus_spec is not None and isinstance(saved_spec, dict):
        option = f"--corpus {values['corpus']}" if _explicit(ctx, "corpus") else f"--recipe {values['recipe']}"
        same = corpus_spec["source"] == saved_spec.get("source") and corpus_spec.get("options", {}) == saved_spec.get(
            "options", {}
        )
        if not same:  # (the same source at another path is checked by its fingerprint once loaded)
            raise HybridError(
                f"{option}: {where} was trained on {_describe_spec(saved_spec)} ({saved_corpus['name']}); {hint}"
            )


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
    from hybrid.train.rundir import lock_run_dir, prepare_run_dir
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
    if out is None:
        out = _default_run_dir(name) if not resume else Path("runs") / name
    lock_run_dir(ctx, out)  # before anything reads or changes it: one writer per run directory
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise HybridError(f"{out}: run directory exists; pass --resume to continue it or --overwrite to start afresh")
    elif overwrite and out.exists() and any(out.iterdir()) and not _is_run_dir(out):
        raise HybridError(
            f"{out}: is not a training run directory; --overwrite replaces only those (choose another --out)"
        )
    saved = read_run_config(out) if resume and (out / "config.json").is_file() else None
    if steps is None:
        steps = saved[1].steps if saved else recipe_cfgs[1].steps if recipe_cfgs else 1200
    _check_numbers(values, steps)
    # How the corpus is chosen on the command line (None: by the run's config.json on --resume).
    corpus_spec, given, corpus_tokenizer = _command_line_corpus(recipe_cfgs, corpus, data_path, tokenizer, saved)
    rank = launch_env()[0]  # under torchrun: only rank 0 touches the run directory
    dev = pick_device(device)
    if saved is not None:
        model_cfg, train_cfg, data = _resumed(
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


def _command_line_corpus(recipe_cfgs, corpus, data_path, tokenizer, saved):
    """(corpus spec, (source, path) as given, tokenizer) as the command line chooses the corpus;
    the spec is None when --resume leaves it to the run's config.json."""
    corpus_spec, given, corpus_tokenizer = None, None, tokenizer
    if recipe_cfgs is not None:
        data_cfg = recipe_cfgs[2]
        given = (data_cfg["source"], data_path or data_cfg.get("path"))
        corpus_spec = _corpus_spec(*given, {k: data_cfg[k] for k in ("raw", "min_count", "max_vocab") if k in data_cfg})
        corpus_tokenizer = data_cfg.get("tokenizer")
    elif corpus is not None or saved is None:
        given = (corpus, data_path)
        corpus_spec = _corpus_spec(*given)
    return corpus_spec, given, corpus_tokenizer


def _resumed(
    ctx, out: Path, saved, steps: int, cli_model, recipe_cfgs, corpus_spec, given, corpus_tokenizer, values: dict
):
    """--resume: the run's own model and settings (with the options that may change), and its
    corpus, checked to be the one it was trained on (by its fingerprint)."""
    from hybrid.train.trainer import corpus_fingerprint

    corpus, recipe, data_path, progress = values["corpus"], values["recipe"], values["data_path"], values["progress"]
    saved_model, saved_train, obj = saved
    saved_corpus = obj["corpus"]
    _check_resume_options(ctx, out, saved_model, saved_train, saved_corpus, cli_model, recipe_cfgs, corpus_spec, values)
    model_cfg = saved_model
    train_cfg = dataclasses.replace(
        saved_train,
        steps=steps,
        **{k: values[k] for k in _resume_changeable() if k in values and _explicit(ctx, k)},
    )
    saved_spec = saved_corpus.get("spec")
    if corpus_spec is None:
        if isinstance(saved_spec, dict):
            corpus_spec = dict(saved_spec)
            if data_path is not None and corpus_spec["source"] != "builtin":
                corpus_spec["path"] = str(data_path.resolve())  # where the corpus lies now
        else:  # a run from before config.json recorded how its corpus was loaded
            corpus_spec = _corpus_spec(None, None)
    corpus_tokenizer = corpus_tokenizer or saved_corpus["tokenizer"]
    data = _load_corpus(corpus_spec, corpus_tokenizer, train_cfg.seq_len, progress, given)
    old_fp = saved_corpus.get("fingerprint")
    if isinstance(old_fp, str) and corpus_fingerprint(data) != old_fp:
        chosen = (
            f"--corpus {corpus}"
            if corpus is not None
            else f"--recipe {recipe}"
            if recipe is not None
            else _describe_spec(corpus_spec) + ("" if isinstance(saved_spec, dict) else " (name it with --corpus)")
        )
        raise HybridError(
            f"{chosen}: not the corpus the run in {out} was trained on ({saved_corpus['name']}, "
            f"fingerprint {old_fp}; this is {data.name}, fingerprint {corpus_fingerprint(data)}); "
            f"--resume continues a run only on the same data"
        )
    return model_cfg, train_cfg, data


def _new_run(cli_model, recipe_cfgs, corpus_spec, given, corpus_tokenizer, steps: int, values: dict):
    """A new run: the model and settings from the command line (or the recipe), and its corpus."""
    from hybrid.train.config import TrainConfig

    data = _load_corpus(corpus_spec, corpus_tokenizer, values["seq_len"], values["progress"], given)
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
