"""The hybrid language model: one file, three blocks, one config.

Blocks are pre-norm residual:  x = x + Block(LayerNorm(x)).
  A  attention   causal multi-head self-attention over [memory of earlier segments; this segment],
                 relative positions as ALiBi distance biases (the memory is a fixed-length cache of
                 keys and values, so the state a stream carries is bounded and exportable).
  F  feed-forward  d_model -> d_inner -> d_model, GELU.
  Q  QRNN        window-k masked convolution -> Z = tanh, F = sigmoid, O = sigmoid in one matrix
                 product, then fo-pooling (the only sequential part, `ops.fo_pool`).

State is a flat dict of tensors named as in the exported ONNX graph (see export/), so PyTorch,
ONNX and the runtime speak about it the same way:
  past_key_values.<i>.key / .value     [B, n_heads, mem_len, d_head]   attention block i
  past_key_values.<i>.recurrent_state  [B, d_model]                    QRNN block i: cell state c
  past_key_values.<i>.conv_state       [B, k-1, d_model]               QRNN block i: last k-1 inputs
  past_mask                            [B, mem_len]  1.0 where a memory slot holds a real token

The exported graph keeps the attention memory as a ring instead (ring_memory.py; forward's `past_len`, the
state from `initial_state(B, ring=True)`): mem_len + 1 slots, the token at stream position p in
slot p mod (mem_len + 1), written in place (ONNX ScatterND) so that a generation step copies no
memory; the slot about to be overwritten lies beyond the window and is masked, so readers may
share one buffer between past and present. Same logits. Exported with fused attention, a call
that fits the ring unwrapped is one onnxruntime GroupQueryAttention a block instead
(`ops.kv_attention`, `Attention._fused_ring`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from hybrid.train.adaptive import AdaptiveInput, AdaptiveLogSoftmax
from hybrid.train.config import ModelConfig
from hybrid.train.ops.fo_pool import fo_pool_preact
from hybrid.train.ops.kv_attention import kv_attention
from hybrid.train.ring_memory import (  # noqa: F401 (ring_attention_bias and ring_attend are re-exported)
    FusedInputs,
    attend_filled,
    fused_inputs,
    ring_attend,
    ring_attention_bias,
    ring_slots,
    ring_used,
    ring_write,
)
from hybrid.train.preflight import check_model_fits

State = dict[str, torch.Tensor]


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Per-head distance penalties 2^(-8i/n) (Press et al. 2022), geometric across heads."""
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / n_heads) for i in range(n_heads)])


