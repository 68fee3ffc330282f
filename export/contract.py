"""The model directory's config.json (docs/model-directory.md): write it, and read it back strictly.

Imports only the standard library, so any reader can use it without torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from hybrid.runtime.errors import HybridError

FORMAT = "hybrid-onnx"
FORMAT_VERSION = 1


def model_config_json(model_cfg: dict, state_shapes: dict[str, tuple], output_names: dict[str, str],
                      metric: str, opset: int, files: dict[str, str]) -> dict:
    """config.json for a model directory; `state_shapes` are for batch 1 (batch is dynamic)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_cfg,
        "tokenizer": "tokenizer.json",
        "metric": metric,
        "opset": opset,
        "files": files,
        "inputs": {"input_ids": {"dtype": "int64", "shape": ["batch", "sequence"]}},
        "outputs": {"logits": {"dtype": "float32", "shape": ["batch", "sequence", model_cfg["vocab_size"]]}},
        "state": [{"input": name, "output": output_names[name], "dtype": "float32",
                   "shape": ["batch", *shape[1:]]} for name, shape in state_shapes.items()],
    }


def read_model_config(model_dir: str | Path) -> dict:
    """config.json of a model directory; refuses another format or a version this code does not know."""
    path = Path(model_dir) / "config.json"
    if not Path(model_dir).is_dir():
        raise HybridError(f"{model_dir}: model directory not found")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HybridError(f"{path}: not found (not a model directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HybridError(f"{path}: unreadable ({e.__class__.__name__}: {e})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        got = obj.get("format") if isinstance(obj, dict) else None
        raise HybridError(f"{path}: not a hybrid model directory config (format {got!r}, expected {FORMAT!r})")
    version = obj.get("format_version")
    if version != FORMAT_VERSION:
        raise HybridError(f"{path}: format_version {version!r} is not supported (this hybrid reads version "
                          f"{FORMAT_VERSION}); re-export the model or upgrade hybrid")
    return obj
