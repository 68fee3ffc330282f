"""The custom op `hybrid::kv_attention`: the reference in eager mode, an opaque node (shapes from
the fake kernel) while torch.export traces, which the ONNX exporter translates."""

from __future__ import annotations

import torch

from hybrid.train.ops.kv_attention.naive import kv_attention_naive


@torch.library.custom_op("hybrid::kv_attention", mutates_args=())
def kv_attention(
    qkv: torch.Tensor,
    past_key: torch.Tensor,
    past_value: torch.Tensor,
    bias: torch.Tensor,
    seqlens_k: torch.Tensor,
    total_len: torch.Tensor,
    n_heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return kv_attention_naive(qkv, past_key, past_value, bias, seqlens_k, total_len, n_heads)


@kv_attention.register_fake
def _(qkv, past_key, past_value, bias, seqlens_k, total_len, n_heads):
    B, T, D3 = qkv.shape
    return qkv.new_empty(B, T, D3 // 3), torch.empty_like(past_key), torch.empty_like(past_value)
