"""The C kernel for fo-pooling's sequential core on the CPU (cpu_kernel.c): built on first use, loaded with ctypes.

    forward(lib, z, f, c0, c)                          writes all c_t into c
    backward(lib, z, f, c, c0, gh, gc, dz, df, o, go)  writes dz, df (and go = gh c with o), returns dc0
for contiguous float32/float64 [B, T, D] tensors on the CPU (see cpu_kernel.c), lib = library().

The library is compiled with the system C compiler ($CC, else cc or gcc) with FLAGS (-O3
-march=native) into $HYBRID_CACHE/kernels (else ~/.cache/hybrid/kernels), named by a hash of the
source, the flags, the compiler's version and the machine (-march=native code may not run on another
CPU), and moved into place atomically, so DDP ranks building at once are safe. A library is code
this process runs, so it is loaded only from a directory chain nobody else can change
(_check_dir_chain), and only as the file that was checked: opened once without following links,
checked on that descriptor, loaded through it (_open_checked, _load). With no compiler, a failed
build or a refused directory or file, `library()` is None (and warns, once, naming why), as with
HYBRID_CPU_KERNEL=0; cpu.py's chunked scan serves.

ctypes releases the GIL during a call, so the channels are split across torch.get_num_threads()
Python threads - not OpenMP, which would load a second OpenMP runtime beside torch's. `empty` makes
the [B, T, D] outputs (for both of cpu.py's paths) with huge pages, where Linux allows.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from hybrid.train.cache import cache_root

SOURCE = Path(__file__).with_name("cpu_kernel.c")
# No -ffast-math, and no contraction of a*b+c into fma where the C code does not ask for one: the
# results round as written, the same with any compiler.
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fPIC", "-shared"]
SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
MIN_PARALLEL = 1 << 20  # elements below which waking a thread (~0.1 ms) costs more than it saves


def cache_dir() -> Path:
    return cache_root() / "kernels"


def _compiler() -> list[str] | None:
    cc = os.environ.get("CC")
    if cc:
        return shlex.split(cc)
    found = shutil.which("cc") or shutil.which("gcc")
    return [found] if found else None


def _machine() -> str:
    """The CPU as far as -march=native sees it: architecture, model and feature flags."""
    info = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo") as fh:
            info += sorted({line for line in fh if line.startswith(("model name", "flags", "Features"))})
    except OSError:
        pass
    return "\n".join(info)


def _check_dir_chain(path: Path) -> None:
    """Refuse (RuntimeError) a kernel directory that anyone but this user could change. Every
    directory from `path` up to / must be owned by this user or root and writable by neither its
    group nor others, as the kernel judges who may rename or replace an entry. One exception, as
    the kernel makes it: a sticky directory (/tmp, mode 1777) may be writable by others as a
    parent, because in it only an entry's owner (or the directory's: us or root) may rename or
    delete it, and the entry below it in the chain is checked to be ours or root's. The kernel
    directory itself may not be sticky-writable: others could then plant the library's name.
    The path is resolved first, so no link is left in the chain to be swapped later."""
    uid = os.geteuid()
    real = path.resolve()
    for i, d in enumerate([real, *real.parents]):
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode):
            raise RuntimeError(f"{d} is not a directory")
        if st.st_uid not in (uid, 0):
            raise RuntimeError(f"{d} is owned by uid {st.st_uid}, not by you or root; set HYBRID_CACHE elsewhere")
        if st.st_mode & 0o022 and not (i > 0 and st.st_mode & stat.S_ISVTX):
            who = "others" if st.st_mode & 0o002 else "its group"
            raise RuntimeError(
                f"{d} is writable by {who}, who could replace the kernel; chmod go-w it or set HYBRID_CACHE elsewhere"
            )


def _make_dirs(path: Path) -> None:
    """Create the missing directories of `path` private to this user (the umask can only remove bits)."""
    missing = []
    for d in [path, *path.parents]:
        if os.path.lexists(d):
            break
        missing.append(d)
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass


def _open_checked(path: Path) -> int:
    """An open descriptor of the library: opened once without following a link, then checked on
    that descriptor (a regular file, ours, writable by no one else), so what was checked is what
    gets loaded."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        os.close(fd)
        raise RuntimeError(f"{path} is not a regular file owned by you, or is writable by others; remove it")
    return fd


