"""Sampling and stop strings for generation (numpy only).

sample(): temperature, then top-k, then top-p (nucleus), then one draw from the seeded generator;
temperature 0 is greedy (argmax). The order and the tie rules are fixed, so a seed reproduces a
generation exactly on the same model file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hybrid.runtime.errors import HybridError, is_integer, is_number


@dataclass
class Sampling:
    max_tokens: int = 200
    temperature: float = 0.8
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    seed: int | None = None  # None: fresh randomness
    stop: list[str] = field(default_factory=list)

    def check(self) -> "Sampling":
        def bad(msg):
            raise HybridError(msg)

        if not is_integer(self.max_tokens) or self.max_tokens <= 0:
            bad(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not is_number(self.temperature) or not (0 <= self.temperature < float("inf")):
            bad(f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if not is_integer(self.top_k) or self.top_k < 0:
            bad(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not is_number(self.top_p) or not (0 < self.top_p <= 1):
            bad(f"top_p must be in (0, 1] (1 = off), got {self.top_p!r}")
        if self.seed is not None and (not is_integer(self.seed) or self.seed < 0):
            bad(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.stop is None:
            self.stop = []
        elif isinstance(self.stop, str):
            self.stop = [self.stop]
        else:
            try:
                self.stop = list(self.stop)
            except TypeError:
                bad(f"stop must be a string or a list of strings, got {type(self.stop).__name__}")
        if not all(isinstance(s, str) and s for s in self.stop):
            bad("stop strings must be non-empty strings")
        self.max_tokens, self.top_k = int(self.max_tokens), int(self.top_k)
        self.temperature, self.top_p = float(self.temperature), float(self.top_p)
        self.seed = None if self.seed is None else int(self.seed)
        return self


def filtered_probs(logits: np.ndarray, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> np.ndarray:
    """The distribution sample() draws from (float64, sums to 1): softmax(logits / temperature),
    cut to the top_k most likely tokens (ties at the k-th value all stay), then to the smallest
    set of most likely tokens whose mass reaches top_p (the most likely token always stays)."""
    x = logits.astype(np.float64)
    with np.errstate(over="ignore"):  # max first: a tiny temperature then gives -inf, never inf - inf
        x = (x - x.max()) / temperature
    V = x.shape[0]
    if 0 < top_k < V:
        kth = np.partition(x, V - top_k)[V - top_k]
        x = np.where(x >= kth, x, -np.inf)
    p = np.exp(x - x.max())
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        sorted_p = p[order]
        keep = (np.cumsum(sorted_p) - sorted_p) < top_p  # mass before this token is short of top_p
        q = np.zeros_like(p)
        q[order[keep]] = sorted_p[keep]
        p = q / q.sum()
    return p


def sample(
    logits: np.ndarray,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    rng: np.random.Generator | None = None,
) -> int:
    """One token id from next-token logits [vocab]; temperature 0 (or top_k 1) is argmax."""
    if temperature == 0 or top_k == 1:
        return int(np.argmax(logits))
    p = filtered_probs(logits, temperature, top_k, top_p)
    rng = rng if rng is not None else np.random.default_rng()
    cdf = np.cumsum(p)
    # One uniform draw per token, inverted through the CDF: the same seed, the same tokens.
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(p) - 1))


class StopFilter:
    """Cuts generated text at the first stop string. push() returns the text that is safe to show:
    anything that could still become the start of a stop string is held back until it cannot."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def push(self, text: str) -> str:
        if self.stopped:
            return ""
        self.pending += text
        if not self.stops:
            out, self.pending = self.pending, ""
            return out
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.pending = self.pending[: min(hits)], ""
            return out
        # Hold back the longest tail that is a proper prefix of some stop string.
        hold = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(s[:n]):
                    hold = n
                    break
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out
