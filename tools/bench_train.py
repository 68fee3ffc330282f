#!/usr/bin/env python
"""Training speed of the architectures side by side: tokens/s, step time and peak memory.

    python tools/bench_train.py                           # GPU: paper-scale Hybrid vs Transformer (enwik8 recipes)
    python tools/bench_train.py --scale tiny --device cpu # the tiny presets on the CPU
    python tools/bench_train.py --corpus /data/enwik8     # on enwik8 itself (default: the built-in corpus)

Each model trains for --steps steps through the real training loop (train/trainer.py: the same
batches, autocast, clipping and optimizer as `hybrid train`; evaluation and checkpoints pushed past
the end) in a fresh process of its own, so that peak memory is that model's alone: on CUDA
torch.cuda.max_memory_allocated, on the CPU the process's peak resident set. Tokens/s is the
median over logging windows after --warmup steps (the first steps compile kernels and grow
allocator pools); step time is batch x sequence / tokens/s. Throughput does not depend on what the
text says, so the built-in corpus serves for speed unless --corpus names another.

At paper scale the models and batches are the recipes' (recipes/enwik8/*.json: batch 22 x 512
tokens, 512 memory); --batch-size / --seq-len override them, e.g. to fit a smaller GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELS = {
    "transformer": "Transformer",
    "par": "PAR Transformer",
    "attn-qrnn": "Attn-QRNN",
    "hybrid": "Hybrid Transformer",
}


def configs(model: str, scale: str, batch_size: int | None, seq_len: int | None):
    """(ModelConfig, TrainConfig) of one model at `scale`, with the bench's schedule."""
    from hybrid.train.config import TrainConfig, preset
    from hybrid.train.sources import read_recipe

    if scale == "paper":
        model_cfg, train_cfg, _ = read_recipe(ROOT / "recipes" / "enwik8" / f"{model}.json")
    else:
        model_cfg, train_cfg = preset(f"{model}-tiny"), TrainConfig()
    over = {k: v for k, v in (("batch_size", batch_size), ("seq_len", seq_len)) if v}
    return model_cfg, dataclasses.replace(train_cfg, **over)


def bench_corpus(source: str | None, seq_len: int):
    """The corpus to train on (default: the built-in one), its valid split cut short."""
    from hybrid.train.data import load_text_corpus
    from hybrid.train.sources import load_source

    if source is None:
        corpus = load_text_corpus()
    else:  # a path (enwik8, its zip, any text) or a source name; bytes, as the enwik8 recipes are
        corpus = load_source(source, tokenizer="byte", seq_len=seq_len, progress=False)
    # The final evaluation (whole valid split) is not timed; keep it short on big corpora.
    corpus.valid = corpus.valid[: 64 * seq_len + 1]
    return corpus


def peak_memory(device) -> tuple[float, str, str]:
    """(peak MiB, what it measures, the device's name): on CUDA the allocator's peak, on the CPU
    this process's peak resident set (the run has a process of its own)."""
    import resource

    import torch

    from hybrid.runtime.machine import cpu_name

    if device.type == "cuda":
        peak, where = torch.cuda.max_memory_allocated(device) / 2**20, "GPU, max allocated"
        name = torch.cuda.get_device_name(device)
    else:
        peak, where = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "CPU, peak RSS"
        name = f"{cpu_name()}, {torch.get_num_threads()} threads"
    return peak, where, name


def run_one(args) -> dict:
    """Train one model for args.steps steps (in this process) and measure it."""
    import torch

    from hybrid.train import trainer
    from hybrid.train.model import HybridLM, count_parameters

    device = trainer.pick_device(args.device)
    model_cfg, cfg = configs(args.one, args.scale, args.batch_size, args.seq_len)
    far = 10**9  # no evaluation or checkpoint inside the timed steps
    cfg = dataclasses.replace(
        cfg,
        steps=args.steps,
        log_every=args.log_every,
        warmup_steps=0,
        eval_every=far,
        save_every=far,
        tensorboard=False,
    )
    corpus = bench_corpus(args.corpus, cfg.seq_len)
    with torch.device("meta"):
        params = count_parameters(HybridLM(model_cfg))["total"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer.train(Path(tmp) / "run", model_cfg, cfg, corpus, device=device, progress=False, log=lambda *a: None)
        recs = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in recs if "tokens_per_s" in r and r["step"] > args.warmup]
    if not rates:
        raise SystemExit(f"no logging window after step {args.warmup}: raise --steps")
    tps = statistics.median(rates)
    peak, where, name = peak_memory(device)
    return {
        "model": args.one,
        "name": model_cfg.name,
        "pattern": model_cfg.pattern,
        "parameters": params,
        "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len,
        "mem_len": model_cfg.mem_len,
        "tokens_per_s": tps,
        "step_ms": 1e3 * cfg.batch_size * cfg.seq_len / tps,
        "peak_mib": peak,
        "memory": where,
        "device": name,
        "windows": len(rates),
        "torch": torch.__version__,
    }


def table(rows: list[dict]) -> str:
    base = rows[0]
    out = [
        "| model | pattern | parameters | batch x seq (mem) | tokens/s | step ms | peak MiB | vs "
        + LABELS[base["model"]]
        + " |",
        "|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {LABELS[r['model']]} | {r['pattern']} | {r['parameters']:,} | "
            f"{r['batch_size']} x {r['seq_len']} ({r['mem_len']}) | {r['tokens_per_s']:,.0f} | "
            f"{r['step_ms']:.1f} | {r['peak_mib']:,.0f} | {r['tokens_per_s'] / base['tokens_per_s']:.2f}x |"
        )
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="hybrid,transformer", help="comma-separated: " + ", ".join(LABELS))
    p.add_argument(
        "--scale",
        choices=("paper", "tiny"),
        default=None,
        help="paper: the enwik8 recipes; tiny: the tiny presets (default: paper on CUDA, else tiny)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10, help="steps left out of the tokens/s median")
    p.add_argument("--log-every", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument(
        "--corpus", default=None, help="a .txt file, an enwik8 file/zip, or a source name (default: built-in)"
    )
    p.add_argument("--json", default=None, help="also write the rows here")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one model, print JSON
    args = p.parse_args(argv)
    if args.scale is None:
        import torch

        args.scale = "paper" if (args.device in ("auto", "cuda") and torch.cuda.is_available()) else "tiny"
    if args.one:
        print(json.dumps(run_one(args)))
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in LABELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {', '.join(LABELS)}")
    rows = []
    for m in models:
        cmd = [sys.executable, __file__, "--one", m, *(argv if argv is not None else sys.argv[1:])]
        print(f"{LABELS[m]}: {args.steps} steps ({args.scale} scale) ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"{m}: failed", file=sys.stderr)
            return 1
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(
        f"{rows[0]['device']} ({rows[0]['memory']}), torch {rows[0]['torch']}, {args.steps} steps, "
        f"tokens/s = median over {rows[0]['windows']} windows after step {args.warmup}\n"
    )
    print(table(rows))
    if args.json:
        from hybrid.runtime.files import atomic_write_json

        atomic_write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
