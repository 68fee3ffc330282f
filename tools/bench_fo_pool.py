"""fo-pooling kernel benchmark: time and effective bandwidth of every path, side by side, in one run.

    python tools/bench_fo_pool.py                      # CPU: reference loop, chunked scan, C kernel, nn.LSTM
    python tools/bench_fo_pool.py --device cuda        # GPU: + Triton kernels, cuDNN LSTM
    python tools/bench_fo_pool.py --device cuda --sweep   # try Triton launch plans per shape
    python tools/bench_fo_pool.py --markdown           # the table as markdown, for BENCHMARKS.md

Bandwidth is counted as the minimum traffic of the recurrence, not what a path really moves:
forward 12 bytes per element (read z, f; write c), forward + backward 36 (the backward reads f, z,
c and dL/dh, writes dz and df), half that with 16-bit inputs - against a copy (read + write) of a
large buffer on the same device, measured in the same run. The gates here are activated, with no
output gate: the bare recurrence.
Paths: "reference loop" is naive.py (a Python loop over unbind(1) views, autograd for the
backward); "chunked scan" and "C kernel" are cpu.py's two paths, each forced (the op takes the
C kernel on the CPU when it builds); "x ref" columns divide the reference loop's time by the path's.
"err": max |x - x64| / max |x64| over h, dz and df in float32, against the chunked scan in
float64 (T <= 256 for the loops). LSTM: one nn.LSTM layer of the same width (cuDNN on the GPU),
input [T, B, H], forward and forward + backward.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from hybrid.train.ops.fo_pool import cpu, cpu_kernel
from hybrid.train.ops.fo_pool.cpu import fo_pool_bwd_cpu, fo_pool_fwd_cpu
from hybrid.train.ops.fo_pool.naive import fo_pool_naive

CPU_SHAPES = "512,16,1024;128,4,256;2048,1,1024"
GPU_SHAPES = "1024,32,1024;4096,1,4096;8192,2,2048;16384,1,1024;1024,32,4096"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {torch.get_num_threads()} torch threads"


def timer(device: torch.device, reps: int):
    """fn -> seconds per call (GPU: Triton's do_bench median, L2 flushed; CPU: the fastest of `reps`)."""
    if device.type == "cuda":
        import triton.testing

        return lambda fn: triton.testing.do_bench(fn, warmup=25, rep=max(100, 20 * reps), return_mode="median") / 1e3

    def run(fn):
        t = time.perf_counter()
        fn()
        first = time.perf_counter() - t
        if first > 2.0:  # the slow reference: one more call is enough
            t = time.perf_counter()
            fn()
            return min(first, time.perf_counter() - t)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times)  # the least disturbed call: robust on a machine shared with other jobs

    return run


def copy_bandwidth(device: torch.device, measure) -> float:
    """GB/s of dst.copy_(src), counting the read and the write."""
    n = (256 if device.type == "cuda" else 64) * 2**20  # float32 elements: 1 GiB / 256 MiB
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / measure(lambda: dst.copy_(src)) / 1e9


def rel_err(pairs) -> float:
    return max(
        ((x.detach().cpu().double() - y).abs().max() / y.abs().max().clamp_min(1e-30)).item()
        for x, y in ((x, y.detach().cpu().double()) for x, y in pairs)
    )


def forced(use_c: bool, fn):
    """fn with cpu.py's C kernel switched on or off for the call."""

    def run(*a, **kw):
        old, cpu.USE_C_KERNEL = cpu.USE_C_KERNEL, use_c
        try:
            return fn(*a, **kw)
        finally:
            cpu.USE_C_KERNEL = old

    return run


