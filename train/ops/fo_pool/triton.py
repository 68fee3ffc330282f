"""fo-pooling as Triton kernels (they compile to CUDA): forward, backward, and the chunk carry.

The recurrence is memory-bound, so the kernels are built to keep many bytes in flight:
  - one program owns BLOCK_D channels of one batch row (vector loads along the contiguous D axis)
    and walks its time range in tiles of BLOCK_T steps: a whole [BLOCK_T, BLOCK_D] tile of every
    input is loaded at once, and the tile's recurrence is solved in registers by an associative
    scan over (a, b) pairs, (a1, b1) . (a2, b2) = (a1 a2, a2 b1 + b2), then offset by the state
    carried in from the previous tile. One thread per channel stepping through time (pytorch-qrnn's
    ForgetMult) has one load in flight at a time and cannot reach the bandwidth.
  - when batch x channels gives too few programs to fill the GPU (evaluation at B = 1-2), time is
    cut into chunks, one program each, in three launches: a summary pass (each chunk's decay
    product and end state from a zero start), a short carry pass over chunks, and the full pass
    starting each chunk from its carried-in state. That reads the inputs twice (20 instead of
    12 bytes per element forward) but uses the whole GPU.
  - gate activations (tanh, sigmoid), the zoneout mask and the output gate are applied on the fly:
    the pre-activations are read once, straight out of the gate projection (any strides over B and
    T), and nothing activated is written back.
  - all arithmetic is float32 whatever the input dtype (float16, bfloat16, float32); outputs are
    stored in the input dtype. The backward reads the saved c_t (input dtype) rather than
    recomputing them, so forward + backward moves the minimum 36 bytes per element (fp32, no o).

The backward is the same scan in reverse time over g_t = dL/dc_t:
    g_t = f_{t+1} g_{t+1} + o_t dh_t,   g_{T-1} = o_{T-1} dh_{T-1} + dc_T,
    dz_t = g_t (1 - f_t),   df_t = g_t (c_{t-1} - z_t),   do_t = dh_t c_t,   dc_0 = f_0 g_0
(each times the activation's derivative with pre-activations).

With TRITON_INTERPRET=1 set before Triton is imported, the same kernels run on CPU tensors
(slowly, in numpy): that is how the tests check them without a GPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from hybrid.train.ops.fo_pool import cpu

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@triton.jit
def _combine(a1, b1, a2, b2):
    # Compose two steps of x -> a x + b: first (a1, b1), then (a2, b2).
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _tanh(x):
    # triton.language has no tanh (libdevice's is not available to the interpreter): exp-based,
    # with the Taylor series near 0, where 1 - exp(-2|x|) would cancel (error < 1e-7 relative).
    ax = tl.abs(x)
    e = tl.exp(-2.0 * ax)
    big = (1.0 - e) / (1.0 + e)
    x2 = x * x
    small = ax * (
        1.0
        + x2
        * (-0.3333333333333333 + x2 * (0.13333333333333333 + x2 * (-0.05396825396825397 + x2 * 0.021869488536155203)))
    )
    t = tl.where(ax < 0.3, small, big)
    return tl.where(x < 0, -t, t)


@triton.jit
def _candidate(Z, offs, mask, PREACT: tl.constexpr):
    z = tl.load(Z + offs, mask=mask, other=0.0).to(tl.float32)
    if PREACT:
        z = _tanh(z)
    return z


@triton.jit
def _out_gate(O, offs, mask, PREACT: tl.constexpr):
    o = tl.load(O + offs, mask=mask, other=0.0).to(tl.float32)
    if PREACT:
        o = tl.sigmoid(o)
    return o


@triton.jit
def _forget(F, KEEP, offs, koffs, mask, keep_scale, ZONEOUT: tl.constexpr, PREACT: tl.constexpr):
    """(f, s, k): the gate the recurrence uses, f = 1 - k (1 - s), with s = sigmoid(F) or F and
    k the zoneout keep-mask (ZONEOUT 1), a scalar (2) or 1 (0)."""
    s = tl.load(F + offs, mask=mask, other=0.0).to(tl.float32)
    if PREACT:
        s = tl.sigmoid(s)
    if ZONEOUT == 1:
        k = tl.load(KEEP + koffs, mask=mask, other=0.0).to(tl.float32)
        f = 1.0 - k * (1.0 - s)
    elif ZONEOUT == 2:
        k = keep_scale
        f = 1.0 - k * (1.0 - s)
    else:
        k = s  # unused: the caller checks ZONEOUT
        f = s
    return f, s, k


@triton.jit
def _fwd_kernel(
    Z,
    F,
    O,
    KEEP,
    C0,
    H,
    CELLS,
    CLAST,
    CARRY,
    SUM_A,
    SUM_B,
    T,
    D,
    CHUNK,
    NC,
    s_b,
    s_t,
    k_b,
    k_t,
    keep_scale,
    HAS_O: tl.constexpr,
    HAS_C0: tl.constexpr,
    ZONEOUT: tl.constexpr,
    PREACT: tl.constexpr,
    SAVE_CELLS: tl.constexpr,
    MODE: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # MODE 0: the whole sequence in one program per (channel block, batch row).
    # MODE 1: summary of chunk k: decay product and end state from a zero start -> SUM_A, SUM_B.
    # MODE 2: chunk k from the state CARRY[b, k] (written by _carry_kernel).
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    k = tl.program_id(2)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    rows = tl.arange(0, BLOCK_T)
    is_last = (rows == BLOCK_T - 1)[:, None]
    start = k * CHUNK
    end = tl.minimum(start + CHUNK, T)
    chunk_row = (b * NC + k) * D + d
    if MODE == 2:
        c = tl.load(CARRY + chunk_row, mask=dmask, other=0.0)
    elif MODE == 0 and HAS_C0:
        c = tl.load(C0 + b * D + d, mask=dmask, other=0.0).to(tl.float32)
    else:
        c = tl.zeros([BLOCK_D], dtype=tl.float32)
    decay = tl.full([BLOCK_D], 1.0, tl.float32)
    for t0 in range(start, end, BLOCK_T):
        t = (t0 + rows).to(tl.int64)
        mask = (t < end)[:, None] & dmask[None, :]
        offs = b * s_b + t[:, None] * s_t + d[None, :]
        koffs = b * k_b + t[:, None] * k_t + d[None, :]
        z = _candidate(Z, offs, mask, PREACT)
        f, _s, _k = _forget(F, KEEP, offs, koffs, mask, keep_scale, ZONEOUT, PREACT)
        # Padding rows are the identity step (a = 1, b = 0), so the last row holds the last state.
        a = tl.where(mask, f, 1.0)
        x = tl.where(mask, (1.0 - f) * z, 0.0)
        A, X = tl.associative_scan((a, x), 0, _combine)
        cs = A * c[None, :] + X
        c = tl.sum(tl.where(is_last, cs, 0.0), axis=0)
        if MODE == 1:
            decay = decay * tl.sum(tl.where(is_last, A, 0.0), axis=0)
        else:
            out = (b * T + t[:, None]) * D + d[None, :]
            if HAS_O:
                o = _out_gate(O, offs, mask, PREACT)
                tl.store(H + out, (cs * o).to(H.dtype.element_ty), mask=mask)
                if SAVE_CELLS:
                    tl.store(CELLS + out, cs.to(CELLS.dtype.element_ty), mask=mask)
            else:
                tl.store(H + out, cs.to(H.dtype.element_ty), mask=mask)
    if MODE == 1:
        tl.store(SUM_A + chunk_row, decay, mask=dmask)
        tl.store(SUM_B + chunk_row, c, mask=dmask)
    elif end == T:
        tl.store(CLAST + b * D + d, c.to(CLAST.dtype.element_ty), mask=dmask)


@triton.jit
def _carry_kernel(
    SUM_A, SUM_B, INIT, CARRY, NC, D, HAS_INIT: tl.constexpr, REVERSE: tl.constexpr, BLOCK_D: tl.constexpr
):
    # The state entering each chunk: x_k = A_{k-1} x_{k-1} + B_{k-1}, in time order or reversed.
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    if HAS_INIT:
        x = tl.load(INIT + b * D + d, mask=dmask, other=0.0).to(tl.float32)
    else:
        x = tl.zeros([BLOCK_D], dtype=tl.float32)
    for i in range(NC):
        if REVERSE:
            k = NC - 1 - i
        else:
            k = i
        row = (b * NC + k) * D + d
        tl.store(CARRY + row, x, mask=dmask)
        x = tl.load(SUM_A + row, mask=dmask, other=1.0) * x + tl.load(SUM_B + row, mask=dmask, other=0.0)


@triton.jit
def _bwd_kernel(
    Z,
    F,
    O,
    KEEP,
    C0,
    CELLS,
    GH,
    GC,
    DZ,
    DF,
    DO,
    DC0,
    CARRY,
    SUM_A,
    SUM_B,
    T,
    D,
    CHUNK,
    NC,
    s_b,
    s_t,
    k_b,
    k_t,
    g_b,
    g_t,
    keep_scale,
    HAS_O: tl.constexpr,
    HAS_C0: tl.constexpr,
    ZONEOUT: tl.constexpr,
    PREACT: tl.constexpr,
    MODE: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # MODEs as in _fwd_kernel; the carry runs from the end of the chunk towards its start.
    pid_d = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    k = tl.program_id(2)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    dmask = d < D
    rows = tl.arange(0, BLOCK_T)
    is_last = (rows == BLOCK_T - 1)[:, None]
    start = k * CHUNK
    end = tl.minimum(start + CHUNK, T)
    chunk_row = (b * NC + k) * D + d
    if MODE == 2:
        g = tl.load(CARRY + chunk_row, mask=dmask, other=0.0)
    elif MODE == 0:
        g = tl.load(GC + b * D + d, mask=dmask, other=0.0).to(tl.float32)
    else:
        g = tl.zeros([BLOCK_D], dtype=tl.float32)
    if HAS_C0:
        c0 = tl.load(C0 + b * D + d, mask=dmask, other=0.0).to(tl.float32)
    else:
        c0 = tl.zeros([BLOCK_D], dtype=tl.float32)
    decay = tl.full([BLOCK_D], 1.0, tl.float32)
    for i in range(0, end - start, BLOCK_T):
        # Row r of the tile is time end-1-i-r: latest first, so the scan runs backwards in time.
        t = (end - 1 - i - rows).to(tl.int64)
        tmask = t >= start
        mask = tmask[:, None] & dmask[None, :]
        offs = b * s_b + t[:, None] * s_t + d[None, :]
        koffs = b * k_b + t[:, None] * k_t + d[None, :]
        nmask = (tmask & (t + 1 < T))[:, None] & dmask[None, :]
        f_next, _s, _k = _forget(F, KEEP, offs + s_t, koffs + k_t, nmask, keep_scale, ZONEOUT, PREACT)
        a = tl.where(nmask, f_next, 1.0)
        gh = tl.load(GH + b * g_b + t[:, None] * g_t + d[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_O:
            o = _out_gate(O, offs, mask, PREACT)
            x = gh * o
        else:
            x = gh
        A, X = tl.associative_scan((a, x), 0, _combine)
        gs = A * g[None, :] + X  # dL/dc_t
        g = tl.sum(tl.where(is_last, gs, 0.0), axis=0)
        if MODE == 1:
            decay = decay * tl.sum(tl.where(is_last, A, 0.0), axis=0)
        else:
            z = _candidate(Z, offs, mask, PREACT)
            f, s, kk = _forget(F, KEEP, offs, koffs, mask, keep_scale, ZONEOUT, PREACT)
            out = (b * T + t[:, None]) * D + d[None, :]
            c_prev = tl.load(CELLS + out - D, mask=mask & (t >= 1)[:, None], other=0.0).to(tl.float32)
            c_prev = tl.where((t == 0)[:, None], c0[None, :], c_prev)
            dz = gs * (1.0 - f)
            df = gs * (c_prev - z)
            if ZONEOUT != 0:
                df = df * kk
            if PREACT:
                dz = dz * (1.0 - z * z)
                df = df * s * (1.0 - s)
            tl.store(DZ + out, dz.to(DZ.dtype.element_ty), mask=mask)
            tl.store(DF + out, df.to(DF.dtype.element_ty), mask=mask)
            if HAS_O:
                do = gh * tl.load(CELLS + out, mask=mask, other=0.0).to(tl.float32)
                if PREACT:
                    do = do * o * (1.0 - o)
                tl.store(DO + out, do.to(DO.dtype.element_ty), mask=mask)
    if MODE == 1:
        tl.store(SUM_A + chunk_row, decay, mask=dmask)
        tl.store(SUM_B + chunk_row, g, mask=dmask)
    elif start == 0:
        # The chunk that starts at t = 0 ends the backward: dL/dc_0 = f_0 g_0.
        f0, _s, _k = _forget(F, KEEP, b * s_b + d, b * k_b + d, dmask, keep_scale, ZONEOUT, PREACT)
        tl.store(DC0 + b * D + d, (f0 * g).to(DC0.dtype.element_ty), mask=dmask)


@dataclass(frozen=True)
class Plan:
    """Launch shape: tiles of block_t steps x block_d channels; chunk = time steps per program
    (0: the whole sequence in one program, no chunking)."""

    block_t: int = 16
    block_d: int = 64
    chunk: int = 0
    num_warps: int = 4


CHUNK_STEPS = 256  # time steps per program when the time axis is chunked


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def plan_for(B: int, T: int, D: int, device: torch.device, backward: bool = False, half: bool = False) -> Plan:
    """Default launch plan (half: 2-byte inputs), tuned on an H200 with `tools/bench_fo_pool.py
    --sweep` (BENCHMARKS.md): tiles of 32 steps, forward and backward alike; 64 channels on 4 warps
    for float32 (79% / 79% of copy bandwidth forward / forward + backward at T=1024, B=32, H=1024;
    16-step tiles 67%, 8 warps 56-62%), 32 channels on 2 warps for bfloat16 (46% / 51% against
    38% / 46%). With fewer channel blocks than SMs, the time axis is cut into chunks of 256 steps
    (at B=1 they beat 512 and 1024, and 2-4x no chunks). No register spills on sm_90."""
    if INTERPRET or device.type != "cuda":
        return Plan(8 if backward else 16, min(64, triton.next_power_of_2(max(D, 16))), 0, 4)
    block_d, num_warps = (32, 2) if half else (64, 4)
    block_d = min(block_d, triton.next_power_of_2(max(D, 16)))
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    if B * triton.cdiv(D, block_d) >= sms or T < 2 * CHUNK_STEPS:
        return Plan(32, block_d, 0, num_warps)
    return Plan(32, block_d, CHUNK_STEPS, num_warps)


def _gate_views(z, f, o):
    """z, f, o sharing one (B, T) stride pair with unit stride over D (the gate projection's chunks
    qualify); otherwise contiguous copies."""
    ts = [x for x in (z, f, o) if x is not None]
    if any(x.stride() != z.stride() or x.stride(2) != 1 for x in ts):
        ts = [x.contiguous() for x in ts]
        z, f = ts[0], ts[1]
        o = ts[2] if o is not None else None
    return z, f, o


def _zoneout(keep, keep_scale, z):
    """(ZONEOUT mode, keep tensor or a placeholder, its B and T strides)."""
    if keep is not None:
        keep = keep if keep.stride(2) == 1 else keep.contiguous()
        return 1, keep, keep.stride(0), keep.stride(1)
    return (0 if keep_scale == 1.0 else 2), z, 0, 0


def _on_device(z):
    """A context that launches on z's GPU (Triton launches on the current device)."""
    if z.device.type == "cuda":
        return torch.cuda.device(z.device)
    if not INTERPRET:
        raise ValueError(
            f"Triton fo_pool kernels need CUDA tensors (got {z.device}); set TRITON_INTERPRET=1 "
            "before importing Triton to run them on the CPU"
        )
    return contextlib.nullcontext()


