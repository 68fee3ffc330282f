"""The model directory's config.json (docs/model-directory.md): the writer. The reader is the
runtime's (runtime/modeldir.py: open_model_dir), which refuses unknown formats and versions."""

from __future__ import annotations

# The runtime reads the contract (runtime/modeldir.py); the writer takes its format and version
# from there, so the two cannot drift apart.
from hybrid.runtime.modeldir import ATTENTION_MASK, FORMAT, FORMAT_VERSION


TOKENIZER = "hybrid_tokenizer.json"  # the project's tokenizer; tokenizer.json is Hugging Face's (genai.py)


def model_config_json(
    model_cfg: dict,
    state_shapes: dict[str, tuple],
    output_names: dict[str, str],
    metric: str,
    opset: int,
    files: dict[str, str],
    attention_mask: bool = False,
    extra: dict | None = None,
) -> dict:
    """config.json for a model directory; `state_shapes` are for batch 1 (batch is dynamic);
    `attention_mask`: the graph takes one (a model with an attention memory); `extra`: more
    entries (the genai config's name, ORT-format files)."""
    inputs = {"input_ids": {"dtype": "int64", "shape": ["batch", "sequence"]}}
    if attention_mask:
        inputs[ATTENTION_MASK] = {"dtype": "int64", "shape": ["batch", "total_sequence_length"]}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_cfg,
        "tokenizer": TOKENIZER,
        "metric": metric,
        "opset": opset,
        "files": files,
        **(extra or {}),
        "inputs": inputs,
        "outputs": {"logits": {"dtype": "float32", "shape": ["batch", "sequence", model_cfg["vocab_size"]]}},
        "state": [
            {"input": name, "output": output_names[name], "dtype": "float32", "shape": ["batch", *shape[1:]]}
            for name, shape in state_shapes.items()
        ],
    }
