"""Does onnxruntime's GroupQueryAttention update a shared key/value buffer in place from inside an If?

    python tools/probe_gqa.py                      # the paper's block size: 8 heads of 64, 513 slots
    python tools/probe_gqa.py --past 128 --calls 2000

The exported attention step for the ring's first pass (train/ops/kv_attention, BENCHMARKS.md):
while the ring has not wrapped, one com.microsoft GroupQueryAttention per block reads the filled
slots in place and writes the new key and value at slot `past`, inside the `If` that keeps the
plain branch for later tokens. That only pays if the If's outputs, bound (IOBinding) to the same
buffers as the past inputs, reach the contrib op as its own present outputs. This builds that
graph on its own, runs one step with past and present sharing each buffer, and checks the write
and the output against a numpy reference; the timing against present in buffers of its own
tells an in-place write from a copy.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from hybrid.train.model import alibi_slopes


def _value(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def gqa_in_if_graph(heads: int, d_head: int, slots: int) -> bytes:
    """If(cond) then GroupQueryAttention(q, k, v, past, bias) else pass the memory through."""
    gqa = helper.make_node(
        "GroupQueryAttention",
        ["q", "k", "v", "past_key", "past_value", "seqlens_k", "total_len", "", "", "", "bias"],
        ["y", "present_key", "present_value"],
        domain="com.microsoft",
        num_heads=heads,
        kv_num_heads=heads,
    )
    then = helper.make_graph([gqa], "then", [], [_value(n, None) for n in ("y", "present_key", "present_value")])
    passthrough = [
        helper.make_node("Identity", [i], [o]) for i, o in (("q", "y2"), ("past_key", "k2"), ("past_value", "v2"))
    ]
    other = helper.make_graph(passthrough, "else", [], [_value(n, None) for n in ("y2", "k2", "v2")])
    node = helper.make_node(
        "If", ["cond"], ["out", "present.key", "present.value"], then_branch=then, else_branch=other
    )
    width, memory = heads * d_head, [1, heads, slots, d_head]
    graph = helper.make_graph(
        [node],
        "probe",
        [
            _value("cond", [], TensorProto.BOOL),
            *(_value(n, [1, 1, width]) for n in ("q", "k", "v")),
            _value("past_key", memory),
            _value("past_value", memory),
            _value("seqlens_k", [1], TensorProto.INT32),
            _value("total_len", [], TensorProto.INT32),
            _value("bias", [1, heads, 1, "total"]),
        ],
        [_value("out", [1, 1, width]), _value("present.key", memory), _value("present.value", memory)],
    )
    opsets = [helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def probe(heads: int = 8, d_head: int = 64, slots: int = 513, past: int = 128, calls: int = 0, seed: int = 0) -> dict:
    """One step after `past` tokens: the write error, the output error and (calls > 0) us per call, in place and with
    present in buffers of its own."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(gqa_in_if_graph(heads, d_head, slots), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    keys, values = (np.zeros((1, heads, slots, d_head), np.float32) for _ in range(2))
    keys[:, :, :past] = rng.standard_normal((1, heads, past, d_head))
    values[:, :, :past] = rng.standard_normal((1, heads, past, d_head))
    q, k, v = (rng.standard_normal((1, 1, heads * d_head)).astype(np.float32) for _ in range(3))
    slopes = alibi_slopes(heads).numpy()  # the model's own ALiBi slopes
    bias = (-slopes[:, None] * np.arange(past, -1, -1)[None, :]).astype(np.float32)[None, :, None, :]
    feeds = {"cond": np.array(True), "q": q, "k": k, "v": v, "bias": bias}
    feeds |= {"seqlens_k": np.array([past], np.int32), "total_len": np.array(past + 1, np.int32)}
    out = np.zeros((1, 1, heads * d_head), np.float32)
    io = _bind(session, feeds, out, keys, values, keys, values)  # one buffer each, bound as past and present
    session.run_with_iobinding(io)
    write_error = max(
        np.abs(keys[0, :, past] - k.reshape(heads, d_head)).max(),
        np.abs(values[0, :, past] - v.reshape(heads, d_head)).max(),
    )
    scores = q.reshape(heads, 1, d_head) @ keys[0, :, : past + 1].transpose(0, 2, 1) / np.sqrt(d_head) + bias[0]
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    reference = (weights / weights.sum(-1, keepdims=True)) @ values[0, :, : past + 1]
    result = {
        "write_error": float(write_error),
        "output_error": float(np.abs(out.reshape(heads, 1, d_head) - reference).max()),
    }
    if calls:
        # The same step with present in buffers of its own, where the op copies the past into
        # them: the shared binding is only in place if it is clearly the faster of the two.
        apart = _bind(session, feeds, out, keys, values, np.empty_like(keys), np.empty_like(values))
        result["us_per_call"], result["us_per_call_apart"] = _timed(session, io, calls), _timed(session, apart, calls)
    return result


def _bind(session, feeds, out, past_key, past_value, present_key, present_value):
    io = session.io_binding()
    for name, array in feeds.items():
        io.bind_cpu_input(name, array)
    values = {
        id(a): ort.OrtValue.ortvalue_from_numpy(a) for a in (out, past_key, past_value, present_key, present_value)
    }
    io.bind_ortvalue_output("out", values[id(out)])
    io.bind_ortvalue_input("past_key", values[id(past_key)])
    io.bind_ortvalue_input("past_value", values[id(past_value)])
    io.bind_ortvalue_output("present.key", values[id(present_key)])
    io.bind_ortvalue_output("present.value", values[id(present_value)])
    io.keep = list(values.values())  # the OrtValues must outlive the binding
    return io


def _timed(session, io, calls: int) -> float:
    """us per call; the step rewrites the same slot each time: a steady-state step."""
    session.run_with_iobinding(io)
    t0 = time.perf_counter()
    for _ in range(calls):
        session.run_with_iobinding(io)
    return (time.perf_counter() - t0) / calls * 1e6


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--d-head", type=int, default=64)
    p.add_argument("--slots", type=int, default=513, help="ring slots (mem_len + 1)")
    p.add_argument("--past", type=int, default=128, help="tokens already in the ring")
    p.add_argument("--calls", type=int, default=2000, help="timed calls (0: none)")
    a = p.parse_args(argv)
    if not 0 < a.past < a.slots or min(a.heads, a.d_head, a.calls + 1) < 1:
        p.error("need heads, d-head >= 1, calls >= 0 and 0 < past < slots")
    res = probe(a.heads, a.d_head, a.slots, a.past, a.calls)
    print(f"GroupQueryAttention inside If, past and present sharing one buffer, {a.past} tokens of {a.slots} slots:")
    print(f"  in-place write error {res['write_error']:.2e}, output error vs numpy {res['output_error']:.2e}")
    if "us_per_call" in res:
        print(
            f"  {res['us_per_call']:.1f} us per call in place, {res['us_per_call_apart']:.1f} with present in "
            "buffers of its own (1 thread, the If included)"
        )
    return res


if __name__ == "__main__":
    main()
