"""tools/converge.py's plan: every (corpus, size, architecture, seed) run, its model sized to the
shared parameter count, its training settings, and where its run directory, recipe and record lie."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from converge_runs import load_corpus

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ("transformer", "par", "attn-qrnn", "hybrid")
SIZES = {"1.5M": 1.5e6, "6M": 6e6}
WORD_FILE = ROOT / "tools" / "corpora" / "wikitext-2-valid" / "wiki.valid.tokens"
# How each corpus is trained: streams x segment, evaluation interval, ceiling in epochs.
CORPORA = {
    "tinyshakespeare": dict(tokenizer="byte", batch_size=16, seq_len=128, eval_every=250, epochs=12),
    "wikitext-2": dict(
        tokenizer="word",
        batch_size=16,
        seq_len=64,
        eval_every=100,
        epochs=30,
        adaptive_cutoffs=[2000, 6000],
        adaptive_div=4,
    ),
}
PARAM_TOLERANCE = 0.01  # equal parameters: every model within 1% of the target


@dataclasses.dataclass
class Job:
    corpus: str
    size: str
    arch: str
    seed: int
    run_dir: Path
    recipe: Path
    record: Path
    plan: dict  # what the run computes: a record made under another plan is not reused

    @property
    def name(self) -> str:
        return f"{self.corpus}/{self.size}/{self.arch}-seed{self.seed}"


def corpus_spec(key: str, args) -> dict:
    """The recipe's data section: where the corpus lies and how it is tokenized."""
    if key == "tinyshakespeare":
        from hybrid.train.data import BUILTIN

        return {"source": str(args.byte_corpus or BUILTIN), "tokenizer": "byte"}
    if args.word_corpus == "wikitext-2":  # the real files (wiki.{train,valid,test}.tokens)
        spec = {"source": "wikitext-2", "tokenizer": "word"}
        if args.word_path:
            spec["path"] = str(Path(args.word_path).resolve())
        return spec
    return {"source": str(Path(args.word_corpus or WORD_FILE).resolve()), "tokenizer": "word"}


def corpus_settings(key: str, args) -> dict:
    """How a corpus is trained: the table's settings with this invocation's overrides (--smoke)."""
    return dict(CORPORA[key], **(args.overrides.get(key, {})))


def corpus_info(corpus, c: dict, spec: dict, args) -> dict:
    """What the report needs of a corpus: its name, split sizes and training budget."""
    tokens_per_step = c["batch_size"] * c["seq_len"]
    ceiling = max(c["eval_every"], round(c["epochs"] * len(corpus.train) / tokens_per_step))
    return {
        "name": corpus.name,
        "tokenizer": corpus.tokenizer.kind,
        "vocab": corpus.tokenizer.vocab_size,
        "split_tokens": {s: len(getattr(corpus, s)) for s in ("train", "valid", "test")},
        "ceiling_steps": ceiling,
        "tokens_per_step": tokens_per_step,
        "epochs": c["epochs"],
        "eval_every": c["eval_every"],
        "patience": args.patience,
        "source": spec,
    }


def model_extras(c: dict, vocab_size: int) -> dict:
    """The corpus's output-layer settings (adaptive softmax), passed to every model's sizing."""
    extra = {k: c[k] for k in ("adaptive_cutoffs", "adaptive_div") if k in c}
    if "adaptive_cutoffs" in extra:  # clusters only inside this vocabulary
        extra["adaptive_cutoffs"] = [x for x in extra["adaptive_cutoffs"] if x < vocab_size]
    return extra


def sized_model(arch: str, size: str, vocab_size: int, extra: dict, args):
    """The architecture's config at the size's parameter count, and that count (within --tolerance)."""
    from hybrid.train.sizing import sized_config

    target = int(SIZES.get(size) or float(size))
    cfg, n = sized_config(arch, target, vocab_size, dropout=args.dropout, **extra)
    if abs(n - target) > args.tolerance * target:
        raise SystemExit(f"{arch} at {size}: {n:,} parameters, more than {args.tolerance:.0%} from {target:,}")
    return cfg, n


def train_config(c: dict, ceiling: int, seed: int, args):
    """One run's training settings: the schedule spans the ceiling, every evaluation on the whole valid split."""
    from hybrid.train.config import TrainConfig

    return TrainConfig(
        batch_size=c["batch_size"],
        seq_len=c["seq_len"],
        steps=ceiling,
        lr=args.lr,
        warmup_steps=min(100, ceiling // 10),
        min_lr_ratio=0.1,
        eval_every=c["eval_every"],
        eval_tokens=0,
        save_every=c["eval_every"],
        keep_last=1,
        keep_best=True,
        seed=seed,
        log_every=50,
        tensorboard=False,
    )


def make_job(key: str, size: str, arch: str, seed: int, plan: dict, args) -> Job:
    """The job with its run directory, recipe and record paths."""
    name = f"{arch}-seed{seed}"
    return Job(
        key,
        size,
        arch,
        seed,
        args.runs / key / size / name,
        args.runs / key / size / "recipes" / f"{name}.json",
        args.out / "runs" / key / size / f"{name}.json",
        plan,
    )


def corpus_jobs(key: str, corpus, c: dict, ceiling: int, args) -> list[Job]:
    """Every (size, architecture, seed) run on one corpus, in the order of the command line."""
    from hybrid.train.trainer import corpus_fingerprint

    jobs = []
    extra = model_extras(c, corpus.tokenizer.vocab_size)
    for size in args.sizes:
        for arch in args.archs:
            cfg, n = sized_model(arch, size, corpus.tokenizer.vocab_size, extra, args)
            for seed in args.seeds:
                plan = {
                    "model": dataclasses.asdict(cfg),
                    "train": train_config(c, ceiling, seed, args).to_dict(),
                    "params": n,
                    "corpus_fingerprint": corpus_fingerprint(corpus),
                    "patience": args.patience,
                }
                jobs.append(make_job(key, size, arch, seed, plan, args))
    return jobs


def plan_jobs(args, log) -> tuple[list[Job], dict]:
    """Every run of the plan, and per corpus what the report needs (name, split sizes, budget)."""
    jobs, corpora = [], {}
    for key in args.corpora:
        c = corpus_settings(key, args)
        spec = corpus_spec(key, args)
        corpus = load_corpus(spec, c["seq_len"], args.cache_dir)
        corpora[key] = corpus_info(corpus, c, spec, args)
        ceiling = corpora[key]["ceiling_steps"]
        log(corpus.describe() + f"; ceiling {ceiling:,} steps ({c['epochs']} epochs)")
        jobs += corpus_jobs(key, corpus, c, ceiling, args)
    # Corpus by corpus (the first named first), seed by seed: a plan run in pieces completes
    # whole tables, each filled one seed of all four models at a time.
    jobs.sort(
        key=lambda j: (
            args.corpora.index(j.corpus),
            args.sizes.index(j.size),
            args.seeds.index(j.seed),
            args.archs.index(j.arch),
        )
    )
    return jobs, corpora
