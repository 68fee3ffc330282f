"""`hybrid data prepare` and `hybrid data info`: encode a corpus into the token cache, and describe it.

Only typer and the standard library at the top; numpy, tqdm and the sources load inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from hybrid.runtime.errors import HybridError

data_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Corpora: enwik8, WikiText-103/-2 or your own text, encoded once into the token cache.",
)

SOURCE_HELP = "enwik8, wikitext-103, wikitext-2, text, or a path to your own text file or folder."


def _load(source, path, tokenizer, raw, min_count, max_vocab, seq_len, cache_dir, hub, progress, recipe):
    from hybrid.train.sources import load_source, read_recipe

    if recipe is not None:
        _, _, data = read_recipe(recipe)
        source = source or data.get("source")
        path = path or data.get("path")
        tokenizer = tokenizer or data.get("tokenizer")
        raw = data.get("raw") if raw is None else raw
    if source is None:
        raise HybridError("name a corpus (enwik8, wikitext-103, wikitext-2, text or a path) or pass --recipe")
    return load_source(
        source,
        path,
        tokenizer,
        raw=raw,
        min_count=min_count,
        max_vocab=max_vocab,
        seq_len=seq_len,
        cache_dir=cache_dir,
        hub=hub,
        progress=progress,
        log=lambda msg: typer.echo(msg, err=True),
    )


def prepare(
    source: Optional[str] = typer.Argument(None, help=SOURCE_HELP),
    path: Optional[Path] = typer.Option(
        None, help="Local file or folder (enwik8 / enwik8.zip, a WikiText folder, your text)."
    ),
    tokenizer: Optional[str] = typer.Option(
        None, help="byte or word (default: byte for enwik8 and text, word for WikiText)."
    ),
    raw: Optional[bool] = typer.Option(None, "--raw/--tokens", help="WikiText: the .raw files instead of .tokens."),
    min_count: int = typer.Option(1, help="Word vocabulary: keep words seen at least this often in train."),
    max_vocab: Optional[int] = typer.Option(None, help="Word vocabulary: at most this many types (with <unk>, <eos>)."),
    seq_len: Optional[int] = typer.Option(
        None, help="Refuse a corpus whose splits cannot hold one segment of this length."
    ),
    cache_dir: Optional[Path] = typer.Option(
        None, help="Token cache folder (default $HYBRID_CACHE/tokens, else ~/.cache/hybrid/tokens)."
    ),
    hub: bool = typer.Option(True, help="Load from the Hugging Face hub via `datasets` when no local copy is found."),
    recipe: Optional[Path] = typer.Option(None, help='Take the corpus from a recipe\'s "data" section.'),
    progress: bool = typer.Option(True, help="Show progress while encoding."),
):
    """Encode a corpus into the token cache (a second load is instant)."""
    import time

    t0 = time.perf_counter()
    corpus = _load(source, path, tokenizer, raw, min_count, max_vocab, seq_len, cache_dir, hub, progress, recipe)
    how = "already cached" if corpus.meta["cache_hit"] else f"encoded in {time.perf_counter() - t0:.1f} s"
    typer.echo(corpus.describe())
    typer.echo(f"{how}: {corpus.meta['cache_path']}")


def info(
    source: Optional[str] = typer.Argument(None, help=SOURCE_HELP + " Omit to list the cache."),
    path: Optional[Path] = typer.Option(None, help="Local file or folder."),
    tokenizer: Optional[str] = typer.Option(None, help="byte or word."),
    raw: Optional[bool] = typer.Option(None, "--raw/--tokens", help="WikiText: the .raw files instead of .tokens."),
    min_count: int = typer.Option(1, help="Word vocabulary: minimum count."),
    max_vocab: Optional[int] = typer.Option(None, help="Word vocabulary: maximum size."),
    cache_dir: Optional[Path] = typer.Option(None, help="Token cache folder."),
    hub: bool = typer.Option(True, help="Allow the hub when no local copy is found."),
    recipe: Optional[Path] = typer.Option(None, help='Take the corpus from a recipe\'s "data" section.'),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Splits, vocabulary and cache entry of a corpus (encoding it first if needed); or list the cache."""
    if source is None and recipe is None:
        from hybrid.train.cache import TokenCache

        cache = TokenCache(cache_dir)
        entries = cache.entries()
        if json_out:
            typer.echo(json.dumps([e.meta | {"cache_path": str(e.path)} for e in entries], indent=2))
            return
        typer.echo(f"token cache {cache.root}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
        for e in entries:
            n = {s: e.meta["splits"][s][1] for s in ("train", "valid", "test")}
            typer.echo(
                f"  {e.path.name}  {e.meta.get('name', '?'):<14} {e.meta['tokenizer']:<5} vocab {e.meta['vocab_size']:>8,}  "
                f"train {n['train']:>12,}  valid {n['valid']:>10,}  test {n['test']:>10,}  {e.meta.get('describe', '')}"
            )
        return
    corpus = _load(source, path, tokenizer, raw, min_count, max_vocab, None, cache_dir, hub, True, recipe)
    meta = corpus.meta
    splits = {}
    for s in ("train", "valid", "test"):
        n = len(getattr(corpus, s))
        row = {"tokens": n}
        extra = meta.get("split_info", {}).get(s, {})
        if "lines" in extra:
            row["lines"] = extra["lines"]
        if "unk" in extra:
            row["unk"] = extra["unk"]
            row["unk_rate"] = extra["unk"] / max(n, 1)
        splits[s] = row
    out = {
        "name": corpus.name,
        "tokenizer": corpus.tokenizer.kind,
        "vocab_size": corpus.tokenizer.vocab_size,
        "splits": splits,
        "source": meta.get("describe"),
        "fingerprint": meta.get("source"),
        "cache_path": meta.get("cache_path"),
        "encode_seconds": meta.get("encode_seconds"),
    }
    if json_out:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"{corpus.name}: {corpus.tokenizer.kind} tokens, vocabulary {corpus.tokenizer.vocab_size:,}")
    typer.echo(f"source: {out['source']}")
    for s, row in splits.items():
        extra = ""
        if "lines" in row:
            extra += f"  {row['lines']:>10,} lines"
        if "unk" in row:
            extra += f"  <unk> {row['unk']:,} ({100 * row['unk_rate']:.2f}%)"
        typer.echo(f"  {s:<5} {row['tokens']:>13,} tokens{extra}")
    typer.echo(f"cache: {out['cache_path']}")


data_app.command()(prepare)
data_app.command()(info)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
