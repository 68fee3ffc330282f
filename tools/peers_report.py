"""The table tools/bench_peers.py prints and writes: medians per backend, thread count and test,
the machine and library versions, the issue's bars as ratios from the same run, and the block
between the markers in BENCHMARKS.md (replaced in place, atomically)."""

from __future__ import annotations

import datetime
import importlib
import importlib.util
import os
import platform
import statistics
from pathlib import Path

from hybrid.runtime.machine import cpu_name
from hybrid.runtime.files import atomic_write_text, replace_marked

BEGIN, END = "<!-- bench_peers:begin -->", "<!-- bench_peers:end -->"
MiB = 1 << 20


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist, mod in (
        ("onnxruntime", "onnxruntime"),
        ("onnxruntime-genai", "onnxruntime_genai"),
        ("llama-cpp-python", "llama_cpp"),
        ("torch", "torch"),
        ("transformers", "transformers"),
    ):
        if importlib.util.find_spec(mod) is not None:
            from importlib.metadata import PackageNotFoundError, version

            try:
                out[dist] = version(dist)
            except PackageNotFoundError:  # importable but not installed by pip (a built copy on the path)
                out[dist] = getattr(importlib.import_module(mod), "__version__", "?")
    return out


def medians(res: dict) -> dict:
    return {k: (statistics.median(v) if v else None) for k, v in res["times"].items()}


def table(backends, results, cfg) -> list[str]:
    ctx = [f"ms/token @{c:,}" for c in cfg["contexts"]]
    head = [
        "backend",
        "variant",
        "params",
        "file MiB",
        "threads",
        "peak RSS MiB",
        *ctx,
        f"pp{cfg['pp']} tokens/s",
        "note",
    ]
    lines = [
        "| " + " | ".join(head) + " |",
        "| " + " | ".join(["---"] * 2 + ["---:"] * (len(head) - 3) + ["---"]) + " |",
    ]
    for i, b in enumerate(backends):
        size = f"{b.file_bytes / MiB:.1f}" if b.file_bytes else "-"
        params = f"{b.params / 1e6:.1f}M" if b.params else "-"
        if b.skipped:
            lines.append(
                "| "
                + " | ".join(
                    [b.name, b.variant, params, size, "-", "-", *["-"] * len(ctx), "-", f"skipped: {b.skipped}"]
                )
                + " |"
            )
            continue
        for t in cfg["threads"]:
            r = results[(i, t)]
            m = medians(r)
            cells = [f"{1e3 * m[f'tg@{c}']:.2f}" if m[f"tg@{c}"] else "-" for c in cfg["contexts"]]
            pp = m[f"pp{cfg['pp']}"]
            rss = f"{r['peak_rss_mib']:.0f}" if r.get("peak_rss_mib") else "-"
            note = f"failed: {r['error']}" if r["error"] else b.note
            lines.append(
                "| "
                + " | ".join(
                    [b.name, b.variant, params, size, str(t), rss, *cells, f"{1 / pp:,.0f}" if pp else "-", note]
                )
                + " |"
            )
    return lines


def ratios(backends, results, cfg) -> list[str]:
    """The issue's bars, as ratios from this run (> 1: ours is faster)."""
    get, raw = {}, {}
    for i, b in enumerate(backends):
        for t in cfg["threads"]:
            if (i, t) in results and not results[(i, t)]["error"]:
                get[(b.name, b.variant, t)] = medians(results[(i, t)])
                raw[(b.name, b.variant, t)] = results[(i, t)]["times"]
    hyb, tra = cfg["ours"]
    lo, hi, pp = cfg["contexts"][0], cfg["contexts"][-1], f"pp{cfg['pp']}"
    out = []

    def ratio(what, a, b, test):  # seconds per token, peer / ours
        for t in cfg["threads"]:
            x, y = get.get((*a, t), {}).get(test), get.get((*b, t), {}).get(test)
            if x and y:
                # Round by round too: the two ran seconds apart, so a drift of the VM's speed
                # between rounds moves both (each median alone moves with it).
                rounds = [q / p for p, q in zip(raw[(*a, t)][test], raw[(*b, t)][test])]
                out.append(f"- {what}, {t} thread(s): {y / x:.2f}x (per round {statistics.median(rounds):.2f}x)")

    for c in cfg["contexts"]:
        ratio(f"{hyb} int8 vs llama.cpp Q8_0 generation @{c}", (hyb, "int8"), ("llama.cpp", "Q8_0"), f"tg@{c}")
        ratio(f"{hyb} int4 vs llama.cpp Q4_0 generation @{c}", (hyb, "int4"), ("llama.cpp", "Q4_0"), f"tg@{c}")
    ratio(
        f"{tra} int8 vs onnxruntime-genai int8 generation @{lo}",
        (tra, "int8"),
        ("onnxruntime-genai", "int8"),
        f"tg@{lo}",
    )
    for v in ("int8", "int4"):
        for t in cfg["threads"]:
            m = get.get((hyb, v, t))
            if m and m.get(f"tg@{lo}") and m.get(f"tg@{hi}"):
                out.append(f"- {hyb} {v} ms/token @{hi} / @{lo}, {t} thread(s): {m[f'tg@{hi}'] / m[f'tg@{lo}']:.2f}")
    ratio(f"{pp}: {hyb} int8 vs llama.cpp Q8_0", (hyb, "int8"), ("llama.cpp", "Q8_0"), pp)
    ratio(f"{pp}: {hyb} int8 vs onnxruntime-genai int8", (hyb, "int8"), ("onnxruntime-genai", "int8"), pp)
    return out


def report(backends, results, cfg, command: str, minutes: float) -> str:
    v = versions()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    libs = ", ".join(f"{k} {x}" for k, x in v.items())
    L = cfg["llama"]
    lines = [
        f"### Peers at equal size, {'smoke sizes' if cfg['smoke'] else 'full size'} (`tools/bench_peers.py`)",
        "",
        f"{when} on {cpu_name()} ({os.cpu_count()} cores); {libs}.",
        "",
        f"Command: `{command}` ({minutes:.1f} min end to end). Medians of {cfg['rounds']} interleaved round(s) after one "
        f"untimed warm-up; the same token ids for every backend; each backend in a process of its own (peak RSS: "
        f"that whole process, interpreter and libraries included; OpenMP's default wait policy, and 50 ms between "
        f"turns so that a waiting backend's threads are asleep). Generation: {cfg['gen_tokens']} greedy tokens after prompts of "
        f"{', '.join(f'{c:,}' for c in cfg['contexts'])} tokens. The Llama: hidden {L['hidden']}, {L['layers']} "
        f"layers, {L['heads']} heads, intermediate {L['intermediate']}, vocabulary {L['vocab']}, random weights "
        f"(seed {cfg['seed']}): speed only.",
        "",
    ]
    lines += table(backends, results, cfg)
    r = ratios(backends, results, cfg)
    if r:
        lines += [
            "",
            'Ratios from this run ("vs": the peer\'s time over ours, above 1 = ours faster, of the medians '
            'and the median of the rounds\' own ratios; "/": our time per token at the longest prompt over '
            "the shortest, 1.00 = flat):",
            "",
        ] + r
    return "\n".join(lines) + "\n"


def write_block(path: Path, block: str) -> None:
    """Replace the text between the markers in `path` (or append a section with them); atomic."""
    if path.exists() and replace_marked(path, BEGIN, END, block):
        return
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    atomic_write_text(path, text.rstrip("\n") + f"\n\n## Peers at equal size\n\n{BEGIN}\n{block}{END}\n")
