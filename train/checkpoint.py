"""Checkpoints that a crash cannot corrupt: safetensors + JSON, written atomically, no pickle.

A run directory:
    config.json          model + training config (JSON)
    tokenizer.json
    model.safetensors    the latest saved weights (replaced atomically)
    metrics.jsonl        one JSON object per logged step / evaluation
    checkpoints/step-00000250/
        model.safetensors      weights
        trainer.safetensors    optimizer moments, RNG state, the carried stream state
        state.json             step, optimizer hyper-parameters, sizes + sha256 of both files
A checkpoint directory is assembled under a temporary name and renamed into place only when
complete, so `checkpoints/` only ever holds whole checkpoints; state.json's hashes also catch a
file damaged later, and state.json carries a checksum of itself (see encode_state). Pruning
keeps the newest `keep_last` verified checkpoints by step, the one with the lowest validation
loss and always the one just written; it never deletes a checkpoint that does not verify. A
damaged checkpoint is moved aside into `checkpoints-damaged/` (never deleted) when a resume
skips it or a save would replace it. A process killed mid-write leaves only dot-named
temporaries, which `clean_temporaries` removes on resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from hybrid.runtime.errors import HybridError
from hybrid.runtime.files import atomic_write_bytes, fsync_dir, open_regular, read_bytes, write_durably
from hybrid.runtime.files import describe_os_error as os_error_text
from hybrid.runtime.limits import check_fits

# The weights' files (weights.py), under checkpoint's names too: callers reach them as ck.*.
from hybrid.train.weights import (  # noqa: F401
    encode_weights,
    load_weights,
    load_weights_into,
    read_safetensors,
    weights_of,
)

CKPT_PREFIX = "step-"
DAMAGED_DIR = "checkpoints-damaged"  # where damaged checkpoints are moved aside, beside checkpoints/
TMP_MARK = ".tmp-"  # every temporary this module writes has a name starting "." and holding this
_write_file = write_durably  # the one place checkpoint bytes go out (tests simulate a full disk here)


def describe_os_error(e: OSError) -> str:
    why = os_error_text(e)
    return why + ": free some space, then continue with --resume" if why == "disk full" else why


# -- training checkpoints ---------------------------------------------------------------------


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> tuple[int, str]:
    """(size, sha256) of a file, read in chunks rather than held in memory."""
    h, size = hashlib.sha256(), 0
    with open_regular(path, what="checkpoint file") as fh:
        while chunk := fh.read(1 << 24):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def optimizer_to_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            t = val if torch.is_tensor(val) else torch.tensor(val)
            tensors[f"optim.{idx}.{key}"] = t.detach().to("cpu").contiguous()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], groups: list[dict]) -> dict:
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = t
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    return {"state": state, "param_groups": groups}


def encode_state(state: dict) -> bytes:
    """state.json: the state plus the SHA-256 of its canonical JSON, in a canonical layout that
    ends with "}" (so no truncation parses) and that decode_state checks byte for byte (so no
    changed byte passes, even one that leaves the JSON meaning the same)."""
    digest = _sha256(json.dumps(state, sort_keys=True).encode())
    return json.dumps(dict(state, state_sha256=digest), indent=2).encode()


def decode_state(data: bytes, source: str) -> dict:
    obj = json.loads(data)
    if not isinstance(obj, dict):
        raise HybridError(f"{source}: damaged (not in the layout it was written in)")
    if "state_sha256" not in obj and json.dumps(obj, indent=2).encode() + b"\n" == data:
        # Written before state.json carried its own checksum (atomic_write_json: a trailing
        # newline, no state_sha256): accepted as it was then; the hashes of the files it lists
        # are still checked by read_checkpoint.
        return obj
    if json.dumps(obj, indent=2).encode() != data:
        raise HybridError(f"{source}: damaged (not in the layout it was written in)")
    digest = obj.pop("state_sha256", None)
    if digest != _sha256(json.dumps(obj, sort_keys=True).encode()):
        raise HybridError(f"{source}: damaged (checksum of its contents differs)")
    return obj


def rng_tensors(device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """This process's random-number state (CPU, and the GPU it trains on), keyed as one rank's
    entries of trainer.safetensors."""
    out = {"cpu": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def save_checkpoint(
    run_dir: Path,
    model,
    optimizer,
    step: int,
    carry: dict[str, torch.Tensor],
    info: dict,
    keep_last: int = 2,
    keep_best: bool = True,
    rng: dict[str, torch.Tensor] | None = None,
    log=None,
) -> Path:
    """Write checkpoints/step-N atomically, update model.safetensors, prune old checkpoints.

    `carry` is the carried state of all B streams; `rng` maps names like "0.cpu" (rank 0's CPU
    generator) to states, by default this process's as rank 0. `info` may hold "valid_loss".
    A damaged checkpoint already at step N is moved aside (and `log` told), not deleted."""
    run_dir = Path(run_dir)
    ckpt_root = run_dir / "checkpoints"
    final = ckpt_root / f"{CKPT_PREFIX}{step:08d}"
    weights = encode_weights(model)
    if final.is_dir():
        # Step N saved before (a run resumed where it stopped): keep that whole checkpoint rather
        # than delete it to write the same step again; only a damaged one is replaced.
        try:
            _verified(final, keep=False)
        except HybridError as e:
            aside = move_aside(run_dir, final)
            if log is not None:
                log(f"warning: {e}; moved it to {aside} and wrote step {step} afresh")
        else:
            atomic_write_bytes(run_dir / "model.safetensors", weights)
            prune_checkpoints(run_dir, keep_last, keep_best, keep=final)
            return final
    trainer_bytes, groups = _trainer_bytes(model, optimizer, carry, rng)
    state = dict(
        info,
        step=step,
        param_groups=groups,
        files={
            "model.safetensors": [len(weights), _sha256(weights)],
            "trainer.safetensors": [len(trainer_bytes), _sha256(trainer_bytes)],
        },
    )
    _write_checkpoint_dir(final, weights, trainer_bytes, encode_state(state))
    atomic_write_bytes(run_dir / "model.safetensors", weights)  # the run's current weights, for export
    prune_checkpoints(run_dir, keep_last, keep_best, keep=final)
    return final


def _trainer_bytes(model, optimizer, carry: dict, rng: dict | None) -> tuple[bytes, list[dict]]:
    """trainer.safetensors (optimizer moments, RNG states, the carried stream state) and the
    optimizer's param groups, which go in state.json."""
    opt_tensors, groups = optimizer_to_tensors(optimizer)
    trainer = dict(opt_tensors)
    if rng is None:
        rng = {f"0.{k}": v for k, v in rng_tensors(next(model.parameters()).device).items()}
    for k, v in rng.items():
        trainer[f"rng.{k}"] = v.detach().to("cpu").contiguous()
    for k, v in carry.items():
        trainer[f"carry.{k}"] = v.detach().to("cpu").contiguous()
    return st_save(trainer), groups


