"""The reference: kv_attention in plain PyTorch (the package docstring has the contract)."""

from __future__ import annotations

import torch


def kv_attention_naive(qkv, past_key, past_value, bias, seqlens_k, total_len, n_heads: int):
    B, T, _ = qkv.shape
    n = int(total_len) - T
    if not 0 <= n <= past_key.shape[2] - T or bool((seqlens_k != n + T - 1).any()):
        raise ValueError(f"kv_attention: {T} tokens after {n} do not fit {past_key.shape[2]} slots")
    q, k, v = qkv.unflatten(-1, (3 * n_heads, -1)).transpose(1, 2).split(n_heads, dim=1)  # [B, H, T, d]
    keys = torch.cat([past_key[:, :, :n], k], dim=2)
    values = torch.cat([past_value[:, :, :n], v], dim=2)
    scores = (q * q.shape[-1] ** -0.5) @ keys.transpose(-1, -2) + bias
    y = scores.softmax(dim=-1) @ values  # [B, H, T, d]
    present_key, present_value = past_key.clone(), past_value.clone()
    present_key[:, :, n : n + T], present_value[:, :, n : n + T] = k, v
    return y.transpose(1, 2).reshape(B, T, -1), present_key, present_value
