#!/usr/bin/env python
"""Our exports against the tools users already know, at equal parameter count, in one run.

    pip install -e ".[peers]"          # onnxruntime-genai, llama-cpp-python (compiles llama.cpp), ...
    python tools/bench_peers.py        # full size, writes the table into BENCHMARKS.md
    python tools/bench_peers.py --smoke   # tiny sizes, one round, prints only (CI)

Backends (each skipped with a note when its package is missing):
- ours: `hybrid-paper` and `transformer-paper` (`--smoke`: the tiny presets), exported after one
  training step (`hybrid export`: fp32, int8, int4), run through the runtime's Session;
- onnxruntime-genai: a Llama of about the same size (transformers LlamaConfig, hidden 512, 12
  layers, 8 heads, intermediate 1376, vocabulary 256: 38.2M parameters, random weights from
  --seed) built by genai's model builder, fp32 / int8 / int4;
- llama.cpp (llama-cpp-python): the same Llama as GGUF, Q8_0 and Q4_0;
- eager transformers fp32 on the same Llama: the PyTorch reference.

Honest by construction: every backend gets the same token ids; each runs in a process of its
own with its model loaded once and its thread count set (onnxruntime intra-op threads, genai's
session options, llama.cpp n_threads and n_threads_batch, torch.set_num_threads), so its peak
RSS is its own; one untimed warm-up; then interleaved rounds (every backend once per test per
round, so load from elsewhere hits all alike), reported as medians. Tests: ms per generated
token (greedy, --gen-tokens steps, each picking the argmax and running the model on it) after
prompts of each --contexts length, and prompt processing (--pp tokens in one call, tokens/s).
Random weights: speed only, never quality.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import peers_build as build  # noqa: E402
import peers_report  # noqa: E402
from peers_report import BEGIN, END, write_block  # noqa: E402,F401

ROOT = HERE.parent

FULL = {
    "llama": {"vocab": 256, "hidden": 512, "layers": 12, "heads": 8, "intermediate": 1376, "context": 4096},
    "ours": ("hybrid-paper", "transformer-paper"),
    "contexts": (128, 1024, 4000),
    "pp": 512,
    "gen_tokens": 32,
    "rounds": 3,
    "threads": (1, 2),
}
SMOKE = {
    "llama": {"vocab": 256, "hidden": 64, "layers": 2, "heads": 2, "intermediate": 192, "context": 256},
    "ours": ("hybrid-tiny", "transformer-tiny"),
    "contexts": (16, 64),
    "pp": 32,
    "gen_tokens": 4,
    "rounds": 1,
    "threads": (1,),
}


@dataclass
class Backend:
    name: str  # what the table calls it
    variant: str
    kind: str  # peers_worker.KINDS
    path: Path | None = None
    file_bytes: int | None = None
    params: int | None = None
    extra: dict = field(default_factory=dict)
    skipped: str | None = None  # why not measured
    note: str = ""  # how it was measured, where that differs from its defaults

    def spec(self, threads: int) -> dict:
        return {"kind": self.kind, "path": str(self.path), "variant": self.variant, "threads": threads, **self.extra}


def missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def say(msg: str, t0=[time.time()]) -> None:
    m, s = divmod(int(time.time() - t0[0]), 60)
    print(f"[{m:3d}:{s:02d}] {msg}", flush=True)


# -- building ---------------------------------------------------------------------------------------


def plan_and_build(cfg: dict, work: Path, seed: int, only: set[str] | None) -> list[Backend]:
    """Every backend of the table, its model built (or reused from `work`), or why it is skipped."""
    work.mkdir(parents=True, exist_ok=True)
    build.announce = lambda msg: say(msg + "; kept in " + str(work))
    log = work / "build.log"
    out: list[Backend] = []
    want = lambda kind: only is None or kind in only  # noqa: E731
    need_torch = missing("torch")
    for preset in cfg["ours"]:
        rows = [Backend(preset, v, "ours") for v in ("int8", "int4", "fp32")]
        if not want("ours"):
            continue
        if need_torch:
            for b in rows:
                b.skipped = "torch not installed (pip install -e '.[train,export]'): cannot make our export"
        else:
            try:
                d = build.build_ours(preset, work / preset, work, log)
                for b in rows:
                    b.path, b.params = d, build.ours_params(d)
                    b.file_bytes = (d / json.loads((d / "config.json").read_text())["files"][b.variant]).stat().st_size
            except RuntimeError as e:
                for b in rows:
                    b.skipped = f"build failed: {e}"
        out += rows
    lack_llama = missing("torch", "transformers", "safetensors")
    hf, params = None, None
    if not lack_llama and any(want(k) for k in ("genai", "llama.cpp", "eager")):
        hf, params = build.build_llama(work / "llama-hf", cfg["llama"], seed)
        say(f"Llama: {params:,} parameters ({params / 1e6:.1f}M)")
    if want("genai"):
        out += _genai(hf, params, work, log, lack_llama)
    if want("llama.cpp"):
        out += _llama_cpp(hf, params, work, log, lack_llama, cfg)
    if want("eager"):
        b = Backend("transformers eager", "fp32", "eager", path=hf, params=params)
        if hf is None:
            b.skipped = f"{', '.join(lack_llama)} not installed (pip install -e '.[peers]')"
        else:
            b.file_bytes = (hf / "model.safetensors").stat().st_size
        out.append(b)
    return out


def _genai(hf, params, work, log, lack_llama) -> list[Backend]:
    rows = [Backend("onnxruntime-genai", p, "genai", params=params) for p in ("int8", "int4", "fp32")]
    lack = missing("onnxruntime_genai") + lack_llama
    for b in rows:
        if lack:
            b.skipped = f"{', '.join(lack)} not installed (pip install -e '.[peers]')"
            continue
        try:
            b.path = build.build_genai(hf, work / f"genai-{b.variant}", b.variant, log)
            b.file_bytes = sum(f.stat().st_size for f in b.path.glob("model.onnx*"))
        except RuntimeError as e:
            b.skipped = f"build failed: {e}"
    return rows


def _llama_cpp(hf, params, work, log, lack_llama, cfg) -> list[Backend]:
    rows = [
        Backend(
            "llama.cpp", q, "llama.cpp", params=params, extra={"context": cfg["llama"]["context"], "batch": cfg["pp"]}
        )
        for q in ("Q8_0", "Q4_0")
    ]
    lack = missing("llama_cpp", "gguf") + lack_llama
    if lack:
        for b in rows:
            b.skipped = f"{', '.join(lack)} not installed (pip install -e '.[peers]')"
        return rows
    try:
        files = build.build_gguf(hf, work / "gguf", log)
        for b in rows:
            b.path = files[b.variant]
            b.file_bytes = b.path.stat().st_size
    except RuntimeError as e:
        for b in rows:
            b.skipped = f"build failed: {e}"
        return rows
    probe = Worker(rows[0], 1, work / "workers.log")
    ok = "error" not in probe.ask(None) and "error" not in probe.ask({"op": "pp", "ids": [1, 2, 3, 4]})
    probe.close()
    if not ok:  # seen: ggml's AMX kernels die of SIGILL in a VM whose CPU reports AMX
        say("llama.cpp died with its extra buffer types (AMX kernels, weight repacking); measuring without them")
        for b in rows:
            b.extra["extra_bufts"] = False
            b.note = "without extra buffer types (AMX / repacking): they crashed here"
    return rows


# -- measuring ----------------------------------------------------------------------------------------


class Worker:
    patience = 900  # seconds one request may take

    def __init__(self, backend: Backend, threads: int, log: Path):
        self.backend, self.threads = backend, threads
        self.err = open(log, "a")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "peers_worker.py"), json.dumps(backend.spec(threads))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
            # OpenMP's default wait policy (llama.cpp's and torch's threads spin briefly at each
            # barrier, then sleep): PASSIVE would put them to sleep at every barrier, which made
            # llama.cpp at 2 threads 4x slower than at 1. The pause between turns lets idle
            # threads of the backend before go to sleep.
            env={k: v for k, v in dict(os.environ, OMP_NUM_THREADS=str(threads)).items() if k != "OMP_WAIT_POLICY"},
        )

    def ask(self, req: dict | None) -> dict:
        try:
            if req is not None:
                self.proc.stdin.write(json.dumps(req) + "\n")
                self.proc.stdin.flush()
            if not select.select([self.proc.stdout], [], [], self.patience)[0]:
                self.proc.kill()  # a hung backend must not hold up the whole run
                return {"error": f"no answer in {self.patience} s; stopped"}
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            return {"error": f"worker exited (code {self.proc.wait()}); see {self.err.name}"}
        return json.loads(line)

    def close(self) -> float | None:
        ans = self.ask({"op": "quit"}) if self.proc.poll() is None else {}
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait()
        self.err.close()
        return ans.get("peak_rss_mib")


def tests(cfg) -> list[tuple[str, dict, int]]:
    """(test name, request, tokens timed)."""
    rng = np.random.default_rng(cfg["seed"])
    V = cfg["llama"]["vocab"]
    out = [(f"pp{cfg['pp']}", {"op": "pp", "ids": rng.integers(0, V, cfg["pp"]).tolist()}, cfg["pp"])]
    for c in cfg["contexts"]:
        out.append(
            (
                f"tg@{c}",
                {"op": "tg", "prompt": rng.integers(0, V, c).tolist(), "n": cfg["gen_tokens"]},
                cfg["gen_tokens"],
            )
        )
    return out


def measure(backends: list[Backend], cfg: dict, work: Path) -> dict:
    """{(backend index, threads): {"times": {test: [seconds per token, ...]}, "peak_rss_mib", "error"}}."""
    todo = [i for i, b in enumerate(backends) if not b.skipped]
    plan = tests(cfg)
    results, t_start, rounds_done = {}, time.time(), 0
    total_rounds = cfg["rounds"] * len(cfg["threads"])
    for t in cfg["threads"]:
        say(f"{t} thread(s): loading {len(todo)} backends, one process each")
        workers = {}
        started = {i: Worker(backends[i], t, work / "workers.log") for i in todo}  # they load side by side
        for i, w in started.items():
            ans = w.ask(None)
            results[(i, t)] = {"times": {name: [] for name, _, _ in plan}, "error": ans.get("error")}
            if "error" in ans:
                say(f"  {backends[i].name} {backends[i].variant}: failed to load: {ans['error']}")
                w.close()
            else:
                workers[i] = w
        warm = [plan[0], plan[1]]  # prompt processing and generation after the shortest prompt
        for i, w in workers.items():
            for _, req, _ in warm:
                ans = w.ask(req)
                if "error" in ans:
                    results[(i, t)]["error"] = ans["error"]
        for r in range(cfg["rounds"]):
            t0 = time.time()
            for name, req, n in plan:
                if r == 0 and rounds_done == 0:
                    say(f"{t} thread(s), round 1: {name} on every backend")
                for i, w in workers.items():
                    if results[(i, t)]["error"]:
                        continue
                    time.sleep(0.05)  # let the previous backend's spinning worker threads go idle
                    ans = w.ask(req)
                    if "error" in ans:
                        results[(i, t)]["error"] = ans["error"]
                    else:
                        results[(i, t)]["times"][name].append(ans["s"] / n)
            rounds_done += 1
            per_round = (time.time() - t_start) / rounds_done
            say(
                f"{t} thread(s): round {r + 1}/{cfg['rounds']} took {time.time() - t0:.0f} s; "
                f"about {per_round * (total_rounds - rounds_done) / 60:.1f} min left"
            )
        for i, w in workers.items():
            results[(i, t)]["peak_rss_mib"] = w.close()
        # What is measured so far survives a run stopped later.
        (work / "results.partial.json").write_text(
            json.dumps({f"{backends[i].name} {backends[i].variant} {tt} threads": r for (i, tt), r in results.items()})
        )
    return results


# -- command line ----------------------------------------------------------------------------------------


def parse_ints(s: str, what: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in s.split(",") if x.strip())
    except ValueError:
        raise SystemExit(f"error: --{what} takes comma-separated positive integers, got {s!r}")
    if not vals or any(v <= 0 for v in vals):
        raise SystemExit(f"error: --{what} takes comma-separated positive integers, got {s!r}")
    return vals


def config(args) -> dict:
    cfg = dict(SMOKE if args.smoke else FULL, smoke=args.smoke, seed=args.seed)
    if args.rounds is not None:
        cfg["rounds"] = args.rounds
    if args.gen_tokens is not None:
        cfg["gen_tokens"] = args.gen_tokens
    for key in ("threads", "contexts"):
        if getattr(args, key):
            cfg[key] = parse_ints(getattr(args, key), key)
    if cfg["rounds"] <= 0 or cfg["gen_tokens"] <= 0:
        raise SystemExit("error: --rounds and --gen-tokens must be positive")
    room = cfg["llama"]["context"]
    if max(cfg["contexts"]) + cfg["gen_tokens"] + 1 > room or cfg["pp"] > room:
        raise SystemExit(
            f"error: a prompt of {max(cfg['contexts'])} plus {cfg['gen_tokens']} generated tokens "
            f"does not fit the Llama's context of {room}"
        )
    return cfg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, short contexts, one round (CI)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3; smoke 1)")
    p.add_argument("--threads", help="thread counts, comma-separated (default 1,2; smoke 1)")
    p.add_argument("--contexts", help="prompt lengths before generation (default 128,1024,4000)")
    p.add_argument("--gen-tokens", type=int, help="greedy tokens timed per generation test (default 32)")
    p.add_argument("--only", help="backends to run, comma-separated: ours, genai, llama.cpp, eager")
    p.add_argument("--work", type=Path, help="where models are built and kept (default runs/bench-peers[-smoke])")
    p.add_argument(
        "--benchmarks", type=Path, help="the Markdown file to write the table into (default BENCHMARKS.md; smoke: none)"
    )
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    cfg = config(args)
    only = set(args.only.split(",")) if args.only else None
    if only and only - {"ours", "genai", "llama.cpp", "eager"}:
        raise SystemExit(
            f"error: unknown backend(s) in --only: {', '.join(sorted(only - {'ours', 'genai', 'llama.cpp', 'eager'}))}"
        )
    work = args.work or ROOT / "runs" / ("bench-peers-smoke" if args.smoke else "bench-peers")
    t0 = time.time()
    backends = plan_and_build(cfg, work, args.seed, only)
    for b in backends:
        if b.skipped:
            say(f"skipped {b.name} {b.variant}: {b.skipped}")
    n = sum(not b.skipped for b in backends)
    say(
        f"measuring {n} backends at {', '.join(map(str, cfg['threads']))} thread(s), {cfg['rounds']} round(s) each "
        f"(the time left is printed after every round)"
    )
    results = measure(backends, cfg, work)
    raw = [
        {"backend": b.name, "variant": b.variant, "threads": t, **results[(i, t)]}
        for i, b in enumerate(backends)
        for t in cfg["threads"]
        if (i, t) in results
    ]
    (work / "results.json").write_text(json.dumps({"config": cfg, "results": raw}, indent=1))
    command = "python tools/bench_peers.py" + (
        "" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:] if argv is None else argv)
    )
    text = peers_report.report(backends, results, cfg, command, (time.time() - t0) / 60)
    print()
    print(text)
    target = args.benchmarks or (None if args.smoke else ROOT / "BENCHMARKS.md")
    if target and not args.no_write:
        write_block(target, text)
        say(f"table written into {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
