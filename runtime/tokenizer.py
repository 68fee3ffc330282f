"""Tokenizers: byte level (enwik8 style) and word level (WikiText style). Pure Python + numpy.

Saved as `tokenizer.json` beside a model:
    {"type": "byte", "vocab_size": 256}
    {"type": "word", "vocab": ["<unk>", "<eos>", ...], "unk": "<unk>", "eos": "<eos>"}
"""

from __future__ import annotations

import codecs
import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from hybrid.runtime.errors import HybridError
from hybrid.runtime.files import atomic_write_text, read_json

UNK, EOS = "<unk>", "<eos>"


class ByteTokenizer:
    """Every byte is a token: no unknowns, lossless for any text (UTF-8 is split into its bytes)."""

    kind = "byte"
    vocab_size = 256
    unit = "byte"  # what bits-per-X is reported over

    def encode(self, text: str | bytes, eos_at_end: bool = True) -> np.ndarray:
        # eos_at_end is for WordTokenizer compatibility: bytes have no end-of-line token.
        # surrogateescape: a command-line argument with invalid UTF-8 reaches Python as lone
        # surrogates; this gives back the original bytes instead of failing.
        try:
            data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
        except UnicodeEncodeError as e:
            raise HybridError(f"text has a character that is not valid Unicode at position {e.start}") from None
        return np.frombuffer(data, dtype=np.uint8).astype(np.int64)

    def unknown_words(self, text: str) -> list[str]:
        return []  # every byte is in the vocabulary

    def decoder(self) -> "ByteDecoder":
        return ByteDecoder()

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return bytes(int(i) for i in ids)

    def to_json(self) -> dict:
        return {"type": "byte", "vocab_size": 256}


class WordTokenizer:
    """Whitespace-separated words, `<eos>` at each line end, `<unk>` for words outside the vocabulary."""

    kind = "word"
    unit = "word"

    def __init__(self, vocab: list[str], unk: str = UNK, eos: str = EOS):
        if unk not in vocab or eos not in vocab:
            raise HybridError(f"word vocabulary must contain {unk!r} and {eos!r}")
        if len(set(vocab)) != len(vocab):
            raise HybridError("word vocabulary has duplicate entries")
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.unk, self.eos = unk, eos
        self.unk_id, self.eos_id = self.index[unk], self.index[eos]

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @classmethod
    def build(cls, lines: Iterable[str], min_count: int = 1, max_size: int | None = None) -> "WordTokenizer":
        """Vocabulary from a corpus: words seen at least `min_count` times, most frequent first."""
        return cls.from_counts(Counter(w for line in lines for w in line.split()), min_count, max_size)

    @classmethod
    def from_counts(cls, counts: Counter, min_count: int = 1, max_size: int | None = None) -> "WordTokenizer":
        """`<unk>`, `<eos>`, then the words counted at least `min_count` times by frequency (ties by
        spelling), cut to `max_size` entries in all."""
        counts = Counter(counts)
        counts.pop(UNK, None)
        counts.pop(EOS, None)
        words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
        if max_size is not None:
            words = words[: max(0, max_size - 2)]
        return cls([UNK, EOS] + words)

    def encode(self, text: str, eos_at_end: bool = True) -> np.ndarray:
        """Ids of the words, `<eos>` after each line. eos_at_end=False leaves out the `<eos>` of a
        last line that has no line break (a prompt or a piece of a stream, not a whole text)."""
        ids: list[int] = []
        get, unk = self.index.get, self.unk_id
        for line in text.splitlines():
            ids.extend(get(w, unk) for w in line.split())
            ids.append(self.eos_id)
        if not eos_at_end and ids and text.splitlines(keepends=True)[-1] == text.splitlines()[-1]:
            ids.pop()
        return np.asarray(ids, dtype=np.int64)

    def unknown_words(self, text: str) -> list[str]:
        """Words of `text` outside the vocabulary (encoded as `<unk>`), in order of appearance."""
        seen: dict[str, None] = {}
        for w in text.split():
            if w not in self.index:
                seen.setdefault(w)
        return list(seen)

    def decoder(self) -> "WordDecoder":
        return WordDecoder(self)

    def decode(self, ids: Iterable[int]) -> str:
        out: list[str] = []
        for i in ids:
            w = self.vocab[int(i)]
            out.append("\n" if w == self.eos else w + " ")
        return "".join(out).replace(" \n", "\n")

    def to_json(self) -> dict:
        return {"type": "word", "vocab": self.vocab, "unk": self.unk, "eos": self.eos}


Tokenizer = ByteTokenizer | WordTokenizer


class ByteDecoder:
    """Incremental detokenizer for generated bytes: holds an incomplete UTF-8 character back
    until its last byte arrives (invalid sequences become U+FFFD, as in decode())."""

    def __init__(self):
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        return self._utf8.decode(bytes((int(token),)))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


class WordDecoder:
    """Incremental detokenizer for generated words: a space between words, a line break for `<eos>`."""

    def __init__(self, tok: "WordTokenizer"):
        self.tok = tok
        self.line_start = True

    def push(self, token: int) -> str:
        if int(token) == self.tok.eos_id:
            self.line_start = True
            return "\n"
        sep = "" if self.line_start else " "
        self.line_start = False
        return sep + self.tok.vocab[int(token)]

    def flush(self) -> str:
        return ""


MAX_VOCAB = 1 << 26  # words; the graph's logits are [batch, sequence, vocab]: far fewer fit any machine
TOKENIZER_MAX = 256 << 20  # bytes of tokenizer.json: a vocabulary of millions of words is ~100 MiB


def tokenizer_from_json(obj: dict, source: str = "tokenizer.json") -> Tokenizer:
    """A tokenizer from its JSON; every problem is one line naming `source` (the file)."""
    kind = obj.get("type") if isinstance(obj, dict) else None
    if kind == "byte":
        if obj.get("vocab_size", 256) != 256 or isinstance(obj.get("vocab_size"), bool):
            raise HybridError(f"{source}: a byte tokenizer has vocab_size 256, got {obj.get('vocab_size')!r}")
        return ByteTokenizer()
    if kind == "word":
        vocab, unk, eos = obj.get("vocab"), obj.get("unk", UNK), obj.get("eos", EOS)
        if not isinstance(vocab, list) or not all(isinstance(w, str) and w for w in vocab):
            raise HybridError(f"{source}: 'vocab' must be a list of non-empty strings")
        if not 2 <= len(vocab) <= MAX_VOCAB:
            raise HybridError(f"{source}: 'vocab' must hold 2 to {MAX_VOCAB:,} words, got {len(vocab):,}")
        if not isinstance(unk, str) or not isinstance(eos, str):
            raise HybridError(f"{source}: 'unk' and 'eos' must be strings")
        try:
            return WordTokenizer(vocab, unk, eos)
        except HybridError as e:
            raise HybridError(f"{source}: {e}") from None
    raise HybridError(f"{source}: unknown tokenizer type {kind!r} (expected 'byte' or 'word')")


def save_tokenizer(tok: Tokenizer, path: str | os.PathLike) -> None:
    atomic_write_text(path, json.dumps(tok.to_json(), ensure_ascii=False))


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    path = Path(path)
    return tokenizer_from_json(read_json(path, "tokenizer file", TOKENIZER_MAX), str(path))
