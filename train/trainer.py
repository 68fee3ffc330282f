"""The training loop: contiguous streams with carried state, on one process or many.

AdamW, linear warm-up then cosine decay, gradient clipping, bf16 autocast on CUDA, periodic
validation, atomic checkpoints (see checkpoint.py) and exact resume. Ctrl-C or SIGTERM finishes
the current step, saves a checkpoint and exits; `--resume` continues the same schedule.

Launched by torchrun, every process joins a DistributedDataParallel group (distributed.py) and
trains on its share of the B streams; `grad_accum` splits each process's share further into
micro-batches. The global batch, and so the sequence of data and updates, is the same for any
world size and accumulation, which is what lets a run resume under a different world size.
Only rank 0 writes. A step whose loss or gradient is not finite is skipped with a warning;
`max_bad_steps` such steps in a row stop the run with its last checkpoint untouched.
"""

from __future__ import annotations

import math
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from hybrid.runtime import scoring
from hybrid.runtime.errors import HybridError
from hybrid.runtime.scoring import metric_for
from hybrid.train import checkpoint as ck
from hybrid.train import distributed
from hybrid.train.config import ModelConfig, TrainConfig
from hybrid.train.data import Corpus, StreamBatcher
from hybrid.train.evaluation import autocast_for, evaluate_shared
from hybrid.train.evaluation import evaluate  # noqa: F401  (the public name: hybrid.train.trainer.evaluate)
from hybrid.train.metrics import MetricsLog
from hybrid.train.model import HybridLM, detach_state
from hybrid.train.preflight import check_training
from hybrid.train.resume import resume as resume_run

# The run directory's files, under their old names here too (export, tools and tests read them so).
from hybrid.train.rundir import (  # noqa: F401
    RUN_FORMAT,
    RUN_VERSION,
    corpus_fingerprint,
    load_run_model,
    read_run_config,
    write_run_files,
)


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


def metric_name(tokenizer_kind: str) -> str:
    return metric_for(tokenizer_kind)


def metric_value(nll: float, tokenizer_kind: str) -> float:
    """Bits per character (byte models) or perplexity (word models) from mean NLL in nats."""
    return scoring.metric_value(nll, metric_for(tokenizer_kind))


