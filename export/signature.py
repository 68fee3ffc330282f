"""The exported graph's inputs and outputs (format version 3, docs/model-directory.md).

The graph speaks the language of onnxruntime-genai, so that genai (and every binding that
follows the Hugging Face convention) runs it unmodified:
  - `attention_mask` int64 [batch, total_sequence_length]: 1 for every token of the stream so
    far, this call's included, as genai feeds it. The graph reads only its length: the stream's
    length before this call is total_sequence_length - sequence, which places this call's tokens
    in the attention memory's ring (train/model.py). Only that length modulo mem_len + 1 matters
    once the memory is full, so a reader may feed a short mask (docs/model-directory.md).
  - the attention memory is a ring of mem_len + 1 key/value slots, written in place (ScatterND):
    genai shares one buffer between past and present, and so may any reader.
  - a window-1 QRNN block has a `conv_state` too ([batch, 1, d_model], passed through
    unchanged): genai pairs every `recurrent_state` with a `conv_state` and finds recurrent
    layers through the pair.
Every state tensor has a fixed size.
"""

from __future__ import annotations

import torch

from hybrid.train.model import HybridLM

ATTENTION_MASK = "attention_mask"


def output_name(state_name: str) -> str:
    """`past_key_values.3.key` -> `present.3.key`."""
    return "present." + state_name[len("past_key_values.") :]


def graph_state_shapes(model: HybridLM, batch: int) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every state tensor the graph carries, in graph order."""
    shapes = {}
    for name, shape in model.state_shapes(batch, ring=True).items():
        shapes[name] = shape
        if name.endswith(".recurrent_state") and model.cfg.qrnn_window == 1:
            shapes[name.replace(".recurrent_state", ".conv_state")] = (batch, 1, model.cfg.d_model)
    return shapes


def uses_attention_mask(model: HybridLM) -> bool:
    return model.uses_memory


def io_names(model: HybridLM) -> tuple[list[str], list[str]]:
    names = list(graph_state_shapes(model, 1))
    mask = [ATTENTION_MASK] if uses_attention_mask(model) else []
    return ["input_ids", *mask, *names], ["logits", *(output_name(n) for n in names)]


class GraphSignature(torch.nn.Module):
    """HybridLM with the graph's positional tensors in and out, in io_names order."""

    def __init__(self, model: HybridLM, fused_attention: bool = False):
        super().__init__()
        self.model, self.fused_attention = model, fused_attention
        self.state_names = list(graph_state_shapes(model, 1))
        self.model_names = set(model.state_shapes(1, ring=True))
        self.with_mask = uses_attention_mask(model)

    def forward(self, input_ids, *rest):
        past_len = None
        if self.with_mask:
            attention_mask, rest = rest[0], rest[1:]
            past_len = attention_mask.shape[1] - input_ids.shape[1]
        given = dict(zip(self.state_names, rest))
        state = {k: v for k, v in given.items() if k in self.model_names}
        logits, new_state = self.model(input_ids, state, past_len=past_len, fused_attention=self.fused_attention)
        # A pass-through conv_state (window-1 QRNN) leaves the graph as an Identity of its input.
        return (logits, *(new_state[n] if n in new_state else given[n].clone() for n in self.state_names))

    def example_inputs(self, batch: int, seq_len: int, past_len: int) -> tuple:
        """Inputs for tracing: random ids, zero state, an attention_mask over past_len + seq_len tokens."""
        ids = torch.randint(0, self.model.cfg.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))
        mask = (torch.ones(batch, past_len + seq_len, dtype=torch.int64),) if self.with_mask else ()
        state = tuple(torch.zeros(s) for s in graph_state_shapes(self.model, batch).values())
        return (ids, *mask, *state)
