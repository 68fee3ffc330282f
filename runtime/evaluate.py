"""On-device evaluation: bits per character (byte models) or perplexity (word models) of a text.

Two protocols:

* streams (default; the trainer's `evaluate`): the text is cut into B contiguous streams, each
  read in segments of T tokens with the state carried from segment to segment, so every token
  is scored with the model's full recurrent context and memory stays flat however long the text.
  B streams side by side give each ONNX Scan step (a few microseconds whatever its size) B times
  more work. Stream b covers tokens [b*L, (b+1)*L) with L = (n-1) // B and predicts the next one.
* ctx (llama.cpp's `llama-perplexity`): chunks of N tokens, each from a fresh state, only the
  second half of each chunk scored (positions N/2 .. N-2 predict the next token). Chunks run B at
  a time, in segments of T with carried state.

With a base model (`kl_base`, e.g. the fp32 variant when evaluating int8), both run on the same
segments and the result adds KL(base || model) per token and the top-1 agreement.

Bits per character = mean NLL in nats / ln 2 (per byte); perplexity = exp(mean NLL). The stream
layout, the scoring loop and these conversions are runtime/scoring.py's, shared with training's
validation and the exporter's self-check.
"""

from __future__ import annotations

import math
import time

import numpy as np

from hybrid.runtime.errors import HybridError, is_integer
from hybrid.runtime.limits import check_fits, forward_bytes
from hybrid.runtime.progress import Progress
from hybrid.runtime.scoring import log_softmax, metric_value, score_streams, stream_layout, token_nll
from hybrid.runtime.textfile import ArraySource

__all__ = ["evaluate", "log_softmax", "metric_value", "token_nll", "ArraySource"]

KL_BLOCK = 1 << 20  # logits per block of the KL computation (8 MiB per float64 temporary)


