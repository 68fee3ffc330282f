#!/usr/bin/env python
"""Where an exported model's time goes in onnxruntime: milliseconds per operator type per call.

    python tools/profile_onnx.py models/hybrid-tiny --variant int8 --batch 16 --seq 128
    python tools/profile_onnx.py models/hybrid-tiny --variant int8 --batch 1 --seq 1     # one generated token

Runs the graph on random token ids with onnxruntime's profiler on (the session options the
runtime uses, plus enable_profiling), with a memory already full, as the runtime runs it (a
version-3 attention memory bound as both past and present, written in place), and sums the
kernel times by operator type. A Scan's time includes the nodes of its body, which are also listed under their
own types (Add, Mul, ... x steps); the profiler adds a little time to every node, so small
per-node figures read high next to `hybrid bench`.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import tempfile
import time

import numpy as np
import onnxruntime as ort

from hybrid.runtime.errors import HybridError
from hybrid.runtime.model import Model


def profile(
    model_dir,
    variant: str = "int8",
    batch: int = 16,
    seq: int = 128,
    threads: int = 1,
    runs: int = 5,
    warmup: int = 2,
    context: int = 0,
) -> dict:
    model = Model(model_dir, variant=variant, threads=threads)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")  # as runtime/model.py
    opts.log_severity_level = 4
    opts.enable_profiling = True
    folder = tempfile.mkdtemp(prefix="hybrid-profile-")
    try:
        return _profile(model, opts, folder, variant, batch, seq, threads, runs, warmup, context)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # the profile is read and deleted; nothing is left


def _profile(model, opts, folder, variant, batch, seq, threads, runs, warmup, context) -> dict:
    opts.profile_file_prefix = os.path.join(folder, "ort")
    sess = ort.InferenceSession(str(model.path), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    ids = rng.integers(0, model.vocab_size, (batch, seq), dtype=np.int64)
    before = rng.integers(0, model.vocab_size, (batch, context or seq), dtype=np.int64)
    _, state = model.forward(before, model.initial_state(batch))  # the memory: `context` tokens (default seq)
    model.ort = sess  # from here on the runtime's own calls run in the profiling session
    for _ in range(warmup):  # as the runtime runs it: a version-3 memory written in place
        _, state = model.forward(ids, state, in_place=True)
    t0 = time.perf_counter()
    for _ in range(runs):
        _, state = model.forward(ids, state, in_place=True)
    wall = (time.perf_counter() - t0) / runs
    path = sess.end_profiling()
    with open(path) as fh:
        events = json.load(fh)
    os.remove(path)
    total, count = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"]
            count[e["args"]["op_name"]] += 1
    calls = runs + warmup  # the profiler records every run
    ops = [{"op": op, "ms": us / calls / 1e3, "nodes": count[op] / calls} for op, us in total.most_common()]
    return {
        "model": str(model.path),
        "variant": variant,
        "batch": batch,
        "seq": seq,
        "threads": threads,
        "ms_per_call": wall * 1e3,
        "ops": ops,
    }


def count(least: int):
    """argparse type: an integer of at least `least` (anything else: argparse's one-line error)."""

    def parse(text: str) -> int:
        value = int(text)  # a ValueError is reported by argparse as "invalid parse value"
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return parse


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("--variant", default="int8")
    p.add_argument("--batch", type=count(1), default=16)
    p.add_argument("--seq", type=count(1), default=128)
    p.add_argument("--threads", type=count(1), default=1)
    p.add_argument("--runs", type=count(1), default=5)
    p.add_argument("--top", type=count(1), default=20)
    p.add_argument("--context", type=count(0), default=0, help="tokens fed before the profiled calls (default: --seq)")
    a = p.parse_args(argv)
    try:
        res = profile(a.model_dir, a.variant, a.batch, a.seq, a.threads, a.runs, context=a.context)
    except HybridError as e:  # a missing or broken model directory, an unknown variant: one line
        raise SystemExit(f"error: {e}") from None
    print(
        f"{res['model']} ({a.variant}), {a.batch} x {a.seq} tokens, {a.threads} thread(s): "
        f"{res['ms_per_call']:.2f} ms per call (profiler on)"
    )
    print("| op | ms per call | nodes per call |")
    print("|---|---:|---:|")
    for o in res["ops"][: a.top]:
        print(f"| {o['op']} | {o['ms']:.2f} | {o['nodes']:.0f} |")
    return res


if __name__ == "__main__":
    main()
