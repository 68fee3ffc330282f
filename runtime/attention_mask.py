"""The attention_mask a graph is fed, and what the runtime keeps in its state to make it
(docs/model-directory.md).

Version 3: the graph reads only the mask's length, total_sequence_length = the stream's length
before the call + the call's tokens, which places the call in the attention memory's ring of
R = mem_len + 1 slots. Once the stream is R tokens long only its length modulo R matters, so the
runtime keeps `past_length` [batch, 1] (float32, like the rest of the state): the length itself
below R, else R + length mod R. It stays below 2R, so a mask is never longer than 2R + the call.

Version 2: the graph takes onnxruntime-genai's `attention_mask` int64 [batch, total_sequence_length]
and reads only its last mem_len + sequence entries: the memory slots before this call's tokens
(right-aligned, zeros where the stream had fewer) and the tokens themselves. The runtime keeps
what version-1 graphs carried themselves, a float `past_mask` [batch, mem_len] in the state, and
feeds `attention_mask` = [past_mask, ones for this call's tokens]: a fixed length, however long
the stream has run. The new past_mask is the last mem_len entries of that.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from hybrid.runtime.errors import HybridError

PAST_MASK = "past_mask"
PAST_LENGTH = "past_length"
ATTENTION_MASK = "attention_mask"


def next_length(length: int, seq_len: int, ring_len: int) -> int:
    """past_length after seq_len more tokens (the module's docstring)."""
    n = length + seq_len
    return n if n < ring_len else ring_len + n % ring_len


def checked_length(past: np.ndarray, ring_len: int) -> int:
    """The stream length a state's past_length holds; refused unless it is one the runtime wrote."""
    c = past.reshape(-1)
    if not c.size or not (c == c[0]).all() or not (0 <= c[0] < 2 * ring_len) or c[0] != int(c[0]):
        raise HybridError(f"state {PAST_LENGTH!r} must be one integer in [0, {2 * ring_len}) for every stream")
    return int(c[0])


def ring_feed(state: dict[str, np.ndarray], seq_len: int, ring_len: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(the graph's inputs from `state`: attention_mask in place of past_length, the past_length
    after seq_len more tokens)."""
    past = state[PAST_LENGTH]
    c = checked_length(past, ring_len)
    feed = {k: v for k, v in state.items() if k != PAST_LENGTH}
    feed[ATTENTION_MASK] = np.ones((past.shape[0], c + seq_len), dtype=np.int64)
    return feed, np.full_like(past, next_length(c, seq_len, ring_len))


class RingMask:
    """The attention_mask of token-by-token steps on a version-3 graph: views of one ones buffer
    [1, 2R], of the length each step needs, bound to the step's binding."""

    def __init__(self, ring_len: int, keep: list):
        self.ring_len = ring_len
        self.buffer = np.ones((1, 2 * ring_len), dtype=np.int64)
        self.values: dict[int, ort.OrtValue] = {}  # mask length -> a view of the buffer
        self.keep = keep

    def advance(self, io, past: np.ndarray, new: np.ndarray) -> None:
        """Before a step from the state holding past_length `past` into the one holding `new`."""
        c = int(past[0, 0])
        value = self.values.get(c + 1)
        if value is None:
            value = self.values[c + 1] = ort.OrtValue.ortvalue_from_numpy(self.buffer[:, : c + 1])
            self.keep.append(value)  # must outlive the bindings
        io.bind_ortvalue_input(ATTENTION_MASK, value)
        new[0, 0] = next_length(c, 1, self.ring_len)


def split_past_mask(state: dict[str, np.ndarray], seq_len: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(the graph's inputs from `state`: attention_mask in place of past_mask, the past_mask after
    seq_len more tokens)."""
    feed = {k: v for k, v in state.items() if k != PAST_MASK}
    past = state[PAST_MASK]
    full = np.concatenate([past >= 0.5, np.ones((past.shape[0], seq_len), dtype=bool)], axis=1)
    feed[ATTENTION_MASK] = full.astype(np.int64)
    return feed, full[:, full.shape[1] - past.shape[1] :].astype(np.float32)


class MaskStepper:
    """The attention_mask of token-by-token steps: one [1, mem_len + 1] buffer bound to every
    binding, rewritten from the state's past_mask before each step while the memory fills; once
    the memory is full (every slot a token) it stays all ones and a step touches nothing."""

    def __init__(self, bindings, mem_len: int, keep: list):
        self.buffer = np.ones((1, mem_len + 1), dtype=np.int64)
        value = ort.OrtValue.ortvalue_from_numpy(self.buffer)
        keep.append(value)  # must outlive the bindings
        for io in bindings:
            io.bind_ortvalue_input(ATTENTION_MASK, value)
        self.full = False

    def reset(self) -> None:
        """The state was replaced: look at its past_mask again."""
        self.full = False

    def advance(self, past: np.ndarray, new: np.ndarray) -> None:
        """Before a step from the state holding `past` [1, M] into the one holding `new`."""
        if self.full:
            return
        self.buffer[0, :-1] = past[0] >= 0.5
        new[0] = self.buffer[0, 1:]  # the memory after this token: the last mem_len of [past, 1]
        # Full once `past` was: then the buffer, and both copies of the state, are all ones for good.
        self.full = bool(self.buffer[0, :-1].all())
