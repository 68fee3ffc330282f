"""The `hybrid::fo_pool` custom op: autograd glue, fake kernel and per-device dispatch."""

from __future__ import annotations

from typing import Optional

import torch

from hybrid.train.ops.fo_pool.cpu import fo_pool_bwd_cpu, fo_pool_fwd_cpu

# Device kernels: (forward, backward) by device type. The GPU registers itself here when its
# module imports (Triton is optional); anything unregistered falls back to the CPU routine,
# which is plain PyTorch and runs on every device.
KERNELS = {"cpu": (fo_pool_fwd_cpu, fo_pool_bwd_cpu)}


def _kernels(device: torch.device):
    return KERNELS.get(device.type, KERNELS["cpu"])


@torch.library.custom_op("hybrid::fo_pool_fwd", mutates_args=())
def fo_pool_fwd(z: torch.Tensor, f: torch.Tensor, o: Optional[torch.Tensor], c0: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    h, c = _kernels(z.device)[0](z, f, o, c0)
    return h.contiguous(), c.contiguous()


@fo_pool_fwd.register_fake
def _(z, f, o, c0):
    return torch.empty_like(z), z.new_empty(z.shape[0], z.shape[2])


@torch.library.custom_op("hybrid::fo_pool_bwd", mutates_args=())
def fo_pool_bwd(z: torch.Tensor, f: torch.Tensor, o: Optional[torch.Tensor], c0: Optional[torch.Tensor],
                grad_h: torch.Tensor, grad_c: torch.Tensor) -> list[torch.Tensor]:
    dz, df, do, dc0 = _kernels(z.device)[1](z, f, o, c0, grad_h, grad_c)
    out = [dz.contiguous(), df.contiguous(), dc0.contiguous()]
    if do is not None:
        out.append(do.contiguous())
    return out


@fo_pool_bwd.register_fake
def _(z, f, o, c0, grad_h, grad_c):
    out = [torch.empty_like(z), torch.empty_like(f), z.new_empty(z.shape[0], z.shape[2])]
    if o is not None:
        out.append(torch.empty_like(o))
    return out


def _setup_context(ctx, inputs, output):
    z, f, o, c0 = inputs
    ctx.save_for_backward(z, f, o, c0)
    ctx.has_o, ctx.has_c0 = o is not None, c0 is not None


def _backward(ctx, grad_h, grad_c):
    z, f, o, c0 = ctx.saved_tensors
    if grad_h is None:
        grad_h = torch.zeros_like(z)
    if grad_c is None:
        grad_c = z.new_zeros(z.shape[0], z.shape[2])
    grads = fo_pool_bwd(z, f, o if ctx.has_o else None, c0 if ctx.has_c0 else None, grad_h, grad_c)
    dz, df, dc0 = grads[0], grads[1], grads[2]
    do = grads[3] if ctx.has_o else None
    return dz, df, do, (dc0 if ctx.has_c0 else None)


fo_pool_fwd.register_autograd(_backward, setup_context=_setup_context)


def fo_pool(z, f, o=None, initial_state=None, output_final_state=False):
    """(h, c_T or None) for the QRNN recurrence; see the package docstring."""
    if torch.compiler.is_exporting():
        # torch.export (and so the ONNX exporter) sees the recurrence as torch's scan operator,
        # which becomes a single ONNX Scan node.
        from hybrid.train.ops.fo_pool.scan import fo_pool_scan

        return fo_pool_scan(z, f, o, initial_state, output_final_state)
    h, c = fo_pool_fwd(z.contiguous(), f.contiguous(), None if o is None else o.contiguous(),
                       None if initial_state is None else initial_state.contiguous())
    return h, (c if output_final_state else None)
