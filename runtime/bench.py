"""`hybrid bench`: speed of an exported model, in the manner of llama.cpp's llama-bench.

For every variant (fp32, int8, int4) and thread count, each test runs once to warm up, then
`reps` times, reported as mean ± std. The backends take turns repetition by repetition (side by
side), so a burst of load from elsewhere on the machine hits them alike and the ratios hold:

  pp{P}     prompt processing: P tokens of one stream in one graph call (tokens/s)
  ev1xT     evaluation, one stream: one T-token segment with carried state (tokens/s)
  ev{B}xT   evaluation, B streams side by side (tokens/s); ev{B} / ev1 is what streams buy
  tg{N}     generation: N tokens one at a time through the IOBinding stepper (ms/token)
  tg{N}-run the same through plain session.run with numpy in and out (the reference path;
            the difference is the host overhead that buffer reuse saves)

Also per variant: file size, peak resident memory while it alone loaded and ran every test once
(measured before the timing, one backend at a time), and the bandwidth bound of
generation: bytes read per token (the weights, i.e. the graph file, plus the state read and
written) divided by the memory read bandwidth measured with the same thread count, side by side
with the generation test (a 256 MiB read takes its turn after each backend's repetition).

With `hybrid bench --run-dir` (and torch installed), eager PyTorch runs the same tests on the
checkpoint the model was exported from (train/eager.py passes it in as `eager`), and the table
adds onnxruntime / PyTorch ratios. This module never imports torch.
"""

from __future__ import annotations

import gc
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from hybrid.runtime.errors import HybridError, is_integer
from hybrid.runtime.machine import cpu_name, peak_rss_mib, reset_peak_rss
from hybrid.runtime.limits import MAX_THREADS, check_fits, forward_bytes
from hybrid.runtime.modeldir import VARIANTS, open_model_dir

MiB = 1 << 20


# -- memory bandwidth ----------------------------------------------------------------------------


