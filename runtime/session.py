"""A stateful stream for apps: feed text as it arrives, read the next-token distribution, generate.

    s = model.session()
    s.feed("ROMEO: ")                 # any number of calls; the state carries across them
    for piece in s.stream(max_tokens=100, temperature=0.8, seed=1, stop=["\\n\\n"]):
        print(piece, end="", flush=True)
    s.feed("more text")               # continues after what was generated

Word models take text word by word: a trailing word without whitespace after it is held until
the next feed() or generation (it may be the first half of a word), and so is a trailing "\r"
(it may be the first half of "\r\n", one line break). Unknown words become `<unk>`. An empty
prompt starts generation from a line break (byte models) or `<eos>` (word models): the start of
a line, which is where a text stream naturally begins.

`s.state` is the stream's own and changes as it goes (feeding writes the attention memory into
its arrays in place): copy it (`{k: v.copy() for k, v in s.state.items()}`) to keep a snapshot.

Generated text comes out whole: a UTF-8 character whose bytes end one stream() call and begin
the next is held back and yielded by the next call. feed() and reset() drop such a held partial
character (the text fed next breaks it).
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator

import numpy as np

from hybrid.runtime.errors import HybridError, is_integer
from hybrid.runtime.generate import Sampling, StopFilter, sample
from hybrid.runtime.scoring import log_softmax
from hybrid.runtime.textfile import check_token_range


class Session:
    def __init__(self, model, segment: int = 128):
        if not is_integer(segment) or segment <= 0:
            raise HybridError(f"segment must be a positive integer, got {segment!r}")
        self.model = model
        self.tokenizer = model.tokenizer
        self.segment = int(segment)
        self.last_stats: dict = {}
        self._stepper = None  # made on first generation, reused after (its bindings cost ~0.4 ms)
        self.reset()

    def reset(self) -> None:
        """Back to a fresh stream (zero state)."""
        self.state = self.model.initial_state(1)
        self.logits: np.ndarray | None = None  # next-token logits after the last token fed
        self.n_tokens = 0
        self.last_token: int | None = None
        self._partial = ""
        self._decoder = None  # the generated text's detokenizer, kept across stream() calls
        self._after_space = False  # word models: the text fed last ended in whitespace

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
            if cut > 0 and text[cut - 1] == "\r":
                cut -= 1  # "\r" then "\n" in the next feed is one line break, not two
            text, self._partial = text[:cut], text[cut:]
        n = self.feed_tokens(self.tokenizer.encode(text, eos_at_end=False))
        if text:
            self._after_space = not self._partial and text[-1].isspace()
        self._decoder = None
        return n

    def feed_tokens(self, ids: Iterable[int]) -> int:
        """Append token ids to the stream; returns how many."""
        ids = _token_ids(ids, self.model.vocab_size)
        if ids.size == 0:
            return 0
        # The stream's state is its own: feeding writes the attention memory into it in place.
        for logits, self.state in self.model.forward_segments(ids, self.state, self.segment, in_place=True):
            pass
        self.logits = logits[0, -1].copy()
        self.n_tokens += ids.shape[1]
        self.last_token = int(ids[0, -1])
        self._decoder = None
        self._after_space = False
        return ids.shape[1]

    def flush(self) -> None:
        """Feed a held-back partial word (word models)."""
        if self._partial:
            text, self._partial = self._partial, ""
            self.feed_tokens(self.tokenizer.encode(text, eos_at_end=False))
            self._after_space = text[-1].isspace()

    def _pending(self) -> list[int]:
        """What generation feeds first: a held partial word, else (nothing fed yet) the start of a line."""
        if self._partial:
            return self.tokenizer.encode(self._partial, eos_at_end=False).tolist()
        if self.logits is None:
            return [self.tokenizer.eos_id if self.tokenizer.kind == "word" else ord("\n")]
        return []

    def _start(self) -> None:
        if self._partial:
            self.flush()
        elif self.logits is None:
            self.feed_tokens(self._pending())

    # -- reading -----------------------------------------------------------------------------------
    def next_token_logprobs(self) -> np.ndarray:
        """log P(next token) over the vocabulary [vocab], given everything fed so far. Reading
        changes nothing: a held partial word (or the start of a line) is run on a copy of the state."""
        logits = self.logits
        if pending := self._pending():
            ids = np.asarray(pending, dtype=np.int64).reshape(1, -1)
            for out, _ in self.model.forward_segments(ids, self.state, self.segment):
                pass
            logits = out[0, -1]
        return log_softmax(logits.astype(np.float64))

    # -- generating ----------------------------------------------------------------------------------
    def generate(self, max_tokens: int = 200, **sampling) -> str:
        """The generated text as one string; options as in stream()."""
        return "".join(self.stream(max_tokens=max_tokens, **sampling))

    def stream(
        self,
        max_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Iterable[str] = (),
        final: bool = False,
    ) -> Iterator[str]:
        """Generate up to max_tokens, yielding text as it comes; ends early at a stop string (the
        stop string is not yielded). The generated tokens stay in the stream's state. A character
        cut off at the end is held for the next call, or with `final` (no call follows) yielded as
        U+FFFD, as the tokenizer's decode() would."""
        cfg = Sampling(max_tokens, temperature, top_k, top_p, seed, stop).check()
        self._start()
        return self._stream(cfg, final=final)

    def generate_tokens(
        self,
        max_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> list[int]:
        """Generated token ids (no detokenizing, no stop strings)."""
        cfg = Sampling(max_tokens, temperature, top_k, top_p, seed).check()
        self._start()
        return list(self._tokens(cfg))

    def _tokens(self, cfg: Sampling) -> Iterator[int]:
        """Sample, step, repeat; the stream keeps whatever was generated, even if the caller stops early."""
        rng = np.random.default_rng(cfg.seed)
        if self._stepper is None:
            self._stepper = self.model.stepper(self.state)
        else:
            self._stepper.load(self.state)
        stepper = self._stepper
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
            self.last_stats = {
                "tokens": n,
                "seconds": dt,
                "ms_per_token": 1e3 * dt / max(n, 1),
                "tokens_per_s": n / dt if dt > 0 else 0.0,
                "stopped": False,
            }

    def _stream(self, cfg: Sampling, final: bool = False) -> Iterator[str]:
        """Text pieces as generated. The detokenizer lives on across calls (a character may span
        two), unless `final`: then an incomplete character at the end comes out as U+FFFD."""
        if self._decoder is None:
            self._decoder = self.tokenizer.decoder()
            if self.tokenizer.kind == "word":
                self._decoder.line_start = self.last_token == self.tokenizer.eos_id or self._after_space
        decoder = self._decoder
        stops = StopFilter(cfg.stop)
        tokens = self._tokens(cfg)
        try:
            for token in tokens:
                piece = stops.push(decoder.push(token))
                if piece:
                    yield piece
                if stops.stopped:
                    break
            tail = stops.push(decoder.flush() if final else "") + stops.flush()
            if tail:
                yield tail
        finally:
            tokens.close()  # runs _tokens' cleanup now: the state is saved before we return
            self.last_stats["stopped"] = stops.stopped
            if final:
                self._decoder = None


def _token_ids(ids, vocab_size: int) -> np.ndarray:
    """Token ids as a [1, N] int64 array, or a one-line error (not integers, out of range)."""
    if isinstance(ids, (str, bytes)):
        raise HybridError(f"token ids must be integers, got a {type(ids).__name__}; feed() takes text")
    try:
        arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids))
    except TypeError:
        raise HybridError(f"token ids must be an iterable of integers, got {type(ids).__name__}") from None
    if arr.size and arr.dtype.kind not in "iu":
        raise HybridError(f"token ids must be integers, got {arr.dtype} values")
    arr = arr.astype(np.int64).reshape(1, -1)
    check_token_range(arr, vocab_size)
    return arr