def paths(device: torch.device, plan=None):
    """name -> (forward(z, f, o) -> h, forward+backward(z, f, o, gh) -> (h, dz, df, ...), (fwd, f+b) minimum
    traffic in elements per element) for this device. Only the last path uses o."""

    def ref_fwd(z, f, o):
        return fo_pool_naive(z, f)[0]

    def ref_fb(z, f, o, gh):
        z, f = z.detach().requires_grad_(), f.detach().requires_grad_()
        h = fo_pool_naive(z, f)[0]
        return (h, *torch.autograd.grad(h, (z, f), gh))

    def kernels(fwd, bwd, preact=False):
        # The op's kernels without autograd around them; preact: the model's case, gates from
        # pre-activations with the output gate, all fused.
        def f_only(z, f, o):
            return fwd(z, f, o if preact else None, None, None, 1.0, preact, False)[0]

        def fb(z, f, o, gh):
            o = o if preact else None
            h, _, cells = fwd(z, f, o, None, None, 1.0, preact, True)
            gc = gh.new_zeros(gh.shape[0], gh.shape[2])
            grads = bwd(z, f, o, None, None, 1.0, preact, cells if preact else h, gh, gc)
            return (h, *(g for g in grads[:3] if g is not None))

        return f_only, fb

    # Minimum traffic, in elements per element: bare recurrence forward reads z, f and writes c (3),
    # backward reads f, z, c, dh and writes dz, df (6). With pre-activations and o: forward reads
    # z, f, o and writes h (4); for training it also writes c (5), and the backward reads z, f, o,
    # c, dh and writes dz, df, do (8).
    bare, fused = (3, 9), (4, 13)
    out = {
        "reference loop": (ref_fwd, ref_fb, bare),
        "chunked scan (cpu.py)": (*kernels(forced(False, fo_pool_fwd_cpu), forced(False, fo_pool_bwd_cpu)), bare),
    }
    if device.type == "cpu" and cpu_kernel.library() is not None:
        out["C kernel (cpu_kernel.c)"] = (*kernels(forced(True, fo_pool_fwd_cpu), forced(True, fo_pool_bwd_cpu)), bare)
    if device.type == "cuda":
        from functools import partial

        from hybrid.train.ops.fo_pool import triton as tk

        fwd, bwd = partial(tk.fo_pool_fwd_triton, plan=plan), partial(tk.fo_pool_bwd_triton, plan=plan)
        out["triton"] = (*kernels(fwd, bwd), bare)
        out["triton, pre-activations + o"] = (*kernels(fwd, bwd, preact=True), fused)
    return out


def lstm_times(T, B, H, dtype, device, measure):
    lstm = torch.nn.LSTM(H, H).to(device=device, dtype=dtype)
    x = torch.randn(T, B, H, device=device, dtype=dtype, requires_grad=True)

    def fwd():
        with torch.no_grad():
            lstm(x)

    def fb():
        y, _ = lstm(x)
        y.backward(torch.ones_like(y))

    return measure(fwd), measure(fb)


def inputs(T, B, H, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, H, generator=g).tanh()
    f = torch.rand(B, T, H, generator=g) * 0.9 + 0.05
    o = torch.rand(B, T, H, generator=g)
    gh = torch.randn(B, T, H, generator=g)
    return [x.to(device, dtype) for x in (z, f, o, gh)]


def accuracy(name, fb, T, B, H, device):
    """max |x - x64| / max |x64| of the path's outputs in float32 against the chunked scan in
    float64 (T <= 256 for the slow loops)."""
    if "loop" in name:
        T = min(T, 256)
    z, f, o, gh = inputs(T, B, H, torch.float32, device)
    preact = "pre-activations" in name
    z64, f64, o64, gh64 = (t.cpu().double() for t in (z, f, o, gh))
    o64 = o64 if preact else None
    fwd, bwd = forced(False, fo_pool_fwd_cpu), forced(False, fo_pool_bwd_cpu)
    h, _, cells = fwd(z64, f64, o64, None, None, 1.0, preact, True)
    gc = gh64.new_zeros(gh64.shape[0], gh64.shape[2])
    dz, df, do, _ = bwd(z64, f64, o64, None, None, 1.0, preact, cells if preact else h, gh64, gc)
    want = (h, dz, df) + ((do,) if preact else ())
    return rel_err(zip(fb(z, f, o, gh), want))


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="cpu, cuda or auto")
    ap.add_argument("--shapes", default=None, help="T,B,H;T,B,H;... (default depends on the device)")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--reps", type=int, default=7, help="timed calls per measurement (CPU)")
    ap.add_argument(
        "--skip", default=None, help="comma-separated paths to leave out, e.g. 'reference loop,lstm' (default: none)"
    )
    ap.add_argument("--max-loop-t", type=int, default=4096, help="GPU: measure the Python loops only up to this T")
    ap.add_argument("--sweep", action="store_true", help="GPU: time Triton launch plans per shape")
    ap.add_argument(
        "--plans",
        default="32,64,4;32,32,2;64,64,8;16,64,4;32,128,4",
        help="with --sweep: block_t,block_d,num_warps;... each tried unchunked and at --chunks (the default plan too)",
    )
    ap.add_argument("--chunks", default="", help="with --sweep: time steps per program to try, e.g. 256,512,1024")
    ap.add_argument("--markdown", action="store_true", help="print markdown tables")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default: torch's choice); 1 gives steady figures on a machine shared with other jobs",
    )
    args = ap.parse_args()
    try:  # --plans and --chunks as numbers, or one line naming the bad value
        args.plans = [tuple(int(v) for v in p.split(",")) for p in args.plans.split(";") if p.strip()]
        args.chunks = [int(c) for c in args.chunks.split(",") if c.strip()]
    except ValueError as e:
        ap.error(f"--plans / --chunks: {e}")
    if any(len(p) != 3 or min(p) < 1 for p in args.plans) or any(c < 1 for c in args.chunks):
        ap.error("--plans takes block_t,block_d,num_warps;... and --chunks step counts, all positive")
    return args


HEADER = [
    "T",
    "B",
    "H",
    "dtype",
    "path",
    "fwd ms",
    "fwd GB/s",
    "fwd %copy",
    "fwd+bwd ms",
    "fwd+bwd GB/s",
    "fwd+bwd %copy",
    "x ref fwd",
    "x ref f+b",
    "err",
]


def row_cells(shape, dtype, name, tf, tfb, units, err, ref, copy) -> list:
    """One table row: times, bandwidth against the copy's (when the path's traffic is known),
    speed-up over the reference loop (once one is measured) and the float32 error."""
    T, B, H = shape
    size = 2 if dtype in (torch.bfloat16, torch.float16) else 4
    n = T * B * H
    cells = [T, B, H, str(dtype).replace("torch.", ""), name, f"{tf * 1e3:.3f}"]
    if units:
        gf, gfb = units[0] * size * n / tf / 1e9, units[1] * size * n / tfb / 1e9
        cells += [
            f"{gf:.1f}",
            f"{100 * gf / copy:.0f}%",
            f"{tfb * 1e3:.3f}",
            f"{gfb:.1f}",
            f"{100 * gfb / copy:.0f}%",
        ]
    else:
        cells += ["-", "-", f"{tfb * 1e3:.3f}", "-", "-"]
    cells += [
        f"{ref[0] / tf:.1f}" if ref else "-",
        f"{ref[1] / tfb:.1f}" if ref else "-",
        "-" if err != err else f"{err:.1e}",
    ]
    return cells


