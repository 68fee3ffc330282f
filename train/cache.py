"""An on-disk cache of encoded corpora: a second load of the same source is a memory map, not an encode.

One entry is a folder named by its key (a hash of the source's content fingerprint and the
tokenizer settings):

    <cache>/<key>/tokens.bin       train, valid and test tokens back to back (uint8 for bytes, int32 for words)
                  tokenizer.json   the tokenizer (a word vocabulary built from the train split)
                  meta.json        format, key, dtype, split offsets, source description

An entry is built in `<cache>/.<key>.tmp-<pid>/` and renamed into place only when complete, so an
interrupted or failed encode never leaves a partial entry; a failed build removes its folder.
An entry with anything wrong with it (a garbled or missing file, a tokens.bin of the wrong size)
counts as none: `get` warns and returns None, and `build` renames it aside, removes it and installs
the new one. Several processes may build the same key at once: the first rename wins, the others
use its entry.
The cache lives in <root>/tokens, root = $HYBRID_CACHE, else ~/.cache/hybrid (the fo_pool C kernel
builds into <root>/kernels beside it).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybrid.runtime.errors import HybridError, first_line
from hybrid.runtime.files import MiB, atomic_write_json, describe_os_error, read_json
from hybrid.runtime.files import remove_dead_temporaries
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


class _Invalid(Exception):
    """Why a folder in the cache is not a usable entry."""


def _read_entry(path: Path) -> Entry:
    """Open and check an entry; anything wrong with it (a missing or garbled file, a field of the wrong
    type, a tokens.bin of the wrong size) raises _Invalid with the reason."""
    if path.is_symlink():  # an entry is a folder of its own, not a way to another one
        raise _Invalid("is a symbolic link")
    if not (path / "meta.json").exists():
        raise _Invalid("no meta.json")
    try:  # a regular file of a sane size, not followed out of the entry by a link
        meta = read_json(path / "meta.json", "meta.json", 16 * MiB, follow_symlinks=False)
    except HybridError as e:
        raise _Invalid(str(e).removeprefix(f"{path / 'meta.json'}: ")) from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise _Invalid(f"not a {FORMAT} version {VERSION} entry")
    try:
        dtype = np.dtype(meta["dtype"]) if isinstance(meta.get("dtype"), str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "ui":
        raise _Invalid(f"bad dtype {meta.get('dtype')!r} in meta.json")
    raw = meta.get("splits")

    def is_int(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool) and x >= 0

    if (
        not isinstance(raw, dict)
        or set(raw) != set(SPLITS)
        or not all(isinstance(v, list) and len(v) == 2 and all(map(is_int, v)) for v in raw.values())
    ):
        raise _Invalid("bad 'splits' in meta.json")
    total = sum(n for _, n in raw.values())
    if any(a + n > total for a, n in raw.values()):
        raise _Invalid("'splits' in meta.json run past the end of the tokens")
    bin_path = path / "tokens.bin"
    try:
        st = bin_path.lstat()  # a link is not an entry's own file
    except OSError:
        raise _Invalid("no tokens.bin") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size != total * dtype.itemsize:
        raise _Invalid(f"tokens.bin has {st.st_size:,} bytes, meta.json says {total * dtype.itemsize:,}")
    try:
        tokenizer = load_tokenizer(path / "tokenizer.json")
    except Exception as e:  # HybridError for a missing or garbled file; anything else from a damaged one
        why = first_line(e)
        raise _Invalid(f"bad tokenizer.json ({why.removeprefix(str(path / 'tokenizer.json') + ': ')})") from None
    if meta.get("tokenizer") != tokenizer.kind or meta.get("vocab_size") != tokenizer.vocab_size:
        raise _Invalid("tokenizer.json does not match meta.json")
    try:
        # Copy-on-write: writable arrays (torch.from_numpy warns on read-only ones) that never change the file.
        data = np.memmap(bin_path, dtype=dtype, mode="c", shape=(total,)) if total else np.zeros(0, dtype)
    except (OSError, ValueError) as e:
        raise _Invalid(f"tokens.bin unreadable ({e})") from None
    splits = {s: data[a : a + n] for s, (a, n) in ((s, raw[s]) for s in SPLITS)}
    return Entry(path, meta, tokenizer, splits)


def _open(path: Path, problem: list | None = None) -> Entry | None:
    """The entry at `path`, or None when there is none or it is not valid (the reason appended to `problem`)."""
    try:
        return _read_entry(path)
    except _Invalid as e:
        if problem is not None:
            problem.append(str(e))
        return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


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
        """The valid entry for `key`, or None (with a warning naming a damaged one, which `build` replaces)."""
        path, problem = self.root / key, []
        entry = _open(path, problem)
        if entry is None and os.path.lexists(path):
            warnings.warn(
                f"token cache entry {path} is not valid ({problem[0] if problem else 'unreadable'}); "
                "it will be rebuilt",
                stacklevel=2,
            )
        return entry

    def build(self, key: str, dtype, encode, meta: dict) -> Entry:
        """Run `encode(writer) -> tokenizer` into a fresh temporary folder, then rename it into place.

        Any exception (a bad file, Ctrl-C) removes the temporary folder and propagates.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HybridError(f"{self.root}: cannot create the token cache ({e.strerror or e})") from None
        final = self.root / key
        remove_dead_temporaries(self.root, key)
        try:  # a fresh, private name: nothing another process (or user) made can be in the way
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-{os.getpid()}-", dir=self.root))
            tmp.chmod(0o755)  # readable as entries always were (mkdtemp makes it private)
        except OSError as e:
            raise HybridError(f"{self.root}: cannot build the token cache entry ({describe_os_error(e)})") from None
        try:
            writer = Writer(tmp, dtype)
            try:
                tokenizer = encode(writer)
            finally:
                writer.close()
            save_tokenizer(tokenizer, tmp / "tokenizer.json")
            full = {
                "format": FORMAT,
                "version": VERSION,
                "key": key,
                "dtype": writer.dtype.name,
                "splits": {s: writer.splits.get(s, [writer.offset, 0]) for s in SPLITS},
                "vocab_size": tokenizer.vocab_size,
                "tokenizer": tokenizer.kind,
                **meta,
                **writer.meta,
            }
            atomic_write_json(tmp / "meta.json", full)
            problem: list[str] = []
            entry = _open(tmp, problem)  # its memory maps stay valid across the rename below
            if entry is None:
                raise HybridError(f"{final}: the token cache entry just written cannot be read back ({problem[0]})")
            entry.path = final
            return self._install(tmp, final, entry)
        except OSError as e:  # a full disk while encoding, most likely
            shutil.rmtree(tmp, ignore_errors=True)
            raise HybridError(
                f"{self.root}: could not write the token cache entry ({describe_os_error(e)}); nothing was left behind"
            ) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _install(self, tmp: Path, final: Path, entry: Entry) -> Entry:
        """Rename the complete entry `tmp` into place. A valid entry already there (another process built
        the same key first) is used instead; an invalid one is renamed aside, removed, and replaced."""
        err: OSError | None = None
        for _ in range(16):
            try:
                os.replace(tmp, final)
                return entry  # opened and checked from tmp; the rename keeps its files and maps
            except OSError as e:
                err = e
            if not os.path.lexists(final):
                continue  # another process moved an invalid entry aside just now
            existing = _open(final)
            if existing is not None:  # another process finished the same entry first
                shutil.rmtree(tmp, ignore_errors=True)
                return existing
            aside = final.with_name(f".{final.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
            try:
                os.rename(final, aside)
            except FileNotFoundError:
                continue  # another process moved it aside first
            except OSError as e:
                raise HybridError(
                    f"{final}: cannot replace the invalid token cache entry ({e.strerror or e})"
                ) from None
            _remove(aside)
        raise HybridError(
            f"{final}: cannot install the token cache entry ({err.strerror if err and err.strerror else err})"
        )

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
