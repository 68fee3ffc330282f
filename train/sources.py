"""Real corpora through one interface: `load_source(...) -> Corpus`, encoded once and cached.

    enwik8        the first 10^8 bytes of an English Wikipedia dump, bytes as tokens, split
                  90M / 5M / 5M (train / valid / test). From a local `enwik8` or `enwik8.zip`,
                  or via `datasets` from the hub (LTCB/enwik8, enwik8-raw) when online.
    wikitext-103  words, `<eos>` at each line end (every line, empty ones too, as in the
    wikitext-2    literature), vocabulary from the train split. From local wiki.{train,valid,test}.tokens
                  (or the .raw variants), or via `datasets` (Salesforce/wikitext) when online.
                  WikiText's own `<unk>` is the tokenizer's `<unk>`.
    text          any file or folder of your own UTF-8 text, split 90/5/5 (bytes for a byte model,
                  lines for a word model), word vocabulary from the train part with
                  min_count / max_vocab.

Encoded tokens go to the token cache (train/cache.py), keyed by a fingerprint of the source's
content and the tokenizer settings: the second load is a memory map. Every problem with the
input (a corrupt zip, a file that is not UTF-8, a split too short for one segment) is one
HybridError line, raised before the cache entry is renamed into place, so none is left behind.

Lines are the file's '\\n'-separated lines and words are `str.split()` of a line, as in
Transformer-XL's and pytorch/examples' data code (WikiText-2 valid: 217,646 tokens).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from hybrid.runtime.errors import HybridError
from hybrid.train.cache import SPLITS, TokenCache, cache_key
from hybrid.train.data import Corpus, split_points  # noqa: F401  (split_points: the split every loader uses)
from hybrid.train.source_plans import _enwik8_plan, _text_plan, _wikitext_plan

SOURCES = ("enwik8", "wikitext-103", "wikitext-2", "text")


# -- public interface ---------------------------------------------------------------------------


def load_source(
    source: str,
    path: str | os.PathLike | None = None,
    tokenizer: str | None = None,
    *,
    raw: bool | None = None,
    min_count: int = 1,
    max_vocab: int | None = None,
    seq_len: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    hub: bool = True,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Corpus:
    """A corpus by name ("enwik8", "wikitext-103", "wikitext-2", "text") or as a path to your text.

    path       the local file/folder (default: looked for under $HYBRID_DATA and ./data; then the hub)
    tokenizer  "byte" or "word" (default: byte for enwik8 and text, word for WikiText)
    raw        WikiText: the .raw files / raw hub config (default: .tokens, else .raw if only those exist)
    seq_len    every split must hold at least one segment of this many tokens (+1 for its targets)
    hub        allow `datasets.load_dataset` when no local copy is found
    """
    log = log or (lambda msg: None)
    source, path, kind = _check_options(source, path, tokenizer, min_count, max_vocab, seq_len)
    cache = TokenCache(cache_dir)
    settings = {"tokenizer": kind}
    if kind == "word":
        settings.update(min_count=min_count, max_vocab=max_vocab)

    if source == "enwik8":
        plan = _enwik8_plan(path, cache, hub, progress, log)
    elif source.startswith("wikitext"):
        plan = _wikitext_plan(source, path, raw, kind, cache, hub, progress, log)
    else:
        plan = _text_plan(Path(path), kind, cache, progress)
    key = cache_key({"source": plan.ident, "settings": settings})
    need = (seq_len or 1) + 1
    entry = cache.get(key)
    hit = entry is not None
    if not hit:
        log(f"encoding {plan.name} ({kind} level) into the token cache {cache.root} ...")
        t0 = time.perf_counter()

        def encode(writer):
            tok = plan.encode(writer, kind, min_count, max_vocab)
            for split in SPLITS:  # before the entry is renamed into place: a failure leaves nothing
                _check_length(plan.name, split, writer.count(split), need, seq_len)
            writer.meta["encode_seconds"] = round(time.perf_counter() - t0, 3)
            return tok

        meta = {"name": plan.name, "source": plan.ident, "settings": settings, "describe": plan.describe}
        entry = cache.build(key, np.uint8 if kind == "byte" else np.int32, encode, meta)
    else:
        for split in SPLITS:
            _check_length(plan.name, split, len(entry.splits[split]), need, seq_len)
    meta = dict(entry.meta, cache_path=str(entry.path), cache_hit=hit)
    s = entry.splits
    return Corpus(plan.name, entry.tokenizer, s["train"], s["valid"], s["test"], meta=meta)


def _check_options(source, path, tokenizer, min_count, max_vocab, seq_len) -> tuple[str, object, str]:
    """(source, path, tokenizer kind) of load_source's arguments, each checked: one line per problem."""
    if source not in SOURCES:
        if path is None and (Path(source).exists() or any(c in source for c in "/\\.")):
            source, path = "text", source  # a path: your own text
        else:
            raise HybridError(
                f"unknown corpus {source!r}: use one of {', '.join(SOURCES)}, or a path to a text file or folder"
            )
    if source == "text" and path is None:
        raise HybridError("corpus 'text' needs a path to a file or folder of text")
    kind = tokenizer or ("word" if source.startswith("wikitext") else "byte")
    if kind not in ("byte", "word"):
        raise HybridError(f"unknown tokenizer {kind!r} (expected 'byte' or 'word')")
    if source == "enwik8" and kind != "byte":
        raise HybridError("enwik8 is a byte-level benchmark: use tokenizer 'byte'")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise HybridError(f"min_count must be an integer >= 1, got {min_count!r}")
    if max_vocab is not None and (isinstance(max_vocab, bool) or not isinstance(max_vocab, int) or max_vocab < 3):
        raise HybridError(f"max_vocab must be an integer >= 3 (it includes <unk> and <eos>), got {max_vocab!r}")
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
        raise HybridError(f"seq_len must be a positive integer, got {seq_len!r}")
    return source, path, kind


