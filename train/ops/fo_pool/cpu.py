"""fo-pooling on the CPU: a compiled C loop when a C compiler is at hand, else a chunked scan in PyTorch.

The recurrence is sequential in time but independent across the B x D channels. Two paths:
  - the C kernel (cpu_kernel.c, built on first use by cpu_kernel.py): a plain loop, t outside and
    contiguous channels inside (vectorised by the compiler), the channels split across threads. It
    reads and writes each element once (the scan below makes several passes and pays PyTorch's
    per-op overhead ~4 sqrt(T) times); the backward also takes the output gate in the same sweep.
    Float32/float64 CPU tensors only; the gate activations, zoneout and the gates' own derivatives
    stay in torch's vectorised code (gates() and fo_pool_bwd_cpu below).
  - the chunked two-level scan in plain PyTorch, which runs anywhere (no compiler, other devices, or
    USE_C_KERNEL = False). Time is cut into C chunks of L steps (L ~ sqrt(T)), and each of the L
    steps runs once for all chunks side by side, on strided views (no copies):
      1) every chunk from a zero state, keeping only its end state and its product of forget gates,
      2) a short loop over the C chunks: the state entering each one,
      3) every chunk again from its true entering state, writing the outputs.
    About 4 sqrt(T) ops forward instead of 4 T, no division or log (results match the sequential
    loop to rounding), and few passes over memory: a step is one fused op, lerp(z, c, f), and the
    backward writes dz and df from the same sweep that carries the gradient backwards in time.
Both compute a step as torch.lerp(z, c, f) does, so they agree to rounding. Fresh [B, T, D] outputs
are backed by huge pages where Linux allows (cpu_kernel.empty): their 4 KiB page faults alone would
cost about as much as the C kernel's pass.

The kernel interface (shared with triton.py; op.py dispatches to one or the other):
  fwd(z, f, o, c0, keep, keep_scale, preact, save_cells) -> (h, c_T, cells)
  bwd(z, f, o, c0, keep, keep_scale, preact, cells, grad_h, grad_c) -> (dz, df, do, dc0)
where, with s = sigmoid(f) if preact else f, the forget gate is  1 - k * (1 - s),  k = keep (the
zoneout keep-mask, a tensor) or keep_scale (a float; 1.0 = no zoneout); with preact, z and o are
tanh'ed and sigmoid'ed first. `cells` are the c_t in the input dtype, saved for the backward when
o is given (without o, h is c and is saved instead); an empty tensor when not saved.
"""

from __future__ import annotations

import math

import torch

from hybrid.train.ops.fo_pool import cpu_kernel

USE_C_KERNEL = True  # False: always the chunked scan (tests and the benchmark compare both)


def _split(T: int) -> tuple[int, int, int]:
    """(L, C, R): R >= 1 single steps at the start, then C chunks of L steps (C = 0: all single)."""
    L = max(1, math.isqrt(T))
    C = (T - 1) // L
    if C < 2:
        return 1, 0, T
    return L, C, T - C * L


def _c_kernel(z: torch.Tensor, full=(), state=(), out=()):
    """The C library if it serves this call, else None (the chunked scan below serves).

    The C loop neither broadcasts nor checks: z must be a float32/float64 CPU tensor, the other
    [B, T, D] operands (`full`) and the [B, D] states (`state`) exactly those shapes (they are made
    contiguous and of z's dtype by the caller), and the outputs (`out`) contiguous, of z's dtype."""
    if not (USE_C_KERNEL and z.device.type == "cpu" and z.dtype in cpu_kernel.SUFFIX):
        return None
    B, T, D = z.shape
    if any(x is not None and x.shape != z.shape for x in full):
        return None
    if any(x is not None and tuple(x.shape) != (B, D) for x in state):
        return None
    if any(x.shape != z.shape or x.dtype != z.dtype or x.device != z.device or not x.is_contiguous() for x in out):
        return None
    return cpu_kernel.library()


def _ready(x, like):  # what the C loop reads: contiguous, in the accumulation dtype
    return None if x is None else x.to(like.dtype).contiguous()


