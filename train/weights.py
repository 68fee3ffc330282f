"""A model's weights as safetensors (no pickle): written without tied copies, read from a regular
file that fits in memory, and loaded only when every tensor matches the model config.
(checkpoint.py names these too, for its callers.)"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from hybrid.runtime.errors import HybridError
from hybrid.runtime.files import open_regular
from hybrid.runtime.limits import check_fits


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
    try:  # a regular file (a FIFO would hang, /dev/zero fill the memory) that fits in memory
        with open_regular(path, what="weights file") as fh:
            check_fits(os.fstat(fh.fileno()).st_size, f"reading {path}")
            data = fh.read()
    except HybridError as e:
        if str(e).endswith("weights file not found"):
            raise
        why = str(e).removeprefix(f"{path}: ").removeprefix("weights file ")
        raise HybridError(f"{path}: cannot read the weights file ({why})") from None
    except OSError as e:  # an I/O error
        raise HybridError(f"{path}: cannot read the weights file ({e.strerror or e})") from None
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
        raise HybridError(
            f"{source}: tensors do not match the model config "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''})"
        )
    for name, t in tensors.items():
        if tuple(t.shape) != tuple(expected[name].shape):
            raise HybridError(
                f"{source}: tensor {name!r} has shape {tuple(t.shape)}, the config needs {tuple(expected[name].shape)}"
            )
    model.load_state_dict(tensors, strict=False)


def load_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    load_weights_into(model, read_safetensors(path), str(path))
