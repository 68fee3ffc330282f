"""The run directory of `hybrid train`: one writer at a time, and cleared only when the new run is
known to start.

lock_run_dir holds a DirLock (runtime/files.py) on --out for the whole command (under torchrun,
rank 0's), taken before anything reads or changes the directory, so a second `hybrid train` or
`--resume` into it stops at once with one line and changes nothing. prepare_run_dir runs every
check the trainer would (preflight.check_training) and only then, for --overwrite, deletes the
old run: a bad setting never costs it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hybrid.runtime.errors import HybridError
from hybrid.runtime.files import DirLock, describe_os_error
from hybrid.train.distributed import launch_env


def lock_run_dir(ctx, out: Path) -> None:
    """Lock `out` until the command `ctx` ends (rank 0 only: the other ranks never write)."""
    if launch_env()[0] == 0:
        ctx.with_resource(DirLock(out))


def prepare_run_dir(out: Path, overwrite: bool, model_cfg, train_cfg, corpus, device) -> None:
    """Run every check the trainer would, then (--overwrite, rank 0; the lock is already held)
    delete the old run at `out`: deleting is the last thing done before training starts."""
    from hybrid.train.preflight import check_training

    check_training(model_cfg, train_cfg, corpus, launch_env()[1], device)
    if overwrite and launch_env()[0] == 0 and out.exists():
        try:
            shutil.rmtree(out)
        except OSError as e:
            raise HybridError(f"{out}: cannot remove the old run ({describe_os_error(e)})") from None
