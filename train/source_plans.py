"""How each corpus is found, fingerprinted and encoded (see sources.py): enwik8 (a local file or
zip, or the hub), WikiText (local wiki.*.tokens / .raw files, or the hub) and your own text (a
file or a folder). Each returns a _Plan for load_source."""

from __future__ import annotations

import codecs
import stat
import itertools
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from hybrid.runtime.errors import HybridError
from hybrid.runtime.files import file_kind
from hybrid.runtime.tokenizer import ByteTokenizer
from hybrid.train.cache import SPLITS, TokenCache
from hybrid.train.data import split_points
from hybrid.train.source_io import (
    HUB,
    HUB_SPLITS,
    READ_CHUNK,
    _bar,
    _count_unk,
    _count_words,
    _dataset_fingerprint,
    _encode_lines,
    _file_lines,
    _fingerprint,
    _hub,
    _NoBar,
    _Plan,
    _rows,
    _search_dirs,
    _vocabulary,
    _write_bytes_split,
)

ENWIK8_BYTES = 10**8
ENWIK8_HOLDOUT = 5 * 10**6  # valid and test bytes of the standard split


# -- enwik8 -------------------------------------------------------------------------------------


def _find_enwik8(path) -> Path | None:
    if path is not None:
        p = Path(path)
        if p.is_dir():
            for name in ("enwik8", "enwik8.zip"):
                if (p / name).is_file():
                    return p / name
            raise HybridError(f"{p}: no enwik8 or enwik8.zip in this folder")
        if not p.exists():
            raise HybridError(f"{p}: file not found")
        if not p.is_file():  # a FIFO (zipfile would wait on it forever) or a device
            raise HybridError(f"{p}: is {file_kind(p.stat().st_mode)}, not a regular file")
        return p
    for d in _search_dirs():
        for name in ("enwik8", "enwik8.zip", "enwik8/enwik8", "enwik8/enwik8.zip"):
            if (d / name).is_file():
                return d / name
    return None


def _zip_member(zf: zipfile.ZipFile, path: Path) -> zipfile.ZipInfo:
    infos = [i for i in zf.infolist() if not i.is_dir()]
    named = [i for i in infos if Path(i.filename).name == "enwik8"]
    if named:
        return named[0]
    if len(infos) == 1:
        return infos[0]
    raise HybridError(f"{path}: no member named 'enwik8' in this zip archive")


def _enwik8_plan(path, cache: TokenCache, hub: bool, progress: bool, log) -> _Plan:
    found = _find_enwik8(path)
    if found is None:
        if not hub:
            raise HybridError(
                "enwik8: no local enwik8 or enwik8.zip (looked in $HYBRID_DATA and ./data); "
                "pass --path, or allow the hub"
            )
        return _enwik8_hub_plan(progress, log)
    if found.suffix == ".zip":
        try:
            with zipfile.ZipFile(found) as zf:
                info = _zip_member(zf, found)
                total = info.file_size
        except zipfile.BadZipFile as e:
            raise HybridError(f"{found}: not a valid zip archive ({e})") from None
    else:
        total = found.stat().st_size
    if total == 0:
        raise HybridError(f"{found}: enwik8 is empty")
    if total != ENWIK8_BYTES:
        log(f"note: {found} has {total:,} bytes, not enwik8's 10^8; split 90/5/5 by bytes all the same")
    ident = {"kind": "enwik8", "content": _fingerprint([found], cache, progress)}

    def chunks() -> Iterator[bytes]:
        bar = _bar(total, "encode enwik8", progress)
        try:
            if found.suffix == ".zip":
                try:
                    with zipfile.ZipFile(found) as zf, zf.open(_zip_member(zf, found)) as fh:
                        while chunk := fh.read(READ_CHUNK):
                            bar.update(len(chunk))
                            yield chunk
                except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
                    raise HybridError(f"{found}: corrupt zip archive ({e})") from None
            else:
                with open(found, "rb") as fh:
                    while chunk := fh.read(READ_CHUNK):
                        bar.update(len(chunk))
                        yield chunk
        finally:
            bar.close()

    def encode(writer, kind, min_count, max_vocab):
        _write_bytes_split(writer, chunks(), total)
        return ByteTokenizer()

    return _Plan("enwik8", ident, f"{found} ({total:,} bytes, 90/5/5 byte split)", encode)


