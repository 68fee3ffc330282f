"""An on-disk cache of encoded corpora: a second load of the same source is a memory map, not an encode.

One entry is a folder named by its key (a hash of the source's content fingerprint and the
tokenizer settings):

    <cache>/<key>/tokens.bin       train, valid and test tokens back to back (uint8 for bytes, int32 for words)
                  tokenizer.json   the tokenizer (a word vocabulary built from the train split)
                  meta.json        format, key, dtype, split offsets, source description

An entry is built in `<cache>/.<key>.tmp-<pid>/` and renamed into place only when complete, so an
interrupted or failed encode never leaves a partial entry; a failed build removes its folder.
The cache lives in <root>/tokens, root = $HYBRID_CACHE, else ~/.cache/hybrid (the fo_pool C kernel
builds into <root>/kernels beside it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybrid.runtime.errors import HybridError
from hybrid.runtime.tokenizer import save_tokenizer, load_tokenizer

FORMAT = "hybrid-token-cache"
VERSION = 1
SPLITS = ("train", "valid", "test")
HASH_CHUNK = 1 << 22


def cache_root() -> Path:
    """Everything hybrid caches lives under one folder: $HYBRID_CACHE, else ~/.cache/hybrid."""
    env = os.environ.get("HYBRID_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "hybrid"


def default_cache_dir() -> Path:
    return cache_root() / "tokens"


def hash_bytes_of(paths: list[Path], progress=None) -> str:
    """A content fingerprint of files (BLAKE2b, names not included), read in chunks."""
    h = hashlib.blake2b(digest_size=16)
    for p in paths:
        with open(p, "rb") as fh:
            while chunk := fh.read(HASH_CHUNK):
                h.update(chunk)
                if progress is not None:
                    progress(len(chunk))
        h.update(b"\0file-end\0")
    return h.hexdigest()


def cache_key(parts: dict) -> str:
    """The entry name for a source fingerprint + settings (any JSON-able dict)."""
    blob = json.dumps({"format": FORMAT, "version": VERSION, **parts}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


@dataclass
class Entry:
    """A complete cache entry, memory-mapped."""

    path: Path
    meta: dict
    tokenizer: object
    splits: dict[str, np.ndarray]


def _open(path: Path) -> Entry | None:
    meta_path = path / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        return None
    dtype = np.dtype(meta["dtype"])
    total = sum(n for _, n in meta["splits"].values())
    bin_path = path / "tokens.bin"
    if not bin_path.exists() or bin_path.stat().st_size != total * dtype.itemsize:
        return None
    # Copy-on-write: writable arrays (torch.from_numpy warns on read-only ones) that never change the file.
    data = np.memmap(bin_path, dtype=dtype, mode="c", shape=(total,)) if total else np.zeros(0, dtype)
    splits = {s: data[a:a + n] for s, (a, n) in meta["splits"].items()}
    return Entry(path, meta, load_tokenizer(path / "tokenizer.json"), splits)


class Writer:
    """Appends the tokens of each split, in order, to tokens.bin of an entry being built."""

    def __init__(self, folder: Path, dtype):
        self.folder, self.dtype = folder, np.dtype(dtype)
        self.fh = open(folder / "tokens.bin", "wb")
        self.offset = 0
        self.splits: dict[str, list[int]] = {}
        self.current: str | None = None
        self.meta: dict = {}  # extra facts for meta.json (line and <unk> counts, timing)

    def begin(self, split: str) -> None:
        self.current = split
        self.splits[split] = [self.offset, 0]

    def write(self, tokens) -> None:
        arr = np.asarray(tokens)
        if arr.size and (arr.min() < 0 or arr.max() > np.iinfo(self.dtype).max):
            raise ValueError(f"token ids out of range for {self.dtype}")
        arr = arr.astype(self.dtype, copy=False)
        self.fh.write(arr.tobytes())
        self.offset += arr.size
        self.splits[self.current][1] += arr.size

    def count(self, split: str) -> int:
        return self.splits.get(split, [0, 0])[1]

    def close(self) -> None:
        if not self.fh.closed:
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()


class TokenCache:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def get(self, key: str) -> Entry | None:
        return _open(self.root / key)

    def build(self, key: str, dtype, encode, meta: dict) -> Entry:
        """Run `encode(writer) -> tokenizer` into a fresh temporary folder, then rename it into place.

        Any exception (a bad file, Ctrl-C) removes the temporary folder and propagates.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HybridError(f"{self.root}: cannot create the token cache ({e.strerror or e})") from None
        final = self.root / key
        tmp = self.root / f".{key}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            writer = Writer(tmp, dtype)
            try:
                tokenizer = encode(writer)
            finally:
                writer.close()
            save_tokenizer(tokenizer, tmp / "tokenizer.json")
            full = {"format": FORMAT, "version": VERSION, "key": key, "dtype": writer.dtype.name,
                    "splits": {s: writer.splits.get(s, [writer.offset, 0]) for s in SPLITS},
                    "vocab_size": tokenizer.vocab_size, "tokenizer": tokenizer.kind, **meta, **writer.meta}
            (tmp / "meta.json").write_text(json.dumps(full, indent=2) + "\n")
            try:
                os.replace(tmp, final)
            except OSError:
                if _open(final) is None:
                    raise
                shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same entry first
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        entry = _open(final)
        if entry is None:
            raise HybridError(f"{final}: the token cache entry just written cannot be read back")
        return entry

    def entries(self) -> list[Entry]:
        if not self.root.is_dir():
            return []
        out = []
        for p in sorted(self.root.iterdir()):
            if p.is_dir() and not p.name.startswith("."):
                e = _open(p)
                if e is not None:
                    out.append(e)
        return out