def attention_bias(slopes: torch.Tensor, T: int, M: int, past_mask: torch.Tensor | None) -> torch.Tensor:
    """Additive attention bias [B or 1, H, T, M+T] for T queries over [M memory slots; T keys]:
    ALiBi distance penalties, -inf for the future and for empty memory slots. The same for every
    attention block, so the model builds it once per call (in the ONNX graph too: one broadcast
    add, then one add onto each block's scores)."""
    # Query t (0-based in this segment) sits at position M + t among the M + T keys.
    qpos = torch.arange(T, device=slopes.device) + M
    kpos = torch.arange(M + T, device=slopes.device)
    dist = (qpos[:, None] - kpos[None, :]).to(slopes.dtype)  # [T, M+T]
    bias = (-slopes[:, None, None] * dist).masked_fill(dist < 0, float("-inf"))  # [H, T, M+T]
    if M == 0 or past_mask is None:
        return bias
    empty = torch.zeros(past_mask.shape, dtype=bias.dtype, device=bias.device)
    empty = empty.masked_fill(past_mask < 0.5, float("-inf"))  # [B, M]
    return bias + F.pad(empty, (0, T))[:, None, None, :]  # the segment's own keys are never empty


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, index: int):
        super().__init__()
        self.n_heads, self.d_head, self.mem_len = cfg.n_heads, cfg.d_head, cfg.mem_len
        self.key_name = f"past_key_values.{index}.key"
        self.value_name = f"past_key_values.{index}.value"
        self.norm = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.attn_dropout = cfg.attn_dropout
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, state: State, attn: "AttentionInputs", new_state: State):
        B, T, D = x.shape
        M = self.mem_len
        qkv = self.qkv(self.norm(x))  # [B, T, 3D]: queries, keys, values, head-major
        if attn.fused is not None:  # set only while torch.export traces the ring layout
            return x + self.dropout(self.proj(self._fused_ring(qkv, state, attn, new_state)))
        q, k, v = self._heads(qkv)
        if attn.slots is not None:
            y = self._ring(q, k, v, state, attn, new_state)
        else:
            if M > 0:
                k = torch.cat([state[self.key_name].to(k.dtype), k], dim=2)
                v = torch.cat([state[self.value_name].to(v.dtype), v], dim=2)
                new_state[self.key_name] = k[:, :, -M:]
                new_state[self.value_name] = v[:, :, -M:]
            if torch.compiler.is_exporting():
                # Written out for the ONNX graph: SDPA's export decomposition adds a dozen shape ops.
                y = ((q * self.d_head**-0.5) @ k.transpose(-1, -2) + attn.bias).softmax(dim=-1) @ v
            else:
                dropout = self.attn_dropout if self.training else 0.0
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn.bias.to(q.dtype), dropout_p=dropout)
        y = y.transpose(1, 2).reshape(B, T, D)
        return x + self.dropout(self.proj(y))

    def _heads(self, qkv):
        """[B, T, 3D] -> [B, 3H, T, d_head] -> q, k, v: three ONNX nodes once exported."""
        return qkv.unflatten(-1, (3 * self.n_heads, self.d_head)).transpose(1, 2).split(self.n_heads, dim=1)

    def _ring(self, q, k, v, state: State, attn: "AttentionInputs", new_state: State) -> torch.Tensor:
        """Attention over [ring; this call's keys], over only the slots that can hold a token yet,
        then this call's last keys and values written into their ring slots (ScatterND)."""
        past_k, past_v = state[self.key_name].to(k.dtype), state[self.value_name].to(v.dtype)
        R, used = past_k.shape[2], attn.used
        q = q * self.d_head**-0.5
        ring_bias, own_bias = attn.bias
        if torch.compiler.is_exporting():
            # While the ring is at most half full, read its filled prefix only (at 128 tokens of
            # a 512-token memory, a quarter of the slots); past that, the whole buffer: an ONNX
            # Slice copies what it cuts, and at more than about half the ring copying the prefix
            # costs more than reading the empty slots (measured). One ONNX If per block.
            # torch.cond wants operands that alias nothing (split's views, .to's input, ...): the
            # clones are ONNX Identity nodes, which the exporter's optimiser drops.
            operands = tuple(t.clone() for t in (q, k, v, past_k, past_v, ring_bias, own_bias))
            y = torch.cond(2 * used <= R, attend_filled(used), ring_attend, operands)
        else:  # eager: slices are views
            y = attend_filled(used)(q, k, v, past_k, past_v, ring_bias, own_bias)
        new_state[self.key_name], new_state[self.value_name] = ring_write(past_k, past_v, k, v, y, attn.slots)
        return y

    def _fused_ring(self, qkv, state: State, attn: "AttentionInputs", new_state: State) -> torch.Tensor:
        """The exported ring step with onnxruntime's fused attention (export/fused_attention.py):
        while this call's tokens fit the ring unwrapped, one GroupQueryAttention (`kv_attention`)
        reads the filled slots where they lie and appends the call's keys and values in place;
        otherwise the plain step, which then reads the filled prefix only until the ring is
        full (with past and present apart, GroupQueryAttention leaves the slots past its last
        write unset). Returns y [B, T, D]; one ONNX If per block, the writes inside it."""
        H, used = self.n_heads, attn.used
        past_k, past_v = state[self.key_name].to(qkv.dtype), state[self.value_name].to(qkv.dtype)
        R = past_k.shape[2]

        def first_pass(qkv, past_k, past_v, ring_bias, own_bias, slots, bias, seqlens_k, total_len):
            return kv_attention(qkv, past_k, past_v, bias, seqlens_k, total_len, H)

        def later(qkv, past_k, past_v, ring_bias, own_bias, slots, bias, seqlens_k, total_len):
            B, T, D3 = qkv.shape
            q, k, v = self._heads(qkv)
            q = q * self.d_head**-0.5
            operands = tuple(t.clone() for t in (q, k, v, past_k, past_v, ring_bias, own_bias))
            y = torch.cond(used < R, attend_filled(used), ring_attend, operands)
            new_k, new_v = ring_write(past_k, past_v, k, v, y, slots)
            return y.transpose(1, 2).reshape(B, T, D3 // 3), new_k, new_v

        ring_bias, own_bias = attn.bias
        f = attn.fused
        operands = (qkv, past_k, past_v, ring_bias, own_bias, attn.slots, f.bias, f.seqlens_k, f.total_len)
        y, new_state[self.key_name], new_state[self.value_name] = torch.cond(
            f.first_pass, first_pass, later, tuple(t.clone() for t in operands)
        )
        return y


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig, index: int):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.d_model)
        self.up = nn.Linear(cfg.d_model, cfg.d_inner)
        self.down = nn.Linear(cfg.d_inner, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, state, attn, new_state):
        return x + self.dropout(self.down(F.gelu(self.up(self.norm(x)))))


