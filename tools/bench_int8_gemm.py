#!/usr/bin/env python
"""How much faster are onnxruntime's int8 weight products than eager PyTorch's fp32 ones, at a
model's own shapes? The ceiling on the runtime's int8-vs-eager evaluation ratio.

    python tools/bench_int8_gemm.py --preset hybrid-tiny --threads 1
    python tools/bench_int8_gemm.py --preset hybrid-paper --threads 1,2

For each weight matrix shape of the preset (QRNN gate projections, attention q/k/v and output,
feed-forward in and out) it times, side by side in one run, onnxruntime's DynamicQuantizeMatMul
(what `hybrid export`'s int8 variant runs: the activation quantized per call, int8 weights),
MatMulNBits at 4 bits (the int4 variant) and at 8 bits (onnxruntime-genai's int8 weights) and
torch.matmul in fp32, on `--rows` rows (16 streams x 128 tokens by default, as `hybrid bench`'s
ev16x128). The total weighs each shape by how often the model has it.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from functools import partial

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from hybrid.train.config import preset


def weight_shapes(cfg) -> Counter:
    """(in, out) of every weight matrix product in the blocks, with how many times each occurs."""
    d, shapes = cfg.d_model, Counter()
    for block in cfg.pattern:
        if block == "Q":
            shapes[(cfg.qrnn_window * d, 3 * d)] += 1
        elif block == "A":
            shapes[(d, 3 * d)] += 1
            shapes[(d, d)] += 1
        elif block == "F":
            shapes[(d, cfg.d_inner)] += 1
            shapes[(cfg.d_inner, d)] += 1
    return shapes


def int8_session(k: int, n: int, threads: int) -> ort.InferenceSession:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "w"),
        numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
    ]
    node = helper.make_node("DynamicQuantizeMatMul", ["a", "w", "w_scale", "w_zero"], ["y"], domain="com.microsoft")
    return product_session(node, inits, k, n, threads)


def nbits_session(k: int, n: int, threads: int, bits: int = 4) -> ort.InferenceSession:
    """MatMulNBits: [n, k / 32, 32 * bits / 8] packed weights, one scale a block of 32 inputs, the
    default zero point 2^(bits-1). bits=4 is the int4 export; bits=8 is what onnxruntime-genai's
    int8 Llama runs (tools/bench_peers.py)."""
    rng, blocks = np.random.default_rng(0), (k + 31) // 32
    inits = [
        numpy_helper.from_array(rng.integers(0, 256, (n, blocks, 32 * bits // 8), dtype=np.uint8), "w"),
        numpy_helper.from_array(np.full(n * blocks, 0.01, np.float32), "w_scale"),
    ]
    node = helper.make_node(
        "MatMulNBits", ["a", "w", "w_scale"], ["y"], domain="com.microsoft", K=k, N=n, bits=bits, block_size=32
    )
    node.attribute.append(helper.make_attribute("accuracy_level", 4))
    return product_session(node, inits, k, n, threads)


def product_session(node, inits, k: int, n: int, threads: int) -> ort.InferenceSession:
    """A one-node graph y [m, n] = node(a [m, k]) over its weight initializers, on `threads` threads."""
    graph = helper.make_graph(
        [node],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["m", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n])],
        inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)]
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def timed(fn, reps: int) -> float:
    """Median seconds of `reps` calls after two warm-up calls."""
    fn(), fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="hybrid-tiny")
    p.add_argument("--rows", type=int, default=16 * 128)
    p.add_argument("--threads", default="1", help="comma-separated thread counts")
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args(argv)
    cfg = preset(args.preset)
    shapes = weight_shapes(cfg)
    rows = []
    print(f"{args.preset}: {args.rows} rows, onnxruntime {ort.__version__}, torch {torch.__version__}")
    print(
        "| threads | in x out | count | int8 ms | int8 GOPS | fp32 ms | fp32 GFLOPS | int8 speed-up "
        "| int4 ms | int4 / int8 | 8-bit NBits ms | 8-bit NBits / int8 |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        totals = Counter()
        for (k, n), count in sorted(shapes.items()):
            a = np.random.default_rng(1).standard_normal((args.rows, k), dtype=np.float32)
            x, w = torch.from_numpy(a), torch.randn(k, n)
            row = {"threads": threads, "k": k, "n": n, "count": count}
            for key, sess in (
                ("int8_s", int8_session(k, n, threads)),
                ("int4_s", nbits_session(k, n, threads, bits=4)),
                ("nbits8_s", nbits_session(k, n, threads, bits=8)),
            ):
                row[key] = timed(partial(sess.run, None, {"a": a}), args.reps)
            with torch.inference_mode():
                row["fp32_s"] = timed(lambda: torch.matmul(x, w), args.reps)
            for key in ("int8_s", "int4_s", "nbits8_s", "fp32_s"):
                totals[key] += count * row[key]
            rows.append(row)
            ops, t8 = 2 * args.rows * k * n, row["int8_s"]
            print(
                f"| {threads} | {k} x {n} | {count} | {t8 * 1e3:.3f} | {ops / t8 / 1e9:,.0f} | "
                f"{row['fp32_s'] * 1e3:.3f} | {ops / row['fp32_s'] / 1e9:,.0f} | {row['fp32_s'] / t8:.1f}x | "
                f"{row['int4_s'] * 1e3:.3f} | {row['int4_s'] / t8:.2f}x | "
                f"{row['nbits8_s'] * 1e3:.3f} | {row['nbits8_s'] / t8:.2f}x |"
            )
        t8 = totals["int8_s"]
        print(
            f"| {threads} | all, weighted by count | | {t8 * 1e3:.2f} | | {totals['fp32_s'] * 1e3:.2f} | | "
            f"**{totals['fp32_s'] / t8:.1f}x** | {totals['int4_s'] * 1e3:.2f} | **{totals['int4_s'] / t8:.2f}x** | "
            f"{totals['nbits8_s'] * 1e3:.2f} | **{totals['nbits8_s'] / t8:.2f}x** |"
        )
    return rows


if __name__ == "__main__":
    main()
