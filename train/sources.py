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

import codecs
import itertools
import json
import os
import stat
import time
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from hybrid.runtime.errors import HybridError
from hybrid.runtime.files import atomic_write_text, file_kind, read_json
from hybrid.runtime.tokenizer import ByteTokenizer, WordTokenizer
from hybrid.train.cache import SPLITS, TokenCache, cache_key, hash_bytes_of
from hybrid.train.data import Corpus, split_points

ENWIK8_BYTES = 10 ** 8
ENWIK8_HOLDOUT = 5 * 10 ** 6  # valid and test bytes of the standard split
HUB = {
    "enwik8": ("LTCB/enwik8", "enwik8-raw"),
    "wikitext-103": ("Salesforce/wikitext", "wikitext-103-v1"),
    "wikitext-103-raw": ("Salesforce/wikitext", "wikitext-103-raw-v1"),
    "wikitext-2": ("Salesforce/wikitext", "wikitext-2-v1"),
    "wikitext-2-raw": ("Salesforce/wikitext", "wikitext-2-raw-v1"),
}
HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
SOURCES = ("enwik8", "wikitext-103", "wikitext-2", "text")
READ_CHUNK = 1 << 20
FLUSH_TOKENS = 1 << 20


# -- public interface ---------------------------------------------------------------------------

def load_source(source: str, path: str | os.PathLike | None = None, tokenizer: str | None = None, *,
                raw: bool | None = None, min_count: int = 1, max_vocab: int | None = None,
                seq_len: int | None = None, cache_dir: str | os.PathLike | None = None,
                hub: bool = True, progress: bool = True, log: Callable[[str], None] | None = None) -> Corpus:
    """A corpus by name ("enwik8", "wikitext-103", "wikitext-2", "text") or as a path to your text.

    path       the local file/folder (default: looked for under $HYBRID_DATA and ./data; then the hub)
    tokenizer  "byte" or "word" (default: byte for enwik8 and text, word for WikiText)
    raw        WikiText: the .raw files / raw hub config (default: .tokens, else .raw if only those exist)
    seq_len    every split must hold at least one segment of this many tokens (+1 for its targets)
    hub        allow `datasets.load_dataset` when no local copy is found
    """
    log = log or (lambda msg: None)
    if source not in SOURCES:
        if path is None and (Path(source).exists() or any(c in source for c in "/\\.")):
            source, path = "text", source  # a path: your own text
        else:
            raise HybridError(f"unknown corpus {source!r}: use one of {', '.join(SOURCES)}, or a path to a text file or folder")
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


def _check_length(name: str, split: str, n: int, need: int, seq_len: int | None) -> None:
    if n < need:
        what = f"one {seq_len}-token segment" if seq_len else "evaluation"
        raise HybridError(f"{name}: the {split} split has {n:,} tokens, too short for {what} "
                          f"(needs at least {need:,}); use more text or a smaller --seq-len")


class _Plan:
    """What a source is (its content fingerprint) and how to encode it into a cache writer."""

    def __init__(self, name: str, ident: dict, describe: str, encode):
        self.name, self.ident, self.describe, self.encode = name, ident, describe, encode


# -- fingerprints -------------------------------------------------------------------------------

def _fingerprint(paths: list[Path], cache: TokenCache, progress: bool) -> str:
    """Content hash of files, remembered by (path, size, mtime, inode, ctime) so a second load does not
    reread them. ctime is in the key because mtime alone can be set back (cp -p, rsync -a, tar x): new
    content of the same size with the old mtime still has a new ctime, so it is hashed again."""
    memo_path = cache.root / "fingerprints.json"
    stats = [(str(p.resolve()), *_stamp(p)) for p in paths]
    memo_key = json.dumps(stats)
    try:
        memo = read_json(memo_path, "fingerprint memo", follow_symlinks=False)
    except HybridError:  # none yet, or damaged: only a speed-up
        memo = {}
    if isinstance(memo.get(memo_key), str):
        return memo[memo_key]
    total = sum(s[1] for s in stats)
    bar = _bar(total, "hash", progress and total > 64 * READ_CHUNK)
    digest = hash_bytes_of(paths, bar.update)
    bar.close()
    memo = {k: v for k, v in memo.items() if _still_valid(k)}  # files changed or gone: their records go
    memo[memo_key] = digest
    try:
        cache.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(memo_path, json.dumps(memo))
    except (OSError, HybridError):
        pass  # only a speed-up
    return digest