def _check_length(name: str, split: str, n: int, need: int, seq_len: int | None) -> None:
    if n < need:
        what = f"one {seq_len}-token segment" if seq_len else "evaluation"
        raise HybridError(
            f"{name}: the {split} split has {n:,} tokens, too short for {what} "
            f"(needs at least {need:,}); use more text or a smaller --seq-len"
        )


# -- recipes ------------------------------------------------------------------------------------

RECIPE_DATA_KEYS = {"source", "path", "tokenizer", "raw", "min_count", "max_vocab"}
_str = lambda v: isinstance(v, str) and v != ""  # noqa: E731
_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
RECIPE_DATA_TYPES = [
    ("source", _str, "a corpus name or path"),
    ("path", lambda v: v is None or _str(v), "a path"),
    ("tokenizer", lambda v: v is None or v in ("byte", "word"), "'byte' or 'word'"),
    ("raw", lambda v: v is None or isinstance(v, bool), "true or false"),
    ("min_count", _int, "an integer"),
    ("max_vocab", lambda v: v is None or _int(v), "an integer"),
]


def read_recipe(path: str | os.PathLike):
    """(ModelConfig, TrainConfig, data dict) of a recipe file (recipes/*/*.json):
    {"model": ModelConfig fields, "train": TrainConfig fields, "data": {"source": ..., ...}, ...}."""
    from hybrid.train.config import ModelConfig, TrainConfig, read_json

    obj = read_json(path, "recipe")
    for key in ("model", "train", "data"):
        if not isinstance(obj.get(key), dict):
            raise HybridError(f"{path}: a recipe needs a {key!r} object")
    data = obj["data"]
    unknown = sorted(set(data) - RECIPE_DATA_KEYS)
    if unknown:
        raise HybridError(f"{path}: unknown data keys {unknown} (use {', '.join(sorted(RECIPE_DATA_KEYS))})")
    if "source" not in data:
        raise HybridError(f"{path}: the recipe's data section needs a 'source'")
    for key, ok, want in RECIPE_DATA_TYPES:
        if key in data and not ok(data[key]):
            raise HybridError(f"{path}: data.{key} must be {want}, got {data[key]!r}")
    return ModelConfig.from_dict(obj["model"], str(path)), TrainConfig.from_dict(obj["train"], str(path)), data


def load_recipe_corpus(path: str | os.PathLike, data_path: str | os.PathLike | None = None, **kw) -> Corpus:
    """The corpus a recipe trains on (its data section; `data_path` overrides its path)."""
    _, train_cfg, data = read_recipe(path)
    opts = {k: data[k] for k in ("raw", "min_count", "max_vocab") if k in data}
    return load_source(
        data["source"], data_path or data.get("path"), data.get("tokenizer"), seq_len=train_cfg.seq_len, **opts, **kw
    )
