"""The exported graph's attention memory as a ring (train/model.py's docstring): the bias, the
slots a call writes and reads, the attention over [ring; this call's keys], the writes, and what
onnxruntime's GroupQueryAttention needs for the ring's first pass (export/fused_attention.py).
Every size may be symbolic while torch.export traces."""

from __future__ import annotations

from typing import NamedTuple

import torch


def ring_distances(T: int, M: int, n, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """How far back each key is from each query, in two parts: [T, R] over the R = M+1 ring
    slots and [T, T] over this call's keys, after `n` tokens of the stream (an int, or a symbolic
    one when exporting); +inf where a key is hidden. Slot s holds the latest position p < n with
    p = s mod R, `age` = n - p tokens before this call; a slot is visible while its token is one of
    the last M (age <= min(n, M)), which hides the spare slot and the empty ones."""
    R = M + 1
    age = (n - 1 - torch.arange(R, device=device)) % R + 1  # [R], in 1..R
    t = torch.arange(T, device=device)
    hidden = torch.tensor(float("inf"), device=device)
    ring = torch.where((age > M) | (age > n), hidden, (t[:, None] + age[None, :]).float())
    own = torch.where(t[None, :] > t[:, None], hidden, (t[:, None] - t[None, :]).float())
    return ring, own


def alibi_bias(slopes: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
    """[1, H, T, keys]: -slope * distance, so a hidden key (+inf) gets -inf (ALiBi slopes are
    positive). One product over the H-fold tensor, where a select after it would be a second pass."""
    return (-slopes[:, None, None] * distance.to(slopes.dtype))[None]


def ring_attention_bias(slopes: torch.Tensor, T: int, M: int, n) -> tuple[torch.Tensor, torch.Tensor]:
    """attention_bias for the ring layout (ring_distances' two parts): [1, H, T, R] over the ring
    slots and [1, H, T, T] over this call's keys."""
    ring, own = ring_distances(T, M, n, slopes.device)
    return alibi_bias(slopes, ring), alibi_bias(slopes, own)


def ring_slots(T: int, M: int, n) -> torch.Tensor:
    """The ring slots [min(T, R)] that this call's last min(T, R) tokens are written to."""
    R = M + 1
    m = torch.sym_min(T, R) if not isinstance(T, int) else min(T, R)
    return (torch.arange(m) + (n + T - m)) % R


def ring_used(M: int, n) -> int:
    """How many leading ring slots can hold a token after `n` tokens: the ring fills in slot order,
    so min(n, M + 1), and at least one (an empty ring's slot 0, masked by the bias, keeps every
    shape non-empty)."""
    if isinstance(n, int):
        return max(min(n, M + 1), 1)
    return torch.sym_max(torch.sym_min(n, M + 1), 1)


def ring_write(past_k, past_v, k, v, y, slots):
    """The ring after this call: its last min(T, R) keys and values written into their slots
    (ONNX ScatterND). A reader may give past and present one buffer: the writes wait for every
    read of the memory (a data dependency on y, adding zero), so in-place writing is safe at any T."""
    after_reads = (y.sum() * 0).to(k.dtype)
    T, m = k.shape[2], slots.shape[0]
    rows, heads = torch.arange(k.shape[0])[:, None, None], torch.arange(k.shape[1])[None, :, None]
    where = (rows, heads, slots[None, None])  # [B, H, m] index triples: one ScatterND, no transposes
    return (
        torch.index_put(past_k, where, k[:, :, T - m :] + after_reads),
        torch.index_put(past_v, where, v[:, :, T - m :] + after_reads),
    )


def attend_filled(used):
    """ring_attend over the ring's first `used` slots only (the ones that can hold a token yet):
    a function of the seven operands, as a torch.cond branch wants one (`used` may be symbolic)."""

    def attend(q, k, v, past_k, past_v, ring_bias, own_bias):
        return ring_attend(q, k, v, past_k[:, :, :used], past_v[:, :, :used], ring_bias[..., :used], own_bias)

    return attend


def ring_attend(q, k, v, past_k, past_v, ring_bias, own_bias) -> torch.Tensor:
    """softmax([q past_k^T + ring_bias, q k^T + own_bias]) [past_v; v] (q already scaled), as a
    softmax in two parts: neither the keys nor the scores are joined (no copy of the memory, nor
    of scores as long as it, at any length)."""
    s_ring = q @ past_k.transpose(-1, -2) + ring_bias  # [B, H, T, used slots]
    s_own = q @ k.transpose(-1, -2) + own_bias  # [B, H, T, T]; the diagonal is never masked
    top = torch.maximum(s_ring.amax(-1, keepdim=True), s_own.amax(-1, keepdim=True))
    e_ring, e_own = (s_ring - top).exp(), (s_own - top).exp()
    return (e_ring @ past_v + e_own @ v) / (e_ring.sum(-1, keepdim=True) + e_own.sum(-1, keepdim=True))


class FusedInputs(NamedTuple):
    """What GroupQueryAttention needs in a call that fits the ring unwrapped (kv_attention's
    inputs), built once a call for every block."""

    first_pass: object  # (symbolic) bool: n + T <= R, and onnxruntime's limit (batch 1 if n > 0 and T > 1)
    bias: torch.Tensor  # [1, H, T, min(n, R) + T]: the ring's filled slots, then the call's keys
    seqlens_k: torch.Tensor  # [B] int32, n + T - 1
    total_len: torch.Tensor  # [] int32, n + T


def fused_inputs(slopes: torch.Tensor, B: int, T: int, M: int, n) -> FusedInputs:
    """FusedInputs after `n` tokens (symbolic while exporting). While the ring is unwrapped slot s
    holds position s, so the ring's first n distances followed by the call's own are those of the
    n + T positions GroupQueryAttention sees (joined before the H-fold product: no copy of a bias)."""
    R = M + 1
    fits = torch.sym_max(n + T - R, 0) + n * (T - 1) * (B - 1) == 0
    ring, own = ring_distances(T, M, n, slopes.device)
    bias = alibi_bias(slopes, torch.cat([ring[:, : torch.sym_min(n, R)], own], dim=-1))
    seqlens_k = torch.full((B,), n + T - 1, dtype=torch.int32)
    return FusedInputs(fits, bias, seqlens_k, torch.full((), n + T, dtype=torch.int32))