def _stamp(path) -> tuple[int, int, int, int]:
    """(size, mtime, inode, ctime) of a file: what a remembered fingerprint is keyed by."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def _still_valid(memo_key: str) -> bool:
    """Whether every file a fingerprint record names still has the stamp it had."""
    try:
        return all(_stamp(path) == tuple(stamp) for path, *stamp in json.loads(memo_key))
    except (OSError, ValueError, TypeError):
        return False


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=not enabled, leave=False)


# -- enwik8 -------------------------------------------------------------------------------------

def _search_dirs() -> list[Path]:
    dirs = [Path(os.environ["HYBRID_DATA"])] if os.environ.get("HYBRID_DATA") else []
    return dirs + [Path("data")]


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


def _write_bytes_split(writer, chunks: Iterable[bytes], total: int) -> None:
    a, b = split_points(total)
    bounds = [("train", 0, a), ("valid", a, b), ("test", b, total)]
    pos, i = 0, 0
    writer.begin("train")
    for chunk in chunks:
        arr = np.frombuffer(chunk, dtype=np.uint8)
        while arr.size:
            name, lo, hi = bounds[i]
            take = min(arr.size, hi - pos)
            writer.write(arr[:take])
            arr, pos = arr[take:], pos + take
            if pos == hi and i < 2:
                i += 1
                writer.begin(bounds[i][0])
    while i < 2:  # empty trailing splits of a tiny input
        i += 1
        writer.begin(bounds[i][0])
    if pos != total:
        raise HybridError(f"read {pos:,} bytes, expected {total:,}")


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
            raise HybridError("enwik8: no local enwik8 or enwik8.zip (looked in $HYBRID_DATA and ./data); "
                              "pass --path, or allow the hub")
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


def _hub(name: str, split: str, log):
    repo, config = HUB[name]
    try:
        import datasets
    except ImportError:
        raise HybridError(f"{name}: no local copy, and the `datasets` package for the hub is not installed "
                          "(pip install datasets)") from None
    log(f"loading {repo} ({config}, {split}) from the hub via datasets ...")
    try:
        return datasets.load_dataset(repo, config, split=split)
    except Exception as e:  # offline, renamed, gated: one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise HybridError(f"{name}: no local copy, and loading {repo} ({config}) from the hub failed: {first}; "
                          "download the files and pass --path") from None


def _dataset_fingerprint(ds, texts: Callable[[], Iterable[str]]) -> str:
    fp = getattr(ds, "_fingerprint", None)
    if fp:
        return str(fp)
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for t in texts():
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def _rows(ds, batch: int = 10000) -> Iterator[str]:
    for i in range(0, len(ds), batch):
        yield from ds[i:i + batch]["text"]


def _enwik8_hub_plan(progress: bool, log) -> _Plan:
    ds = _hub("enwik8", "train", log)
    ident = {"kind": "enwik8", "hub": HUB["enwik8"], "fingerprint": _dataset_fingerprint(ds, lambda: _rows(ds))}

    def encode(writer, kind, min_count, max_vocab):
        data = "".join(_rows(ds)).encode("utf-8")
        if len(data) != ENWIK8_BYTES:
            log(f"note: the hub copy of enwik8 has {len(data):,} bytes, not 10^8")
        _write_bytes_split(writer, (data[i:i + READ_CHUNK] for i in range(0, len(data), READ_CHUNK)), len(data))
        return ByteTokenizer()

    return _Plan("enwik8", ident, f"hub {HUB['enwik8'][0]} ({HUB['enwik8'][1]}), 90/5/5 byte split", encode)


# -- lines and words ----------------------------------------------------------------------------

def _file_lines(path: Path, bar) -> Iterator[str]:
    """The '\\n'-separated lines of a file (without the '\\n'), checked to be UTF-8 text."""
    offset = 0
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise HybridError(f"{path}: not UTF-8 text (bad byte at offset {offset + e.start}); "
                                  "a word model needs UTF-8 text") from None
            if "\0" in line:
                raise HybridError(f"{path}: not a text file (NUL byte at offset {offset + line.index(chr(0))})")
            offset += len(raw)
            bar.update(len(raw))
            yield line[:-1] if line.endswith("\n") else line


def _count_words(lines: Iterable[str]) -> Counter:
    counts: Counter = Counter()
    for line in lines:
        counts.update(line.split())
    return counts


def _vocabulary(counts: Counter, min_count: int, max_vocab: int | None) -> WordTokenizer:
    return WordTokenizer.from_counts(counts, min_count, max_vocab)


def _encode_lines(writer, split: str, lines: Iterable[str], tok: WordTokenizer, stats: dict) -> None:
    writer.begin(split)
    get, unk, eos = tok.index.get, tok.unk_id, tok.eos_id
    buf: list[int] = []
    n_lines = 0
    for line in lines:
        buf.extend(get(w, unk) for w in line.split())
        buf.append(eos)
        n_lines += 1
        if len(buf) >= FLUSH_TOKENS:
            writer.write(np.asarray(buf, dtype=np.int32))
            buf.clear()
    if buf:
        writer.write(np.asarray(buf, dtype=np.int32))
    stats[split] = {"lines": n_lines}


def _count_unk(writer, tok: WordTokenizer, stats: dict) -> None:
    """<unk> tokens per split, read back from the file being written (for `hybrid data info`)."""
    writer.fh.flush()
    data = np.fromfile(writer.folder / "tokens.bin", dtype=np.int32)
    for split, (a, n) in writer.splits.items():
        stats.setdefault(split, {})["unk"] = int(np.count_nonzero(data[a:a + n] == tok.unk_id))


# -- WikiText -----------------------------------------------------------------------------------

def _wikitext_files(name: str, path, raw: bool | None) -> dict[str, Path] | None:
    dirs = [Path(path)] if path is not None else [d / n for d in _search_dirs() for n in (name, f"{name}-raw", f"{name}-v1")]
    for d in dirs:
        if path is not None and not d.is_dir():
            raise HybridError(f"{d}: not a folder (expected one holding wiki.train.tokens, wiki.valid.tokens, wiki.test.tokens)")
        for ext in ((".raw",) if raw else (".tokens",) if raw is False else (".tokens", ".raw")):
            files = {s: d / f"wiki.{s}{ext}" for s in SPLITS}
            if all(f.is_file() for f in files.values()):
                return files
        if path is not None:
            want = "wiki.{train,valid,test}" + (".raw" if raw else ".tokens")
            missing = [f.name for s in SPLITS for f in [d / f"wiki.{s}{'.raw' if raw else '.tokens'}"] if not f.is_file()]
            raise HybridError(f"{d}: missing {', '.join(missing)} (a WikiText folder holds {want})")
    return None


def _wikitext_plan(name: str, path, raw, kind, cache: TokenCache, hub: bool, progress: bool, log) -> _Plan:
    files = _wikitext_files(name, path, raw)
    if files is None:
        if not hub:
            raise HybridError(f"{name}: no local wiki.{{train,valid,test}}.tokens (looked in $HYBRID_DATA/{name} "
                              f"and ./data/{name}); pass --path, or allow the hub")
        return _wikitext_hub_plan(name, bool(raw), kind, log)
    paths = [files[s] for s in SPLITS]
    ident = {"kind": name, "content": _fingerprint(paths, cache, progress),
             "files": [p.name for p in paths]}
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
    ident = {"kind": name, "hub": HUB[hub_name],
             "fingerprint": [_dataset_fingerprint(sets[s], lambda s=s: _rows(sets[s])) for s in SPLITS]}

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

class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _text_files(path: Path) -> list[Path]:
    if not path.exists():
        raise HybridError(f"{path}: corpus file not found")
    mode = path.stat().st_mode
    if stat.S_ISREG(mode):
        files = [path]
    elif not stat.S_ISDIR(mode):  # /dev/null, a FIFO (reading it would wait for a writer), a device
        raise HybridError(f"{path}: is {file_kind(mode)}, not a regular file or a folder of text files")
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
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
                raise HybridError(f"{path}: not UTF-8 text (bad byte at offset {max(0, offset - held + e.start)})") from None
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


# -- recipes ------------------------------------------------------------------------------------

RECIPE_DATA_KEYS = {"source", "path", "tokenizer", "raw", "min_count", "max_vocab"}
_str = lambda v: isinstance(v, str) and v != ""  # noqa: E731
_int = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
RECIPE_DATA_TYPES = [("source", _str, "a corpus name or path"), ("path", lambda v: v is None or _str(v), "a path"),
                     ("tokenizer", lambda v: v is None or v in ("byte", "word"), "'byte' or 'word'"),
                     ("raw", lambda v: v is None or isinstance(v, bool), "true or false"),
                     ("min_count", _int, "an integer"), ("max_vocab", lambda v: v is None or _int(v), "an integer")]


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
    return load_source(data["source"], data_path or data.get("path"), data.get("tokenizer"),
                       seq_len=train_cfg.seq_len, **opts, **kw)