def _write_checkpoint_dir(final: Path, weights: bytes, trainer_bytes: bytes, state_json: bytes) -> None:
    """Write the checkpoint's three files under a temporary name beside `final`, then rename it
    into place; on any OS error nothing is left behind and earlier checkpoints are untouched."""
    ckpt_root = final.parent
    tmp = ckpt_root / f".{final.name}{TMP_MARK}{os.getpid()}"
    try:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        # The temporary directory is the unit of atomicity: its files need no renames of their own.
        _write_file(tmp / "model.safetensors", weights)
        _write_file(tmp / "trainer.safetensors", trainer_bytes)
        _write_file(tmp / "state.json", state_json)
        fsync_dir(tmp)
        if final.exists():  # not a directory (a checkpoint there was verified or moved aside above)
            final.unlink()
        os.replace(tmp, final)
        fsync_dir(ckpt_root)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise HybridError(
            f"{final}: could not save checkpoint ({describe_os_error(e)}); earlier checkpoints are intact"
        ) from None


def prune_checkpoints(run_dir: Path, keep_last: int, keep_best: bool = True, keep: Path | None = None) -> None:
    """Delete all but the newest `keep_last` verified checkpoints by step (0: keep all) and, with
    keep_best, the best verified one. `keep` (the checkpoint just written) is never deleted, and
    neither is any checkpoint that does not verify: pruning deletes only what it has verified."""
    if keep_last <= 0:
        return
    ckpts = list_checkpoints(run_dir)
    verified = [p for p in ckpts if p == keep or _verifies(p)]
    kept = set(verified[-keep_last:]) | ({keep} if keep is not None else set())
    if keep_best:
        best = _best_of(verified)
        if best is not None:
            kept.add(best[0])
    for old in verified:
        if old not in kept:
            shutil.rmtree(old, ignore_errors=True)