def _enwik8_hub_plan(progress: bool, log) -> _Plan:
    ds = _hub("enwik8", "train", log)
    ident = {"kind": "enwik8", "hub": HUB["enwik8"], "fingerprint": _dataset_fingerprint(ds, lambda: _rows(ds))}

    def encode(writer, kind, min_count, max_vocab):
        data = "".join(_rows(ds)).encode("utf-8")
        if len(data) != ENWIK8_BYTES:
            log(f"note: the hub copy of enwik8 has {len(data):,} bytes, not 10^8")
        _write_bytes_split(writer, (data[i : i + READ_CHUNK] for i in range(0, len(data), READ_CHUNK)), len(data))
        return ByteTokenizer()

    return _Plan("enwik8", ident, f"hub {HUB['enwik8'][0]} ({HUB['enwik8'][1]}), 90/5/5 byte split", encode)


# -- WikiText -----------------------------------------------------------------------------------


def _wikitext_files(name: str, path, raw: bool | None) -> dict[str, Path] | None:
    dirs = (
        [Path(path)]
        if path is not None
        else [d / n for d in _search_dirs() for n in (name, f"{name}-raw", f"{name}-v1")]
    )
    for d in dirs:
        if path is not None and not d.is_dir():
            raise HybridError(
                f"{d}: not a folder (expected one holding wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens)"
            )
        for ext in (".raw",) if raw else (".tokens",) if raw is False else (".tokens", ".raw"):
            files = {s: d / f"wiki.{s}{ext}" for s in SPLITS}
            if all(f.is_file() for f in files.values()):
                return files
        if path is not None:
            want = "wiki.{train,valid,test}" + (".raw" if raw else ".tokens")
            missing = [
                f.name for s in SPLITS for f in [d / f"wiki.{s}{'.raw' if raw else '.tokens'}"] if not f.is_file()
            ]
            raise HybridError(f"{d}: missing {', '.join(missing)} (a WikiText folder holds {want})")
    return None


def _wikitext_plan(name: str, path, raw, kind, cache: TokenCache, hub: bool, progress: bool, log) -> _Plan:
    files = _wikitext_files(name, path, raw)
    if files is None:
        if not hub:
            raise HybridError(
                f"{name}: no local wiki.{{train,valid,test}}.tokens (looked in $HYBRID_DATA/{name} "
                f"and ./data/{name}); pass --path, or allow the hub"
            )
        return _wikitext_hub_plan(name, bool(raw), kind, log)
    paths = [files[s] for s in SPLITS]
    ident = {"kind": name, "content": _fingerprint(paths, cache, progress), "files": [p.name for p in paths]}
    sizes = {s: files[s].stat().st_size for s in SPLITS}

    def encode(writer, kind, min_count, max_vocab):
        if kind == "byte":
            for s in SPLITS:
                writer.begin(s)
                bar = _bar(sizes[s], f"encode {s}", progress)
                for _ in _file_lines(files[s], _NoBar()):  # UTF-8 check; bytes are the tokens
                    pass
                with open(files[s], "rb") as fh:
                    while chunk := fh.read(READ_CHUNK):
                        writer.write(np.frombuffer(chunk, dtype=np.uint8))
                        bar.update(len(chunk))
                bar.close()
            return ByteTokenizer()
        bar = _bar(sizes["train"], "vocabulary", progress)
        tok = _vocabulary(_count_words(_file_lines(files["train"], bar)), min_count, max_vocab)
        bar.close()
        stats: dict = {}
        for s in SPLITS:
            bar = _bar(sizes[s], f"encode {s}", progress)
            _encode_lines(writer, s, _file_lines(files[s], bar), tok, stats)
            bar.close()
        _count_unk(writer, tok, stats)
        writer.meta["split_info"] = stats
        return tok

    where = files["train"].parent
    return _Plan(name, ident, f"{where}/wiki.*{files['train'].suffix}", encode)


