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
file damaged later.
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

CKPT_PREFIX = "step-"


def _fsync_dir(path: Path) -> None:
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
    """Write to a temporary file beside `path`, flush to disk, then rename over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise HybridError(f"{path}: could not write ({e.strerror or e}); the previous file is intact") from None
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors for safetensors: tied copies dropped, everything contiguous on the CPU."""
    out, seen = {}, set()
    for name, t in model.state_dict().items():
        if t.data_ptr() in seen:  # tied head/embedding: stored once
            continue
        seen.add(t.data_ptr())
        out[name] = t.detach().to("cpu").contiguous()
    return out


def encode_weights(model: torch.nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    return st_save(weights_of(model), metadata=metadata)


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise HybridError(f"{path}: weights file not found") from None
    try:
        return st_load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise HybridError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0]})") from None


def load_weights_into(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy tensors into the model, refusing any missing, unexpected or mis-shaped tensor."""
    expected = weights_of(model)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise HybridError(f"{source}: tensors do not match the model config "
                          f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                          f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''})")
    for name, t in tensors.items():
        if tuple(t.shape) != tuple(expected[name].shape):
            raise HybridError(f"{source}: tensor {name!r} has shape {tuple(t.shape)}, "
                              f"the config needs {tuple(expected[name].shape)}")
    model.load_state_dict(tensors, strict=False)


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    load_weights_into(model, read_safetensors(path), str(path))


# -- training checkpoints ---------------------------------------------------------------------

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def save_checkpoint(run_dir: Path, model, optimizer, step: int, carry: dict[str, torch.Tensor],
                    info: dict, keep_last: int = 2) -> Path:
    """Write checkpoints/step-N atomically, update model.safetensors, prune old checkpoints."""
    ckpt_root = run_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"{CKPT_PREFIX}{step:08d}"
    tmp = ckpt_root / f".tmp-{CKPT_PREFIX}{step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    weights = encode_weights(model)
    opt_tensors, groups = optimizer_to_tensors(optimizer)
    trainer = dict(opt_tensors)
    trainer["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            trainer[f"rng.cuda.{i}"] = s
    for k, v in carry.items():
        trainer[f"carry.{k}"] = v.detach().to("cpu").contiguous()
    trainer_bytes = st_save(trainer)
    state = dict(info, step=step, param_groups=groups,
                 files={"model.safetensors": [len(weights), _sha256(weights)],
                        "trainer.safetensors": [len(trainer_bytes), _sha256(trainer_bytes)]})
    try:
        tmp.mkdir()
        atomic_write_bytes(tmp / "model.safetensors", weights)
        atomic_write_bytes(tmp / "trainer.safetensors", trainer_bytes)
        atomic_write_json(tmp / "state.json", state)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(ckpt_root)
    except (OSError, HybridError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        msg = e.strerror if isinstance(e, OSError) else str(e)
        raise HybridError(f"{final}: could not save checkpoint ({msg}); earlier checkpoints are intact") from None
    atomic_write_bytes(run_dir / "model.safetensors", weights)
    for old in list_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(CKPT_PREFIX))


def read_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state, weights, trainer tensors) of one checkpoint, verified against its recorded hashes."""
    try:
        state = json.loads((path / "state.json").read_text())
        blobs = {}
        for name, (size, digest) in state["files"].items():
            data = (path / name).read_bytes()
            if len(data) != size or _sha256(data) != digest:
                raise HybridError(f"{path / name}: damaged (size or checksum differs from state.json)")
            blobs[name] = data
        return state, st_load(blobs["model.safetensors"]), st_load(blobs["trainer.safetensors"])
    except HybridError:
        raise
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
        raise HybridError(f"{path}: unreadable checkpoint ({e.__class__.__name__}: {e})") from None


def latest_valid_checkpoint(run_dir: Path, warn=print):
    """The newest checkpoint that verifies, skipping (with a warning) any that do not."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, *read_checkpoint(path)
        except HybridError as e:
            warn(f"warning: skipping {e}")
    return None