def fo_pool_fwd_triton(
    z, f, o, c0, keep=None, keep_scale=1.0, preact=False, save_cells=False, plan: Plan | None = None
):
    """Forward with the kernel interface of cpu.py: (h, c_T, cells)."""
    if z.dtype == torch.float64:  # the kernels accumulate in float32; float64 is for checks
        return cpu.fo_pool_fwd_cpu(z, f, o, c0, keep, keep_scale, preact, save_cells)
    if z.numel() == 0:  # nothing to launch
        return cpu.fo_pool_fwd_cpu(z, f, o, c0, keep, keep_scale, preact, save_cells)
    with _on_device(z):
        return _fwd(z, f, o, c0, keep, keep_scale, preact, save_cells, plan)


def _fwd(z, f, o, c0, keep, keep_scale, preact, save_cells, plan):
    B, T, D = z.shape
    z, f, o = _gate_views(z, f, o)
    zmode, keep_t, k_b, k_t = _zoneout(keep, keep_scale, z)
    c0 = None if c0 is None else c0.contiguous()
    p = plan or plan_for(B, T, D, z.device, half=z.element_size() < 4)
    h = torch.empty(B, T, D, dtype=z.dtype, device=z.device)
    c_last = torch.empty(B, D, dtype=z.dtype, device=z.device)
    save = save_cells and o is not None
    cells = torch.empty(B, T, D, dtype=z.dtype, device=z.device) if save else z.new_empty(0)
    nd = triton.cdiv(D, p.block_d)
    chunk = p.chunk if 0 < p.chunk < T else T
    nc = triton.cdiv(T, chunk)
    consts = dict(
        HAS_O=o is not None,
        HAS_C0=c0 is not None,
        ZONEOUT=zmode,
        PREACT=preact,
        SAVE_CELLS=save,
        BLOCK_T=p.block_t,
        BLOCK_D=p.block_d,
        num_warps=p.num_warps,
    )
    args = [z, f, o if o is not None else z, keep_t, c0 if c0 is not None else z, h, cells if save else h, c_last]
    dims = [T, D, chunk, nc, z.stride(0), z.stride(1), k_b, k_t, float(keep_scale)]
    if nc == 1:
        _fwd_kernel[(nd, B, 1)](*args, h, h, h, *dims, MODE=0, **consts)
    else:
        sum_a, sum_b, carry = (torch.empty(B, nc, D, dtype=torch.float32, device=z.device) for _ in range(3))
        _fwd_kernel[(nd, B, nc)](*args, carry, sum_a, sum_b, *dims, MODE=1, **consts)
        _carry_kernel[(nd, B)](
            sum_a,
            sum_b,
            c0 if c0 is not None else z,
            carry,
            nc,
            D,
            HAS_INIT=c0 is not None,
            REVERSE=False,
            BLOCK_D=p.block_d,
            num_warps=p.num_warps,
        )
        _fwd_kernel[(nd, B, nc)](*args, carry, sum_a, sum_b, *dims, MODE=2, **consts)
    return h, c_last, cells


