"""The fo-pooling custom ops: autograd glue, fake kernels and per-device dispatch.

Two ops, `hybrid::fo_pool_fwd` and `hybrid::fo_pool_bwd`, opaque to torch.compile (the fake
kernels give it shapes) and differentiated through `register_autograd`. Two entry points:
  fo_pool         gates already activated (z = tanh, f, o = sigmoid) - the plain interface,
  fo_pool_preact  gate pre-activations, with zoneout on the forget gate: the activations run
                  inside the kernel, which saves a read and a write of every gate on the GPU.
While torch.export traces (the ONNX exporter), both route to scan.py instead: one ONNX Scan node.
"""

from __future__ import annotations

from typing import Optional

import torch

from hybrid.train.ops.fo_pool.cpu import fo_pool_bwd_cpu, fo_pool_fwd_cpu

# Device kernels: (forward, backward) by device type, with the interface in cpu.py's docstring.
# CUDA gets the Triton kernels below when Triton imports; anything unregistered falls back to the
# CPU routine, which is plain PyTorch and runs on every device.
KERNELS = {"cpu": (fo_pool_fwd_cpu, fo_pool_bwd_cpu)}


def _kernels(device: torch.device):
    return KERNELS.get(device.type, KERNELS["cpu"])


@torch.library.custom_op("hybrid::fo_pool_fwd", mutates_args=())
def fo_pool_fwd(
    z: torch.Tensor,
    f: torch.Tensor,
    o: Optional[torch.Tensor],
    c0: Optional[torch.Tensor],
    keep: Optional[torch.Tensor],
    keep_scale: float,
    preact: bool,
    save_cells: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    h, c, cells = _kernels(z.device)[0](z, f, o, c0, keep, keep_scale, preact, save_cells)
    return h.contiguous(), c.contiguous(), cells.contiguous()


@fo_pool_fwd.register_fake
def _(z, f, o, c0, keep, keep_scale, preact, save_cells):
    B, T, D = z.shape
    cells = z.new_empty(B, T, D) if (save_cells and o is not None) else z.new_empty(0)
    return z.new_empty(B, T, D), z.new_empty(B, D), cells


@torch.library.custom_op("hybrid::fo_pool_bwd", mutates_args=())
def fo_pool_bwd(
    z: torch.Tensor,
    f: torch.Tensor,
    o: Optional[torch.Tensor],
    c0: Optional[torch.Tensor],
    keep: Optional[torch.Tensor],
    keep_scale: float,
    preact: bool,
    cells: torch.Tensor,
    grad_h: torch.Tensor,
    grad_c: torch.Tensor,
) -> list[torch.Tensor]:
    dz, df, do, dc0 = _kernels(z.device)[1](z, f, o, c0, keep, keep_scale, preact, cells, grad_h, grad_c)
    out = [dz.contiguous(), df.contiguous(), dc0.contiguous()]
    if do is not None:
        out.append(do.contiguous())
    return out


@fo_pool_bwd.register_fake
def _(z, f, o, c0, keep, keep_scale, preact, cells, grad_h, grad_c):
    B, T, D = z.shape
    dc0 = z.new_empty(B, D) if c0 is None else c0.new_empty(B, D)
    out = [z.new_empty(B, T, D), f.new_empty(B, T, D), dc0]
    if o is not None:
        out.append(o.new_empty(B, T, D))
    return out


def _setup_context(ctx, inputs, output):
    z, f, o, c0, keep, keep_scale, preact, save_cells = inputs
    h, _, cells = output
    # The backward needs every c_t: without o that is h itself, with o the saved cells.
    ctx.save_for_backward(z, f, o, c0, keep, h if o is None else cells)
    ctx.has_o, ctx.has_c0, ctx.keep_scale, ctx.preact = o is not None, c0 is not None, keep_scale, preact
    ctx.mark_non_differentiable(cells)


def _backward(ctx, grad_h, grad_c, _grad_cells):
    z, f, o, c0, keep, cells = ctx.saved_tensors
    if grad_h is None:
        grad_h = torch.zeros_like(z)
    if grad_c is None:
        grad_c = z.new_zeros(z.shape[0], z.shape[2])
    grads = fo_pool_bwd(
        z,
        f,
        o if ctx.has_o else None,
        c0 if ctx.has_c0 else None,
        keep,
        ctx.keep_scale,
        ctx.preact,
        cells,
        grad_h,
        grad_c,
    )
    dz, df, dc0 = grads[0], grads[1], grads[2]
    do = grads[3] if ctx.has_o else None
    return dz, df, do, (dc0 if ctx.has_c0 else None), None, None, None, None


fo_pool_fwd.register_autograd(_backward, setup_context=_setup_context)


def _check_shapes(z, f, o, initial_state):
    # The kernels read exactly these shapes (no broadcasting): refuse anything else here, clearly.
    if z.dim() != 3:
        raise ValueError(f"fo_pool: z must be [B, T, D], got shape {tuple(z.shape)}")
    B, T, D = z.shape
    for name, x, want in (("f", f, (B, T, D)), ("o", o, (B, T, D)), ("initial_state", initial_state, (B, D))):
        if x is not None and tuple(x.shape) != want:
            raise ValueError(f"fo_pool: {name} has shape {tuple(x.shape)}, expected {want}")


def _run(z, f, o, initial_state, output_final_state, keep, keep_scale, preact):
    _check_shapes(z, f, o, initial_state)
    # Keep the cells only when a backward can follow (saves a [B, T, D] write in evaluation).
    save = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (z, f, o, initial_state))
    h, c, _ = fo_pool_fwd(z, f, o, initial_state, keep, float(keep_scale), preact, save)
    return h, (c if output_final_state else None)