class QRNN(nn.Module):
    def __init__(self, cfg: ModelConfig, index: int):
        super().__init__()
        self.window, self.zoneout = cfg.qrnn_window, cfg.zoneout
        self.cell_name = f"past_key_values.{index}.recurrent_state"
        self.conv_name = f"past_key_values.{index}.conv_state"
        self.norm = nn.LayerNorm(cfg.d_model)
        # One matrix product gives Z, F and O for every time step: the masked convolution of
        # width k is a Linear over the current and the k-1 previous (normalised) inputs.
        self.gates = nn.Linear(cfg.qrnn_window * cfg.d_model, 3 * cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, state, attn, new_state):
        u = self.norm(x)
        if self.window > 1:
            seq = torch.cat([state[self.conv_name].to(u.dtype), u], dim=1)  # [B, k-1+T, D]
            new_state[self.conv_name] = seq[:, -(self.window - 1) :]
            T = u.shape[1]
            # The window's last input is u itself (one Slice fewer per block in the ONNX graph).
            u = torch.cat([seq[:, j : j + T] for j in range(self.window - 1)] + [u], dim=-1)
        z, f, o = self.gates(u).chunk(3, dim=-1)
        # Z = tanh, F = sigmoid, O = sigmoid and zoneout are applied inside the op (fused into the
        # kernel on the GPU). Zoneout: a channel keeps its previous cell state (forget gate 1) with
        # probability p; at evaluation the expected gate is used.
        h, c = fo_pool_preact(
            z,
            f,
            o,
            initial_state=state[self.cell_name],
            output_final_state=True,
            zoneout=self.zoneout,
            training=self.training,
        )
        new_state[self.cell_name] = c
        return x + self.dropout(h)


BLOCK_TYPES = {"A": Attention, "F": FeedForward, "Q": QRNN}


class AttentionInputs(NamedTuple):
    """What every attention block of one call shares: the bias (in the ring layout its ring and
    own parts), and in the ring layout the slots this call writes (None: the sliding layout,
    memory joined with the new keys and cut)."""

    bias: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None
    slots: torch.Tensor | None = None
    used: int | None = None  # ring layout: the slots that can hold a token yet, min(n, R), at least 1
    fused: "FusedInputs | None" = None  # ring layout, exported with fused attention


class HybridLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        check_model_fits(cfg)  # a huge width is one line here, not an out-of-memory kill
        self.cfg = cfg
        if cfg.adaptive_cutoffs:
            # Large word vocabularies: adaptive input, and a head that returns full log-probabilities
            # (cross-entropy on log-probabilities is their NLL, so trainer, exporter and runtime
            # treat them as logits).
            self.embed = AdaptiveInput(cfg.vocab_size, cfg.d_model, cfg.adaptive_cutoffs, cfg.adaptive_div)
        else:
            self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(BLOCK_TYPES[kind](cfg, i) for i, kind in enumerate(cfg.pattern))
        self.register_buffer("slopes", alibi_slopes(cfg.n_heads), persistent=False)
        self.norm = nn.LayerNorm(cfg.d_model)
        if cfg.adaptive_cutoffs:
            self.head = AdaptiveLogSoftmax(
                cfg.vocab_size,
                cfg.d_model,
                cfg.adaptive_cutoffs,
                cfg.adaptive_div,
                tie=self.embed if cfg.tie_embeddings else None,
            )
        else:
            self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
            if cfg.tie_embeddings:
                self.head.weight = self.embed.weight
        self.apply(self._init)
        # GPT-2: scale the projections that write into the residual stream by depth.
        for name, p in self.named_parameters():
            if name.endswith(("proj.weight", "down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_blocks))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    @property
    def uses_memory(self) -> bool:
        return "A" in self.cfg.pattern and self.cfg.mem_len > 0

    def state_shapes(self, batch_size: int, ring: bool = False) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every state tensor, in graph order; `ring`: the ring layout (mem_len + 1
        slots a memory, no past_mask: the stream's length tells which slots hold tokens)."""
        cfg, shapes = self.cfg, {}
        slots = cfg.mem_len + 1 if ring else cfg.mem_len
        for i, kind in enumerate(cfg.pattern):
            if kind == "A" and cfg.mem_len > 0:
                shapes[f"past_key_values.{i}.key"] = (batch_size, cfg.n_heads, slots, cfg.d_head)
                shapes[f"past_key_values.{i}.value"] = (batch_size, cfg.n_heads, slots, cfg.d_head)
            elif kind == "Q":
                shapes[f"past_key_values.{i}.recurrent_state"] = (batch_size, cfg.d_model)
                if cfg.qrnn_window > 1:
                    shapes[f"past_key_values.{i}.conv_state"] = (batch_size, cfg.qrnn_window - 1, cfg.d_model)
        if self.uses_memory and not ring:
            shapes["past_mask"] = (batch_size, cfg.mem_len)
        return shapes

    def initial_state(self, batch_size: int, device=None, dtype=torch.float32, ring: bool = False) -> State:
        """The state of a fresh stream: zeros, and an all-empty attention memory."""
        device = device or self.norm.weight.device
        shapes = self.state_shapes(batch_size, ring)
        return {k: torch.zeros(s, device=device, dtype=dtype) for k, s in shapes.items()}

    def forward(
        self,
        input_ids: torch.Tensor,
        state: State | None = None,
        targets: torch.Tensor | None = None,
        past_len: int | None = None,
        fused_attention: bool = False,
    ) -> tuple[torch.Tensor, State]:
        """logits [B, T, vocab] and the state after this segment (same keys as `state`); for an
        adaptive-softmax model the logits are normalised log-probabilities.

        With `targets` [B, T]: the NLL of each target [B, T] instead of logits, which for an
        adaptive softmax never builds the [B, T, vocab] tensor (the fast path for training).
        With `past_len` (the stream's tokens before this call): the ring layout (the exported
        graph's; `state` as initial_state(B, ring=True) gives it). `fused_attention`, while
        torch.export traces the ring layout: onnxruntime's GroupQueryAttention where it fits."""
        B, T = input_ids.shape
        ring = past_len is not None and self.uses_memory
        if state is None:
            state = self.initial_state(B, ring=ring)
        new_state: State = {}
        past_mask = state.get("past_mask")
        attn = None
        if ring:
            M = self.cfg.mem_len
            bias = ring_attention_bias(self.slopes, T, M, past_len)
            fused = None
            if fused_attention and torch.compiler.is_exporting():
                fused = fused_inputs(self.slopes, B, T, M, past_len)
            attn = AttentionInputs(bias, ring_slots(T, M, past_len), ring_used(M, past_len), fused)
        elif "A" in self.cfg.pattern:
            attn = AttentionInputs(attention_bias(self.slopes, T, self.cfg.mem_len, past_mask))
        x = self.drop(self.embed(input_ids))
        for block in self.blocks:
            x = block(x, state, attn, new_state)
        if past_mask is not None:
            M = past_mask.shape[1]
            new_state["past_mask"] = torch.cat([past_mask, past_mask.new_ones(B, T)], dim=1)[:, -M:]
        h = self.norm(x)
        if targets is not None:
            if isinstance(self.head, AdaptiveLogSoftmax):
                return self.head.nll(h, targets), new_state
            logits = self.head(h)
            return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none").view(
                B, T
            ), new_state
        return self.head(h), new_state


def detach_state(state: State) -> State:
    """Stop gradients at segment boundaries (Transformer-XL's stop-gradient on memory)."""
    return {k: v.detach() for k, v in state.items()}


def count_parameters(model: HybridLM) -> dict[str, int]:
    """Parameters per block type and in total (tied weights counted once)."""
    embed = {id(p) for p in model.embed.parameters()}
    counts = {
        "embedding": sum(p.numel() for p in model.embed.parameters()),
        "attention": 0,
        "feed-forward": 0,
        "qrnn": 0,
        "other": 0,
    }
    names = {"A": "attention", "F": "feed-forward", "Q": "qrnn"}
    for kind, block in zip(model.cfg.pattern, model.blocks):
        counts[names[kind]] += sum(p.numel() for p in block.parameters())
    counts["other"] = sum(p.numel() for p in model.norm.parameters())
    # The output head's own parameters (all of them untied; an adaptive head's biases and cluster rows).
    counts["other"] += sum(p.numel() for p in model.head.parameters() if id(p) not in embed)
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts
