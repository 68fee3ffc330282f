"""The Triton fo-pooling kernels, held to the plain loop in float64.

Without a GPU the kernels run in Triton's interpreter, which must be switched on (TRITON_INTERPRET=1)
before Triton is imported. So that other test modules in this pytest process are unaffected,
`test_kernels_in_the_interpreter` reruns this file in a subprocess with the variable set; there the
kernel tests run on CPU tensors. With CUDA they also run here, on the GPU. Running the whole suite
with TRITON_INTERPRET=1 set works too (the kernel tests then run in this process).
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from hybrid.train.ops.fo_pool import fo_pool_naive  # noqa: E402
from hybrid.train.ops.fo_pool import op as fo_op  # noqa: E402
from hybrid.train.ops.fo_pool import triton as tk  # noqa: E402

INTERPRETED = tk.INTERPRET
DEVICE = "cpu" if INTERPRETED else "cuda"
runs_kernels = pytest.mark.skipif(
    not (INTERPRETED or torch.cuda.is_available()), reason="no CUDA: the kernels run in the interpreter subprocess"
)
# Small tiles so that a short test sequence crosses tile, channel-block and chunk boundaries.
SINGLE = tk.Plan(block_t=8, block_d=16, chunk=0, num_warps=4)
CHUNKED = tk.Plan(block_t=8, block_d=16, chunk=8, num_warps=4)


def test_kernels_in_the_interpreter():
    if INTERPRETED:
        pytest.skip("this is the interpreter run")
    if torch.cuda.is_available():
        # The compiled kernels run the same tests on the GPU here; Triton 3.6's interpreter also
        # fails with numpy 2.5 (a 1-element array where it wants a scalar), which is not ours.
        pytest.skip("CUDA: the kernel tests run compiled, on the GPU")
    env = dict(os.environ, TRITON_INTERPRET="1")
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__))],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert " passed" in r.stdout and "failed" not in r.stdout


def make(B, T, D, *, with_o, with_c0, preact, zoneout, dtype=torch.float32, seed=0):
    """Op inputs (z, f, o, c0, keep, keep_scale) on DEVICE; zoneout 0: none, 1: a keep-mask, 2: a scale."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, D, generator=g) if preact else torch.randn(B, T, D, generator=g).tanh()
    f = torch.randn(B, T, D, generator=g) * 2 if preact else torch.rand(B, T, D, generator=g)
    o = (torch.randn(B, T, D, generator=g) if preact else torch.rand(B, T, D, generator=g)) if with_o else None
    c0 = torch.randn(B, D, generator=g) if with_c0 else None
    keep = (torch.rand(B, T, D, generator=g) > 0.3).float() if zoneout == 1 else None
    scale = 0.7 if zoneout == 2 else 1.0
    dev = [None if x is None else x.to(DEVICE, dtype) for x in (z, f, o, c0, keep)]
    return (*dev, scale)


def reference(z, f, o, c0, keep, scale, preact, gh, gc):
    """(h, c_T, dz, df, do, dc0) from the plain loop in float64, through autograd."""
    xs = [None if x is None else x.detach().cpu().double().requires_grad_() for x in (z, f, o, c0)]
    zz, ff, oo, cc = xs
    if preact:
        zz, ff = torch.tanh(zz), torch.sigmoid(ff)
        oo = None if oo is None else torch.sigmoid(oo)
    if keep is not None:
        ff = 1 - keep.cpu().double() * (1 - ff)
    elif scale != 1.0:
        ff = 1 - scale * (1 - ff)
    h, c = fo_pool_naive(zz, ff, oo, cc, True)
    used = [x for x in xs if x is not None]
    d = iter(torch.autograd.grad((h, c), used, (gh.cpu().double(), gc.cpu().double())))
    return [h, c] + [next(d) if x is not None else None for x in xs]


