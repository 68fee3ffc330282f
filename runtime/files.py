"""Files the user or another process can touch: atomic writes, checked reads, one writer per directory.

Torch-free and the lowest stage, so train/ and export/ use these too. Every failure is one
HybridError line naming the file.

- atomic_write_bytes / _text / _json: a temporary file beside the target (a random name, so two
  writers never share one), written, flushed to the disk, renamed over the target; on any
  failure the temporary is removed and the previous file is intact.
- open_regular / read_bytes / read_text / read_json: a regular file only (a FIFO would hang the
  reader, /dev/zero would fill the memory, a directory gives a traceback), of at most `max_bytes`.
- inside(root, name): a file a directory names (config.json's `files`, `tokenizer`), resolved
  and refused unless it lies inside that directory.
- DirLock: one writer per directory (fcntl.flock), the second told who holds it; and
  remove_dead_temporaries, for what a killed writer left beside its target.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
from pathlib import Path, PurePosixPath, PureWindowsPath

from hybrid.runtime.errors import HybridError

try:
    import fcntl
except ImportError:  # not POSIX: no locks (documented in DirLock)
    fcntl = None

MiB = 1 << 20
JSON_MAX = 64 * MiB  # config.json, tokenizer.json, recipes, cache metadata: far more than any real one


def describe_os_error(e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    return e.strerror or str(e)


def write_durably(path: str | os.PathLike, data: bytes) -> None:
    """Write a file and flush it to the disk (the one place bytes go out; tests fill the disk here)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in `path` durable (best effort: some file systems cannot sync a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`.
    The temporary is named `.NAME.tmp-PID-RANDOM` (what clean-up code looks for)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise HybridError(f"{path}: could not write ({describe_os_error(e)}); the previous file is intact") from None
    fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def replace_marked(path: str | os.PathLike, begin: str, end: str, text: str) -> bool:
    """Put `text` between the marker lines `begin` and `end` of a text file (atomically); False,
    and nothing written, when the file lacks them. How tools fill their tables into the docs."""
    old = Path(path).read_text(encoding="utf-8")
    a, b = old.find(begin), old.find(end)
    if a < 0 or b < a:
        return False
    new = old[:a] + begin + "\n" + text + end + old[b + len(end) :]
    if new != old:
        atomic_write_text(path, new)
    return True


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, for messages: 'a FIFO', 'a directory', ..."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(
    path: str | os.PathLike, max_bytes: int | None = None, what: str = "file", follow_symlinks: bool = True
):
    """The file opened for reading in binary mode, if it is a regular file of at most `max_bytes`.
    Opened without blocking (a FIFO is refused, not waited on), then checked on the open file."""
    path = Path(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise HybridError(f"{path}: {what} not found") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise HybridError(f"{path}: {what} is a symbolic link; refusing to follow it") from None
        raise HybridError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise HybridError(f"{path}: {what} is {file_kind(st.st_mode)}, not a regular file")
        if max_bytes is not None and st.st_size > max_bytes:
            raise HybridError(f"{path}: {what} has {st.st_size:,} bytes, more than the {max_bytes:,} a {what} may have")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | os.PathLike, max_bytes: int, what: str = "file", follow_symlinks: bool = True) -> bytes:
    with open_regular(path, max_bytes, what, follow_symlinks) as fh:
        try:
            data = fh.read(max_bytes + 1)
        except OSError as e:
            raise HybridError(f"{path}: cannot read {what} ({e.strerror or e})") from None
    if len(data) > max_bytes:  # grew while being read
        raise HybridError(f"{path}: {what} has more than the {max_bytes:,} bytes a {what} may have")
    return data


def read_text(path: str | os.PathLike, max_bytes: int, what: str = "file", follow_symlinks: bool = True) -> str:
    data = read_bytes(path, max_bytes, what, follow_symlinks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HybridError(f"{path}: {what} is not UTF-8 text (bad byte at offset {e.start})") from None


def read_json(
    path: str | os.PathLike, what: str = "JSON file", max_bytes: int = JSON_MAX, follow_symlinks: bool = True
) -> dict:
    """A JSON object from a file; every failure (missing, not a regular file, too big, not UTF-8,
    malformed, not an object) is one line naming the file."""
    text = read_text(path, max_bytes, what, follow_symlinks)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise HybridError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise HybridError(f"{path}: malformed JSON (nested too deeply)") from None
    if not isinstance(obj, dict):
        raise HybridError(f"{path}: expected a JSON object")
    return obj


def unsafe_name(name) -> str | None:
    """Why a file name that a file gives may not be opened relative to its directory, judged on
    its text alone in both path syntaxes (None: it may, if it resolves inside; see inside())."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if not name:
        return "is empty"
    if "\x00" in name:
        return "holds a NUL byte"
    for pure in (PurePosixPath(name), PureWindowsPath(name)):
        if pure.is_absolute() or pure.anchor:
            return "is an absolute path"
        if ".." in pure.parts:
            return "climbs out with '..'"
    return None


def inside(root: str | os.PathLike, name, where: str) -> Path:
    """The real path of `name` (a file named by a file in `root`, at `where`), refused in one line
    unless it resolves inside `root` (symbolic links included)."""
    why = unsafe_name(name)
    real_root = Path(root).resolve()
    target = None if why else (real_root / name).resolve()
    if target is not None and not target.is_relative_to(real_root):
        why = "resolves outside the directory"
    if why:
        shown = repr(name) if isinstance(name, str) else ""
        raise HybridError(
            f"{where}: {shown + ' ' if shown else ''}{why}; a directory may name only files inside itself"
        )
    return target


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_dead_temporaries(folder: Path, name: str) -> None:
    """Remove `.NAME.tmp-PID...` and `.NAME.old-PID...` files and folders whose process is gone
    (killed while building or installing); those of live processes are theirs to finish."""
    for p in Path(folder).glob(f".{name}.*-*"):
        kind, _, rest = p.name[len(name) + 2 :].partition("-")
        pid = rest.split("-")[0]
        if kind in ("tmp", "old") and pid.isdigit() and not pid_alive(int(pid)):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


class DirLock:
    """One writer per directory: an exclusive, non-blocking fcntl.flock on `.NAME.lock` beside
    the directory. Beside, not inside: the writers this guards delete or rename the directory
    itself (train --overwrite clears it, export renames a new one into place), and it works
    alike for a directory that does not exist yet. The file holds the holder's pid and is removed
    on release; a holder killed outright releases the lock with its process. Where fcntl does not
    exist (not POSIX) there is no lock."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        real = self.dir.resolve()
        if not real.name:  # "/" has no folder beside which to lock, nor is it one to write into
            raise HybridError(f"{directory}: not a valid output directory (name a folder)")
        self.path = real.with_name(f".{real.name}.lock")
        self.fd: int | None = None

    def acquire(self) -> "DirLock":
        if fcntl is None:
            return self
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise HybridError(f"{self.path.parent}: cannot create ({describe_os_error(e)})") from None
        for _ in range(16):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise HybridError(f"{self.dir}: cannot lock ({self.path}: {describe_os_error(e)})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise HybridError(f"{self.dir}: cannot lock ({self.path}: {describe_os_error(e)})") from None
                who = f"process {holder}" if holder.isdigit() else "another process"
                raise HybridError(
                    f"{self.dir}: {who} is writing to it (lock {self.path}); "
                    f"wait for it to finish, or choose another directory"
                ) from None
            # A holder that released just now removed the file we opened: lock the new one instead.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path, follow_symlinks=False))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self.fd = fd
                return self
            os.close(fd)
        raise HybridError(f"{self.dir}: cannot lock ({self.path} keeps changing)")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if os.path.samestat(os.fstat(self.fd), os.stat(self.path, follow_symlinks=False)):
                self.path.unlink()  # while still locked: a waiter then sees a new file, not this one
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