class _Tally:
    """Running sums of NLL (and KL against a base model) over scored tokens."""

    def __init__(self, with_base: bool):
        self.nll = self.base_nll = self.kl = 0.0
        self.kl_max = 0.0
        self.same_top1 = 0
        self.count = 0
        self.with_base = with_base
        self.work = np.empty(0, dtype=np.float32)

    def add(self, logits: np.ndarray, targets: np.ndarray, base_logits: np.ndarray | None = None) -> None:
        if targets.size == 0:
            return
        if self.work.size < logits.size:
            self.work = np.empty(logits.size, dtype=np.float32)
        self.nll += float(token_nll(logits, targets, self.work).sum(dtype=np.float64))
        self.count += targets.size
        if base_logits is not None:
            self.base_nll += float(token_nll(base_logits, targets, self.work).sum(dtype=np.float64))
            # KL in float64 for accuracy, a block of rows at a time: full-size float64 copies of
            # [rows, vocab] would be 8x the logits (GiBs with a word vocabulary).
            rows = max(1, KL_BLOCK // logits.shape[1])
            for r in range(0, len(logits), rows):
                lp = log_softmax(logits[r : r + rows].astype(np.float64))
                lq = log_softmax(base_logits[r : r + rows].astype(np.float64))
                kl = (np.exp(lq) * (lq - lp)).sum(axis=1)
                self.kl += float(kl.sum())
                self.kl_max = max(self.kl_max, float(kl.max()))
            self.same_top1 += int(np.count_nonzero(logits.argmax(axis=1) == base_logits.argmax(axis=1)))


def _rows(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, x.shape[-1])


def evaluate(
    model,
    source,
    streams: int = 16,
    segment: int = 128,
    ctx: int = 0,
    base=None,
    max_tokens: int = 0,
    progress: bool = False,
    name: str = "text",
) -> dict:
    """Score a token source (see textfile.py) with `model`; returns a JSON-ready dict."""
    source = _token_source(model, source)
    streams, segment, ctx, max_tokens = _checked_layout(streams, segment, ctx, max_tokens)
    if base is not None and (
        base.vocab_size != model.vocab_size or base.tokenizer.to_json() != model.tokenizer.to_json()
    ):
        raise HybridError(f"{base.dir.path}: the KL base model has a different tokenizer than {model.dir.path}")
    n = source.n if not max_tokens else min(source.n, max_tokens + 1)
    if n < 2:
        raise HybridError(f"{name}: too short to evaluate ({n} token{'s' if n != 1 else ''}; need at least 2)")
    _check_memory(model, base, n, streams, segment, ctx)
    tally = _Tally(base is not None)
    t0 = time.perf_counter()
    if ctx:
        info = _run_ctx(model, base, source, n, streams, segment, ctx, tally, progress, name)
    else:
        info = _run_streams(model, base, source, n, streams, segment, tally, progress, name)
    seconds = time.perf_counter() - t0
    nll = tally.nll / max(tally.count, 1)
    out = {
        "metric": model.metric,
        model.metric: metric_value(nll, model.metric),
        "nll": nll,
        "bits_per_token": nll / math.log(2),
        "tokens": tally.count,
        **info,
        "seconds": seconds,
        "tokens_per_s": info["tokens_processed"] / seconds if seconds > 0 else 0.0,
        "variant": model.variant,
        "model": str(model.dir.path),
    }
    if getattr(source, "unknown", 0):
        out["unknown_tokens"] = source.unknown
    if base is not None:
        out["kl"] = _kl_summary(model, base, tally)
    return out


def _token_source(model, source):
    """A token source (textfile.py) from token ids or a source; ids in memory are checked
    against the model's vocabulary here, a file's as it is read."""
    if isinstance(source, (np.ndarray, list, tuple)):
        source = ArraySource(source)
    if not all(hasattr(source, a) for a in ("n", "read", "close")):
        raise HybridError(f"evaluate() takes token ids or a token source (textfile.py), got {type(source).__name__}")
    if isinstance(source, ArraySource):
        source.check_range(model.vocab_size)
    return source


def _checked_layout(streams, segment, ctx, max_tokens) -> tuple[int, int, int, int]:
    """The protocol's numbers checked (a user supplies them) and made plain ints."""
    for opt, v in (("streams", streams), ("segment", segment)):
        if not is_integer(v) or v <= 0:
            raise HybridError(f"{opt} must be a positive integer, got {v!r}")
    if not is_integer(ctx) or ctx < 0 or ctx == 1:
        raise HybridError(f"ctx must be 0 (off) or an integer >= 2, got {ctx!r}")
    if not is_integer(max_tokens) or max_tokens < 0:
        raise HybridError(f"max_tokens must be >= 0 (0 = whole text), got {max_tokens!r}")
    return int(streams), int(segment), int(ctx), int(max_tokens)


def _kl_summary(model, base, tally) -> dict:
    """The comparison with the KL base model: mean and max KL per token, top-1 agreement and the
    base model's own score on the same tokens."""
    bn = tally.base_nll / max(tally.count, 1)
    return {
        "base": f"{base.dir.path}:{base.variant}",
        "mean": max(tally.kl / max(tally.count, 1), 0.0),
        "max": tally.kl_max,
        "top1_agreement": tally.same_top1 / max(tally.count, 1),
        f"base_{model.metric}": metric_value(bn, model.metric),
        "base_nll": bn,
    }


def _check_memory(model, base, n, streams, segment, ctx) -> None:
    """Refuse streams x segment (as the protocol will cut this text) that cannot fit in memory:
    the graph call, and as much again for the NLL's work buffer and a KL base model."""
    if ctx:
        B, T = min(streams, max(1, n // ctx)), min(segment, ctx)
    else:
        B = max(1, min(streams, (n - 1) // 2))
        T = min(segment, max(1, (n - 1) // B))
    need = forward_bytes(model.dir.model, B, T) * (2 if base is not None else 1) + 4 * B * T * model.vocab_size
    check_fits(need, f"streams {streams} and segment {segment} ({B} x {T} tokens per graph call)")


def _run_streams(model, base, source, n, streams, segment, tally, progress, name) -> dict:
    def step(x, y, states):
        state, bstate = states
        logits, state = model.forward(x, state, in_place=True)
        blogits = None
        if base is not None:
            blogits, bstate = base.forward(x, bstate, in_place=True)
            blogits = _rows(blogits)
        tally.add(_rows(logits), y.reshape(-1), blogits)
        return state, bstate

    def initial(batch):
        return model.initial_state(batch), (base.initial_state(batch) if base is not None else None)

    B, L = stream_layout(n, streams)
    bar = Progress(B * L, desc=f"eval {name}", enabled=progress)
    info = score_streams(step, initial, source, n, streams, segment, bar=bar)
    bar.close()
    return info


def _run_ctx(model, base, source, n, streams, segment, N, tally, progress, name) -> dict:
    chunks = n // N
    if chunks == 0:
        raise HybridError(f"{name}: {n} tokens is shorter than one --ctx chunk of {N}")
    first = N // 2
    T = segment
    bar = Progress(chunks * N, desc=f"eval {name}", enabled=progress)
    for g in range(0, chunks, streams):
        group = range(g, min(chunks, g + streams))
        x_all = np.stack([source.read(c * N, N) for c in group])
        state = model.initial_state(len(group))
        bstate = base.initial_state(len(group)) if base is not None else None
        for p in range(0, N, T):
            x = x_all[:, p : p + T]
            logits, state = model.forward(x, state, in_place=True)
            if base is not None:
                blogits, bstate = base.forward(x, bstate, in_place=True)
            # Positions j in [max(p, first), min(p + T, N - 1)) predict token j + 1.
            lo, hi = max(p, first), min(p + x.shape[1], N - 1)
            if lo < hi:
                y = x_all[:, lo + 1 : hi + 1]
                sel = slice(lo - p, hi - p)
                tally.add(_rows(logits[:, sel]), y.reshape(-1), _rows(blogits[:, sel]) if base is not None else None)
            bar.update(x.size)
    bar.close()
    return {
        "protocol": "ctx",
        "ctx": N,
        "chunks": chunks,
        "streams": min(streams, chunks),
        "segment": T,
        "tokens_processed": chunks * N,
    }
