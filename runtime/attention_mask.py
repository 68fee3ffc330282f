"""The attention memory's mask for version-2 graphs (docs/model-directory.md).

A version-2 graph takes onnxruntime-genai's `attention_mask` int64 [batch, total_sequence_length]
and reads only its last mem_len + sequence entries: the memory slots before this call's tokens
(right-aligned, zeros where the stream had fewer) and the tokens themselves. The runtime keeps
what version-1 graphs carried themselves, a float `past_mask` [batch, mem_len] in the state, and
feeds `attention_mask` = [past_mask, ones for this call's tokens]: a fixed length, however long
the stream has run. The new past_mask is the last mem_len entries of that.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

PAST_MASK = "past_mask"
ATTENTION_MASK = "attention_mask"


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
