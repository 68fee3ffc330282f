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

from hybrid.runtime.files import atomic_write_json, atomic_write_text, replace_marked

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("transformer", "par", "attn-qrnn", "hybrid")
LABELS = {
    "transformer": "Transformer",
    "par": "PAR Transformer",
    "attn-qrnn": "Attn-QRNN",
    "hybrid": "Hybrid Transformer",
}
MARK_BEGIN, MARK_END = "<!-- comparison:begin -->", "<!-- comparison:end -->"


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


# -- reports ------------------------------------------------------------------------------------


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 100_000 else f"{n:,}"


def verdict(res: dict) -> str:
    m = res["metric"]
    rows = {r["arch"]: r for r in res["models"]}
    if "hybrid" not in rows or "transformer" not in rows:
        return ""
    h, t = rows["hybrid"], rows["transformer"]
    dv = h[f"valid_{m}"] - t[f"valid_{m}"]
    dt = h[f"test_{m}"] - t[f"test_{m}"]
    better = "lower" if m in ("bpc", "ppl") else "higher"
    if dv < 0 and dt < 0:
        outcome = "**beats** the Transformer baseline"
    elif dv > 0 and dt > 0:
        outcome = "**does not beat** the Transformer baseline"
    else:
        outcome = "is **level with** the Transformer baseline (better on one split, worse on the other)"
    best = min(res["models"], key=lambda r: r[f"valid_{m}"])
    fmt = (lambda v: f"{v:.4f}") if m == "bpc" else (lambda v: f"{v:.2f}")
    text = (
        f"At equal parameters ({_millions(h['params'])} vs {_millions(t['params'])}) and an equal budget of "
        f"{h['tokens']:,} training tokens, the Hybrid Transformer {outcome} on {res['corpus_name']}: "
        f"valid {m} {fmt(h[f'valid_{m}'])} vs {fmt(t[f'valid_{m}'])} ({dv:+.4f}), test {m} "
        f"{fmt(h[f'test_{m}'])} vs {fmt(t[f'test_{m}'])} ({dt:+.4f}; {better} is better). "
        f"Best of the four on valid: {best['label']} ({fmt(best[f'valid_{m}'])}). "
        f"One seed per model; the seed-to-seed spread was not measured, so differences of a few "
        f"hundredths should not be over-read."
    )
    return text