def _build() -> int:
    """An open, checked descriptor of the compiled library, compiling it unless the cache has it
    (raises on failure or refusal)."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler found (set CC)")
    version = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), *FLAGS, version, _machine()]).encode()).hexdigest()[:16]
    folder = cache_dir()
    _make_dirs(folder)
    _check_dir_chain(folder)  # before anything in it is trusted: nobody else can swap what follows
    out = folder / f"fo_pool_{key}.so"
    if os.path.lexists(out):
        return _open_checked(out)  # a library is code this process will run: only one this user built
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.tmp")  # unique per process and host
    try:
        r = subprocess.run([*cc, *FLAGS, str(SOURCE), "-o", str(tmp)], capture_output=True, text=True, timeout=120)
        if r.returncode:
            lines = (r.stderr or r.stdout).strip().splitlines() or [f"exit status {r.returncode}"]
            raise RuntimeError(f"{shlex.join(cc)} failed: {lines[0]}")
        os.chmod(tmp, 0o755)  # whatever the umask: the check accepts it next time
        os.replace(tmp, out)  # atomic: a concurrent loader sees no library or a whole one
    finally:
        tmp.unlink(missing_ok=True)
    return _open_checked(out)  # the fresh one is checked and loaded like any other


def _load(fd: int) -> ctypes.CDLL:
    """dlopen the open file itself (Linux: /proc/self/fd/N names that open file), never a path
    that could name another file by the time it is opened. (dlopen returns an already loaded
    library of the same name instead: one that passed the same checks when it was loaded.)"""
    try:
        if not os.path.isdir("/proc/self/fd"):
            raise RuntimeError("loading a checked library needs /proc/self/fd (Linux)")
        return ctypes.CDLL(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


@functools.cache
def library():
    """The loaded library, or None (kernel disabled, unbuildable or refused; warns once)."""
    if os.environ.get("HYBRID_CPU_KERNEL", "1") == "0":
        return None
    try:
        lib = _load(_build())
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        for s in SUFFIX.values():
            getattr(lib, f"fo_pool_fwd_{s}").argtypes = [ptr] * 4 + [i64] * 6
            getattr(lib, f"fo_pool_bwd_{s}").argtypes = [ptr] * 11 + [i64] * 6
    except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as e:
        warnings.warn(f"fo_pool: C kernel unavailable ({e}); using the chunked PyTorch scan", stacklevel=2)
        return None
    return lib


HUGE_PAGE = 2 << 20


@functools.cache
def _madvise():
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"):
        return None
    try:
        fn = ctypes.CDLL(None).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return fn


def empty(shape, dtype) -> torch.Tensor:
    """torch.empty on the CPU, with Linux asked for 2 MiB pages (MADV_HUGEPAGE) inside a large buffer
    before it is first written: a fresh [B, T, D] output otherwise takes a page fault per 4 KiB, which
    can cost as much as the recurrence itself. A hint only (torch does it for every buffer with
    THP_MEM_ALLOC_ENABLE=1); no effect where transparent huge pages are off."""
    x = torch.empty(shape, dtype=dtype)
    start = -(-x.data_ptr() // HUGE_PAGE) * HUGE_PAGE
    end = (x.data_ptr() + x.numel() * x.element_size()) // HUGE_PAGE * HUGE_PAGE
    if end > start and (madvise := _madvise()) is not None:
        madvise(start, end - start, 14)  # MADV_HUGEPAGE
    return x


_pool = (0, 0, None)  # (pid, workers, ThreadPoolExecutor)


def _executor(workers: int) -> ThreadPoolExecutor:
    # Made again after a fork (a child inherits no threads) or when more threads are wanted.
    global _pool
    if _pool[0] != os.getpid() or _pool[1] < workers:
        if _pool[0] == os.getpid():
            _pool[2].shutdown(wait=False)  # a smaller pool: its idle threads would linger
        _pool = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="fo_pool"))
    return _pool[2]


def _parallel(fn, args, B, T, D):
    """fn(*args, T, D, b0, b1, d0, d1) over all channels, split across torch's thread count:
    by batch rows when they divide evenly, else by blocks of channels (multiples of 16, so that
    with D % 16 == 0 no two threads write to the same cache line; each writes only its own elements
    in any case)."""
    n = torch.get_num_threads()
    if n == 1 or B * T * D < MIN_PARALLEL:
        return fn(*args, T, D, 0, B, 0, D)
    if B % n == 0:
        parts = [(B * i // n, B * (i + 1) // n, 0, D) for i in range(n)]
    else:
        step = -(-D // (16 * n)) * 16
        parts = [(0, B, d, min(d + step, D)) for d in range(0, D, step)]
    futures = [_executor(n - 1).submit(fn, *args, T, D, *p) for p in parts[1:]]
    fn(*args, T, D, *parts[0])
    for fut in futures:
        fut.result()


def _ptr(x):
    return None if x is None else x.data_ptr()


def forward(lib, z, f, c0, c):
    B, T, D = z.shape
    _parallel(getattr(lib, f"fo_pool_fwd_{SUFFIX[z.dtype]}"), [_ptr(z), _ptr(f), _ptr(c0), _ptr(c)], B, T, D)
    return c


def backward(lib, z, f, c, c0, gh, gc, dz, df, o=None, go=None):
    B, T, D = z.shape
    dc0 = gc.new_empty(B, D)
    args = [_ptr(x) for x in (z, f, c, c0, gh, gc, o, dz, df, go, dc0)]
    _parallel(getattr(lib, f"fo_pool_bwd_{SUFFIX[z.dtype]}"), args, B, T, D)
    return dc0
