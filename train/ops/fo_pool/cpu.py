"""Fast fo-pooling on the CPU: a chunked two-level scan in vectorised PyTorch.

A plain loop over T steps pays PyTorch's per-op overhead T times on small [B, D] slices. Here time
is cut into C chunks of L steps (L ~ sqrt(T)); the L steps run once for all chunks side by side,
a short loop over C chunks carries the state between them, and one vectorised pass adds each
chunk's incoming state: about 2*sqrt(T) Python steps instead of T, with no division or log (the
within-chunk decay is a cumulative product), so results match the sequential loop to rounding.

Forward and backward are both the linear recurrence h_t = a_t * h_{t-1} + b_t (the backward runs
it in reverse time), so one routine, `linear_scan`, serves both.
"""

from __future__ import annotations

import math

import torch


def linear_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None) -> torch.Tensor:
    """All h_t of h_t = a_t * h_{t-1} + b_t for a, b: [B, T, D] and h0: [B, D] (zeros if None)."""
    B, T, D = a.shape
    if T == 0:
        return b.clone()
    L = max(1, int(math.isqrt(T)))
    C = -(-T // L)
    pad = C * L - T
    if pad:
        a = torch.cat([a, a.new_ones(B, pad, D)], dim=1)
        b = torch.cat([b, b.new_zeros(B, pad, D)], dim=1)
    # [L, B, C, D] so that each of the L steps reads one contiguous slab.
    a4 = a.view(B, C, L, D).permute(2, 0, 1, 3).contiguous()
    b4 = b.view(B, C, L, D).permute(2, 0, 1, 3).contiguous()
    h = torch.empty_like(b4)
    # 1) local scans from a zero state, all chunks at once.
    h[0] = b4[0]
    for t in range(1, L):
        torch.addcmul(b4[t], a4[t], h[t - 1], out=h[t])
    # 2) state entering each chunk: a short sequential pass over chunks.
    decay = torch.cumprod(a4, dim=0)  # decay[t] = a_0 * ... * a_t within the chunk
    carry = torch.empty(B, C, D, dtype=a.dtype, device=a.device)
    state = a.new_zeros(B, D) if h0 is None else h0.to(a.dtype)
    for c in range(C):
        carry[:, c] = state
        state = torch.addcmul(h[L - 1, :, c], decay[L - 1, :, c], state)
    # 3) add the carried-in state, decayed, to every step of its chunk.
    h.addcmul_(decay, carry.unsqueeze(0))
    return h.permute(1, 2, 0, 3).reshape(B, C * L, D)[:, :T]


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def fo_pool_fwd_cpu(z, f, o, c0):
    """Returns (h, c_T) in the input dtype."""
    acc = _acc_dtype(z)
    z32, f32 = z.to(acc), f.to(acc)
    c = linear_scan(f32, (1 - f32) * z32, None if c0 is None else c0.to(acc))
    h = c if o is None else c * o.to(acc)
    # The final state is copied: an op's outputs may not alias each other.
    last = c[:, -1].clone() if c.shape[1] else (z32.new_zeros(z.shape[0], z.shape[2]) if c0 is None else c0.to(acc))
    return h.to(z.dtype), last.to(z.dtype)


def fo_pool_bwd_cpu(z, f, o, c0, grad_h, grad_c):
    """Gradients (dz, df, do, dc0) of (h, c_T) = fo_pool(z, f, o, c0); recomputes the cell states."""
    acc = _acc_dtype(z)
    B, T, D = z.shape
    z32, f32 = z.to(acc), f.to(acc)
    init = z32.new_zeros(B, D) if c0 is None else c0.to(acc)
    c = linear_scan(f32, (1 - f32) * z32, init)
    gh = grad_h.to(acc) if grad_h is not None else z32.new_zeros(B, T, D)
    gc = grad_c.to(acc) if grad_c is not None else z32.new_zeros(B, D)
    if o is not None:
        do = (gh * c).to(o.dtype)
        gh = gh * o.to(acc)
    else:
        do = None
    # g_t = dL/dc_t = gh_t + f_{t+1} * g_{t+1}, g_{T-1} = gh_{T-1} + grad_c: a scan in reverse time.
    a_rev = torch.cat([f32[:, 1:], f32.new_ones(B, 1, D)], dim=1).flip(1)
    g = linear_scan(a_rev, gh.flip(1), gc).flip(1)
    c_prev = torch.cat([init.unsqueeze(1), c[:, :-1]], dim=1)
    dz = (g * (1 - f32)).to(z.dtype)
    df = (g * (c_prev - z32)).to(f.dtype)
    dc0 = (g[:, 0] * f32[:, 0]).to(c0.dtype if c0 is not None else z.dtype) if T else gc.to(z.dtype)
    return dz, df, do, dc0
