"""What one onnxruntime call costs in each binding, apart from the model's own compute.

    .venv/bin/python tools/bench_binding.py MODEL_DIR [--calls 2000] [--rounds 7]

A generation step hands the graph the token, the attention mask and every state tensor, and
takes back the logits and every new state tensor. This tool builds a graph with exactly that
signature (the model's names, dtypes and shapes at batch 1) whose nodes only copy (Identity), so
a call costs the binding's own work: turning feeds and fetches into OrtValues, the copies out,
the promise. It times it in the Python runtime's two ways (plain `run`, and IOBinding as the
runtime's stepper does) and in onnxruntime-node (js/node_modules, preallocated fetches as the
js/ stepper does), one thread, rounds interleaved, and again with the whole state packed into
one tensor, so the cost per tensor shows. Subtract these from `tools/bench_js.py`'s ms/token to
see how much of a gap is the binding and how much the graph.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hybrid.runtime.errors import HybridError
from hybrid.runtime.model import make_session
from hybrid.runtime.modeldir import ATTENTION_MASK, ModelDir, open_model_dir

ROOT = Path(__file__).resolve().parents[1]

ORT_NODE = ROOT / "js" / "node_modules" / "onnxruntime-node" / "dist" / "index.js"

# One thread, the session options of js/src/load.js, preallocated fetches: as js/src/model.js.
NODE_ROUND = """
import ort from %(ort)s;
const [path, calls] = [process.argv[2], Number(process.argv[3])];
const opts = { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all',
  extra: { session: { set_denormal_as_zero: '1' } } };
