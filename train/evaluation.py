"""Validation in PyTorch: the runtime's evaluation protocol (runtime/scoring.py) with the PyTorch
model as the step, so a run's valid bpc, `hybrid eval RUN_DIR` and `hybrid eval MODEL_DIR` are
one computation on two engines.

The step asks the model for the NLL of the targets directly (model(x, state, targets=y)) rather
than for logits: an adaptive softmax never builds the full vocabulary, and on CUDA the forward
runs under the same bf16 autocast as training.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
from tqdm.auto import tqdm

from hybrid.runtime.scoring import score_streams, shard_rows, stream_layout
from hybrid.runtime.textfile import ArraySource
from hybrid.train import distributed
from hybrid.train.config import TrainConfig
from hybrid.train.model import HybridLM


def autocast_for(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def _eval_sums(
    model: HybridLM,
    tokens: np.ndarray,
    batch_size: int,
    seq_len: int,
    max_tokens: int = 0,
    device=None,
    progress: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> tuple[float, int]:
    """(summed NLL in nats, token count) over `tokens` in B parallel streams with carried state;
    with shard=(rank, world) only that process's share of the streams."""
    device = device or next(model.parameters()).device
    n = len(tokens) if not max_tokens else min(len(tokens), max_tokens + 1)
    B, L = stream_layout(n, batch_size)
    sums = [0.0, 0]

    def step(x: np.ndarray, y: np.ndarray, state):
        x = torch.from_numpy(x).to(device)
        y = torch.from_numpy(y).to(device)
        with autocast_for(device):
            nll, state = model(x, state, targets=y)
        sums[0] += nll.float().sum().item()
        sums[1] += y.numel()
        return state

    was_training = model.training
    model.eval()
    bar = tqdm(total=len(shard_rows(B, shard)) * L, desc="eval", unit="tok", leave=False, disable=not progress)
    try:
        score_streams(
            step,
            lambda b: model.initial_state(b, device=device),
            ArraySource(tokens),
            n,
            batch_size,
            seq_len,
            shard=shard,
            bar=bar,
        )
    finally:
        bar.close()
        model.train(was_training)
    return sums[0], sums[1]


def evaluate(
    model: HybridLM,
    tokens: np.ndarray,
    batch_size: int,
    seq_len: int,
    max_tokens: int = 0,
    device=None,
    progress: bool = False,
) -> tuple[float, int]:
    """Mean NLL (nats/token) over `tokens`, streamed in B parallel streams with carried state."""
    total, count = _eval_sums(model, tokens, batch_size, seq_len, max_tokens, device, progress)
    return total / max(count, 1), count


def evaluate_shared(
    model, tokens, cfg: TrainConfig, max_tokens: int, dd: distributed.Dist, progress: bool = False
) -> tuple[float, int]:
    """evaluate() with the streams split over the processes and the sums added up."""
    total, count = _eval_sums(
        model, tokens, cfg.batch_size, cfg.seq_len, max_tokens, dd.device, progress, shard=(dd.rank, dd.world)
    )
    if dd.on:
        sums = dd.all_sum(torch.tensor([total, float(count)], dtype=torch.float64, device=dd.device)).tolist()
        total, count = sums[0], int(sums[1])
    return total / max(count, 1), count