def markdown(res: dict, doc_dir: Path | None = None) -> str:
    m = res["metric"]
    png = Path(res["files"]["png"])
    rel = os.path.relpath(png, doc_dir) if doc_dir is not None else png.name
    speed = res.get("speed_ms_per_step", {})
    b = res["budget"]
    lines = [
        f"Four architectures at about {_millions(res['target_params'])} parameters, each trained for "
        f"{b['steps']:,} steps of {b['batch_size']} x {b['seq_len']} tokens ({b['tokens']:,} tokens) on "
        f"{res['corpus_name']} ({res['tokenizer']} level; train {res['split_tokens']['train']:,} / valid "
        f"{res['split_tokens']['valid']:,} / test {res['split_tokens']['test']:,} tokens), same seed, data order "
        f"and schedule; {m} over the whole valid and test splits with carried state. "
        f"Regenerate with `{res['command']}`.",
        "",
        f"| model | pattern | d_model | d_inner | parameters | train time (s) | tokens/s | "
        f"ms/step side by side | valid {m} | test {m} |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    fmt = (lambda v: f"{v:.4f}") if m == "bpc" else (lambda v: f"{v:.2f}")
    for r in res["models"]:
        sp = f"{speed[r['arch']]:.0f}" if r["arch"] in speed else "-"
        lines.append(
            f"| {r['label']} | `{r['pattern']}` | {r['d_model']} | {r['d_inner']} | {r['params']:,} | "
            f"{r['train_seconds']:.0f} | {r['tokens_per_s']:,.0f} | {sp} | {fmt(r[f'valid_{m}'])} | "
            f"{fmt(r[f'test_{m}'])} |"
        )
    lines += ["", f"![valid {m} against parameters and against training time]({rel})", ""]
    v = verdict(res)
    if v:
        lines += [v, ""]
    lines.append(
        f"Measured {res['date']} on {res['machine']['cpu_count']} CPU cores "
        f"({res['machine']['platform']}, torch {res['machine']['torch']}, {res['machine']['threads']} "
        f"thread{'s' if res['machine']['threads'] != 1 else ''}); "
        f"the machine may have been shared, so train times are as measured, and the side-by-side "
        f"column (training steps of the four models interleaved round-robin) is the fairer speed comparison."
    )
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = res["metric"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"transformer": "tab:blue", "par": "tab:orange", "attn-qrnn": "tab:green", "hybrid": "tab:red"}
    by_arch: dict[str, list] = {}
    for r in res["models"]:
        by_arch.setdefault(r["arch"], []).append(r)
    for arch, rows in by_arch.items():
        rows = sorted(rows, key=lambda r: r["params"])
        c = colors.get(arch)
        ax1.plot([r["params"] / 1e6 for r in rows], [r[f"valid_{m}"] for r in rows], "o-", color=c, label=LABELS[arch])
        for r in rows:
            ax2.plot(
                [p["seconds"] for p in r["curve"]],
                [p[m] for p in r["curve"]],
                "-",
                color=c,
                label=f"{LABELS[arch]} ({r['params'] / 1e6:.2f}M)",
            )
            ax2.plot([r["curve"][-1]["seconds"]], [r["curve"][-1][m]], "o", color=c)
    ax1.set_xlabel("parameters (millions)")
    ax1.set_ylabel(f"valid {m}")
    ax1.set_title("valid at the end of training")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    ax2.set_xlabel("training time (s, as measured)")
    ax2.set_ylabel(f"valid {m}")
    ax2.set_title(f"during training ({res['budget']['tokens']:,} tokens each)")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8)
    lows = [p[m] for r in res["models"] for p in r["curve"]]
    if lows:
        lo = min(lows)
        ax2.set_ylim(lo - 0.05 * abs(lo), min(max(lows), lo + 1.0 * max(abs(lo), 1e-9)))
    fig.suptitle(f"{res['corpus_name']}: four architectures at equal parameters and budget", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_docs(res: dict, docs: list[Path], log) -> list[str]:
    done = []
    for doc in docs:
        if doc.exists() and replace_marked(doc, MARK_BEGIN, MARK_END, markdown(res, doc.parent.resolve())):
            done.append(str(doc))
            log(f"updated {doc}")
    return done


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


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from hybrid.train.config import TrainConfig
    from hybrid.train.data import BUILTIN, Corpus
    from hybrid.train.sizing import sized_config
    from hybrid.train.sources import load_source
    from hybrid.train.trainer import metric_name

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
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
    metric = metric_name(corpus.tokenizer.kind)
    named = corpus.name in ("enwik8", "wikitext-103", "wikitext-2")
    corpus_label = corpus.name if named else f"{Path(corpus_path).parent.name}/{Path(corpus_path).name}"
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    bad = [a for a in archs if a not in ARCHS]
    if bad:
        raise SystemExit(f"unknown architectures {bad}; choose from {', '.join(ARCHS)}")
    target = int(args.params)
    cfgs, counts = {}, {}
    for arch in archs:
        cfgs[arch], counts[arch] = sized_config(arch, target, corpus.tokenizer.vocab_size)
        log(
            f"{arch:<12} {cfgs[arch].pattern:<10} d_model {cfgs[arch].d_model:>4} d_inner {cfgs[arch].d_inner:>5}: "
            f"{counts[arch]:,} parameters"
        )
    train_cfg = TrainConfig(
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
    log(f"side-by-side speed test ({args.speed_rounds} rounds x {args.speed_steps} steps per model) ...")
    speed = interleaved_speed(cfgs, args.batch_size, args.seq_len, args.speed_rounds, args.speed_steps, args.seed)
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
        "corpus_name": corpus_label,
        "tokenizer": corpus.tokenizer.kind,
        "metric": metric,
        "target_params": target,
        "split_tokens": {s: len(getattr(corpus, s)) for s in ("train", "valid", "test")},
        "budget": {
            "steps": args.steps,
            "batch_size": args.batch_size,
            "seq_len": args.seq_len,
            "tokens": args.steps * args.batch_size * args.seq_len,
            "lr": args.lr,
            "warmup": args.warmup,
            "seed": args.seed,
        },
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "speed_ms_per_step": speed,
        "models": models,
        "files": files,
        "smoke": bool(args.smoke),
    }
    res["verdict"] = verdict(res)
    plot(res, Path(files["png"]))
    atomic_write_text(files["md"], markdown(res, args.out.resolve()))
    atomic_write_json(files["json"], res)
    res["docs_updated"] = update_docs(res, [Path(d) for d in args.docs], log)
    print(Path(files["md"]).read_text())
    return res


if __name__ == "__main__":
    from hybrid.runtime.errors import HybridError

    try:
        main()
    except HybridError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