def fo_pool(z, f, o=None, initial_state=None, output_final_state=False):
    """(h, c_T or None) for the QRNN recurrence with activated gates; see the package docstring."""
    if torch.compiler.is_exporting():
        # torch.export (and so the ONNX exporter) sees the recurrence as torch's scan operator,
        # which becomes a single ONNX Scan node.
        from hybrid.train.ops.fo_pool.scan import fo_pool_scan

        return fo_pool_scan(z, f, o, initial_state, output_final_state)
    return _run(z, f, o, initial_state, output_final_state, None, 1.0, False)


def fo_pool_preact(z, f, o=None, initial_state=None, output_final_state=False, zoneout=0.0, training=False):
    """fo_pool(tanh(z), F, sigmoid(o), ...) from gate pre-activations, F = sigmoid(f) with zoneout.

    Zoneout (Krueger et al. 2017) as the QRNN uses it: in training a channel keeps its previous
    cell state (forget gate 1) with probability `zoneout`; in evaluation the expected gate
    1 - (1 - zoneout) * (1 - sigmoid(f)) is used."""
    keep, keep_scale = None, 1.0
    if zoneout > 0:
        if training:
            keep = torch.empty_like(f).bernoulli_(1 - zoneout)
        else:
            keep_scale = 1 - zoneout
    if torch.compiler.is_exporting():
        # The exported graph: activations as separate ops, then fo_pool's Scan.
        z, s = torch.tanh(z), torch.sigmoid(f)
        o = None if o is None else torch.sigmoid(o)
        f = s if keep is None and keep_scale == 1.0 else 1 - (keep if keep is not None else keep_scale) * (1 - s)
        return fo_pool(z, f, o, initial_state, output_final_state)
    return _run(z, f, o, initial_state, output_final_state, keep, keep_scale, True)


# The GPU kernels, when there is a GPU and Triton; without Triton the PyTorch routine serves CUDA.
if torch.cuda.is_available():
    try:
        from hybrid.train.ops.fo_pool.triton import fo_pool_bwd_triton, fo_pool_fwd_triton
    except ImportError:
        pass
    else:
        KERNELS["cuda"] = (fo_pool_fwd_triton, fo_pool_bwd_triton)