def rel(a, b):
    return ((a.detach().cpu().double() - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def run_kernels(args, preact, plan, gh, gc):
    z, f, o, c0, keep, scale = args
    h, c, cells = tk.fo_pool_fwd_triton(z, f, o, c0, keep, scale, preact, True, plan=plan)
    saved = cells if o is not None else h
    dz, df, do, dc0 = tk.fo_pool_bwd_triton(z, f, o, c0, keep, scale, preact, saved, gh, gc, plan=plan)
    return [h, c, dz, df, do, dc0 if c0 is not None else None]


# A covering set of the kernels' switches: output gate, initial state, pre-activations, zoneout
# mode, and one program per sequence vs. time cut into chunks (summary, carry, apply).
CASES = [
    dict(with_o=False, with_c0=False, preact=False, zoneout=0, plan=SINGLE),
    dict(with_o=True, with_c0=True, preact=False, zoneout=0, plan=SINGLE),
    dict(with_o=True, with_c0=True, preact=True, zoneout=1, plan=SINGLE),
    dict(with_o=False, with_c0=True, preact=True, zoneout=2, plan=CHUNKED),
    dict(with_o=True, with_c0=False, preact=True, zoneout=0, plan=CHUNKED),
    dict(with_o=True, with_c0=True, preact=False, zoneout=1, plan=CHUNKED),
]


@runs_kernels
@pytest.mark.parametrize(
    "case",
    CASES,
    ids=lambda c: (
        "-".join(f"{k}={v}" for k, v in c.items() if k != "plan") + ("-chunked" if c["plan"].chunk else "-single")
    ),
)
def test_kernels_match_float64_reference(case):
    case = dict(case)
    plan = case.pop("plan")
    B, T, D = 2, 21, 19  # odd: partial tiles (8 steps), channel blocks (16) and chunks (8)
    args = make(B, T, D, **case)
    gh, gc = torch.randn(B, T, D).to(DEVICE), torch.randn(B, D).to(DEVICE)
    got = run_kernels(args, case["preact"], plan, gh, gc)
    want = reference(*args, case["preact"], gh, gc)
    for name, a, b in zip(["h", "c_T", "dz", "df", "do", "dc0"], got, want):
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.shape == b.shape and rel(a, b) < 1e-5, (name, rel(a, b))


@runs_kernels
@pytest.mark.parametrize("plan", [SINGLE, CHUNKED], ids=["single", "chunked"])
def test_one_step_and_one_channel(plan):
    for B, T, D in [(1, 1, 1), (3, 1, 5), (1, 9, 1)]:
        args = make(B, T, D, with_o=True, with_c0=True, preact=True, zoneout=0)
        gh, gc = torch.randn(B, T, D).to(DEVICE), torch.randn(B, D).to(DEVICE)
        got = run_kernels(args, True, plan, gh, gc)
        for a, b in zip(got, reference(*args, True, gh, gc)):
            assert rel(a, b) < 1e-5


@runs_kernels
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(dtype):
    B, T, D = 2, 19, 18
    args = make(B, T, D, with_o=True, with_c0=True, preact=True, zoneout=0, dtype=dtype)
    gh, gc = torch.randn(B, T, D).to(DEVICE, dtype), torch.randn(B, D).to(DEVICE, dtype)
    got = run_kernels(args, True, CHUNKED, gh, gc)
    assert all(x.dtype == dtype for x in got[:5])
    # Against float64 on the same rounded inputs: the outputs' rounding (and bf16 cells) remain.
    for a, b in zip(got, reference(*args, True, gh, gc)):
        assert rel(a, b) < 2e-2


@runs_kernels
def test_gate_views_with_strides_read_in_place():
    # The model hands over z, f, o as chunks of one [B, T, 3D] projection: no copies, same results.
    g = torch.Generator().manual_seed(4)
    proj = torch.randn(2, 13, 3 * 17, generator=g).to(DEVICE)
    z, f, o = proj.chunk(3, dim=-1)
    assert not z.is_contiguous()
    views = tk.fo_pool_fwd_triton(z, f, o, None, None, 1.0, True, True, plan=SINGLE)
    copies = tk.fo_pool_fwd_triton(
        z.contiguous(), f.contiguous(), o.contiguous(), None, None, 1.0, True, True, plan=SINGLE
    )
    for a, b in zip(views, copies):
        assert torch.equal(a, b)


@runs_kernels
def test_backward_without_saved_cells_recomputes_them():
    args = make(2, 17, 9, with_o=True, with_c0=True, preact=False, zoneout=0)
    z, f, o, c0, keep, scale = args
    gh, gc = torch.randn(2, 17, 9).to(DEVICE), torch.randn(2, 9).to(DEVICE)
    _, _, cells = tk.fo_pool_fwd_triton(z, f, o, c0, keep, scale, False, True, plan=SINGLE)
    a = tk.fo_pool_bwd_triton(z, f, o, c0, keep, scale, False, cells, gh, gc, plan=SINGLE)
    b = tk.fo_pool_bwd_triton(z, f, o, c0, keep, scale, False, z.new_empty(0), gh, gc, plan=SINGLE)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-6)


@runs_kernels
def test_custom_op_runs_the_kernels_with_autograd_and_carried_state(monkeypatch):
    # The op as the model calls it, dispatched to the Triton kernels (in the interpreter the CPU
    # entry is pointed at them), over two segments with the state carried between calls.
    if INTERPRETED:
        monkeypatch.setitem(fo_op.KERNELS, "cpu", (tk.fo_pool_fwd_triton, tk.fo_pool_bwd_triton))
    g = torch.Generator().manual_seed(6)
    z, f, o = (torch.randn(2, 20, 7, generator=g).to(DEVICE).requires_grad_() for _ in range(3))
    c0 = torch.randn(2, 7, generator=g).to(DEVICE).requires_grad_()
    h1, c1 = fo_op.fo_pool_preact(z[:, :9], f[:, :9], o[:, :9], c0, True)
    h2, c2 = fo_op.fo_pool_preact(z[:, 9:], f[:, 9:], o[:, 9:], c1, True)
    h = torch.cat([h1, h2], dim=1)
    gh, gc = torch.randn(2, 20, 7).to(DEVICE), torch.randn(2, 7).to(DEVICE)
    grads = torch.autograd.grad((h, c2), (z, f, o, c0), (gh, gc))
    want = reference(z, f, o, c0, None, 1.0, True, gh, gc)
    for a, b in zip([h, c2, *grads], want):
        assert rel(a, b) < 1e-5


# ---- compiled for a real GPU, ahead of time (no GPU needed): catches what the interpreter cannot.


def _ptxas_available():
    import triton

    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    return bundled.exists() or bool(os.environ.get("TRITON_PTXAS_PATH"))


@pytest.mark.skipif(INTERPRETED, reason="the interpreter does not compile")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_kernels_compile_for_sm90(dtype):
    import triton

    if tuple(int(v) for v in triton.__version__.split(".")[:2]) < (3, 9):
        pytest.skip("the ahead-of-time compile API used here is the one of Triton 3.9")
    if not _ptxas_available():
        pytest.skip("Triton's CUDA backend (ptxas) is not installed")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    io = {"Z", "F", "O", "H", "CELLS", "GH", "DZ", "DF", "DO"}
    ints = {"T", "D", "CHUNK", "NC"}

    # The default plans' tiles (plan_for): 32 steps x 64 channels on 4 warps in float32, 32 x 32 on 2 in bf16.
    block_d, num_warps = (64, 4) if dtype == "fp32" else (32, 2)

    def compile_(kernel, consts):
        sig = {}
        for name in kernel.arg_names:
            if name in consts:
                sig[name] = "constexpr"
            elif name == "keep_scale":
                sig[name] = "fp32"
            elif name in ints or name.islower():
                sig[name] = "i32"
            else:
                sig[name] = f"*{dtype}" if name in io else "*fp32"
        # As the launcher specialises them: 16-byte aligned pointers, sizes and strides divisible by 16.
        attrs = {
            (i,): [["tt.divisibility", 16]]
            for i, n in enumerate(kernel.arg_names)
            if sig[n].startswith("*") or n in ("D", "s_b", "s_t", "k_b", "k_t", "g_b", "g_t")
        }
        return triton.compile(
            ASTSource(kernel, sig, constexprs=consts, attrs=attrs),
            target=GPUTarget("cuda", 90, 32),
            options={"num_warps": num_warps},
        )

    flags = dict(HAS_O=True, HAS_C0=True, ZONEOUT=1, PREACT=True, BLOCK_T=32, BLOCK_D=block_d)
    for mode in (0, 1, 2):
        assert compile_(tk._fwd_kernel, dict(flags, SAVE_CELLS=True, MODE=mode)).asm["cubin"]
        assert compile_(tk._bwd_kernel, dict(flags, MODE=mode)).asm["cubin"]
    plain = dict(HAS_O=False, HAS_C0=False, ZONEOUT=0, PREACT=False, BLOCK_T=32, BLOCK_D=block_d)
    assert compile_(tk._fwd_kernel, dict(plain, SAVE_CELLS=False, MODE=0)).asm["cubin"]
    assert compile_(tk._bwd_kernel, dict(plain, MODE=0)).asm["cubin"]
    for reverse in (False, True):
        assert compile_(tk._carry_kernel, dict(HAS_INIT=True, REVERSE=reverse, BLOCK_D=64)).asm["cubin"]
