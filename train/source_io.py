"""The parts every corpus source shares (train/source_plans.py uses them, sources.py is the
interface): what a plan is, content fingerprints remembered across loads, the hub, progress bars,
and encoding lines of words or a byte stream into a token-cache writer."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from hybrid.runtime.errors import HybridError, first_line
from hybrid.runtime.files import atomic_write_text, read_json
from hybrid.runtime.tokenizer import WordTokenizer
from hybrid.train.cache import TokenCache, hash_bytes_of
from hybrid.train.data import split_points

HUB = {
    "enwik8": ("LTCB/enwik8", "enwik8-raw"),
    "wikitext-103": ("Salesforce/wikitext", "wikitext-103-v1"),
    "wikitext-103-raw": ("Salesforce/wikitext", "wikitext-103-raw-v1"),
    "wikitext-2": ("Salesforce/wikitext", "wikitext-2-v1"),
    "wikitext-2-raw": ("Salesforce/wikitext", "wikitext-2-raw-v1"),
}
HUB_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
READ_CHUNK = 1 << 20
FLUSH_TOKENS = 1 << 20


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


# -- reading and encoding ------------------------------------------------------------------------


def _search_dirs() -> list[Path]:
    dirs = [Path(os.environ["HYBRID_DATA"])] if os.environ.get("HYBRID_DATA") else []
    return dirs + [Path("data")]


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


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached, found in a few seconds (datasets itself retries for half a
    minute before it gives up offline), or None. Offline mode (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE)
    and a proxy are left to datasets: it reads its own cache then, or goes through the proxy."""
    if any(
        os.environ.get(v)
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
    ):
        return None
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"the hub ({host}) cannot be reached ({e.strerror or e.__class__.__name__})"
    return None


def _hub(name: str, split: str, log):
    repo, config = HUB[name]
    try:
        import datasets
    except ImportError:
        raise HybridError(
            f"{name}: no local copy, and the `datasets` package for the hub is not installed (pip install datasets)"
        ) from None
    unreachable = hub_unreachable()
    if unreachable:
        raise HybridError(
            f"{name}: no local copy, and {unreachable}; download the files and pass --path "
            f"(or, for a copy in the datasets cache, set HF_HUB_OFFLINE=1)"
        )
    log(f"loading {repo} ({config}, {split}) from the hub via datasets ...")
    try:
        return datasets.load_dataset(repo, config, split=split)
    except Exception as e:  # offline, renamed, gated: one line
        raise HybridError(
            f"{name}: no local copy, and loading {repo} ({config}) from the hub failed: {first_line(e)}; "
            "download the files and pass --path"
        ) from None


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
        yield from ds[i : i + batch]["text"]


def _file_lines(path: Path, bar) -> Iterator[str]:
    """The '\\n'-separated lines of a file (without the '\\n'), checked to be UTF-8 text."""
    offset = 0
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise HybridError(
                    f"{path}: not UTF-8 text (bad byte at offset {offset + e.start}); a word model needs UTF-8 text"
                ) from None
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
        stats.setdefault(split, {})["unk"] = int(np.count_nonzero(data[a : a + n] == tok.unk_id))


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass
