#!/usr/bin/env python
"""The paper's comparison, reproduced at CPU scale: four architectures, equal parameters, equal budget.

    python tools/compare.py                 # the built-in Tiny Shakespeare, ~1.5M parameters each
    python tools/compare.py --smoke         # seconds: the whole pipeline on toy sizes, into a temporary folder

Each of the paper's four layer patterns (Transformer, PAR, Attn-QRNN, Hybrid; train/config.py
TINY_PATTERNS) keeps its pattern and is widened until its parameter count (as `hybrid info`
counts it) is as close as possible to --params; the feed-forward width then trims it closer.
All four train with the same seed, data order, schedule and number of tokens; each is then
evaluated on the whole valid and test splits with carried state (the literature's protocol).
Wall-clock times are as measured on this machine, which may be shared: a side-by-side speed
test (the four models' training steps interleaved, round-robin) gives their relative speed
under the same load.

Writes results/comparison.md, results/comparison.json and results/comparison.png, and fills
the block between `<!-- comparison:begin -->` and `<!-- comparison:end -->` in README.md and
docs/comparison.md where those markers exist.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from hybrid.runtime.files import atomic_write_json, atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_report import LABELS, markdown, plot, update_docs, verdict  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("transformer", "par", "attn-qrnn", "hybrid")


# -- equal parameter counts: hybrid.train.sizing ------------------------------------------------


# -- training and evaluation --------------------------------------------------------------------


def curve_from_metrics(run_dir: Path, metric: str, tokens_per_step: int) -> tuple[list[dict], float]:
    """(step, training seconds, valid metric) at each periodic validation, from metrics.jsonl, and
    the total training seconds.

    Seconds add up the trainer's own log intervals (steps x tokens / tokens_per_s): the training
    loop with its periodic validations, not process start-up or the final evaluation.
    """
    seconds, last_step, points = 0.0, 0, []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "tokens_per_s" in rec:
            steps = rec["step"] - last_step
            seconds += steps * tokens_per_step / max(rec["tokens_per_s"], 1e-9)
            last_step = rec["step"]
        elif f"valid_{metric}" in rec and not rec.get("final"):
            points.append({"step": rec["step"], "seconds": round(seconds, 2), metric: rec[f"valid_{metric}"]})
    return points, seconds


def interleaved_speed(cfgs: dict, batch_size: int, seq_len: int, rounds: int, steps: int, seed: int) -> dict:
    """ms per training step of each model, measured round-robin so that all see the same load."""
    import torch
    import torch.nn.functional as F

    from hybrid.train.model import HybridLM, detach_state

    if rounds <= 0 or steps <= 0:
        return {}
    torch.manual_seed(seed)
    setups = {}
    for arch, cfg in cfgs.items():
        model = HybridLM(cfg).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        setups[arch] = [model, opt, model.initial_state(batch_size)]
    x = torch.randint(0, next(iter(cfgs.values())).vocab_size, (batch_size, seq_len))
    times = {arch: [] for arch in cfgs}

    def one(arch):
        model, opt, state = setups[arch]
        logits, state = model(x, state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        setups[arch][2] = detach_state(state)

    for arch in cfgs:  # warm-up
        one(arch)
    for _ in range(rounds):
        for arch in cfgs:
            t0 = time.perf_counter()
            for _ in range(steps):
                one(arch)
            times[arch].append((time.perf_counter() - t0) / steps)
    return {arch: 1000 * sorted(ts)[len(ts) // 2] for arch, ts in times.items()}


def train_one(arch, cfg, train_cfg, corpus, run_dir: Path, log) -> dict:
    """Train one model; its final valid score is the trainer's (whole valid split, carried state),
    its test score the same protocol on the test split."""
    from hybrid.train.trainer import evaluate, load_run_model, metric_value, train

    kind = corpus.tokenizer.kind
    t0 = time.perf_counter()
    result = train(run_dir, cfg, train_cfg, corpus, progress=False, log=log)
    wall = time.perf_counter() - t0
    model, _ = load_run_model(run_dir)
    v_nll, v_n = result.valid_nll, json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["valid_tokens"]
    t_nll, t_n = evaluate(model, corpus.test, train_cfg.batch_size, train_cfg.seq_len)
    tokens_per_step = train_cfg.batch_size * train_cfg.seq_len
    curve, train_seconds = curve_from_metrics(run_dir, result.metric, tokens_per_step)
    metric = result.metric
    curve.append({"step": result.step, "seconds": round(train_seconds, 2), metric: metric_value(v_nll, kind)})
    return {
        "arch": arch,
        "label": LABELS[arch],
        "pattern": cfg.pattern,
        "d_model": cfg.d_model,
        "d_inner": cfg.d_inner,
        "n_heads": cfg.n_heads,
        "mem_len": cfg.mem_len,
        "steps": result.step,
        "tokens": result.step * tokens_per_step,
        "train_seconds": round(train_seconds, 2),
        "wall_seconds": round(wall, 2),
        "tokens_per_s": round(result.step * tokens_per_step / max(train_seconds, 1e-9), 1),
        f"valid_{metric}": metric_value(v_nll, kind),
        f"test_{metric}": metric_value(t_nll, kind),
        "valid_nll": v_nll,
        "test_nll": t_nll,
        "valid_tokens": v_n,
        "test_tokens": t_n,
        "curve": curve,
    }


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--corpus", type=Path, default=None, help="text file or corpus name (default: the built-in Tiny Shakespeare)"
    )
    p.add_argument("--tokenizer", default="byte", choices=["byte", "word"])
    p.add_argument("--params", type=float, default=1.5e6, help="target parameter count of every model")
    p.add_argument("--steps", type=int, default=500, help="training steps of every model (equal token budget)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-tokens", type=int, default=16384, help="valid tokens of each periodic validation")
    p.add_argument("--speed-rounds", type=int, default=2, help="rounds of the side-by-side speed test (0 = skip)")
    p.add_argument("--speed-steps", type=int, default=5, help="steps per model per round of the speed test")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a shared machine, more threads than free cores slow every step down many-fold)",
    )
    p.add_argument("--archs", default=",".join(ARCHS))
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default: results/; with --smoke a temporary folder, so that toy "
        "numbers never replace the committed results)",
    )
    p.add_argument(
        "--docs",
        type=Path,
        nargs="*",
        default=None,
        help="markdown files whose comparison markers get the table (default: README.md and docs/comparison.md)",
    )
    p.add_argument("--cache-dir", type=Path, default=None, help="token cache folder")
    p.add_argument("--keep-runs", type=Path, default=None, help="keep the run directories here")
    p.add_argument("--smoke", action="store_true", help="toy sizes and budget: the pipeline in seconds")
    a = p.parse_args(argv)
    if a.smoke:
        a.params, a.steps, a.batch_size, a.seq_len = 40_000, 8, 4, 32
        a.warmup, a.eval_every, a.eval_tokens = 2, 4, 1024
        a.speed_rounds, a.speed_steps = 1, 1
        if a.docs is None:
            a.docs = []
        if a.out is None:
            a.out = Path(tempfile.mkdtemp(prefix="hybrid-compare-smoke-"))
    if a.out is None:
        a.out = ROOT / "results"
    if a.docs is None:
        a.docs = [ROOT / "README.md", ROOT / "docs" / "comparison.md"]
    return a


def load_comparison_corpus(args, log):
    """The corpus (--corpus, or the built-in Tiny Shakespeare) and its path; --smoke takes a slice."""
    from hybrid.train.data import BUILTIN, Corpus
    from hybrid.train.sources import load_source

    corpus_path = args.corpus or BUILTIN
    corpus = load_source(
        str(corpus_path), None, args.tokenizer, seq_len=args.seq_len, cache_dir=args.cache_dir, progress=False, log=log
    )
    if args.smoke:  # the pipeline, not the numbers: a slice keeps every evaluation to a moment
        corpus = Corpus(
            corpus.name,
            corpus.tokenizer,
            corpus.train[:50_000],
            corpus.valid[:2_048],
            corpus.test[:2_048],
            meta=corpus.meta,
        )
    return corpus, corpus_path


def chosen_archs(args) -> list[str]:
    """The architectures of --archs, in its order; an unknown one stops the tool."""
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    bad = [a for a in archs if a not in ARCHS]
    if bad:
        raise SystemExit(f"unknown architectures {bad}; choose from {', '.join(ARCHS)}")
    return archs


def sized_models(archs: list[str], target: int, vocab_size: int, log) -> tuple[dict, dict]:
    """Each architecture's config at the target parameter count, and its exact count."""
    from hybrid.train.sizing import sized_config

    cfgs, counts = {}, {}
    for arch in archs:
        cfgs[arch], counts[arch] = sized_config(arch, target, vocab_size)
        log(
            f"{arch:<12} {cfgs[arch].pattern:<10} d_model {cfgs[arch].d_model:>4} d_inner {cfgs[arch].d_inner:>5}: "
            f"{counts[arch]:,} parameters"
        )
    return cfgs, counts


