"""`hybrid train --resume`: the run's own model, settings and corpus (its config.json), and the
options given with it checked against them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from hybrid.runtime.errors import HybridError
from hybrid.train.corpus_options import describe_spec, load_corpus, make_corpus_spec


# --resume: the run's config.json gives the model, the training settings and the corpus. Options
# passed with it must agree with the run, except --steps (extends the run), --device, --progress,
# --path (where the corpus lies now) and the train settings TrainConfig marks changeable on resume,
# none of which changes the updates (those without an option here, like eval_tokens, stay as saved).
def resume_changeable() -> tuple[str, ...]:
    from hybrid.train.config import TrainConfig

    return TrainConfig.resume_fields("changeable")


RESUME_TRAIN_OPTIONS = {
    "batch_size": ("--batch-size", "batch_size"),
    "seq_len": ("--seq-len", "seq_len"),
    "lr": ("--lr", "lr"),
    "warmup": ("--warmup", "warmup_steps"),
    "seed": ("--seed", "seed"),
}


def explicit(ctx: typer.Context, name: str) -> bool:
    """Whether the user passed option `name` (not its default), by click's parameter source. By the
    member's name: typer may bring its own copy of click, whose ParameterSource is another class."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def check_resume_options(
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
        if explicit(ctx, name) and values[name] != getattr(saved_train, field):
            raise HybridError(f"{option} {values[name]}: {where} has {field} {getattr(saved_train, field)}; {hint}")
    # The option that chose the model on the command line: --recipe, else --config, else --preset.
    name = "recipe" if values["recipe"] is not None else "config" if values["config"] is not None else "preset"
    if explicit(ctx, name):
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
    if explicit(ctx, "tokenizer") and values["tokenizer"] != saved_corpus["tokenizer"]:
        raise HybridError(
            f"--tokenizer {values['tokenizer']}: {where} trains on {saved_corpus['tokenizer']} tokens; {hint}"
        )
    saved_spec = saved_corpus.get("spec")
    if corpus_spec is not None and isinstance(saved_spec, dict):
        option = f"--corpus {values['corpus']}" if explicit(ctx, "corpus") else f"--recipe {values['recipe']}"
        same = corpus_spec["source"] == saved_spec.get("source") and corpus_spec.get("options", {}) == saved_spec.get(
            "options", {}
        )
        if not same:  # (the same source at another path is checked by its fingerprint once loaded)
            raise HybridError(
                f"{option}: {where} was trained on {describe_spec(saved_spec)} ({saved_corpus['name']}); {hint}"
            )


def resumed_run(
    ctx, out: Path, saved, steps: int, cli_model, recipe_cfgs, corpus_spec, given, corpus_tokenizer, values: dict
):
    """--resume: the run's own model and settings (with the options that may change), and its
    corpus, checked to be the one it was trained on (by its fingerprint)."""
    from hybrid.train.trainer import corpus_fingerprint

    corpus, recipe, data_path, progress = values["corpus"], values["recipe"], values["data_path"], values["progress"]
    saved_model, saved_train, obj = saved
    saved_corpus = obj["corpus"]
    check_resume_options(ctx, out, saved_model, saved_train, saved_corpus, cli_model, recipe_cfgs, corpus_spec, values)
    model_cfg = saved_model
    train_cfg = dataclasses.replace(
        saved_train,
        steps=steps,
        **{k: values[k] for k in resume_changeable() if k in values and explicit(ctx, k)},
    )
    saved_spec = saved_corpus.get("spec")
    if corpus_spec is None:
        if isinstance(saved_spec, dict):
            corpus_spec = dict(saved_spec)
            if data_path is not None and corpus_spec["source"] != "builtin":
                corpus_spec["path"] = str(data_path.resolve())  # where the corpus lies now
        else:  # a run from before config.json recorded how its corpus was loaded
            corpus_spec = make_corpus_spec(None, None)
    corpus_tokenizer = corpus_tokenizer or saved_corpus["tokenizer"]
    data = load_corpus(corpus_spec, corpus_tokenizer, train_cfg.seq_len, progress, given)
    old_fp = saved_corpus.get("fingerprint")
    if isinstance(old_fp, str) and corpus_fingerprint(data) != old_fp:
        chosen = (
            f"--corpus {corpus}"
            if corpus is not None
            else f"--recipe {recipe}"
            if recipe is not None
            else describe_spec(corpus_spec) + ("" if isinstance(saved_spec, dict) else " (name it with --corpus)")
        )
        raise HybridError(
            f"{chosen}: not the corpus the run in {out} was trained on ({saved_corpus['name']}, "
            f"fingerprint {old_fp}; this is {data.name}, fingerprint {corpus_fingerprint(data)}); "
            f"--resume continues a run only on the same data"
        )
    return model_cfg, train_cfg, data
