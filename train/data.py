"""Text corpora as token arrays, and contiguous-stream batching.

Training follows Transformer-XL: the token stream is cut into B parallel contiguous streams; each
step reads the next segment of T tokens from every stream, and the model carries its state
(attention memory, QRNN cells) from one segment to the next. The batch for a step is a pure
function of the step number, so resuming a run reproduces the exact data order.

`load_text_corpus` reads one file into memory; the standard corpora (enwik8, WikiText) and
folders of your own text come through train/sources.py, encoded once into a memory-mapped cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hybrid.runtime.errors import HybridError
from hybrid.runtime.files import open_regular
from hybrid.runtime.tokenizer import ByteTokenizer, Tokenizer, WordTokenizer

CORPORA = Path(__file__).parent / "corpora"
BUILTIN = CORPORA / "tinyshakespeare" / "input.txt"


@dataclass
class Corpus:
    name: str
    tokenizer: Tokenizer
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    # Where the tokens came from (train/sources.py fills it: cache entry, source fingerprint, ...).
    meta: dict = field(default_factory=dict)

    def describe(self) -> str:
        return (
            f"{self.name}: {self.tokenizer.kind} tokens, vocab {self.tokenizer.vocab_size}, "
            f"train {len(self.train):,} / valid {len(self.valid):,} / test {len(self.test):,}"
        )


def split_points(n: int) -> tuple[int, int]:
    """Where the 90/5/5 split of n items (bytes, or lines of words) cuts: train [:a], valid [a:b],
    test [b:] - enwik8's convention (exactly 90M / 5M / 5M of its 10^8 bytes). Every loader uses it."""
    return n * 90 // 100, n * 95 // 100


def split_90_5_5(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The enwik8 convention: first 90% train, next 5% valid, last 5% test."""
    a, b = split_points(len(tokens))
    return tokens[:a], tokens[a:b], tokens[b:]


def read_text_file(path: Path) -> str:
    with open_regular(path, what="corpus file") as fh:  # a FIFO or a device is refused, not read forever
        data = fh.read()
    if not data.strip():
        raise HybridError(f"{path}: corpus is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HybridError(f"{path}: not UTF-8 text (bad byte at offset {e.start})") from None


def load_text_corpus(
    path: str | Path | None = None, tokenizer: str = "byte", min_count: int = 1, max_vocab: int | None = None
) -> Corpus:
    """One text file, split 90/5/5. Byte level, or word level with a vocabulary from the train part."""
    path = Path(path) if path is not None else BUILTIN
    text = read_text_file(path)
    if tokenizer == "byte":
        tok: Tokenizer = ByteTokenizer()
        train, valid, test = split_90_5_5(tok.encode(text).astype(np.int32))
    elif tokenizer == "word":
        lines = text.splitlines()
        a, b = split_points(len(lines))
        parts = lines[:a], lines[a:b], lines[b:]
        tok = WordTokenizer.build(parts[0], min_count=min_count, max_size=max_vocab)
        train, valid, test = (tok.encode("\n".join(p)).astype(np.int32) for p in parts)
    else:
        raise HybridError(f"unknown tokenizer {tokenizer!r} (expected 'byte' or 'word')")
    return Corpus(path.name, tok, train, valid, test)


def check_stream_length(n: int, batch_size: int, seq_len: int, what: str = "train split") -> int:
    """The length of each of B streams cut from n tokens; refused when shorter than one segment."""
    stream_len = (n - 1) // batch_size
    if stream_len < seq_len + 1:
        raise HybridError(
            f"{what} has {n:,} tokens: too short for {batch_size} streams "
            f"of one {seq_len}-token segment; use a smaller --batch-size or --seq-len"
        )
    return stream_len


class StreamBatcher:
    """Batches of B contiguous streams, T tokens per segment; batch(step) is deterministic."""

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, what: str = "train split"):
        self.B, self.T = batch_size, seq_len
        self.stream_len = check_stream_length(len(tokens), batch_size, seq_len, what)
        n = self.stream_len * batch_size
        self.inputs = np.ascontiguousarray(tokens[:n].reshape(batch_size, self.stream_len))
        self.targets = np.ascontiguousarray(tokens[1 : n + 1].reshape(batch_size, self.stream_len))
        self.segments_per_epoch = self.stream_len // seq_len

    def starts_epoch(self, step: int) -> bool:
        """True when this step begins a new pass over the streams (carried state must be reset)."""
        return step % self.segments_per_epoch == 0

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        p = (step % self.segments_per_epoch) * self.T
        return self.inputs[:, p : p + self.T], self.targets[:, p : p + self.T]
