"""fo-pooling: the CPU paths (C kernel and chunked scan) and the custom op held to the plain loop;
torch.compile sees one op.

The Triton kernels have their own file (test_fo_pool_triton.py)."""

import os
import subprocess
import threading
import warnings
from pathlib import Path

import pytest
import torch

from hybrid.train.config import ModelConfig
from hybrid.train.model import QRNN
from hybrid.train.ops.fo_pool import cpu, cpu_kernel, fo_pool, fo_pool_naive, fo_pool_preact
from hybrid.train.ops.fo_pool.op import fo_pool_fwd

SHAPES = [(1, 1, 1), (2, 1, 5), (3, 7, 5), (2, 9, 3), (2, 37, 13), (1, 100, 3), (2, 0, 4)]


@pytest.fixture(params=["C kernel", "chunked scan"])
def path(request, monkeypatch):
    """Runs a test on each of cpu.py's two paths."""
    use_c = request.param == "C kernel"
    if use_c and cpu_kernel.library() is None:
        pytest.skip("C kernel unavailable (no compiler?)")
    monkeypatch.setattr(cpu, "USE_C_KERNEL", use_c)
    return request.param


@pytest.fixture
def fresh_library(tmp_path, monkeypatch):
    """An empty kernel cache and no library loaded yet; the next test loads afresh."""
    monkeypatch.setenv("HYBRID_CACHE", str(tmp_path))
    cpu_kernel.library.cache_clear()
    yield tmp_path / "kernels"
    cpu_kernel.library.cache_clear()


