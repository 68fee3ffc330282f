"""The evaluation protocol, once: how a text is laid out as streams, scored with carried state,
and turned into bits per character or perplexity.

Every number the project reports about a model's quality comes through here: training's
validation (train/evaluation.py runs the PyTorch model as the step), `hybrid eval` and the API
(runtime/evaluate.py, onnxruntime), and the exporter's self-check (which scores through
runtime/evaluate.py itself), so a figure in the export report is the figure `hybrid eval` prints.

Streams: the n tokens are cut into B contiguous streams, B = min(streams, (n - 1) // 2), each
L = (n - 1) // B tokens long; stream b covers tokens [b*L, (b+1)*L) and predicts the next one.
Each stream is read in segments of T tokens with the model's state carried from one to the next,
so every token is scored with its full recurrent context and memory stays flat.

Needs numpy only.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from hybrid.runtime.errors import HybridError

WINDOW = 16  # segments read from the source at a time
# Perplexity is exp(mean NLL); exp overflows float64 above ~709.78 nats, so a diverged model
# reads as a huge, finite perplexity rather than inf (which JSON cannot hold).
MAX_PPL_NLL = 700.0


def metric_for(tokenizer_kind: str) -> str:
    """bpc for byte models, ppl for word models."""
    return "bpc" if tokenizer_kind == "byte" else "ppl"


def metric_value(nll: float, metric: str) -> float:
    """Bits per character (mean NLL in nats / ln 2 per byte) or perplexity (exp of mean NLL)."""
    return nll / math.log(2) if metric == "bpc" else math.exp(min(nll, MAX_PPL_NLL))


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log-softmax over the last axis, max-subtracted, in the logits' own precision."""
    m = logits.max(axis=-1, keepdims=True)
    z = logits - m
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def token_nll(logits: np.ndarray, targets: np.ndarray, work: np.ndarray | None = None) -> np.ndarray:
    """NLL in nats of each target under [N, V] logits. `work`, a reusable float32 buffer of at
    least N*V elements, saves allocating (and page-faulting) a fresh temporary per segment."""
    m = logits.max(axis=1, keepdims=True)
    z = np.subtract(logits, m, out=None if work is None else work.reshape(-1)[: logits.size].reshape(logits.shape))
    np.exp(z, out=z)
    return np.log(z.sum(axis=1)) + m[:, 0] - logits[np.arange(len(targets)), targets]


def stream_layout(n: int, streams: int) -> tuple[int, int]:
    """(B, L): how many streams n tokens make, and how long each one is."""
    if n < 2:
        raise HybridError(f"too short to evaluate ({n} token{'s' if n != 1 else ''}; need at least 2)")
    B = max(1, min(streams, (n - 1) // 2))
    return B, (n - 1) // B


Step = Callable[[np.ndarray, np.ndarray, object], object]  # (inputs [b, t], targets [b, t], state) -> state


def score_streams(
    step: Step,
    initial_state: Callable[[int], object],
    source,
    n: int,
    streams: int,
    segment: int,
    shard: tuple[int, int] = (0, 1),
    bar=None,
) -> dict:
    """Run the streams protocol over the first n tokens of `source` (`read(start, count)`).

    `step(x, y, state)` scores one segment of every stream held here (it keeps its own sums) and
    returns the state to carry; `initial_state(b)` is a fresh state for b streams. With
    shard=(rank, world) only that process's share of the streams is scored: rows
    np.array_split(range(B), world)[rank] (none for a rank beyond B).
    """
    B, L = stream_layout(n, streams)
    rows = shard_rows(B, shard)
    state = initial_state(len(rows)) if len(rows) else None
    for w in range(0, L, segment * WINDOW):
        width = min(segment * WINDOW, L - w)
        # Stream b's tokens w .. w+width, plus the next one as the last target.
        block = np.stack([source.read(b * L + w, width + 1) for b in rows]) if len(rows) else None
        for p in range(0, width, segment):
            t = min(segment, width - p)
            if block is not None:
                state = step(block[:, p : p + t], block[:, p + 1 : p + 1 + t], state)
            if bar is not None:
                bar.update(len(rows) * t)
    return {"protocol": "streams", "streams": B, "segment": segment, "tokens_processed": B * L}


def shard_rows(streams: int, shard: tuple[int, int] = (0, 1)) -> np.ndarray:
    """The streams (of `streams`) that process shard[0] of shard[1] scores."""
    return np.array_split(np.arange(streams), shard[1])[shard[0]]
