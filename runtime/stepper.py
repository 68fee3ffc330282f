"""Token-by-token generation with every buffer allocated once (IOBinding): Model.stepper().

Needs numpy and onnxruntime only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from hybrid.runtime.attention_mask import PAST_LENGTH, PAST_MASK, MaskStepper, RingMask
from hybrid.runtime.errors import HybridError, first_line

if TYPE_CHECKING:
    from hybrid.runtime.model import Model, State


class Stepper:
    """Token-by-token runs with every buffer allocated once.

    Inputs, outputs and the state are numpy arrays wrapped as OrtValues (which share their memory
    on the CPU), bound once into two IOBindings: one reads state A and writes state B, the other
    the reverse. A version-3 graph's attention memory is one buffer, bound as both past and
    present: the graph writes the new token's key and value into it in place, so a step copies no
    memory. A step writes the token id in place, runs the binding of the turn and returns a view
    of the logits buffer: no allocation and no name lookups per token.
    """

    def __init__(self, model: Model, state: State | None = None):
        self.model = model
        self.ids = np.zeros((1, 1), dtype=np.int64)
        self.logits = np.zeros((1, 1, model.vocab_size), dtype=np.float32)
        first = model.initial_state(1) if state is None else state
        model._checked_ids(self.ids, first)  # this model's state, batch 1 (the stepper runs one stream)
        one = {k: np.ascontiguousarray(v, dtype=np.float32).copy() for k, v in first.items()}
        in_place = {s.input for s in model.state_specs if model.ring_len and s.memory}
        self.buffers = [one, {k: v if k in in_place else np.empty_like(v) for k, v in one.items()}]
        values: dict[int, ort.OrtValue] = {}  # one OrtValue an array: a shared buffer is bound twice

        def ov(a: np.ndarray) -> ort.OrtValue:
            if id(a) not in values:
                values[id(a)] = ort.OrtValue.ortvalue_from_numpy(a)
            return values[id(a)]

        ids_v, logits_v = ov(self.ids), ov(self.logits)
        self.bindings = []
        for src, dst in ((self.buffers[0], self.buffers[1]), (self.buffers[1], self.buffers[0])):
            io = model.ort.io_binding()
            io.bind_ortvalue_input("input_ids", ids_v)
            io.bind_ortvalue_output("logits", logits_v)
            for s in model.state_specs:
                io.bind_ortvalue_input(s.input, ov(src[s.input]))
                io.bind_ortvalue_output(s.output, ov(dst[s.input]))
            self.bindings.append(io)
        self._keep = list(values.values())  # OrtValues must outlive the bindings
        self.mask = None
        if model.ring_len:
            self.mask = RingMask(model.ring_len, self._keep)
        elif model.mask_len:
            self.mask = MaskStepper(self.bindings, model.mask_len, self._keep)
        self.turn = 0  # buffers[turn] holds the current state
        self._run = model.ort.run_with_iobinding

    def load(self, state: State) -> None:
        """Continue from `state` (copied into the stepper's own buffers; the bindings stay)."""
        self.model._checked_ids(self.ids, state)
        for k, buf in self.buffers[self.turn].items():
            if state[k].shape != buf.shape:
                raise HybridError(f"state {k!r} has shape {state[k].shape}, the stepper holds {buf.shape}")
            np.copyto(buf, state[k])
        if isinstance(self.mask, MaskStepper):
            self.mask.reset()

    def step(self, token: int) -> np.ndarray:
        """Feed one token; returns the next-token logits [vocab] (a view, valid until the next step)."""
        if not 0 <= token < self.model.vocab_size:
            raise HybridError(f"token ids must be in [0, {self.model.vocab_size}), got {token!r}")
        self.ids[0, 0] = token
        src, dst = self.buffers[self.turn], self.buffers[self.turn ^ 1]
        if isinstance(self.mask, RingMask):
            self.mask.advance(self.bindings[self.turn], src[PAST_LENGTH], dst[PAST_LENGTH])
        elif self.mask is not None:
            self.mask.advance(src[PAST_MASK], dst[PAST_MASK])
        try:
            self._run(self.bindings[self.turn])
        except Exception as e:
            raise HybridError(f"{self.model.path}: onnxruntime failed to run the model ({first_line(e)})") from None
        self.turn ^= 1
        return self.logits[0, 0]

    @property
    def state(self) -> State:
        """The current state (views into the stepper's buffers; copy to keep them)."""
        return self.buffers[self.turn]