class ReadBandwidth:
    """A pseudo-backend timed beside generation: `threads` threads read a 256 MiB buffer (numpy
    reductions release the GIL), so the bound and the generation it bounds see the same machine."""

    backend, variant = "memory", "read"
    size = 256 * MiB

    def __init__(self, threads: int):
        self.threads = threads
        self.buf = np.ones(self.size // 8, dtype=np.uint64)
        self.parts = np.array_split(self.buf, threads)
        self.pool = ThreadPoolExecutor(threads)

    def task(self, kind: str, ids: np.ndarray):
        if kind != "tg":
            return None
        return lambda: list(self.pool.map(np.bitwise_or.reduce, self.parts))

    def close(self) -> None:
        self.pool.shutdown()


# -- the tests, per backend --------------------------------------------------------------------


def tests(prompt_len, gen_tokens, streams, segment) -> list[tuple[str, str, int, int]]:
    """(kind, name, batch, tokens per stream)."""
    return [
        ("pp", f"pp{prompt_len}", 1, prompt_len),
        ("ev", f"ev1x{segment}", 1, segment),
        ("ev", f"ev{streams}x{segment}", streams, segment),
        ("tg", f"tg{gen_tokens}", 1, gen_tokens),
        ("tg-run", f"tg{gen_tokens}-run", 1, gen_tokens),
    ]


class OnnxBackend:
    backend = "onnxruntime"

    def __init__(self, path, variant: str, threads: int):
        from hybrid.runtime.model import Model

        self.model = Model(path, variant=variant, threads=threads)
        self.variant, self.threads = variant, threads

    def task(self, kind: str, ids: np.ndarray):
        """A no-argument callable that runs the test once."""
        m = self.model
        if kind in ("pp", "ev"):
            state = m.initial_state(ids.shape[0])
            if kind == "ev":  # mid-text: the state already holds a full memory
                _, state = m.forward(ids, state)
            return lambda: m.forward(ids, state, in_place=True)  # as evaluation and a session's feed do
        T = ids.shape[1]
        if kind == "tg":

            def gen():
                stepper, tok = m.stepper(), 0
                for _ in range(T):
                    tok = int(np.argmax(stepper.step(tok)))

            return gen

        def gen_plain():  # the reference path: numpy in, numpy out, new arrays every token
            state, tok = m.initial_state(1), 0
            for _ in range(T):
                logits, state = m.forward(np.array([[tok]], dtype=np.int64), state)
                tok = int(np.argmax(logits[0, -1]))

        return gen_plain


def _row(b, test, tokens, secs) -> dict:
    s = np.asarray(secs)
    tps, mspt = tokens / s, 1e3 * s / tokens
    return {
        "backend": b.backend,
        "variant": b.variant,
        "threads": b.threads,
        "test": test,
        "tokens": tokens,
        "tokens_per_s": float(tps.mean()),
        "tokens_per_s_std": float(tps.std()),
        "ms_per_token": float(mspt.mean()),
        "ms_per_token_std": float(mspt.std()),
        "ms_per_token_min": float(mspt.min()),
    }


def time_side_by_side(backends, reps, prompt_len, gen_tokens, streams, segment, rng, vocab) -> list[dict]:
    """Every test on every backend, repetitions interleaved (rep 1 of each backend, then rep 2, ...)
    so that a burst of load from elsewhere on the machine hits all backends alike."""
    rows = []
    # onnxruntime's and torch's worker threads spin for ~20 ms of CPU after a run; waiting that
    # out keeps one backend's idle spinning from slowing the next one down.
    gap = 0.05 if any(b.threads > 1 for b in backends) else 0.002
    for kind, name, B, T in tests(prompt_len, gen_tokens, streams, segment):
        ids = rng.integers(0, vocab, size=(B, T), dtype=np.int64)
        tasks = [(b, b.task(kind, ids)) for b in backends]
        tasks = [(b, fn) for b, fn in tasks if fn is not None]
        for _, fn in tasks:
            fn()  # warm-up: first-run allocations, weight pre-packing
        secs = {id(b): [] for b, _ in tasks}
        for _ in range(reps):
            for b, fn in tasks:
                time.sleep(gap)
                t = time.perf_counter()
                fn()
                secs[id(b)].append(time.perf_counter() - t)
        rows += [_row(b, name, B * T, secs[id(b)]) for b, _ in tasks]
    return rows


def peak_memory(make_backend, prompt_len, gen_tokens, streams, segment, rng, vocab) -> tuple[float, str]:
    """Peak resident memory while one backend loads and runs every test once."""
    gc.collect()
    scope = "this backend alone" if reset_peak_rss() else "process lifetime"
    b = make_backend()
    for kind, _, B, T in tests(prompt_len, gen_tokens, streams, segment):
        fn = b.task(kind, rng.integers(0, vocab, size=(B, T), dtype=np.int64))
        if fn is not None:
            fn()
    peak = peak_rss_mib()
    del b, fn
    gc.collect()
    return peak, scope


def default_threads() -> list[int]:
    n = os.cpu_count() or 1
    out, t = [], 1
    while t < n:
        out.append(t)
        t *= 2
    return out + [n]


def run_bench(
    model_dir,
    variants=("fp32", "int8", "int4"),
    threads=None,
    reps=5,
    prompt_len=512,
    gen_tokens=64,
    streams=16,
    segment=128,
    log=print,
    seed=0,
    eager=None,
) -> dict:
    """Every test on every variant and thread count. `eager`, a function of the thread count
    returning a backend, adds a comparison run side by side (train/eager.py: eager PyTorch on the
    model's training run, for `bench --run-dir`; it checks the run before calling this)."""
    md = open_model_dir(model_dir)
    threads, todo = _checked_plan(md, variants, threads, reps, prompt_len, gen_tokens, streams, segment, log)
    rng, V = np.random.default_rng(seed), md.vocab_size
    res = _bench_header(md, reps)
    shape = (prompt_len, gen_tokens, streams, segment, rng, V)
    _measure_peak_memory(res, md, todo, max(threads), eager, shape, log)
    for t in threads:
        _time_backends(res, md, todo, t, eager, reps, shape, log)
    res["derived"] = derive(res, todo, threads, streams, segment, gen_tokens)
    return res


def _checked_plan(md, variants, threads, reps, prompt_len, gen_tokens, streams, segment, log):
    """The thread counts and the variants to measure (those of `variants` the directory has; a
    missing one is noted and skipped), every number checked and the inputs' memory estimated
    before anything runs."""
    for v in variants:
        if v not in VARIANTS:
            raise HybridError(f"unknown variant {v!r} (choose from {', '.join(VARIANTS)})")
    for name, v in (
        ("reps", reps),
        ("prompt_len", prompt_len),
        ("gen_tokens", gen_tokens),
        ("streams", streams),
        ("segment", segment),
    ):
        if not is_integer(v) or v <= 0:
            raise HybridError(f"--{name.replace('_', '-')} must be positive, got {v}")
    threads = threads or default_threads()
    if any(not is_integer(t) or not 0 < t <= MAX_THREADS for t in threads):
        raise HybridError(f"thread counts must be from 1 to {MAX_THREADS}, got {threads}")
    check_fits(forward_bytes(md.model, 1, prompt_len), f"--prompt-len {prompt_len}")
    check_fits(forward_bytes(md.model, streams, segment), f"--streams {streams} x --segment {segment}")
    todo = [v for v in variants if v in md.variants]
    for v in variants:
        if v not in todo:
            log(f"note: no {v} model in {md.path}; skipped")
    if not variants:
        raise HybridError("no variants to measure: name one or more of " + ", ".join(VARIANTS))
    if not todo:
        raise HybridError(f"{md.path}: none of the variants {', '.join(variants)} was exported")
    return threads, todo


def _bench_header(md, reps) -> dict:
    """The result's description of the model, the machine and the library; the measurements are
    filled in by _measure_peak_memory, _time_backends and derive."""
    import onnxruntime as ort

    return {
        "model_dir": str(md.path),
        "model": {
            k: md.model.get(k) for k in ("name", "pattern", "d_model", "d_inner", "n_heads", "mem_len", "vocab_size")
        },
        "cpu": {"count": os.cpu_count(), "machine": platform.machine(), "processor": cpu_name()},
        "onnxruntime": ort.__version__,
        "reps": reps,
        "bandwidth_gbs": {},
        "variants": {},
        "results": [],
    }


def _measure_peak_memory(res, md, todo, threads, eager, shape, log) -> None:
    """Each variant's file size, bytes read per token and peak memory into res["variants"]:
    memory first, one backend at a time (torch last: importing it raises every later peak)."""
    state_bytes = md.state_bytes(1)
    for v in todo:
        log(f"peak memory: {v}")
        size = md.file(v).stat().st_size
        peak, scope = peak_memory(lambda: OnnxBackend(md.path, v, threads), *shape)
        res["variants"][v] = {
            "file": md.config["files"][v],
            "file_mib": size / MiB,
            "bytes_per_token": size + 2 * state_bytes,
            "peak_rss_mib": peak,
            "peak_rss_scope": scope,
        }
    if eager is not None:
        log("peak memory: eager PyTorch")
        peak, scope = peak_memory(lambda: eager(threads), *shape)
        res["variants"]["torch"] = {"peak_rss_mib": peak, "peak_rss_scope": scope}


def _time_backends(res, md, todo, t, eager, reps, shape, log) -> None:
    """Every test on every variant (and eager PyTorch) at t threads, side by side with a memory
    read that gives the bandwidth bound: rows into res["results"], GB/s into res["bandwidth_gbs"]."""
    log(f"timing {', '.join(todo)}{' and eager PyTorch' if eager else ''} side by side, {t} thread(s)")
    membw = ReadBandwidth(t)
    backends = [OnnxBackend(md.path, v, t) for v in todo]
    if eager is not None:
        backends.append(eager(t))
    rows = time_side_by_side(backends + [membw], reps, *shape)
    membw.close()
    for r in rows:
        if r["backend"] == "memory":  # bytes read per second, from the mean time per read
            res["bandwidth_gbs"][t] = ReadBandwidth.size / (r["ms_per_token"] * r["tokens"] / 1e3) / 1e9
    res["results"] += [r for r in rows if r["backend"] != "memory"]
    del backends, membw
    gc.collect()


def derive(res, variants, threads, streams, segment, gen_tokens) -> list[dict]:
    """The ratios the bar is stated in: streams speed-up, PyTorch ratios, bandwidth bound."""
    get = {(r["backend"], r["variant"], r["threads"], r["test"]): r for r in res["results"]}
    ev1, evB, tg = f"ev1x{segment}", f"ev{streams}x{segment}", f"tg{gen_tokens}"
    out = []
    for v in variants:
        for t in threads:
            a, b = get.get(("onnxruntime", v, t, evB)), get.get(("onnxruntime", v, t, ev1))
            if a and b:
                out.append(
                    {
                        "what": f"{evB} / {ev1} tokens/s",
                        "variant": v,
                        "threads": t,
                        "ratio": a["tokens_per_s"] / b["tokens_per_s"],
                    }
                )
            g, plain = get.get(("onnxruntime", v, t, tg)), get.get(("onnxruntime", v, t, tg + "-run"))
            if g and plain:
                out.append(
                    {
                        "what": "host overhead saved by IOBinding, ms/token",
                        "variant": v,
                        "threads": t,
                        "value": plain["ms_per_token"] - g["ms_per_token"],
                    }
                )
            if g:
                bw = res["bandwidth_gbs"][t] * 1e9
                bound_ms = 1e3 * res["variants"][v]["bytes_per_token"] / bw
                out.append(
                    {
                        "what": "generation ms/token / bandwidth bound",
                        "variant": v,
                        "threads": t,
                        "ratio": g["ms_per_token"] / bound_ms,
                        "bound_ms": bound_ms,
                        "ms_per_token": g["ms_per_token"],
                    }
                )
            for r in res["results"]:
                if r["backend"] != "onnxruntime" or r["variant"] != v or r["threads"] != t:
                    continue
                ref = get.get(("torch", "fp32", t, r["test"]))
                if ref:
                    out.append(
                        {
                            "what": f"{r['test']} speed-up vs eager PyTorch fp32",
                            "variant": v,
                            "threads": t,
                            "ratio": ref["ms_per_token"] / r["ms_per_token"],
                        }
                    )
    return out


def print_table(res: dict, echo=print) -> None:
    m = res["model"]
    echo(
        f"model {m['name']} ({m['pattern']}, d_model {m['d_model']}), {res['cpu']['processor']}, "
        f"{res['cpu']['count']} CPUs, onnxruntime {res['onnxruntime']}, {res['reps']} reps"
    )
    echo("")
    echo(
        f"| {'backend':<11} | {'variant':<7} | {'size MiB':>8} | {'threads':>7} | {'test':<12} | "
        f"{'tokens/s':>20} | {'ms/token':>17} |"
    )
    echo(f"| {'-' * 11} | {'-' * 7} | {'-' * 8}:| {'-' * 7}:| {'-' * 12} | {'-' * 20}:| {'-' * 17}:|")
    for r in res["results"]:
        size = res["variants"].get(r["variant"], {}).get("file_mib") if r["backend"] == "onnxruntime" else None
        echo(
            f"| {r['backend']:<11} | {r['variant']:<7} | {size if size is not None else float('nan'):>8.2f} | "
            f"{r['threads']:>7} | {r['test']:<12} | "
            f"{r['tokens_per_s']:>11,.0f} ± {r['tokens_per_s_std']:>6,.0f} | "
            f"{r['ms_per_token']:>8.4f} ± {r['ms_per_token_std']:>6.4f} |"
        )
    echo("")
    for v, info in res["variants"].items():
        extra = (
            f", {info['file_mib']:.2f} MiB file, {info['bytes_per_token'] / MiB:.2f} MiB read per generated token"
            if "file_mib" in info
            else ""
        )
        echo(f"{v}: peak RSS {info['peak_rss_mib']:.0f} MiB ({info['peak_rss_scope']}){extra}")
    echo("memory read bandwidth: " + ", ".join(f"{t} thread(s) {g:.1f} GB/s" for t, g in res["bandwidth_gbs"].items()))
    echo("")
    for d in res["derived"]:
        if "bound_ms" in d:
            # The bound is the time to read the weights and state from main memory once per token:
            # a model small enough to stay in the CPU's caches runs faster than that (below 1x).
            cached = "; below 1x: it runs from cache" if d["ratio"] < 1 else ""
            echo(
                f"{d['variant']:>5} {d['threads']:>2}t  generation {d['ms_per_token']:.3f} ms/token = "
                f"{d['ratio']:.2f}x the bandwidth bound ({d['bound_ms']:.3f} ms: its bytes read once from "
                f"memory{cached})"
            )
        elif "ratio" in d:
            echo(f"{d['variant']:>5} {d['threads']:>2}t  {d['what']}: {d['ratio']:.2f}x")
        else:
            echo(f"{d['variant']:>5} {d['threads']:>2}t  {d['what']}: {d['value']:.4f}")
