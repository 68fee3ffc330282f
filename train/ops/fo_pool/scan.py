"""fo-pooling with torch's `scan` higher-order op: the export path (one ONNX Scan node).

torch.onnx.export(dynamo=True) turns the scan operator into a single ONNX `Scan` whose body is
one step, so the graph does not grow with the sequence length. Everything that can be computed
for all time steps at once stays outside the body: the body is only  m = f * c;  c = m + b  (two
elementwise ops, m the step's output), with b = (1 - f) * z before the scan and h = m + b (the
same sum, so the same bits) and the output gate after it.
No weights live inside the body, which keeps every weight matrix product where onnxruntime's
quantizers can reach it.

Eager `scan` costs ~0.6 ms per call, so this is used only while torch.export traces the model;
tests hold it to `fo_pool_naive`.
"""

from __future__ import annotations

from torch._higher_order_ops.scan import scan


def _step(c, xs):
    f_t, b_t = xs
    m = f_t * c
    # Emitting the product rather than c: returning one tensor as both carry and output trips
    # the exporter's aliasing check, and a copy of it is one more node per step.
    return m + b_t, m


def fo_pool_scan(z, f, o=None, initial_state=None, output_final_state=False):
    """Same contract as `fo_pool`: (h [B, T, D], c_T [B, D] or None)."""
    B, T, D = z.shape
    c0 = z.new_zeros(B, D) if initial_state is None else initial_state.to(z.dtype)
    b = (1 - f) * z
    # scan runs over dim 0: time first.
    c_last, products = scan(_step, c0, (f.transpose(0, 1), b.transpose(0, 1)))
    h = products.transpose(0, 1) + b
    if o is not None:
        h = o * h
    return h, (c_last if output_final_state else None)
