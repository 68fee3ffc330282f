"""Generation speed of the JavaScript package against the Python runtime, side by side.

    .venv/bin/python tools/bench_js.py MODEL_DIR [--variant int8] [--tokens 128] [--rounds 7] [--no-wasm]

One model, one variant, one thread each: the Python runtime (IOBinding stepper), Node (js/) with
its default stepper (onnxruntime's C API with IOBinding, on onnxruntime-node's library) and with
its reference stepper (onnxruntime-node's session.run) and, unless --no-wasm, onnxruntime-web
(wasm, one thread) in headless
Chromium on the demo page. Each round is a fresh session that is fed the prompt and generates
--tokens greedy tokens; the backends take turns round by round (the Node and page sides stay
loaded in one node process between rounds), so a busy machine slows all of them alike. Prints
the median ms/token of each (wall time, and for Python and Node the CPU time of the process,
which a shared machine disturbs less) and the ratios, of the medians and round by round (the bars: Node
within 1.3x of Python, wasm within 3x of native). Needs js/node_modules (tools/setup_js.sh) and, for wasm, /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JS = ROOT / "js"


def python_round(model, prompt: str, tokens: int) -> tuple[float, float]:
    """(wall ms/token, CPU ms/token of this process) of one round."""
    s = model.session()
    s.feed(prompt)
    c0 = time.process_time()
    s.generate_tokens(max_tokens=tokens, temperature=0)
    return s.last_stats["ms_per_token"], 1e3 * (time.process_time() - c0) / tokens


def node_round(node: subprocess.Popen, backend: str) -> tuple[float, float | None]:
    """(wall ms/token, CPU ms/token or None) of one round of the node process's backend
    ("node", "node-binding" or "wasm")."""
    node.stdin.write(backend + "\n")
    node.stdin.flush()
    line = node.stdout.readline()
    if not line:
        sys.exit("error: the node side of the benchmark stopped (see above)")
    got = json.loads(line)
    return got["ms_per_token"], got["cpu_ms_per_token"]


def parse_args():
    """The command line, checked before anything is loaded: positive counts, js/node_modules in place."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--variant", default="int8")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--prompt", default="ROMEO:")
    ap.add_argument("--no-wasm", action="store_true", help="Node and Python only (no Chromium)")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()
    if args.tokens <= 0 or args.rounds <= 0:
        sys.exit("error: --tokens and --rounds must be positive")
    if not (JS / "node_modules" / "onnxruntime-node").is_dir():
        sys.exit("error: js/node_modules is missing; run tools/setup_js.sh")
    return args


def start_node_side(args, model) -> tuple[subprocess.Popen | None, subprocess.Popen]:
    """The demo page's server (unless --no-wasm) and the node process that runs the Node and page rounds."""
    server = None
    job = {
        "dir": str(args.model_dir),
        "variant": model.variant,
        "threads": 1,
        "prompt": args.prompt,
        "tokens": args.tokens,
    }
    if not args.no_wasm:
        server = subprocess.Popen(
            ["node", str(JS / "demo" / "serve.mjs"), "--port", "0", "--model", str(args.model_dir)],
            stdout=subprocess.PIPE,
            text=True,
        )
        job |= {"pageUrl": server.stdout.readline().strip(), "modelUrl": "/model/", "chromium": args.chromium}
    node = subprocess.Popen(
        ["node", str(JS / "scripts" / "bench.mjs"), json.dumps(job)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=JS,
    )
    return server, node


def interleaved_rounds(args, model, node: subprocess.Popen, backends: list[str]) -> tuple[dict, dict]:
    """Wall and CPU ms/token of every counted round per backend, the backends taking turns round by round."""
    times: dict[str, list[float]] = {b: [] for b in backends}
    cpu: dict[str, list[float]] = {b: [] for b in backends}
    for r in range(args.rounds + 1):  # round 0 warms every backend up and is not counted
        for b in backends:
            if b == "python":
                ms, c = python_round(model, args.prompt, args.tokens)
            else:
                ms, c = node_round(node, b)
            if r:
                times[b].append(ms)
                if c is not None:
                    cpu[b].append(c)
    return times, cpu


def print_report(args, model, backends: list[str], times: dict, cpu: dict) -> None:
    """The table of medians (with min and max) and the ratios against the bars."""
    med = {b: statistics.median(t) for b, t in times.items()}
    print(
        f"{args.model_dir} {model.variant}, 1 thread, {args.tokens} greedy tokens after {args.prompt!r}, "
        f"median of {args.rounds} interleaved rounds"
    )
    print("| backend | ms/token (median) | min | max | CPU ms/token (median) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    names = {
        "python": "Python runtime (onnxruntime, IOBinding)",
        "node": "Node (C API stepper, IOBinding)",
        "node-binding": "Node (onnxruntime-node session.run)",
        "wasm": "Chromium (onnxruntime-web, wasm)",
    }
    for b in backends:
        c = f"{statistics.median(cpu[b]):.3f}" if cpu[b] else "-"
        print(f"| {names[b]} | {med[b]:.3f} | {min(times[b]):.3f} | {max(times[b]):.3f} | {c} |")
    cpu_ratio = statistics.median(cpu["node"]) / statistics.median(cpu["python"])
    print(
        f"node / python: {med['node'] / med['python']:.2f}x wall ({paired(times, 'node', 'python')}), "
        f"{cpu_ratio:.2f}x CPU time (bar 1.3x)"
    )
    print(f"node-binding / python: {med['node-binding'] / med['python']:.2f}x wall (the reference stepper)")
    if "wasm" in med:
        print(
            f"wasm / python: {med['wasm'] / med['python']:.2f}x ({paired(times, 'wasm', 'python')}), "
            f"wasm / node: {med['wasm'] / med['node']:.2f}x ({paired(times, 'wasm', 'node')}) (bar 3x)"
        )


def paired(times: dict, a: str, b: str) -> str:
    """The median and range of a's time over b's within each round. The backends of one round run
    seconds apart, so where this VM's speed drifts between rounds (by 2x on a 2-vCPU guest) the
    per-round ratio holds still while each backend's own median moves."""
    r = sorted(x / y for x, y in zip(times[a], times[b]))
    return f"per round {statistics.median(r):.2f}x, {r[0]:.2f}-{r[-1]:.2f}"


def main() -> None:
    args = parse_args()
    from hybrid.runtime import load_model
    from hybrid.runtime.errors import HybridError

    try:
        model = load_model(args.model_dir, variant=args.variant, threads=1)
    except HybridError as e:
        sys.exit(f"error: {e}")
    backends = ["python", "node", "node-binding"] + ([] if args.no_wasm else ["wasm"])
    server, node = start_node_side(args, model)
    try:
        times, cpu = interleaved_rounds(args, model, node, backends)
        node.stdin.write("quit\n")
        node.stdin.flush()
        node.wait(timeout=60)
    finally:
        if node.poll() is None:
            node.kill()
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
    print_report(args, model, backends, times, cpu)


if __name__ == "__main__":
    main()