def shared_train_config(args):
    """The one training budget and schedule of every model (no checkpoints but the last)."""
    from hybrid.train.config import TrainConfig

    return TrainConfig(
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        steps=args.steps,
        lr=args.lr,
        warmup_steps=args.warmup,
        eval_every=args.eval_every,
        eval_tokens=args.eval_tokens,
        save_every=args.steps + 1,
        log_every=args.eval_every,
        keep_last=1,
        seed=args.seed,
    )


def train_all(archs, cfgs, counts, train_cfg, corpus, metric: str, args, log) -> list[dict]:
    """Train and score every model in turn; the run directories are temporary unless --keep-runs."""
    runs_root = Path(tempfile.mkdtemp(prefix="hybrid-compare-")) if args.keep_runs is None else args.keep_runs
    models = []
    try:
        for arch in archs:
            run_dir = runs_root / f"{arch}-{counts[arch]}"
            shutil.rmtree(run_dir, ignore_errors=True)
            log(f"training {LABELS[arch]} ({counts[arch]:,} parameters, {args.steps} steps) ...")
            row = train_one(arch, cfgs[arch], train_cfg, corpus, run_dir, log)
            row["params"] = counts[arch]
            models.append(row)
            log(
                f"  {LABELS[arch]}: valid {metric} {row[f'valid_{metric}']:.4f}, test {metric} "
                f"{row[f'test_{metric}']:.4f}, {row['train_seconds']:.0f} s training"
            )
    finally:
        if args.keep_runs is None:
            shutil.rmtree(runs_root, ignore_errors=True)
    return models


