"""The corpus `hybrid train`'s options name: how it is chosen (the spec a run's config.json keeps
for --resume), described in messages, and loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def make_corpus_spec(source: Optional[str], path, options: Optional[dict] = None) -> dict:
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


def describe_spec(spec: dict) -> str:
    if spec["source"] == "builtin":
        return "the built-in corpus"
    return spec["path"] if spec["source"] == "text" else spec["source"]


def load_corpus(spec: dict, tokenizer: Optional[str], seq_len: int, progress: bool, given=None):
    """The corpus of a spec; `given` (source, path) as the user wrote them, for messages that
    name the path as given."""
    from hybrid.train.rundir import corpus_from_spec

    return corpus_from_spec(spec, tokenizer, seq_len, progress, typer.echo, given)


def command_line_corpus(recipe_cfgs, corpus, data_path, tokenizer, saved):
    """(corpus spec, (source, path) as given, tokenizer) as the command line chooses the corpus;
    the spec is None when --resume leaves it to the run's config.json."""
    corpus_spec, given, corpus_tokenizer = None, None, tokenizer
    if recipe_cfgs is not None:
        data_cfg = recipe_cfgs[2]
        given = (data_cfg["source"], data_path or data_cfg.get("path"))
        corpus_spec = make_corpus_spec(
            *given, {k: data_cfg[k] for k in ("raw", "min_count", "max_vocab") if k in data_cfg}
        )
        corpus_tokenizer = data_cfg.get("tokenizer")
    elif corpus is not None or saved is None:
        given = (corpus, data_path)
        corpus_spec = make_corpus_spec(*given)
    return corpus_spec, given, corpus_tokenizer
