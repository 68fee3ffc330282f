"""A run's metrics: one JSON object per line in RUN_DIR/metrics.jsonl, mirrored to TensorBoard
when the `tensorboard` package is installed (RUN_DIR/tensorboard), silently JSONL-only otherwise.

Records are {"step": N, ...}: training records carry loss, lr, grad_norm and tokens_per_s;
evaluations valid_loss and valid_bpc / valid_ppl; a skipped step "skipped". A run that is killed
and resumed repeats the steps after its last checkpoint, so on resume the file is cut back to the
checkpoint's step (and TensorBoard purges its later events): the file always reads as one run.
Torch-free except for the optional TensorBoard writer.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from hybrid.runtime.errors import HybridError
from hybrid.runtime.files import atomic_write_bytes, describe_os_error, open_regular

METRICS_FILE = "metrics.jsonl"


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of a run, skipping lines a crash left torn; later records of a step that was
    run twice (a resume without the cut) replace the earlier ones."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        raise HybridError(f"{path}: no metrics file (is {run_dir} a training run?)")
    try:
        with open_regular(path, what="metrics file") as fh:
            lines = fh.read().splitlines()
    except OSError as e:
        raise HybridError(f"{path}: cannot read ({e.strerror or e})") from None
    out: list[dict] = []
    last_train = -1
    for line in lines:
        try:
            rec = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int) or isinstance(rec["step"], bool):
            continue
        if "loss" in rec:  # a training record at or before the last one: the run restarted there
            if rec["step"] <= last_train:
                out = [r for r in out if r["step"] < rec["step"]]
            last_train = rec["step"]
        out.append(rec)
    return out


def finite_or_none(v):
    """JSON has no NaN or infinity: non-finite numbers are written as null."""
    return v if not isinstance(v, float) or math.isfinite(v) else None


class MetricsLog:
    """Appends records to metrics.jsonl (flushed per line) and, if it imports, TensorBoard."""

    def __init__(self, run_dir: Path, start_step: int, tensorboard: bool = True):
        self.path = Path(run_dir) / METRICS_FILE
        # A final evaluation is made again at the end of the resumed run.
        keep = (
            [r for r in read_metrics(run_dir) if r["step"] <= start_step and not r.get("final")]
            if self.path.exists()
            else []
        )
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in keep).encode())
        try:
            self.fh = open(self.path, "a", encoding="utf-8")
        except OSError as e:
            raise HybridError(f"{self.path}: cannot open ({e.strerror or e})") from None
        self.tb = _tensorboard_writer(Path(run_dir) / "tensorboard", start_step) if tensorboard else None

    def record(self, obj: dict) -> None:
        obj = {k: finite_or_none(v) for k, v in obj.items()}
        try:
            self.fh.write(json.dumps(obj) + "\n")
            self.fh.flush()
        except OSError as e:
            raise HybridError(f"{self.path}: could not write ({describe_os_error(e)})") from None
        if self.tb is not None:
            for k, v in obj.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(_tb_tag(k), v, obj["step"])

    def close(self) -> None:
        try:
            self.fh.close()
        except OSError:
            pass
        if self.tb is not None:
            self.tb.close()


def _tb_tag(key: str) -> str:
    return f"valid/{key[len('valid_') :]}" if key.startswith("valid_") else f"train/{key}"


def _tensorboard_writer(log_dir: Path, start_step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional dependency
        return None
    # purge_step drops events a killed run wrote after the checkpoint it resumes from.
    return SummaryWriter(str(log_dir), purge_step=start_step + 1 if start_step > 0 else None)