def machine_info() -> dict:
    """Where the numbers were measured."""
    import torch

    return {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def budget_info(args) -> dict:
    """The shared training budget, as the report shows it."""
    return {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "tokens": args.steps * args.batch_size * args.seq_len,
        "lr": args.lr,
        "warmup": args.warmup,
        "seed": args.seed,
    }


def corpus_label(corpus, corpus_path) -> str:
    """A named corpus by its name, a file by its folder and name."""
    if corpus.name in ("enwik8", "wikitext-103", "wikitext-2"):
        return corpus.name
    return f"{Path(corpus_path).parent.name}/{Path(corpus_path).name}"


def write_results(res: dict, args, log) -> None:
    """The plot, markdown and JSON into --out, then the docs' comparison markers."""
    files = res["files"]
    plot(res, Path(files["png"]))
    atomic_write_text(files["md"], markdown(res, args.out.resolve()))
    atomic_write_json(files["json"], res)
    res["docs_updated"] = update_docs(res, [Path(d) for d in args.docs], log)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from hybrid.train.trainer import metric_name

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    corpus, corpus_path = load_comparison_corpus(args, log)
    metric = metric_name(corpus.tokenizer.kind)
    label = corpus_label(corpus, corpus_path)
    archs = chosen_archs(args)
    target = int(args.params)
    cfgs, counts = sized_models(archs, target, corpus.tokenizer.vocab_size, log)
    train_cfg = shared_train_config(args)
    log(f"side-by-side speed test ({args.speed_rounds} rounds x {args.speed_steps} steps per model) ...")
    speed = interleaved_speed(cfgs, args.batch_size, args.seq_len, args.speed_rounds, args.speed_steps, args.seed)
    models = train_all(archs, cfgs, counts, train_cfg, corpus, metric, args, log)
    args.out.mkdir(parents=True, exist_ok=True)
    files = {
        "md": str(args.out / "comparison.md"),
        "json": str(args.out / "comparison.json"),
        "png": str(args.out / "comparison.png"),
    }
    argv_shown = " ".join(sys.argv[1:]) if argv is None else " ".join(argv)
    res = {
        "format": "hybrid-comparison",
        "version": 1,
        "command": f"python tools/compare.py {argv_shown}".strip(),
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "corpus": str(corpus_path),
        "corpus_name": label,
        "tokenizer": corpus.tokenizer.kind,
        "metric": metric,
        "target_params": target,
        "split_tokens": {s: len(getattr(corpus, s)) for s in ("train", "valid", "test")},
        "budget": budget_info(args),
        "machine": machine_info(),
        "speed_ms_per_step": speed,
        "models": models,
        "files": files,
        "smoke": bool(args.smoke),
    }
    res["verdict"] = verdict(res)
    write_results(res, args, log)
    print(Path(files["md"]).read_text())
    return res


if __name__ == "__main__":
    from hybrid.runtime.errors import HybridError

    try:
        main()
    except HybridError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
