"""Tokenizers: byte level (enwik8 style) and word level (WikiText style). Pure Python + numpy.

Saved as `tokenizer.json` beside a model:
    {"type": "byte", "vocab_size": 256}
    {"type": "word", "vocab": ["<unk>", "<eos>", ...], "unk": "<unk>", "eos": "<eos>"}
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from hybrid.runtime.errors import HybridError

UNK, EOS = "<unk>", "<eos>"


class ByteTokenizer:
    """Every byte is a token: no unknowns, lossless for any text (UTF-8 is split into its bytes)."""

    kind = "byte"
    vocab_size = 256
    unit = "byte"  # what bits-per-X is reported over

    def encode(self, text: str | bytes) -> np.ndarray:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return np.frombuffer(data, dtype=np.uint8).astype(np.int64)

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
        counts = Counter(w for line in lines for w in line.split())
        counts.pop(UNK, None)
        counts.pop(EOS, None)
        words = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
        if max_size is not None:
            words = words[: max(0, max_size - 2)]
        return cls([UNK, EOS] + words)

    def encode(self, text: str) -> np.ndarray:
        ids: list[int] = []
        get, unk = self.index.get, self.unk_id
        for line in text.splitlines():
            ids.extend(get(w, unk) for w in line.split())
            ids.append(self.eos_id)
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        out: list[str] = []
        for i in ids:
            w = self.vocab[int(i)]
            out.append("\n" if w == self.eos else w + " ")
        return "".join(out).replace(" \n", "\n")

    def to_json(self) -> dict:
        return {"type": "word", "vocab": self.vocab, "unk": self.unk, "eos": self.eos}


Tokenizer = ByteTokenizer | WordTokenizer


def tokenizer_from_json(obj: dict, source: str = "tokenizer.json") -> Tokenizer:
    kind = obj.get("type") if isinstance(obj, dict) else None
    if kind == "byte":
        return ByteTokenizer()
    if kind == "word":
        vocab = obj.get("vocab")
        if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
            raise HybridError(f"{source}: 'vocab' must be a list of strings")
        return WordTokenizer(vocab, obj.get("unk", UNK), obj.get("eos", EOS))
    raise HybridError(f"{source}: unknown tokenizer type {kind!r} (expected 'byte' or 'word')")


def save_tokenizer(tok: Tokenizer, path: str | os.PathLike) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(tok.to_json(), ensure_ascii=False))
    os.replace(tmp, path)


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HybridError(f"{path}: tokenizer file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HybridError(f"{path}: not valid JSON ({e})") from None
    return tokenizer_from_json(obj, str(path))