const s = await ort.InferenceSession.create(path, opts);
const zeros = (m) => {
  const n = m.shape.reduce((a, b) => a * b, 1);
  return m.type === 'int64' ? new ort.Tensor('int64', new BigInt64Array(n), m.shape) : new ort.Tensor('float32', new Float32Array(n), m.shape);
};
const feeds = {}, fetches = {};
s.inputMetadata.forEach((m) => { feeds[m.name] = zeros(m); });
s.outputMetadata.forEach((m) => { fetches[m.name] = zeros(m); });
for (let i = 0; i < 100; i++) await s.run(feeds, fetches);
const t = performance.now();
for (let i = 0; i < calls; i++) await s.run(feeds, fetches);
console.log(JSON.stringify({ ms: (performance.now() - t) / calls }));
"""


def signature(md: ModelDir) -> tuple[list, list]:
    """(inputs, outputs) of a generation step at batch 1: (name, numpy dtype, shape) each."""
    state = [(s.input, s.output, [1, *s.shape[1:]]) for s in md.state]
    inputs = [("input_ids", np.int64, [1, 1])]
    if md.mask_len is not None:  # version 2: [occupancy of the memory, this token]
        inputs.append((ATTENTION_MASK, np.int64, [1, md.mask_len + 1]))
    elif md.ring_len is not None:  # version 3: as long as the stream (bounded: attention_mask.py)
        inputs.append((ATTENTION_MASK, np.int64, [1, md.ring_len + 1]))
    inputs += [(i, np.float32, shape) for i, _, shape in state]
    outputs = [("logits", np.float32, [1, 1, md.vocab_size])] + [(o, np.float32, sh) for _, o, sh in state]
    return inputs, outputs


def packed(inputs: list, outputs: list) -> tuple[list, list]:
    """The same signature with every state tensor in one flat [1, n] tensor."""
    n = sum(int(np.prod(shape)) for name, _, shape in inputs if name not in ("input_ids", "attention_mask"))
    kept = [x for x in inputs if x[0] in ("input_ids", "attention_mask")]
    return kept + [("state", np.float32, [1, n])], [outputs[0], ("present_state", np.float32, [1, n])]


def identity_graph(inputs: list, outputs: list, path: Path) -> None:
    """A graph with this signature whose outputs are copies (states) or constants (logits)."""
    tp = {np.int64: TensorProto.INT64, np.float32: TensorProto.FLOAT}
    logits = outputs[0]
    init = [numpy_helper.from_array(np.zeros(logits[2], np.float32), "logits_value")]
    nodes = [helper.make_node("Identity", ["logits_value"], [logits[0]])]
    states_in = [x for x in inputs if x[0] not in ("input_ids", "attention_mask")]
    nodes += [helper.make_node("Identity", [i[0]], [o[0]]) for i, o in zip(states_in, outputs[1:])]
    graph = helper.make_graph(
        nodes,
        "binding",
        [helper.make_tensor_value_info(n, tp[d], s) for n, d, s in inputs],
        [helper.make_tensor_value_info(n, tp[d], s) for n, d, s in outputs],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def python_round(path: Path, calls: int) -> tuple[float, float]:
    """(plain run, IOBinding run) ms per call."""
    s = make_session(path, threads=1)  # the runtime's own session options
    dtype = {"tensor(int64)": np.int64, "tensor(float)": np.float32}
    feeds = {i.name: np.zeros(i.shape, dtype[i.type]) for i in s.get_inputs()}
    binding = s.io_binding()
    for i in s.get_inputs():
        binding.bind_ortvalue_input(i.name, ort.OrtValue.ortvalue_from_numpy(feeds[i.name]))
    for o in s.get_outputs():
        binding.bind_ortvalue_output(o.name, ort.OrtValue.ortvalue_from_numpy(np.zeros(o.shape, dtype[o.type])))
    timings = []
    for call in (lambda: s.run(None, feeds), lambda: s.run_with_iobinding(binding)):
        for _ in range(100):
            call()
        t = time.perf_counter()
        for _ in range(calls):
            call()
        timings.append(1e3 * (time.perf_counter() - t) / calls)
    return timings[0], timings[1]


def node_round(script: Path, path: Path, calls: int) -> float:
    out = subprocess.run(["node", str(script), str(path), str(calls)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["ms"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    if not 1 <= args.calls <= 10**6 or not 1 <= args.rounds <= 1000:
        sys.exit("error: --calls must be 1..1000000 and --rounds 1..1000")
    if not ORT_NODE.is_file():
        sys.exit(f"error: {ORT_NODE} is missing: run `bash tools/setup_js.sh` first")
    try:
        md = open_model_dir(args.model_dir)  # the contract checked: names, shapes, version
    except HybridError as e:
        sys.exit(f"error: {e}")
    layouts = {"separate": signature(md)}
    layouts["packed"] = packed(*layouts["separate"])
    with tempfile.TemporaryDirectory(prefix="hybrid-binding-") as tmp:
        script = Path(tmp) / "round.mjs"
        script.write_text(NODE_ROUND % {"ort": json.dumps(ORT_NODE.as_uri())})
        paths = {name: Path(tmp) / f"{name}.onnx" for name in layouts}
        for name, (ins, outs) in layouts.items():
            identity_graph(ins, outs, paths[name])
        times = {(name, b): [] for name in layouts for b in ("python", "iobinding", "node")}
        for r in range(args.rounds):
            for name, path in paths.items():
                plain, bound = python_round(path, args.calls)
                times[name, "python"].append(plain)
                times[name, "iobinding"].append(bound)
                times[name, "node"].append(node_round(script, path, args.calls))
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
    report(layouts, {k: statistics.median(v) for k, v in times.items()})


def report(layouts: dict, med: dict) -> None:
    print(
        "| state layout | tensors per call | Python run, ms | Python IOBinding, ms | Node run, ms | Node - IOBinding, ms |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (ins, outs) in layouts.items():
        py, io, node = med[name, "python"], med[name, "iobinding"], med[name, "node"]
        print(f"| {name} | {len(ins) + len(outs)} | {py:.4f} | {io:.4f} | {node:.4f} | {node - io:.4f} |")


if __name__ == "__main__":
    main()
