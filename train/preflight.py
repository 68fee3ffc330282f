"""Before a run starts: everything that would stop it later, checked while nothing has changed yet.

`hybrid train` calls check_training before it clears an --overwrite directory, and the trainer
calls it again (the Python API), so a bad setting never costs a run: the batch must split over
the processes and micro-batches, the vocabularies agree, every split holds a segment, and the
model and one training step fit in memory (estimated from the config: nothing allocated).
"""

from __future__ import annotations

import torch

from hybrid.runtime.errors import HybridError
from hybrid.runtime.limits import check_fits
from hybrid.train.config import ModelConfig, TrainConfig
from hybrid.train.data import check_stream_length


def parameter_count(cfg: ModelConfig) -> int:
    """Parameters of HybridLM(cfg), counted from the config without building it (model.py's layers;
    test_preflight holds the count to the built model's)."""
    from hybrid.train.adaptive import adaptive_parameters

    D, Di, k = cfg.d_model, cfg.d_inner, cfg.qrnn_window
    block = {"A": 2 * D + 4 * D * D, "F": 2 * D + 2 * D * Di + Di + D, "Q": 2 * D + 3 * k * D * D + 3 * D}
    if cfg.adaptive_cutoffs:
        ends = adaptive_parameters(cfg.vocab_size, D, cfg.adaptive_cutoffs, cfg.adaptive_div, cfg.tie_embeddings)
    else:
        ends = cfg.vocab_size * D * (1 if cfg.tie_embeddings else 2)
    return ends + sum(block[b] for b in cfg.pattern) + 2 * D


def check_model_fits(cfg: ModelConfig, what: str = "the model config") -> int:
    """Refuse a model whose fp32 weights alone exceed the free memory; returns its parameter count."""
    n = parameter_count(cfg)
    check_fits(
        4 * n, f"{what} (d_model {cfg.d_model}, d_inner {cfg.d_inner}, vocab {cfg.vocab_size}: {n:,} parameters)"
    )
    return n


def step_bytes(cfg: ModelConfig, batch: int, seq_len: int) -> int:
    """A lower bound of what one training step keeps for the backward pass: per token, each block's
    widest activations, the attention scores over [memory; segment], and the logits with their
    gradient."""
    D, Di, H, M, k = cfg.d_model, cfg.d_inner, cfg.n_heads, cfg.mem_len, cfg.qrnn_window
    per_block = {"A": 4 * D + 2 * H * (seq_len + M), "F": 2 * Di + 2 * D, "Q": 9 * D + k * D}
    per_token = sum(per_block[b] for b in cfg.pattern) + 2 * cfg.vocab_size
    return 4 * batch * seq_len * per_token


def check_training(
    model_cfg: ModelConfig, cfg: TrainConfig, corpus, world: int = 1, device: torch.device | None = None
) -> None:
    """Everything about a run that can be known before it starts; one line for the first problem."""
    B, T, A = cfg.batch_size, cfg.seq_len, cfg.grad_accum
    if B % (world * A):
        raise HybridError(
            f"batch size {B} must be divisible by the number of processes ({world}) times "
            f"--grad-accum ({A}): each process trains on B / processes streams in "
            f"--grad-accum micro-batches"
        )
    if model_cfg.vocab_size != corpus.tokenizer.vocab_size:
        raise HybridError(
            f"model vocab_size {model_cfg.vocab_size} differs from the corpus tokenizer's {corpus.tokenizer.vocab_size}"
        )
    check_stream_length(len(corpus.train), B, T)
    if len(corpus.valid) < 3:
        raise HybridError(f"{corpus.name}: the valid split has {len(corpus.valid)} tokens; validation needs at least 3")
    n = check_model_fits(model_cfg)
    need = 16 * n + step_bytes(model_cfg, B // world // A, T)  # weights, gradients, AdamW's two moments
    what = f"training with --batch-size {B} --seq-len {T} ({n:,} parameters)"
    if device is not None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if need > free:
            raise HybridError(
                f"{what} needs about {need / 2**30:,.1f} GiB of GPU memory, more than the "
                f"{free / 2**30:,.1f} GiB free on {device}; use a smaller value or --grad-accum"
            )
    else:
        check_fits(need, what)