def shape_rows(shape, dtype, device, measure, copy, skip, args) -> list[list]:
    """Every path's row at one shape and dtype, each printed as soon as it is measured."""
    T, B, H = shape
    z, f, o, gh = inputs(T, B, H, dtype, device)
    rows = []
    ref = None  # (fwd, fwd+bwd) seconds of the reference loop

    def add(name, tf, tfb, units=None, err=float("nan")):
        cells = row_cells(shape, dtype, name, tf, tfb, units, err, ref, copy)
        rows.append(cells)
        print(" | ".join(str(c) for c in cells), flush=True)

    for name, (fwd, fb, units) in paths(device).items():
        if name in skip or (device.type == "cuda" and "loop" in name and T > args.max_loop_t):
            continue
        tf = measure(lambda: fwd(z, f, o))
        tfb = measure(lambda: fb(z, f, o, gh))
        err = accuracy(name, fb, T, B, H, device) if dtype == torch.float32 else float("nan")
        add(name, tf, tfb, units, err)
        ref = ref or ((tf, tfb) if "loop" in name else None)  # the first loop measured
    if "lstm" not in skip:
        try:
            tf, tfb = lstm_times(T, B, H, dtype, device, measure)
        except RuntimeError as e:  # e.g. no LSTM kernel for this dtype
            print(f"nn.LSTM {dtype}: {str(e).splitlines()[0]}")
        else:
            add("nn.LSTM" + (" (cuDNN)" if device.type == "cuda" else ""), tf, tfb)
    return rows


def print_markdown(rows: list[list]) -> None:
    print()
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    measure = timer(device, args.reps)
    spec = args.shapes or (GPU_SHAPES if device.type == "cuda" else CPU_SHAPES)
    shapes = [tuple(int(v) for v in s.split(",")) for s in spec.split(";")]
    skip = {s.strip() for s in (args.skip or "").split(",") if s.strip()}
    copy = copy_bandwidth(device, measure)
    print(f"device: {device_name(device)}; torch {torch.__version__}; copy bandwidth {copy:.1f} GB/s")
    if args.sweep:
        return sweep(shapes, device, measure, copy, args)

    rows = []
    for shape in shapes:
        for dtype in [getattr(torch, d.strip()) for d in args.dtypes.split(",")]:
            rows += shape_rows(shape, dtype, device, measure, copy, skip, args)
    if args.markdown:
        print_markdown(rows)


def sweep(shapes, device, measure, copy, args):
    """Time the default launch plan and each plan of --plans (unchunked and at each of --chunks)."""
    from hybrid.train.ops.fo_pool import triton as tk

    grid, chunks = args.plans, [0] + args.chunks
    for T, B, H in shapes:
        for dtype in [getattr(torch, d.strip()) for d in args.dtypes.split(",")]:
            z, f, o, gh = inputs(T, B, H, dtype, device)
            half = dtype != torch.float32
            fwd_plan = tk.plan_for(B, T, H, device, half=half)
            bwd_plan = tk.plan_for(B, T, H, device, backward=True, half=half)
            print(f"T={T} B={B} H={H} {dtype}: default fwd {fwd_plan}, bwd {bwd_plan}")
            sweep_one("default", None, (T, B, H), dtype, (z, f, o, gh), device, measure, copy)
            for bt, bd, nw in grid:
                for chunk in chunks:
                    if chunk < T:
                        plan = tk.Plan(bt, bd, chunk, nw)
                        sweep_one(str(plan), plan, (T, B, H), dtype, (z, f, o, gh), device, measure, copy)


def sweep_one(label, plan, shape, dtype, tensors, device, measure, copy):
    """One plan's line: forward and forward + backward as % of copy bandwidth."""
    fwd, fb, _ = paths(device, plan)["triton"]
    z, f, o, gh = tensors
    try:
        tf = measure(lambda: fwd(z, f, o))
        tfb = measure(lambda: fb(z, f, o, gh))
    except Exception as e:  # out of registers/shared memory for this plan
        print(f"  {label}: {type(e).__name__}")
        return
    n = shape[0] * shape[1] * shape[2] * (2 if dtype == torch.bfloat16 else 4)
    print(
        f"  {label}: fwd {100 * 3 * n / tf / 1e9 / copy:.0f}% fwd+bwd {100 * 9 * n / tfb / 1e9 / copy:.0f}% of copy",
        flush=True,
    )


if __name__ == "__main__":
    main()