def fo_pool_bwd_triton(z, f, o, c0, keep, keep_scale, preact, cells, grad_h, grad_c, plan: Plan | None = None):
    """Backward with the kernel interface of cpu.py: (dz, df, do, dc0)."""
    if z.dtype == torch.float64:
        return cpu.fo_pool_bwd_cpu(z, f, o, c0, keep, keep_scale, preact, cells, grad_h, grad_c)
    if z.numel() == 0:  # nothing to launch
        return cpu.fo_pool_bwd_cpu(z, f, o, c0, keep, keep_scale, preact, cells, grad_h, grad_c)
    with _on_device(z):
        return _bwd(z, f, o, c0, keep, keep_scale, preact, cells, grad_h, grad_c, plan)


def _bwd(z, f, o, c0, keep, keep_scale, preact, cells, grad_h, grad_c, plan):
    B, T, D = z.shape
    if cells.numel() == 0:  # not saved by the forward: recompute the c_t
        cells = fo_pool_fwd_triton(z, f, None, c0, keep, keep_scale, preact, False, plan)[0]
    cells = cells.contiguous()
    z, f, o = _gate_views(z, f, o)
    zmode, keep_t, k_b, k_t = _zoneout(keep, keep_scale, z)
    c0 = None if c0 is None else c0.contiguous()
    grad_h = grad_h if grad_h.stride(2) == 1 else grad_h.contiguous()
    grad_c = grad_c.contiguous()
    p = plan or plan_for(B, T, D, z.device, backward=True, half=z.element_size() < 4)
    dz = torch.empty(B, T, D, dtype=z.dtype, device=z.device)
    df = torch.empty(B, T, D, dtype=f.dtype, device=z.device)
    do = torch.empty(B, T, D, dtype=o.dtype, device=z.device) if o is not None else None
    dc0 = torch.empty(B, D, dtype=c0.dtype if c0 is not None else z.dtype, device=z.device)
    nd = triton.cdiv(D, p.block_d)
    chunk = p.chunk if 0 < p.chunk < T else T
    nc = triton.cdiv(T, chunk)
    consts = dict(
        HAS_O=o is not None,
        HAS_C0=c0 is not None,
        ZONEOUT=zmode,
        PREACT=preact,
        BLOCK_T=p.block_t,
        BLOCK_D=p.block_d,
        num_warps=p.num_warps,
    )
    args = [
        z,
        f,
        o if o is not None else z,
        keep_t,
        c0 if c0 is not None else z,
        cells,
        grad_h,
        grad_c,
        dz,
        df,
        do if do is not None else dz,
        dc0,
    ]
    dims = [T, D, chunk, nc, z.stride(0), z.stride(1), k_b, k_t, grad_h.stride(0), grad_h.stride(1), float(keep_scale)]
    if nc == 1:
        _bwd_kernel[(nd, B, 1)](*args, dz, dz, dz, *dims, MODE=0, **consts)
    else:
        sum_a, sum_b, carry = (torch.empty(B, nc, D, dtype=torch.float32, device=z.device) for _ in range(3))
        _bwd_kernel[(nd, B, nc)](*args, carry, sum_a, sum_b, *dims, MODE=1, **consts)
        _carry_kernel[(nd, B)](
            sum_a, sum_b, grad_c, carry, nc, D, HAS_INIT=True, REVERSE=True, BLOCK_D=p.block_d, num_warps=p.num_warps
        )
        _bwd_kernel[(nd, B, nc)](*args, carry, sum_a, sum_b, *dims, MODE=2, **consts)
    return dz, df, do, dc0