def gates(B, T, D, dtype=torch.float32, with_o=True, with_c0=True, seed=0):
    """Activated gates: z in (-1, 1), f in (0, 1), o in (0, 1); and an initial state."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, D, generator=g).tanh()
    f = torch.rand(B, T, D, generator=g)
    o = torch.rand(B, T, D, generator=g) if with_o else None
    c0 = torch.randn(B, D, generator=g) if with_c0 else None
    return [None if x is None else x.to(dtype).requires_grad_() for x in (z, f, o, c0)]


def grads(fn, inputs, seed=1):
    """(h, c, d inputs) of fn(*inputs) -> (h, c) under random output gradients."""
    h, c = fn(*inputs)
    g = torch.Generator().manual_seed(seed)
    gh, gc = torch.randn(h.shape, generator=g).to(h.dtype), torch.randn(c.shape, generator=g).to(c.dtype)
    used = [x for x in inputs if x is not None]
    outs = [(y, gy) for y, gy in ((h, gh), (c, gc)) if y.requires_grad]  # T = 0: c may be a constant
    d = torch.autograd.grad([y for y, _ in outs], used, [gy for _, gy in outs], allow_unused=True)
    return h, c, d


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("B,T,D", SHAPES)
@pytest.mark.parametrize("with_o,with_c0", [(False, False), (True, True), (True, False), (False, True)])
def test_op_matches_reference_values_and_gradients(B, T, D, with_o, with_c0, path):
    inputs = gates(B, T, D, with_o=with_o, with_c0=with_c0)
    h, c, dx = grads(lambda z, f, o, c0: fo_pool(z, f, o, c0, True), inputs)
    h_ref, c_ref, dx_ref = grads(lambda z, f, o, c0: fo_pool_naive(z, f, o, c0, True), inputs)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c, c_ref, rtol=1e-5, atol=1e-6)
    for got, want in zip(dx, dx_ref):
        if want is None:  # an input that nothing depends on (T = 0)
            assert got is None or not got.any()
        else:
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_gradcheck_float64_through_the_op(path):
    for T in (1, 9, 30):  # chunked scan: 9 and 30 take the chunks, 1 the single step
        z, f, o, c0 = gates(2, T, 3, torch.float64, seed=T)
        assert torch.autograd.gradcheck(lambda *a: fo_pool(*a, True), (z, f, o, c0))
        assert torch.autograd.gradcheck(lambda z, f: fo_pool(z, f)[0], (z, f))


@pytest.mark.parametrize("zoneout,training", [(0.0, False), (0.3, False), (0.3, True)])
def test_gradcheck_float64_from_pre_activations(zoneout, training, path):
    g = torch.Generator().manual_seed(5)
    z, f, o = (torch.randn(2, 11, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    c0 = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)

    def fn(*a):
        torch.manual_seed(0)  # the same zoneout mask on every call
        return fo_pool_preact(*a, True, zoneout=zoneout, training=training)

    assert torch.autograd.gradcheck(fn, (z, f, o, c0))


@pytest.mark.parametrize("zoneout,training", [(0.0, True), (0.25, False), (0.25, True)])
def test_pre_activations_equal_activating_first(zoneout, training, path):
    # Exactly (bitwise in float32) what the model computed before the activations moved into the op.
    g = torch.Generator().manual_seed(3)
    z, f, o = (torch.randn(3, 29, 7, generator=g) for _ in range(3))
    c0 = torch.randn(3, 7, generator=g)
    torch.manual_seed(11)
    h, c = fo_pool_preact(z, f, o, c0, True, zoneout=zoneout, training=training)
    torch.manual_seed(11)
    za, fa, oa = torch.tanh(z), torch.sigmoid(f), torch.sigmoid(o)
    if zoneout > 0:
        if training:
            keep = torch.empty_like(fa).bernoulli_(1 - zoneout)
            fa = 1 - keep * (1 - fa)
        else:
            fa = 1 - (1 - zoneout) * (1 - fa)
    h_act, c_act = fo_pool(za, fa, oa, c0, True)
    assert torch.equal(h, h_act) and torch.equal(c, c_act)
    h_ref, c_ref = fo_pool_naive(za, fa, oa, c0, True)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c, c_ref, rtol=1e-5, atol=1e-6)


def test_state_carried_across_calls_equals_one_call(path):
    z, f, o, c0 = gates(2, 50, 6, torch.float64)
    h_all, c_all, d_all = grads(lambda *a: fo_pool(*a, True), (z, f, o, c0))

    def in_segments(z, f, o, c0):
        hs, c = [], c0
        for a, b in ((0, 1), (1, 18), (18, 19), (19, 50)):  # segments of 1, 17, 1 and 31 steps
            h, c = fo_pool(z[:, a:b], f[:, a:b], o[:, a:b], c, True)
            hs.append(h)
        return torch.cat(hs, dim=1), c

    h_seg, c_seg, d_seg = grads(in_segments, (z, f, o, c0))
    torch.testing.assert_close(h_seg, h_all, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_seg, c_all, rtol=1e-12, atol=1e-12)
    for a, b in zip(d_seg, d_all):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(dtype, path):
    inputs = gates(2, 40, 9, dtype)
    h, c, dx = grads(lambda *a: fo_pool(*a, True), inputs)
    assert h.dtype == c.dtype == dtype and all(d.dtype == dtype for d in dx)
    # The reference in float64 on the same (rounded) input values: only output rounding differs.
    wide = [x.detach().double().requires_grad_() for x in inputs]
    h_ref, c_ref, dx_ref = grads(lambda *a: fo_pool_naive(*a, True), wide)
    assert rel(h, h_ref) < 1e-2 and rel(c, c_ref) < 1e-2
    for got, want in zip(dx, dx_ref):
        assert rel(got, want) < 2e-2


def test_backward_recomputes_the_cells_when_the_forward_kept_none(path):
    z, f, o, c0 = (x.detach() for x in gates(2, 23, 5))
    gh, gc = torch.randn(2, 23, 5), torch.randn(2, 5)
    _, _, cells = cpu.fo_pool_fwd_cpu(z, f, o, c0, None, 1.0, False, True)
    saved = cpu.fo_pool_bwd_cpu(z, f, o, c0, None, 1.0, False, cells, gh, gc)
    recomputed = cpu.fo_pool_bwd_cpu(z, f, o, c0, None, 1.0, False, z.new_empty(0), gh, gc)
    for a, b in zip(saved, recomputed):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("B,T,D,threads", [(4, 20, 100, 2), (3, 25, 97, 2), (5, 15, 101, 3), (2, 9, 5, 4)])
def test_threaded_split_matches_reference(B, T, D, threads, path, monkeypatch):
    # The C kernel's channels split across threads (at any size here): by batch rows (4 / 2), or by
    # blocks of 16 channels when the rows do not divide evenly (3 / 2, 5 / 3; 2 / 4: a single block).
    monkeypatch.setattr(cpu_kernel, "MIN_PARALLEL", 0)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        inputs = gates(B, T, D)
        h, c, dx = grads(lambda *a: fo_pool(*a, True), inputs)
    finally:
        torch.set_num_threads(old)
    h_ref, c_ref, dx_ref = grads(lambda *a: fo_pool_naive(*a, True), inputs)
    torch.testing.assert_close(h, h_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c, c_ref, rtol=1e-5, atol=1e-6)
    for got, want in zip(dx, dx_ref):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_non_contiguous_inputs(path):
    # Gates as the model slices them (chunks of one projection), a time-major state layout, and
    # expanded output gradients (from .sum()).
    g = torch.Generator().manual_seed(4)
    zfo = torch.randn(3, 21, 15, generator=g, requires_grad=True)
    c0 = torch.randn(5, 3, generator=g).t().requires_grad_()

    def run(fn, zfo, c0):
        z, f, o = zfo.chunk(3, dim=-1)
        h, c = fn(torch.tanh(z), torch.sigmoid(f), torch.sigmoid(o), c0, True)
        (h.sum() + 2 * c.sum()).backward()
        return h, c, zfo.grad, c0.grad

    got = run(fo_pool, zfo, c0)
    zfo2, c02 = (x.detach().clone().requires_grad_() for x in (zfo, c0))
    want = run(fo_pool_naive, zfo2, c02)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_mismatched_shapes_are_refused_not_misread(path):
    # The C loop reads exactly [B, T, D] and [B, D]: a [1, D] initial state or a gate shared by the
    # batch would be read out of bounds, so the op refuses them with a clear error (no broadcasting).
    g = torch.Generator().manual_seed(5)
    z, f = torch.randn(3, 11, 7, generator=g), torch.rand(3, 11, 7, generator=g)
    with pytest.raises(ValueError, match=r"initial_state has shape \(1, 7\), expected \(3, 7\)"):
        fo_pool(z, f, None, torch.randn(1, 7, generator=g))
    with pytest.raises(ValueError, match=r"f has shape \(1, 11, 7\), expected \(3, 11, 7\)"):
        fo_pool_preact(z, f[:1])
    with pytest.raises(ValueError, match=r"o has shape"):
        fo_pool(z, f, f[:, :5])


def test_a_library_others_can_write_is_not_loaded(fresh_library):
    if cpu_kernel.library() is None:
        pytest.skip("C kernel unavailable (no compiler?)")
    (built,) = fresh_library.glob("*.so")
    built.chmod(0o777)
    cpu_kernel.library.cache_clear()
    with pytest.warns(UserWarning, match="writable by others"):
        assert cpu_kernel.library() is None


def test_missing_compiler_falls_back_to_the_chunked_scan(fresh_library, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.delenv("HYBRID_CPU_KERNEL", raising=False)
    with pytest.warns(UserWarning, match="C kernel unavailable"):
        assert cpu_kernel.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: a second look is silent
        assert cpu_kernel.library() is None
        inputs = gates(2, 37, 13)
        h, c, dx = grads(lambda *a: fo_pool(*a, True), inputs)
    h_ref, c_ref, dx_ref = grads(lambda *a: fo_pool_naive(*a, True), inputs)
    for got, want in zip((h, c, *dx), (h_ref, c_ref, *dx_ref)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not any(fresh_library.glob("*.so"))


def test_kernel_disabled_by_environment(fresh_library, monkeypatch):
    monkeypatch.setenv("HYBRID_CPU_KERNEL", "0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cpu_kernel.library() is None


def test_kernel_cache_is_reused(fresh_library, monkeypatch):
    if cpu_kernel.library() is None:
        pytest.skip("C kernel unavailable (no compiler?)")
    (built,) = fresh_library.glob("*.so")
    stamp = built.stat().st_mtime_ns
    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(cpu_kernel.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or real_run(cmd, **kw))
    cpu_kernel.library.cache_clear()
    assert cpu_kernel.library() is not None
    assert not any("-shared" in cmd for cmd in calls)  # only the compiler's version was asked
    assert [p.name for p in fresh_library.iterdir()] == [built.name] and built.stat().st_mtime_ns == stamp


def test_concurrent_builds_leave_one_whole_library(fresh_library):
    # As DDP ranks starting together: each compiles to a temporary file and renames it into place.
    if cpu_kernel.library() is None:
        pytest.skip("C kernel unavailable (no compiler?)")
    for p in fresh_library.iterdir():
        p.unlink()
    paths = []

    def build():  # _build returns the open, checked library: where it lies is what its descriptor names
        fd = cpu_kernel._build()
        paths.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        os.close(fd)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(paths) == 2 and paths[0] == paths[1]
    assert [p.name for p in fresh_library.iterdir()] == [paths[0].name]


def test_huge_page_buffers_are_ordinary_tensors():
    for shape, dtype in [((3, 5), torch.float64), ((3, 1 << 20), torch.float32)]:  # 12 MiB: advised
        x = cpu_kernel.empty(shape, dtype)
        assert x.shape == shape and x.dtype == dtype and x.is_contiguous()
        assert x.fill_(1.5).sum().item() == 1.5 * x.numel()


def test_evaluation_keeps_no_cells():
    z, f, o, c0 = (x.detach() for x in gates(2, 8, 3))
    with torch.no_grad():
        assert fo_pool_fwd(z, f, o, c0, None, 1.0, False, False)[2].numel() == 0
    assert fo_pool_fwd(z, f, o, c0, None, 1.0, False, True)[2].shape == z.shape


def test_custom_op_passes_opcheck():
    # Schema, fake (meta) kernel, autograd registration and AOT dispatch, as torch.library checks them.
    z, f, o, c0 = gates(2, 9, 5)
    keep = (torch.rand(2, 9, 5) > 0.3).float()
    for args in [
        (z, f, o, c0, None, 1.0, False, True),
        (z, f, None, None, None, 0.75, True, True),
        (z, f, o, c0, keep, 1.0, True, True),
    ]:
        torch.library.opcheck(fo_pool_fwd, args)


def qrnn_block(zoneout=0.0, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=16, d_model=16, n_heads=2, d_inner=32, pattern="Q", zoneout=zoneout, dropout=0.0)
    return QRNN(cfg, 0)


def block_state(B, D=16):
    return {
        "past_key_values.0.recurrent_state": torch.randn(B, D),
        "past_key_values.0.conv_state": torch.randn(B, 1, D),
    }


def test_model_block_unchanged_by_fusing_the_activations(path):
    # The QRNN block now hands pre-activations to the op; its outputs must be exactly those of
    # activating first and calling fo_pool (what it did before), in training (zoneout mask) and evaluation.
    block = qrnn_block(zoneout=0.2)
    x, state = torch.randn(2, 13, 16), block_state(2)
    for training in (True, False):
        block.train(training)
        torch.manual_seed(7)
        new = {}
        y = block(x, state, None, new)
        torch.manual_seed(7)
        u = block.norm(x)
        seq = torch.cat([state[block.conv_name], u], dim=1)
        u = torch.cat([seq[:, j : j + 13] for j in range(2)], dim=-1)
        z, f, o = block.gates(u).chunk(3, dim=-1)
        z, f, o = torch.tanh(z), torch.sigmoid(f), torch.sigmoid(o)
        if training:
            f = 1 - torch.empty_like(f).bernoulli_(0.8) * (1 - f)
        else:
            f = 1 - 0.8 * (1 - f)
        h, c = fo_pool(z, f, o, state[block.cell_name], True)
        assert torch.equal(y, x + h) and torch.equal(new[block.cell_name], c)
        h_ref, _ = fo_pool_naive(z, f, o, state[block.cell_name], True)
        torch.testing.assert_close(y, x + h_ref, rtol=1e-5, atol=1e-6)


def test_block_compiles_as_one_graph():
    block = qrnn_block(zoneout=0.1).train()

    def step(x, state):
        new = {}
        return block(x, state, None, new), new

    explained = torch._dynamo.explain(step)(torch.randn(2, 8, 16), block_state(2))
    assert explained.graph_break_count == 0 and explained.graph_count == 1


def test_block_trains_under_torch_compile():
    # Inductor on the CPU, fullgraph (fails on any graph break), forward and backward through the op.
    torch._dynamo.reset()
    eager, compiled = qrnn_block(seed=1), qrnn_block(seed=1)
    step = torch.compile(lambda m, x, s: m(x, s, None, {}), fullgraph=True)
    g = torch.Generator().manual_seed(2)
    x, target = torch.randn(4, 24, 16, generator=g), torch.randn(4, 24, 16, generator=g)
    state = block_state(4)
    opts = [torch.optim.SGD(m.parameters(), lr=0.5) for m in (eager, compiled)]
    losses = {"eager": [], "compiled": []}
    for _ in range(4):
        for name, model, opt, run in (
            ("eager", eager, opts[0], lambda m, x, s: m(x, s, None, {})),
            ("compiled", compiled, opts[1], step),
        ):
            loss = (run(model, x, state) - target).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    assert losses["compiled"][-1] < losses["compiled"][0]
    torch.testing.assert_close(torch.tensor(losses["compiled"]), torch.tensor(losses["eager"]), rtol=1e-4, atol=1e-6)