def checkpoint_step(path: Path) -> int | None:
    """N of a checkpoints/step-N folder, None for a name that holds no step number."""
    digits = path.name[len(CKPT_PREFIX) :]
    return int(digits) if path.name.startswith(CKPT_PREFIX) and digits.isdigit() else None


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoint folders, oldest step first (by number: step-100000000 comes after step-99999999)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CKPT_PREFIX)]
    return sorted(found, key=lambda p: (checkpoint_step(p) is not None, checkpoint_step(p) or 0, p.name))


def _best_of(paths: list[Path]) -> tuple[Path, float] | None:
    best = None
    for path in paths:
        try:
            v = json.loads((path / "state.json").read_text()).get("valid_loss")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(v, (int, float)) and v == v and (best is None or v < best[1]):
            best = (path, float(v))
    return best


def best_checkpoint(run_dir: Path) -> tuple[Path, float] | None:
    """(path, valid_loss) of the checkpoint with the lowest recorded validation loss, if any has one.

    Reads only state.json; verify with read_checkpoint before loading."""
    return _best_of(list_checkpoints(run_dir))


def _verifies(path: Path) -> bool:
    """Whether a checkpoint verifies, as read_checkpoint checks it, without loading its tensors."""
    try:
        _verified(path, keep=False)
        return True
    except HybridError:
        return False


def move_aside(run_dir: Path, path: Path) -> Path:
    """Move a damaged checkpoint folder into RUN_DIR/checkpoints-damaged/ (kept for inspection,
    out of the way of resume and pruning); returns where it went."""
    root = Path(run_dir) / DAMAGED_DIR
    dest = root / path.name
    n = 2
    while dest.exists():
        dest = root / f"{path.name}.{n}"
        n += 1
    try:
        root.mkdir(exist_ok=True)
        os.replace(path, dest)
    except OSError as e:
        raise HybridError(f"{path}: damaged, and could not be moved to {root} ({describe_os_error(e)})") from None
    fsync_dir(path.parent)
    return dest


def clean_temporaries(run_dir: Path) -> list[Path]:
    """Remove what a killed writer left behind: dot-named temporaries in the run and checkpoint dirs."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and TMP_MARK in p.name:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def _verified(path: Path, keep: bool) -> tuple[dict, dict[str, bytes]]:
    """(state, file bytes) of a checkpoint whose state.json and files match their recorded sizes and
    hashes; with `keep` the files are read whole and returned, else only hashed in chunks.
    HybridError names what is wrong."""
    try:
        state = decode_state(read_bytes(path / "state.json", 16 << 20, "state.json"), str(path / "state.json"))
        if (
            not isinstance(state, dict)
            or not isinstance(state.get("step"), int)
            or not isinstance(state.get("param_groups"), list)
            or not isinstance(state.get("files"), dict)
        ):
            raise HybridError(f"{path / 'state.json'}: not a checkpoint state (step, param_groups, files)")
        if set(state["files"]) != {"model.safetensors", "trainer.safetensors"}:
            raise HybridError(f"{path / 'state.json'}: lists files {sorted(state['files'])}")
        blobs = {}
        for name, (size, digest) in state["files"].items():
            if keep:
                with open_regular(path / name, what=name) as fh:
                    check_fits(os.fstat(fh.fileno()).st_size, f"reading {path / name}")
                    blobs[name] = data = fh.read()
                found = len(data), _sha256(data)
            else:
                found = _file_digest(path / name)
            if found != (size, digest):
                raise HybridError(f"{path / name}: damaged (size or checksum differs from state.json)")
        return state, blobs
    except HybridError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise HybridError(f"{path}: unreadable checkpoint ({e.__class__.__name__}: {e})") from None


def read_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state, weights, trainer tensors) of one checkpoint, verified against its recorded hashes."""
    state, blobs = _verified(path, keep=True)
    try:
        return state, st_load(blobs["model.safetensors"]), st_load(blobs["trainer.safetensors"])
    except (ValueError, SafetensorError) as e:
        raise HybridError(f"{path}: unreadable checkpoint ({e.__class__.__name__}: {e})") from None


def latest_valid_checkpoint(run_dir: Path, warn=print, skipped: list | None = None):
    """The newest checkpoint that verifies, skipping (with a warning) any that do not; the skipped
    folders are appended to `skipped` when given."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, *read_checkpoint(path)
        except HybridError as e:
            warn(f"warning: skipping {e}")
            if skipped is not None:
                skipped.append(path)
    return None
