"""Token sources for evaluation: a text file read in pieces, never whole, so memory stays flat.

A source has `n` tokens and `read(start, count)`. Byte models read the file itself (its bytes are
its tokens). Word models tokenize the file once, line by line, into a temporary file of int32 ids
beside nothing else in memory. Either way the file is checked first: it must exist, hold text
(UTF-8 without NUL bytes) and not be empty.
"""

from __future__ import annotations

import codecs
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from hybrid.runtime.errors import HybridError
from hybrid.runtime.files import open_regular

CHUNK = 1 << 20  # bytes read at a time


def check_token_range(ids: np.ndarray, vocab_size: int) -> None:
    """One line naming the range when an integer token id falls outside [0, vocab_size)."""
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise HybridError(f"token ids must be in [0, {vocab_size}), got {int(ids.min())}..{int(ids.max())}")


class ArraySource:
    """Tokens already in memory (the API's evaluate(text))."""

    def __init__(self, tokens: np.ndarray):
        tokens = np.asarray(tokens)
        if tokens.ndim != 1 or (tokens.size and tokens.dtype.kind not in "iu"):
            raise HybridError(
                f"token ids must be a 1-D sequence of integers, got {tokens.dtype} of shape {tokens.shape}"
            )
        self.tokens = tokens.astype(np.int64, copy=False)
        self.n = len(self.tokens)
        self.unknown = 0

    def check_range(self, vocab_size: int) -> None:
        check_token_range(self.tokens, vocab_size)

    def read(self, start: int, count: int) -> np.ndarray:
        return self.tokens[start : start + count]

    def close(self) -> None:
        pass


class ByteFileSource:
    """A byte model's view of a file: token i is byte i."""

    def __init__(self, path: Path):
        self.path = path
        self.fh = open_regular(path, what="file")
        self.n = os.fstat(self.fh.fileno()).st_size
        self.unknown = 0

    def read(self, start: int, count: int) -> np.ndarray:
        self.fh.seek(start)
        data = self.fh.read(max(0, min(count, self.n - start)))
        return np.frombuffer(data, dtype=np.uint8).astype(np.int64)

    def close(self) -> None:
        self.fh.close()


class TokenFileSource:
    """A word model's tokens in an anonymous temporary file of int32 ids."""

    def __init__(self, fh, n: int, unknown: int):
        self.fh, self.n, self.unknown = fh, n, unknown

    def read(self, start: int, count: int) -> np.ndarray:
        self.fh.seek(4 * start)
        data = self.fh.read(4 * max(0, min(count, self.n - start)))
        return np.frombuffer(data, dtype=np.int32).astype(np.int64)

    def close(self) -> None:
        self.fh.close()


def text_chunks(path: str | Path, chunk: int | None = None) -> Iterator[str]:
    """The file's text in pieces, checked on the way: one HybridError for a missing, empty or
    non-text file (invalid UTF-8 or a NUL byte, with its offset)."""
    path, chunk = Path(path), chunk or CHUNK
    with open_regular(path, what="file") as fh:  # a FIFO or a device is refused, not read forever
        if os.fstat(fh.fileno()).st_size == 0:
            raise HybridError(f"{path}: file is empty")
        dec = codecs.getincrementaldecoder("utf-8")(errors="strict")
        offset = 0
        while True:
            data = fh.read(chunk)
            nul = data.find(b"\0")
            if nul >= 0:
                raise HybridError(f"{path}: not a text file (NUL byte at offset {offset + nul})")
            held = len(dec.getstate()[0])  # bytes of a split character from the last chunk
            try:
                text = dec.decode(data, final=not data)
            except UnicodeDecodeError as e:
                # e.start counts from the held-back bytes, then this chunk.
                raise HybridError(
                    f"{path}: not a text file (invalid UTF-8 at byte {max(0, offset - held + e.start)})"
                ) from None
            if not data:
                return
            offset += len(data)
            if text:
                yield text


def _complete_lines(chunks: Iterator[str]) -> Iterator[str]:
    """Re-cut text pieces at line boundaries (a '\\r' waits for a possible '\\n'), so that tokenizing
    piece by piece gives exactly the ids of tokenizing the whole text."""
    carry = ""
    for text in chunks:
        lines = (carry + text).splitlines(keepends=True)
        carry = ""
        if lines and (lines[-1].endswith("\r") or lines[-1] == lines[-1].splitlines()[0]):
            carry = lines.pop()
        if lines:
            yield "".join(lines)
    if carry:
        yield carry


def open_text(path: str | Path, tokenizer) -> ArraySource | ByteFileSource | TokenFileSource:
    """A token source over a text file for `tokenizer`, after checking the file is text."""
    path = Path(path)
    if tokenizer.kind == "byte":
        for _ in text_chunks(path):  # validation pass; the tokens are the file's bytes
            pass
        return ByteFileSource(path)
    fh = tempfile.TemporaryFile(prefix="hybrid-tokens-")
    n = unknown = 0
    try:
        for piece in _complete_lines(text_chunks(path)):
            ids = tokenizer.encode(piece).astype(np.int32)
            fh.write(ids.tobytes())
            n += len(ids)
            unknown += int(np.count_nonzero(ids == tokenizer.unk_id))
        fh.flush()
    except BaseException:
        fh.close()
        raise
    return TokenFileSource(fh, n, unknown)
