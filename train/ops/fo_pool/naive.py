"""Plain sequential fo-pooling: the reference every fast path is tested against.

    c_t = f_t * c_{t-1} + (1 - f_t) * z_t        h_t = o_t * c_t   (h_t = c_t when o is None)

Shapes: z, f, o: [B, T, D]; initial_state: [B, D]. Returns (h [B, T, D], c_T [B, D] or None).
Autograd differentiates it as written. Accumulates in float32 (or float64 for float64 inputs).
"""

from __future__ import annotations

import torch


def fo_pool_naive(z, f, o=None, initial_state=None, output_final_state=False):
    acc = torch.float64 if z.dtype == torch.float64 else torch.float32
    B, T, D = z.shape
    c = z.new_zeros(B, D, dtype=acc) if initial_state is None else initial_state.to(acc)
    zs, fs = z.to(acc), f.to(acc)
    cells = []
    # unbind, not zs[:, t]: indexing would make autograd's backward quadratic in T, an unfair baseline.
    for z_t, f_t in zip(zs.unbind(1), fs.unbind(1)):
        c = f_t * c + (1 - f_t) * z_t
        cells.append(c)
    h = torch.stack(cells, dim=1) if T > 0 else zs.clone()
    if o is not None:
        h = o.to(acc) * h
    return h.to(z.dtype), (c.to(z.dtype) if output_final_state else None)
