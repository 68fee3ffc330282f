"""The training loop: one device (CPU or one GPU), contiguous streams with carried state.

AdamW, linear warm-up then cosine decay, gradient clipping, bf16 autocast on CUDA, periodic
validation, atomic checkpoints (see checkpoint.py) and exact resume. Ctrl-C or SIGTERM finishes
the current step, saves a checkpoint and exits; `--resume` continues the same schedule.
"""

from __future__ import annotations

import json
import math
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from hybrid.runtime.errors import HybridError
from hybrid.runtime.tokenizer import save_tokenizer, tokenizer_from_json
from hybrid.train import checkpoint as ck
from hybrid.train.config import ModelConfig, TrainConfig
from hybrid.train.data import Corpus, StreamBatcher
from hybrid.train.model import HybridLM, detach_state

RUN_FORMAT = "hybrid-run"
RUN_VERSION = 1


def pick_device(name: str | None = None) -> torch.device:
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise HybridError(f"unknown device {name!r} (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HybridError(f"device {name!r} requested but CUDA is not available")
    return dev


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.lr * cfg.min_lr_ratio at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


def make_optimizer(model: HybridLM, cfg: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


def autocast_for(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def metric_name(tokenizer_kind: str) -> str:
    return "bpc" if tokenizer_kind == "byte" else "ppl"


def metric_value(nll: float, tokenizer_kind: str) -> float:
    """Bits per character (byte models) or perplexity (word models) from mean NLL in nats."""
    return nll / math.log(2) if tokenizer_kind == "byte" else math.exp(min(nll, 50.0))


@torch.no_grad()
def evaluate(model: HybridLM, tokens: np.ndarray, batch_size: int, seq_len: int,
             max_tokens: int = 0, device=None, progress: bool = False) -> tuple[float, int]:
    """Mean NLL (nats/token) over `tokens`, streamed in B parallel streams with carried state."""
    device = device or next(model.parameters()).device
    if max_tokens:
        tokens = tokens[: max_tokens + 1]
    batch_size = max(1, min(batch_size, (len(tokens) - 1) // 2))
    batcher = StreamBatcher(tokens, batch_size, 1, what="evaluation split")  # segment bounds set below
    was_training = model.training
    model.eval()
    state = model.initial_state(batch_size, device=device)
    total, count = 0.0, 0
    L = batcher.stream_len
    starts = range(0, L, seq_len)
    for p in tqdm(starts, desc="eval", leave=False, disable=not progress):
        x = torch.from_numpy(batcher.inputs[:, p:p + seq_len]).long().to(device)
        y = torch.from_numpy(batcher.targets[:, p:p + seq_len]).long().to(device)
        with autocast_for(device):
            logits, state = model(x, state)
        total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / max(count, 1), count


class _StopFlag:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current step."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        def handler(signum, frame):
            if self.requested:  # second signal: stop now
                raise KeyboardInterrupt
            self.requested = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    valid_nll: float
    valid_metric: float
    metric: str
    interrupted: bool = False


def write_run_files(run_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig, corpus: Corpus) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    ck.atomic_write_json(run_dir / "config.json", {
        "format": RUN_FORMAT, "version": RUN_VERSION,
        "model": model_cfg.to_dict(), "train": train_cfg.to_dict(),
        "corpus": {"name": corpus.name, "tokenizer": corpus.tokenizer.kind},
    })
    save_tokenizer(corpus.tokenizer, run_dir / "tokenizer.json")


def read_run_config(run_dir: Path) -> tuple[ModelConfig, TrainConfig, dict]:
    path = Path(run_dir) / "config.json"
    from hybrid.train.config import read_json

    if not Path(run_dir).is_dir():
        raise HybridError(f"{run_dir}: run directory not found")
    obj = read_json(path)
    if obj.get("format") != RUN_FORMAT:
        raise HybridError(f"{path}: not a hybrid run config (format {obj.get('format')!r})")
    if obj.get("version") != RUN_VERSION:
        raise HybridError(f"{path}: run format version {obj.get('version')!r} is not supported (this hybrid reads {RUN_VERSION})")
    return (ModelConfig.from_dict(obj.get("model"), str(path)),
            TrainConfig.from_dict(obj.get("train", {}), str(path)), obj)


def load_run_model(run_dir: Path, device="cpu") -> tuple[HybridLM, object]:
    """A trained model and its tokenizer from a run (or model) directory."""
    from hybrid.runtime.tokenizer import load_tokenizer

    model_cfg, _, _ = read_run_config(run_dir)
    model = HybridLM(model_cfg)
    ck.load_weights(model, Path(run_dir) / "model.safetensors")
    return model.to(device).eval(), load_tokenizer(Path(run_dir) / "tokenizer.json")


def train(run_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig, corpus: Corpus,
          resume: bool = False, device: torch.device | None = None, progress: bool = True,
          log=print) -> TrainResult:
    device = device or pick_device()
    run_dir = Path(run_dir)
    torch.manual_seed(train_cfg.seed)
    if model_cfg.vocab_size != corpus.tokenizer.vocab_size:
        raise HybridError(f"model vocab_size {model_cfg.vocab_size} differs from the corpus tokenizer's "
                          f"{corpus.tokenizer.vocab_size}")
    model = HybridLM(model_cfg).to(device)
    optimizer = make_optimizer(model, train_cfg)
    batcher = StreamBatcher(corpus.train, train_cfg.batch_size, train_cfg.seq_len)
    B = train_cfg.batch_size
    state = model.initial_state(B, device=device)
    step = 0
    if resume:
        found = ck.latest_valid_checkpoint(run_dir, warn=log)
        if found is None:
            log(f"no checkpoint in {run_dir}; starting from step 0")
        else:
            path, info, weights, trainer = found
            ck.load_weights_into(model, weights, str(path / "model.safetensors"))
            optimizer.load_state_dict(ck.optimizer_from_tensors(trainer, info["param_groups"]))
            torch.set_rng_state(trainer["rng.cpu"])
            if device.type == "cuda":
                cuda_states = [trainer[k] for k in sorted(trainer) if k.startswith("rng.cuda.")]
                if len(cuda_states) == torch.cuda.device_count():
                    torch.cuda.set_rng_state_all(cuda_states)
            state = {k[len("carry."):]: v.to(device) for k, v in trainer.items() if k.startswith("carry.")}
            step = info["step"]
            log(f"resumed from {path} (step {step})")
    write_run_files(run_dir, model_cfg, train_cfg, corpus)
    kind = corpus.tokenizer.kind
    metric = metric_name(kind)
    metrics_file = open(run_dir / "metrics.jsonl", "a")

    def record(obj):
        metrics_file.write(json.dumps(obj) + "\n")
        metrics_file.flush()

    def save():
        return ck.save_checkpoint(run_dir, model, optimizer, step, state,
                                  {"metric": metric}, keep_last=train_cfg.keep_last)

    model.train()
    interrupted = False
    t_last, tokens_since = time.perf_counter(), 0
    bar = tqdm(total=train_cfg.steps, initial=step, desc="train", disable=not progress, dynamic_ncols=True)
    try:
        with _StopFlag() as stop:
            while step < train_cfg.steps:
                if batcher.starts_epoch(step):
                    state = model.initial_state(B, device=device)
                lr = lr_at(step, train_cfg)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                xs, ys = batcher.batch(step)
                x = torch.from_numpy(xs).long().to(device, non_blocking=True)
                y = torch.from_numpy(ys).long().to(device, non_blocking=True)
                with autocast_for(device):
                    logits, state = model(x, state)
                loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
                optimizer.step()
                state = detach_state(state)
                step += 1
                tokens_since += x.numel()
                bar.update(1)
                if step % train_cfg.log_every == 0 or step == train_cfg.steps:
                    now = time.perf_counter()
                    tps = tokens_since / max(now - t_last, 1e-9)
                    t_last, tokens_since = now, 0
                    lv = loss.item()
                    record({"step": step, "loss": lv, "lr": lr, "grad_norm": float(gnorm), "tokens_per_s": tps})
                    bar.set_postfix(loss=f"{lv:.3f}", tok_s=f"{tps:,.0f}")
                if step % train_cfg.eval_every == 0 and step < train_cfg.steps:
                    nll, _ = evaluate(model, corpus.valid, B, train_cfg.seq_len, train_cfg.eval_tokens, device)
                    record({"step": step, "valid_loss": nll, f"valid_{metric}": metric_value(nll, kind)})
                    bar.write(f"step {step}: valid {metric} {metric_value(nll, kind):.4f}")
                if step % train_cfg.save_every == 0 and step < train_cfg.steps:
                    save()
                if stop.requested:
                    interrupted = True
                    break
    finally:
        bar.close()
    path = save()
    if interrupted:
        metrics_file.close()
        log(f"interrupted: saved {path}; continue with --resume")
        return TrainResult(run_dir, step, float("nan"), float("nan"), metric, interrupted=True)
    nll, n = evaluate(model, corpus.valid, B, train_cfg.seq_len, 0, device, progress=progress)
    value = metric_value(nll, kind)
    record({"step": step, "valid_loss": nll, f"valid_{metric}": value, "valid_tokens": n, "final": True})
    metrics_file.close()
    return TrainResult(run_dir, step, nll, value, metric)