def scan_forward(z, f, c0, out):
    """out[:, t] = c_t = f_t c_{t-1} + (1 - f_t) z_t for z, f: [B, T, D], c0: [B, D] (zeros if None).

    One step is one fused op: lerp(z, c, f) = z + f (c - z). `out` must be contiguous."""
    B, T, D = z.shape
    if (lib := _c_kernel(z, full=(f,), state=(c0,), out=(out,))) is not None:
        return cpu_kernel.forward(lib, z.contiguous(), _ready(f, z), _ready(c0, z), out)
    L, C, R = _split(T)
    c = z.new_zeros(B, D) if c0 is None else c0.to(z.dtype)
    for t in range(R):  # the head, step by step
        c = torch.lerp(z[:, t], c, f[:, t], out=out[:, t])
    if C == 0:
        return out
    z4, f4, h4 = (x[:, R:].view(B, C, L, D) for x in (z, f, out))
    # 1) each chunk from zero: its end state s and its decay P = f_0 ... f_{L-1}
    s = z4[:, :, 0] - f4[:, :, 0] * z4[:, :, 0]
    P = f4[:, :, 0].clone()
    for t in range(1, L):
        torch.lerp(z4[:, :, t], s, f4[:, :, t], out=s)
        P.mul_(f4[:, :, t])
    # 2) the state entering each chunk
    carry = z.new_empty(B, C, D)
    for k in range(C):
        carry[:, k] = c
        c = torch.addcmul(s[:, k], P[:, k], c)
    # 3) every chunk again, from its entering state
    prev = carry
    for t in range(L):
        prev = torch.lerp(z4[:, :, t], prev, f4[:, :, t], out=h4[:, :, t])
    return out


def scan_backward(z, f, c, c0, gh, gc, dz, df, o=None, do=None):
    """Backward of scan_forward: given the c_t, dL/dc_t from the outputs (gh: [B, T, D]) and dL/dc_T
    (gc), writes dL/dz and dL/df into dz, df (contiguous) and returns dL/dc0. With an output gate o
    (h = o c), gh is dL/dh instead: also writes dL/do = gh c into do, and uses gh o as dL/dc_t.

    In reverse time, with u_t = f_t g_t the gradient reaching c_{t-1} and g_t = dL/dc_t:
        g_t = gh_t + u_{t+1} (u_T = gc),  u_t = f_t g_t,  dz_t = g_t (1 - f_t),  df_t = g_t (c_{t-1} - z_t)."""
    B, T, D = z.shape
    if o is not None and do is None:
        raise ValueError("scan_backward: with an output gate o, pass `do` to receive dL/do")
    outs = (dz, df) if do is None else (dz, df, do)
    if (lib := _c_kernel(z, full=(f, c, gh, o), state=(c0, gc), out=outs)) is not None:  # one sweep, o included
        f, c, c0, gh, gc, o = (_ready(x, z) for x in (f, c, c0, gh, gc, o))
        return cpu_kernel.backward(lib, z.contiguous(), f, c, c0, gh, gc, dz, df, o, do)
    if o is not None:
        torch.mul(gh, c, out=do)
        gh = gh * o
    L, C, R = _split(T)
    u = gc.to(z.dtype).clone()
    if C:
        z4, f4, gh4, dz4, df4 = (x[:, R:].view(B, C, L, D) for x in (z, f, gh, dz, df))
        cp4 = c[:, R - 1 : T - 1].view(B, C, L, D)  # c_{t-1}; R >= 1, so t = 0 is in the head
        g = z.new_empty(B, C, D)
        # 1) each chunk from u = 0 at its end: the u leaving its start, and its product of f
        s = torch.mul(gh4[:, :, L - 1], f4[:, :, L - 1])
        P = f4[:, :, L - 1].clone()
        for t in range(L - 2, -1, -1):
            s.add_(gh4[:, :, t]).mul_(f4[:, :, t])
            P.mul_(f4[:, :, t])
        # 2) the u entering each chunk at its end
        carry = z.new_empty(B, C, D)
        for k in range(C - 1, -1, -1):
            carry[:, k] = u
            u = torch.addcmul(s[:, k], P[:, k], u)
        # 3) every chunk again, writing the gradients
        diff = z.new_empty(B, C, D)
        for t in range(L - 1, -1, -1):
            torch.add(gh4[:, :, t], carry, out=g)
            torch.addcmul(g, g, f4[:, :, t], value=-1, out=dz4[:, :, t])
            torch.sub(cp4[:, :, t], z4[:, :, t], out=diff)
            torch.mul(g, diff, out=df4[:, :, t])
            torch.mul(g, f4[:, :, t], out=carry)
        u = carry[:, 0]
    for t in range(R - 1, -1, -1):  # the head, step by step
        g = gh[:, t] + u
        torch.addcmul(g, g, f[:, t], value=-1, out=dz[:, t])
        prev = c[:, t - 1] if t else (torch.zeros_like(u) if c0 is None else c0.to(z.dtype))
        torch.mul(g, prev - z[:, t], out=df[:, t])
        u = g * f[:, t]
    return u


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _empty(shape, dtype, device):
    # A fresh [B, T, D] buffer; on the CPU backed by huge pages where the OS allows (cpu_kernel.empty).
    return cpu_kernel.empty(shape, dtype) if device.type == "cpu" else torch.empty(shape, dtype=dtype, device=device)