def _wikitext_hub_plan(name: str, raw: bool, kind: str, log) -> _Plan:
    hub_name = f"{name}-raw" if raw else name
    sets = {s: _hub(hub_name, HUB_SPLITS[s], log) for s in SPLITS}
    ident = {
        "kind": name,
        "hub": HUB[hub_name],
        "fingerprint": [_dataset_fingerprint(sets[s], lambda s=s: _rows(sets[s])) for s in SPLITS],
    }

    def lines(s):  # one row per line of the original file, "" for an empty line
        for text in _rows(sets[s]):
            yield text[:-1] if text.endswith("\n") else text

    def encode(writer, kind, min_count, max_vocab):
        if kind == "byte":
            for s in SPLITS:
                writer.begin(s)
                for line in lines(s):
                    writer.write(np.frombuffer((line + "\n").encode("utf-8"), dtype=np.uint8))
            return ByteTokenizer()
        tok = _vocabulary(_count_words(lines("train")), min_count, max_vocab)
        stats: dict = {}
        for s in SPLITS:
            _encode_lines(writer, s, lines(s), tok, stats)
        _count_unk(writer, tok, stats)
        writer.meta["split_info"] = stats
        return tok

    repo, config = HUB[hub_name]
    return _Plan(name, ident, f"hub {repo} ({config})", encode)


# -- your own text ------------------------------------------------------------------------------


def _text_files(path: Path) -> list[Path]:
    if not path.exists():
        raise HybridError(f"{path}: corpus file not found")
    mode = path.stat().st_mode
    if stat.S_ISREG(mode):
        files = [path]
    elif not stat.S_ISDIR(mode):  # /dev/null, a FIFO (reading it would wait for a writer), a device
        raise HybridError(f"{path}: is {file_kind(mode)}, not a regular file or a folder of text files")
    else:
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise HybridError(f"{path}: the folder holds no files")
    if all(_blank(f) for f in files):
        raise HybridError(f"{path}: corpus is empty")
    return files


def _blank(path: Path) -> bool:
    """Only whitespace (stops reading at the first chunk with anything else)."""
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            if chunk.strip():
                return False
    return True


def _check_utf8_bytes(path: Path) -> None:
    """Byte models take any text's bytes, but the text must be text: UTF-8 without NUL bytes
    (as `hybrid eval` requires of the files it scores)."""
    dec = codecs.getincrementaldecoder("utf-8")(errors="strict")
    offset = 0
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(READ_CHUNK)
            nul = chunk.find(b"\0")
            if nul >= 0:
                raise HybridError(f"{path}: not a text file (NUL byte at offset {offset + nul})")
            held = len(dec.getstate()[0])
            try:
                dec.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                raise HybridError(
                    f"{path}: not UTF-8 text (bad byte at offset {max(0, offset - held + e.start)})"
                ) from None
            if not chunk:
                return
            offset += len(chunk)


def _line_count(path: Path) -> int:
    n, last = 0, b"\n"
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def _text_plan(path: Path, kind: str, cache: TokenCache, progress: bool) -> _Plan:
    files = _text_files(path)
    total = sum(f.stat().st_size for f in files)
    ident = {"kind": "text", "content": _fingerprint(files, cache, progress), "files": len(files)}
    name = path.name or str(path)

    def all_lines(bar) -> Iterator[str]:
        for f in files:
            yield from _file_lines(f, bar)

    def encode(writer, kind, min_count, max_vocab):
        if kind == "byte":
            for f in files:
                _check_utf8_bytes(f)

            def chunks():
                bar = _bar(total, f"encode {name}", progress)
                for f in files:
                    with open(f, "rb") as fh:
                        while chunk := fh.read(READ_CHUNK):
                            bar.update(len(chunk))
                            yield chunk
                bar.close()

            _write_bytes_split(writer, chunks(), total)
            return ByteTokenizer()
        # Word level: lines split 90/5/5 (as load_text_corpus), vocabulary from the train lines.
        n = sum(_line_count(f) for f in files)
        a, b = split_points(n)
        bar = _bar(total, "vocabulary", progress)
        lines = all_lines(bar)
        counts = _count_words(itertools.islice(lines, a))
        lines.close()
        bar.close()
        tok = _vocabulary(counts, min_count, max_vocab)
        stats: dict = {}
        bar = _bar(total, f"encode {name}", progress)
        lines = all_lines(bar)
        for split, count in (("train", a), ("valid", b - a), ("test", n - b)):
            _encode_lines(writer, split, itertools.islice(lines, count), tok, stats)
        bar.close()
        _count_unk(writer, tok, stats)
        writer.meta["split_info"] = stats
        return tok

    what = f"{len(files)} files in {path}" if path.is_dir() else str(path)
    return _Plan(name, ident, f"{what} ({total:,} bytes, 90/5/5 by {'bytes' if kind == 'byte' else 'lines'})", encode)
