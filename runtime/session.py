"""A stateful stream for apps: feed text as it arrives, read the next-token distribution, generate.

    s = model.session()
    s.feed("ROMEO: ")                 # any number of calls; the state carries across them
    for piece in s.stream(max_tokens=100, temperature=0.8, seed=1, stop=["\\n\\n"]):
        print(piece, end="", flush=True)
    s.feed("more text")               # continues after what was generated

Word models take text word by word: a trailing word without whitespace after it is held until
the next feed() or generation (it may be the first half of a word). Unknown words become `<unk>`.
An empty prompt starts generation from a line break (byte models) or `<eos>` (word models): the
start of a line, which is where a text stream naturally begins.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator

import numpy as np

from hybrid.runtime.errors import HybridError
from hybrid.runtime.generate import Sampling, StopFilter, sample


class Session:
    def __init__(self, model, segment: int = 128):
        self.model = model
        self.tokenizer = model.tokenizer
        self.segment = segment
        self.last_stats: dict = {}
        self.reset()

    def reset(self) -> None:
        """Back to a fresh stream (zero state)."""
        self.state = self.model.initial_state(1)
        self.logits: np.ndarray | None = None  # next-token logits after the last token fed
        self.n_tokens = 0
        self.last_token: int | None = None
        self._partial = ""

    # -- feeding -------------------------------------------------------------------------------
    def feed(self, text: str) -> int:
        """Append text to the stream; returns the number of tokens fed now."""
        if not isinstance(text, str):
            raise HybridError(f"feed() takes a str, got {type(text).__name__}")
        if self.tokenizer.kind == "word":
            text = self._partial + text
            cut = len(text)
            while cut > 0 and not text[cut - 1].isspace():
                cut -= 1
            text, self._partial = text[:cut], text[cut:]
        return self.feed_tokens(self.tokenizer.encode(text, eos_at_end=False))

    def feed_tokens(self, ids: Iterable[int]) -> int:
        ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64).reshape(1, -1)
        if ids.size == 0:
            return 0
        V = self.model.vocab_size
        if ids.min() < 0 or ids.max() >= V:
            raise HybridError(f"token ids must be in [0, {V}), got {int(ids.min())}..{int(ids.max())}")
        for logits, self.state in self.model.forward_segments(ids, self.state, self.segment):
            pass
        self.logits = logits[0, -1].copy()
        self.n_tokens += ids.shape[1]
        self.last_token = int(ids[0, -1])
        return ids.shape[1]

    def flush(self) -> None:
        """Feed a held-back partial word (word models)."""
        if self._partial:
            text, self._partial = self._partial, ""
            self.feed_tokens(self.tokenizer.encode(text, eos_at_end=False))

    def _start(self) -> None:
        self.flush()
        if self.logits is None:  # nothing fed: begin at the start of a line
            start = self.tokenizer.eos_id if self.tokenizer.kind == "word" else ord("\n")
            self.feed_tokens([start])

    # -- reading -----------------------------------------------------------------------------------
    def next_token_logprobs(self) -> np.ndarray:
        """log P(next token) over the vocabulary [vocab], given everything fed so far."""
        self._start()
        x = self.logits.astype(np.float64)
        m = x.max()
        return x - (m + np.log(np.exp(x - m).sum()))

    # -- generating ----------------------------------------------------------------------------------
    def generate(self, max_tokens: int = 200, **sampling) -> str:
        return "".join(self.stream(max_tokens=max_tokens, **sampling))

    def stream(self, max_tokens: int = 200, temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0,
               seed: int | None = None, stop: Iterable[str] = ()) -> Iterator[str]:
        """Generate up to max_tokens, yielding text as it comes; ends early at a stop string (the
        stop string is not yielded). The generated tokens stay in the stream's state."""
        cfg = Sampling(max_tokens, temperature, top_k, top_p, seed, list(stop) if not isinstance(stop, str) else [stop]).check()
        self._start()
        return self._stream(cfg)

    def generate_tokens(self, max_tokens: int = 200, temperature: float = 0.8, top_k: int = 0,
                        top_p: float = 1.0, seed: int | None = None) -> list[int]:
        """Generated token ids (no detokenizing, no stop strings)."""
        cfg = Sampling(max_tokens, temperature, top_k, top_p, seed).check()
        self._start()
        return list(self._tokens(cfg))

    def _tokens(self, cfg: Sampling) -> Iterator[int]:
        """Sample, step, repeat; the stream keeps whatever was generated, even if the caller stops early."""
        rng = np.random.default_rng(cfg.seed)
        stepper = self.model.stepper(self.state)
        logits, n = self.logits, 0
        t0 = time.perf_counter()
        try:
            for _ in range(cfg.max_tokens):
                token = sample(logits, cfg.temperature, cfg.top_k, cfg.top_p, rng)
                logits = stepper.step(token)
                n += 1
                self.last_token = token
                yield token
        finally:
            dt = time.perf_counter() - t0
            self.state = {k: v.copy() for k, v in stepper.state.items()}
            self.logits = np.array(logits, copy=True)
            self.n_tokens += n
            self.last_stats = {"tokens": n, "seconds": dt, "ms_per_token": 1e3 * dt / max(n, 1),
                               "tokens_per_s": n / dt if dt > 0 else 0.0, "stopped": False}

    def _stream(self, cfg: Sampling) -> Iterator[str]:
        decoder = self.tokenizer.decoder()
        if self.tokenizer.kind == "word":
            decoder.line_start = self.last_token == self.tokenizer.eos_id
        stops = StopFilter(cfg.stop)
        tokens = self._tokens(cfg)
        try:
            for token in tokens:
                piece = stops.push(decoder.push(token))
                if piece:
                    yield piece
                if stops.stopped:
                    break
            tail = stops.push(decoder.flush()) + stops.flush()
            if tail:
                yield tail
        finally:
            tokens.close()  # runs _tokens' cleanup now: the state is saved before we return
            self.last_stats["stopped"] = stops.stopped