def gates(z, f, o, keep, keep_scale, preact, acc):
    """(z, f, o, s, k) as the recurrence uses them, in dtype `acc`; s and k are for the backward.

    The order of operations is the model's (tanh/sigmoid, then 1 - k * (1 - s)), so that float32
    results are bitwise those of activating the gates in PyTorch first."""
    z, s = z.to(acc), f.to(acc)
    o = None if o is None else o.to(acc)
    if preact:  # into huge-page buffers (see _empty), which fo_pool_bwd_cpu then reuses
        z = torch.tanh(z, out=_empty(z.shape, acc, z.device))
        s = torch.sigmoid(s, out=_empty(s.shape, acc, s.device))
        o = None if o is None else torch.sigmoid(o, out=_empty(o.shape, acc, o.device))
    k = keep.to(acc) if keep is not None else keep_scale
    f = s if (keep is None and keep_scale == 1.0) else 1 - k * (1 - s)
    return z, f, o, s, k


def _initial(c0, B, D, like, acc):
    return like.new_zeros(B, D, dtype=acc) if c0 is None else c0.to(acc)


def fo_pool_fwd_cpu(z, f, o, c0, keep=None, keep_scale=1.0, preact=False, save_cells=False):
    """Returns (h, c_T, cells) in the input dtype (see the module docstring)."""
    acc = _acc_dtype(z)
    B, T, D = z.shape
    zz, ff, oo, _, _ = gates(z, f, o, keep, keep_scale, preact, acc)
    c = scan_forward(zz, ff, c0, _empty((B, T, D), acc, z.device))
    # The final state is copied: an op's outputs may not alias each other.
    last = (c[:, -1] if T else _initial(c0, B, D, z, acc)).clone()
    h = c if oo is None else torch.mul(c, oo, out=_empty((B, T, D), acc, z.device))
    cells = c.to(z.dtype) if (save_cells and o is not None) else z.new_empty(0)
    return h.to(z.dtype), last.to(z.dtype), cells


def fo_pool_bwd_cpu(z, f, o, c0, keep, keep_scale, preact, cells, grad_h, grad_c):
    """Gradients (dz, df, do, dc0) of (h, c_T) with respect to the op's inputs."""
    acc = _acc_dtype(z)
    B, T, D = z.shape
    zz, ff, oo, s, k = gates(z, f, o, keep, keep_scale, preact, acc)
    if cells.numel() and cells.dtype == acc:
        c = cells
    else:  # not saved, or saved in a narrower dtype: recompute in full precision
        c = scan_forward(zz, ff, c0, _empty((B, T, D), acc, z.device))
    dz, df = _empty((B, T, D), acc, z.device), _empty((B, T, D), acc, z.device)
    do = None if oo is None else _empty((B, T, D), acc, z.device)
    dc0 = scan_backward(zz, ff, c, None if c0 is None else c0.to(acc), grad_h.to(acc), grad_c.to(acc), dz, df, oo, do)
    # The gates' own derivatives, in place: a fresh [B, T, D] buffer costs about a pass in page
    # faults. With preact, zz, s and oo are this call's own buffers (gates()), free to overwrite;
    # x.neg_().add_(1) is 1 - x to the bit.
    if not (keep is None and keep_scale == 1.0):
        df.mul_(k)
    if preact:
        dz.mul_(zz.mul_(zz).neg_().add_(1))  # tanh' = 1 - tanh^2
        df.mul_(s).mul_(s.neg_().add_(1))  # sigmoid' = s (1 - s)
        if do is not None:
            do.mul_(oo).mul_(oo.neg_().add_(1))
    return (
        dz.to(z.dtype),
        df.to(f.dtype),
        None if do is None else do.to(o.dtype),
        dc0.to(c0.dtype if c0 is not None else z.dtype),
    )