class _StopFlag:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current step.

    With escalate, a second signal stops at once (a user pressing Ctrl-C twice). Under torchrun
    it must not: a Ctrl-C reaches the workers from the terminal and again from the launcher,
    which itself kills the workers if they take longer than its shutdown timeout."""

    def __init__(self, escalate: bool = True):
        self.requested = False
        self.escalate = escalate
        self._old = {}

    def __enter__(self):
        def handler(signum, frame):
            if self.requested and self.escalate:  # second signal: stop now
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
    valid_tokens: int = 0  # tokens the final validation scored (the whole valid split)
    interrupted: bool = False


def train(
    run_dir: Path,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    corpus: Corpus,
    resume: bool = False,
    device: torch.device | None = None,
    progress: bool = True,
    log=print,
) -> TrainResult:
    """Train (or with resume, continue) the run in `run_dir`. Under torchrun every process calls
    this; all return the same result, rank 0 alone writes and logs."""
    dd = distributed.setup(device or pick_device())
    try:
        result = _train(Path(run_dir), model_cfg, train_cfg, corpus, resume, dd, progress, log)
    except BaseException:
        dd.close(finished=False)
        raise
    dd.close()
    return result


def _train(
    run_dir: Path,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    corpus: Corpus,
    resume: bool,
    dd: distributed.Dist,
    progress: bool,
    log,
) -> TrainResult:
    check_training(model_cfg, cfg, corpus, dd.world, dd.device)  # batch split, vocab, splits, memory
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    run = _Run(run_dir, HybridLM(model_cfg).to(dd.device), cfg, corpus, dd, log)
    if dd.rank:
        torch.manual_seed(cfg.seed + 7919 * dd.rank)  # but each rank its own dropout masks
    run.optimizer = make_optimizer(run.model, cfg)
    spec = corpus.meta.get("spec")
    if resume:
        run.state, run.step, saved = resume_run(
            run_dir, run.model, run.optimizer, model_cfg, cfg, corpus, dd, run.state, run.say
        )
        if spec is None and saved is not None:
            spec = saved.get("spec")  # same corpus (checked): keep how the command line loads it
    run.wrap()
    if dd.main:
        write_run_files(run_dir, model_cfg, cfg, corpus, spec)
        run.metrics = MetricsLog(run_dir, run.step, tensorboard=cfg.tensorboard)
    try:
        return run.loop(progress)
    finally:
        if run.metrics is not None:
            run.metrics.close()


class _Run:
    """One process's training: the model, its optimizer and carried state, and the steps."""

    def __init__(self, run_dir: Path, model: HybridLM, cfg: TrainConfig, corpus: Corpus, dd: distributed.Dist, log):
        self.run_dir, self.model, self.net, self.cfg, self.corpus, self.dd = run_dir, model, model, cfg, corpus, dd
        self.say = log if dd.main else (lambda *a, **k: None)
        self.share = cfg.batch_size // dd.world  # streams of this process: rows [lo, lo + share) of the batch
        self.lo, self.micro = dd.rank * self.share, self.share // cfg.grad_accum
        self.batcher = StreamBatcher(corpus.train, cfg.batch_size, cfg.seq_len)
        self.state = model.initial_state(self.share, device=dd.device)
        self.step, self.bad_in_row = 0, 0
        self.kind = corpus.tokenizer.kind
        self.metric = metric_name(self.kind)
        self.optimizer = self.metrics = None

    def wrap(self) -> None:
        if self.dd.on:
            from torch.nn.parallel import DistributedDataParallel

            device = self.dd.device
            self.net = DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)

    def record(self, obj: dict) -> None:
        if self.metrics is not None:
            self.metrics.record(obj)

    def save(self, valid_loss: float | None = None) -> Path | None:
        # Collectives first (every rank), then rank 0 writes, then every rank learns whether it could.
        dd = self.dd
        carry = dd.gather_rows(self.state)
        rng = dd.gather_each(ck.rng_tensors(dd.device))
        info = {"metric": self.metric, "world_size": dd.world, "batch_size": self.cfg.batch_size}
        if valid_loss is not None:
            info["valid_loss"] = valid_loss
        path, error = None, ""
        if dd.main:
            try:
                path = ck.save_checkpoint(
                    self.run_dir,
                    self.model,
                    self.optimizer,
                    self.step,
                    carry,
                    info,
                    keep_last=self.cfg.keep_last,
                    keep_best=self.cfg.keep_best,
                    rng=rng,
                    log=self.say,
                )
            except HybridError as e:
                error = str(e)
        if dd.any(bool(error)):
            raise HybridError(error or "rank 0 could not save a checkpoint (see its message)")
        return path

    def loop(self, progress: bool) -> TrainResult:
        cfg, dd = self.cfg, self.dd
        self.model.train()
        interrupted = False
        t_last, tokens_since = time.perf_counter(), 0
        bar = tqdm(
            total=cfg.steps, initial=self.step, desc="train", disable=not (progress and dd.main), dynamic_ncols=True
        )
        try:
            with _StopFlag(escalate=not dd.on) as stop:
                while self.step < cfg.steps:
                    lv, gv, lr, stop_any = self.train_step(stop)
                    tokens_since += cfg.batch_size * cfg.seq_len
                    bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                        now = time.perf_counter()
                        tps = tokens_since / max(now - t_last, 1e-9)
                        t_last, tokens_since = now, 0
                        if math.isfinite(lv):
                            self.record({"step": self.step, "loss": lv, "lr": lr, "grad_norm": gv, "tokens_per_s": tps})
                        bar.set_postfix(loss=f"{lv:.3f}", tok_s=f"{tps:,.0f}")
                    t_pause = time.perf_counter()
                    self.periodic(bar)
                    t_last += time.perf_counter() - t_pause  # tokens/s counts training time only
                    if stop_any:
                        interrupted = True
                        break
            bar.close()
            return self.finish(interrupted, progress)
        finally:
            bar.close()

    def train_step(self, stop: _StopFlag) -> tuple[float, float, float, float]:
        """One optimizer step on every process: (global mean loss, gradient norm, lr, whether any
        process was asked to stop). A non-finite loss or gradient skips the update (skip_update)."""
        cfg, dd, device, A = self.cfg, self.dd, self.dd.device, self.cfg.grad_accum
        if self.batcher.starts_epoch(self.step):
            self.state = self.model.initial_state(self.share, device=device)
        lr = lr_at(self.step, cfg)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        xs, ys = self.batcher.batch(self.step)
        x = torch.from_numpy(xs[self.lo : self.lo + self.share]).long().to(device, non_blocking=True)
        y = torch.from_numpy(ys[self.lo : self.lo + self.share]).long().to(device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=device)
        parts = []
        for a in range(A):
            rows = slice(a * self.micro, (a + 1) * self.micro)
            part = self.state if A == 1 else {k: v[rows] for k, v in self.state.items()}
            # DDP averages gradients over processes in the last micro-batch's backward.
            sync = self.net.no_sync() if dd.on and a < A - 1 else nullcontext()
            with sync:
                with autocast_for(device):
                    nll, part = self.net(x[rows], part, targets=y[rows])
                loss = nll.float().mean()
                (loss / A).backward()
            loss_sum += loss.detach()
            parts.append(detach_state(part))
        new_state = parts[0] if A == 1 else {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        gnorm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        # One collective and one host sync a step: the global mean loss, and whether any
        # process was asked to stop (so that all stop after the same step).
        shared = dd.all_sum(torch.stack([loss_sum / A, torch.tensor(float(stop.requested), device=device)]))
        lv, stop_any, gv = torch.stack([shared[0] / dd.world, shared[1], gnorm.float()]).tolist()
        self.step += 1
        if math.isfinite(lv) and math.isfinite(gv):
            self.optimizer.step()
            self.state = new_state
            self.bad_in_row = 0
        else:
            self.skip_update("loss" if not math.isfinite(lv) else "gradient norm", new_state, lr)
        return lv, gv, lr, stop_any

    def skip_update(self, what: str, new_state: dict, lr: float) -> None:
        self.bad_in_row += 1
        self.optimizer.zero_grad(set_to_none=True)
        # Keep the streams' new state only if it is finite (it is local to each rank).
        if all(torch.isfinite(v).all() for v in new_state.values()):
            self.state = new_state
        self.say(
            f"warning: step {self.step}: non-finite {what}; update skipped "
            f"({self.bad_in_row} in a row, stopping at {self.cfg.max_bad_steps})"
        )
        self.record({"step": self.step, "skipped": f"non-finite {what}", "lr": lr})
        if self.bad_in_row >= self.cfg.max_bad_steps:
            last = ck.list_checkpoints(self.run_dir)
            raise HybridError(
                f"training stopped at step {self.step}: {self.bad_in_row} steps in a row had a non-finite "
                f"{what}; the last checkpoint ({last[-1] if last else 'none yet'}) is intact. "
                f"Lower --lr or check the data, then continue with --resume"
            )

    def periodic(self, bar) -> None:
        """Validation on the first eval_tokens of the valid split, and a checkpoint, when due."""
        cfg, step, valid_loss = self.cfg, self.step, None
        if step % cfg.eval_every == 0 and step < cfg.steps:
            valid_loss, n = evaluate_shared(self.model, self.corpus.valid, cfg, cfg.eval_tokens, self.dd)
            value = metric_value(valid_loss, self.kind)
            self.record({"step": step, "valid_loss": valid_loss, f"valid_{self.metric}": value})
            if self.dd.main:
                bar.write(f"step {step}: valid {self.metric} {value:.4f} (periodic, first {n:,} tokens)")
        if step % cfg.save_every == 0 and step < cfg.steps:
            self.save(valid_loss)

    def finish(self, interrupted: bool, progress: bool) -> TrainResult:
        path = self.save()
        if interrupted:
            self.say(f"interrupted: saved {path}; continue with --resume")
            return TrainResult(self.run_dir, self.step, float("nan"), float("nan"), self.metric, interrupted=True)
        nll, n = evaluate_shared(
            self.model, self.corpus.valid, self.cfg, 0, self.dd, progress=progress and self.dd.main
        )
        value = metric_value(nll, self.kind)
        self.record(
            {"step": self.step, "valid_loss": nll, f"valid_{self.metric}": value, "valid_tokens": n, "final": True}
        )
        return TrainResult(self.run_dir, self.step, nll, value, self.metric, n)
