"""fo-pooling, the QRNN's only sequential part, as one op:

    fo_pool(z, f, o=None, initial_state=None, output_final_state=False) -> (h, final_state)

    c_t = f_t * c_{t-1} + (1 - f_t) * z_t,   h_t = o_t * c_t (c_t when o is None),   final_state = c_T

Layout [B, T, D] for z, f, o and [B, D] for the state. Side by side in this folder:
  naive.py  the plain sequential loop (the reference),
  cpu.py    the vectorised chunked scan used on the CPU,
  op.py     the torch custom op (`hybrid::fo_pool`) with autograd and a fake kernel, so that eager
            mode, torch.compile and torch.export all see one opaque op; it dispatches per device.
"""

from hybrid.train.ops.fo_pool.naive import fo_pool_naive
from hybrid.train.ops.fo_pool.op import fo_pool

__all__ = ["fo_pool", "fo_pool_naive"]
