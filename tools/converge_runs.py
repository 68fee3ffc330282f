"""tools/converge.py's runs: each one a `hybrid train` subprocess, watched for convergence (the
patience rule on its metrics.jsonl), and scored at its best checkpoint when it is done."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_corpus(spec: dict, seq_len: int, cache_dir):
    from hybrid.train.sources import load_source

    return load_source(
        spec["source"], spec.get("path"), spec["tokenizer"], seq_len=seq_len, cache_dir=cache_dir, progress=False
    )


def write_recipe(job, data_spec: dict) -> None:
    from hybrid.runtime.files import atomic_write_json

    job.recipe.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        job.recipe,
        {
            "recipe": f"tools/converge.py {job.name}",
            "model": job.plan["model"],
            "train": job.plan["train"],
            "data": data_spec,
        },
    )


def valid_history(run_dir: Path) -> list[tuple[int, float]]:
    """(step, valid loss) of every evaluation of a run, periodic and final, in step order."""
    from hybrid.train.metrics import read_metrics

    if not (run_dir / "metrics.jsonl").exists():
        return []
    return [(r["step"], float(r["valid_loss"])) for r in read_metrics(run_dir) if "valid_loss" in r]


def converged(history: list[tuple[int, float]], patience: int) -> bool:
    """Whether the best evaluation is `patience` or more evaluations old."""
    if not history:
        return False
    best = min(range(len(history)), key=lambda i: (history[i][1], i))
    return len(history) - 1 - best >= patience


def done_training(job) -> str | None:
    """Why a run is finished ("patience" or "ceiling"), or None if it must (still) train."""
    history = valid_history(job.run_dir)
    if converged(history, job.plan["patience"]):
        return "patience"
    if history and history[-1][0] >= job.plan["train"]["steps"]:
        return "ceiling"
    return None


def start(job, args, data_spec: dict, device: str) -> subprocess.Popen:
    write_recipe(job, data_spec)
    cmd = [
        sys.executable,
        "-m",
        "hybrid",
        "train",
        "--recipe",
        str(job.recipe),
        "--out",
        str(job.run_dir),
        "--steps",
        str(job.plan["train"]["steps"]),
        "--no-progress",
        "--device",
        device,
    ]
    if (job.run_dir / "config.json").exists():
        cmd.append("--resume")
    elif job.run_dir.exists():  # killed before the trainer wrote its config: nothing to keep
        shutil.rmtree(job.run_dir)
    job.run_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = job.run_dir.parent / "logs" / f"{job.arch}-seed{job.seed}.log"
    log_path.parent.mkdir(exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    with open(log_path, "a") as f:  # the child keeps its own descriptor
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        # Its own session: Ctrl-C reaches the tool, which stops every run the same way (SIGINT).
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)


def best_model(job, history: list[tuple[int, float]]):
    """The run's model at its best evaluation's checkpoint, that checkpoint's path, step and valid loss."""
    from hybrid.train import checkpoint as ck
    from hybrid.train.config import ModelConfig
    from hybrid.train.model import HybridLM

    best_step, best_loss = min(history, key=lambda h: h[1])
    path = next((p for p in ck.list_checkpoints(job.run_dir) if ck.checkpoint_step(p) == best_step), None)
    if path is None:
        raise SystemExit(f"{job.name}: no checkpoint of step {best_step}, its best evaluation, in {job.run_dir}")
    _, weights, _ = ck.read_checkpoint(path)
    cfg = ModelConfig.from_dict(job.plan["model"], str(job.recipe))
    model = HybridLM(cfg)
    ck.load_weights_into(model, weights, str(path))
    return model, path, best_step, best_loss


def train_seconds(records: list[dict], tokens_per_step: int) -> float:
    """The trainer's own log intervals added up: training time, not evaluations."""
    seconds, last = 0.0, 0
    for r in records:
        if "tokens_per_s" in r:
            seconds += (r["step"] - last) * tokens_per_step / max(r["tokens_per_s"], 1e-9)
            last = r["step"]
    return seconds


def finish(job, corpus_info: dict, stop: str, args) -> dict:
    """Score the best checkpoint on the whole valid and test splits; write the run's record."""
    import torch

    from hybrid.runtime.files import atomic_write_json
    from hybrid.train.metrics import read_metrics
    from hybrid.train.trainer import evaluate, metric_name, metric_value

    torch.set_num_threads(args.threads)
    history = valid_history(job.run_dir)
    model, path, best_step, best_loss = best_model(job, history)
    cfg = model.cfg
    B, T = job.plan["train"]["batch_size"], job.plan["train"]["seq_len"]
    corpus = load_corpus(corpus_info["source"], T, args.cache_dir)
    v_nll, v_n = evaluate(model, corpus.valid, B, T)
    t_nll, t_n = evaluate(model, corpus.test, B, T)
    if abs(v_nll - best_loss) > 1e-4 * max(1.0, abs(best_loss)):
        raise SystemExit(f"{job.name}: {path} scores valid loss {v_nll:.6f}, the run recorded {best_loss:.6f}")
    kind, per_step = corpus.tokenizer.kind, corpus_info["tokens_per_step"]
    metric = metric_name(kind)
    records = read_metrics(job.run_dir)
    last_step = max(r["step"] for r in records)
    rec = {
        "format": "hybrid-convergence-run",
        "version": 1,
        "corpus": job.corpus,
        "size": job.size,
        "arch": job.arch,
        "seed": job.seed,
        "pattern": cfg.pattern,
        "d_model": cfg.d_model,
        "d_inner": cfg.d_inner,
        "params": job.plan["params"],
        "metric": metric,
        "stop": stop,
        "steps": last_step,
        "tokens": last_step * per_step,
        "best_step": best_step,
        "best_tokens": best_step * per_step,
        f"valid_{metric}": metric_value(v_nll, kind),
        f"test_{metric}": metric_value(t_nll, kind),
        "valid_nll": v_nll,
        "test_nll": t_nll,
        "valid_tokens": v_n,
        "test_tokens": t_n,
        "curve": [{"step": s, "tokens": s * per_step, metric: metric_value(v, kind)} for s, v in history],
        "train_seconds": round(train_seconds(records, per_step), 1),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "plan": job.plan,
    }
    job.record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(job.record, rec)
    return rec
