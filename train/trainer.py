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

import numpy as np
import torch
from tqdm.auto import tqdm

from hybrid.runtime.errors import HybridError
from hybrid.runtime.tokenizer import save_tokenizer, tokenizer_from_json
from hybrid.train import checkpoint as ck
from hybrid.train import distributed
from hybrid.train.config import ModelConfig, TrainConfig
from hybrid.train.data import Corpus, StreamBatcher
from hybrid.train.metrics import MetricsLog
from hybrid.train.model import HybridLM, detach_state
from hybrid.train.preflight import check_training

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
def _eval_sums(model: HybridLM, tokens: np.ndarray, batch_size: int, seq_len: int, max_tokens: int = 0,
               device=None, progress: bool = False, shard: tuple[int, int] = (0, 1)) -> tuple[float, int]:
    """(summed NLL in nats, token count) over `tokens` in B parallel streams with carried state;
    with shard=(rank, world) only that process's share of the streams."""
    device = device or next(model.parameters()).device
    if max_tokens:
        tokens = tokens[: max_tokens + 1]
    batch_size = max(1, min(batch_size, (len(tokens) - 1) // 2))
    batcher = StreamBatcher(tokens, batch_size, 1, what="evaluation split")  # segment bounds set below
    rows = np.array_split(np.arange(batch_size), shard[1])[shard[0]]
    if len(rows) == 0:
        return 0.0, 0
    inputs, targets = batcher.inputs[rows[0]:rows[-1] + 1], batcher.targets[rows[0]:rows[-1] + 1]
    was_training = model.training
    model.eval()
    state = model.initial_state(len(rows), device=device)
    total, count = 0.0, 0
    for p in tqdm(range(0, batcher.stream_len, seq_len), desc="eval", leave=False, disable=not progress):
        x = torch.from_numpy(inputs[:, p:p + seq_len]).long().to(device)
        y = torch.from_numpy(targets[:, p:p + seq_len]).long().to(device)
        with autocast_for(device):
            nll, state = model(x, state, targets=y)
        total += nll.float().sum().item()
        count += y.numel()
    model.train(was_training)
    return total, count


def evaluate(model: HybridLM, tokens: np.ndarray, batch_size: int, seq_len: int,
             max_tokens: int = 0, device=None, progress: bool = False) -> tuple[float, int]:
    """Mean NLL (nats/token) over `tokens`, streamed in B parallel streams with carried state."""
    total, count = _eval_sums(model, tokens, batch_size, seq_len, max_tokens, device, progress)
    return total / max(count, 1), count


def _evaluate_shared(model, tokens, cfg: TrainConfig, max_tokens: int, dd: distributed.Dist,
                     progress: bool = False) -> tuple[float, int]:
    """evaluate() with the streams split over the processes and the sums added up."""
    total, count = _eval_sums(model, tokens, cfg.batch_size, cfg.seq_len, max_tokens, dd.device, progress,
                              shard=(dd.rank, dd.world))
    if dd.on:
        sums = dd.all_sum(torch.tensor([total, float(count)], dtype=torch.float64, device=dd.device)).tolist()
        total, count = sums[0], int(sums[1])
    return total / max(count, 1), count


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
    interrupted: bool = False


def corpus_fingerprint(corpus: Corpus) -> str:
    """A hash of what training reads: the tokenizer and the tokens of every split (bytes as uint8,
    words as int32, whatever array type the loader gave them), so the same text loaded through
    either loader gives the same fingerprint. Remembered in corpus.meta."""
    import hashlib
    import json

    if isinstance(corpus.meta.get("token_fingerprint"), str):
        return corpus.meta["token_fingerprint"]
    dtype = np.dtype("u1") if corpus.tokenizer.kind == "byte" else np.dtype("<i4")
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(corpus.tokenizer.to_json(), sort_keys=True).encode())
    for split in ("train", "valid", "test"):
        tokens = getattr(corpus, split)
        h.update(f"\0{split}:{len(tokens)}\0".encode())
        for i in range(0, len(tokens), 1 << 24):
            h.update(np.ascontiguousarray(tokens[i:i + (1 << 24)], dtype=dtype).data)
    corpus.meta["token_fingerprint"] = h.hexdigest()
    return corpus.meta["token_fingerprint"]


def write_run_files(run_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig, corpus: Corpus,
                    spec: dict | None = None) -> None:
    """config.json and tokenizer.json. The corpus section names the corpus, its fingerprint (see
    corpus_fingerprint) and, from the command line, `spec`: how to load it again on --resume."""
    run_dir.mkdir(parents=True, exist_ok=True)
    section = {"name": corpus.name, "tokenizer": corpus.tokenizer.kind, "fingerprint": corpus_fingerprint(corpus)}
    spec = spec if spec is not None else corpus.meta.get("spec")
    if spec is not None:
        section["spec"] = spec
    ck.atomic_write_json(run_dir / "config.json", {
        "format": RUN_FORMAT, "version": RUN_VERSION,
        "model": model_cfg.to_dict(), "train": train_cfg.to_dict(), "corpus": section,
    })
    save_tokenizer(corpus.tokenizer, run_dir / "tokenizer.json")


def read_run_config(run_dir: Path) -> tuple[ModelConfig, TrainConfig, dict]:
    from hybrid.train.config import read_json
    from hybrid.train.schema import check_run_config

    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise HybridError(f"{run_dir}: run directory not found")
    obj = read_json(path)
    if obj.get("format") != RUN_FORMAT:
        raise HybridError(f"{path}: not a hybrid run config (format {obj.get('format')!r})")
    if obj.get("version") != RUN_VERSION:
        raise HybridError(f"{path}: run format version {obj.get('version')!r} is not supported (this hybrid reads {RUN_VERSION})")
    check_run_config(obj, str(path))
    return (ModelConfig.from_dict(obj["model"], str(path)),
            TrainConfig.from_dict(obj["train"], str(path)), obj)


def load_run_model(run_dir: Path, device="cpu") -> tuple[HybridLM, object]:
    """A trained model and its tokenizer from a run (or model) directory."""
    from hybrid.runtime.tokenizer import load_tokenizer

    model_cfg, _, _ = read_run_config(run_dir)
    model = HybridLM(model_cfg)
    ck.load_weights(model, Path(run_dir) / "model.safetensors")
    return model.to(device).eval(), load_tokenizer(Path(run_dir) / "tokenizer.json")


# Train settings that fix what a run computes: a resume must keep them. The others (steps, to
# extend a run; grad_accum, which splits the same batch; how often to evaluate, save and log;
# how many checkpoints to keep; max_bad_steps; eval_tokens; tensorboard) may change.
RESUME_FIXED = ("batch_size", "seq_len", "lr", "min_lr_ratio", "warmup_steps", "weight_decay", "beta1", "beta2",
                "grad_clip", "seed")


def model_differences(a: ModelConfig, b: ModelConfig) -> list[tuple[str, object, object]]:
    """(field, a's value, b's value) where two model configs differ (the name aside)."""
    da, db = a.to_dict(), b.to_dict()
    return [(k, da[k], db[k]) for k in da if k != "name" and da[k] != db[k]]


def _check_resume_config(run_dir: Path, model_cfg: ModelConfig, cfg: TrainConfig, corpus: Corpus) -> dict | None:
    """A resume continues the run as it was configured: the same model, the same settings that
    fix the updates (RESUME_FIXED; the data order is a function of batch_size and seq_len) and the
    same corpus. Returns the run's saved corpus section (None before the run's first start)."""
    if not (run_dir / "config.json").is_file():
        return None
    old_model, old, obj = read_run_config(run_dir)
    if (old.batch_size, old.seq_len) != (cfg.batch_size, cfg.seq_len):
        raise HybridError(f"{run_dir}: the run trains on batch size {old.batch_size} and segment length "
                          f"{old.seq_len}; resume it with --batch-size {old.batch_size} --seq-len {old.seq_len} "
                          f"(the world size and --grad-accum may change)")
    diffs = model_differences(old_model, model_cfg)
    if diffs:
        k, was, now = diffs[0]
        raise HybridError(f"{run_dir}: the run's model has {k} {was!r}, not {now!r}; resume it with its own model "
                          f"(its config.json)")
    for k in RESUME_FIXED:
        if getattr(old, k) != getattr(cfg, k):
            raise HybridError(f"{run_dir}: the run trains with {k} {getattr(old, k)!r}, not {getattr(cfg, k)!r}; "
                              f"a resume keeps the run's settings (its config.json)")
    saved = obj["corpus"]
    if saved["tokenizer"] != corpus.tokenizer.kind:
        raise HybridError(f"{run_dir}: the run trains on {saved['tokenizer']} tokens, not {corpus.tokenizer.kind}")
    if isinstance(saved.get("fingerprint"), str):
        if saved["fingerprint"] != corpus_fingerprint(corpus):
            raise HybridError(f"{run_dir}: the corpus differs from the one the run was trained on "
                              f"({saved['name']}, fingerprint {saved['fingerprint']}; now {corpus.name}, "
                              f"fingerprint {corpus_fingerprint(corpus)})")
    elif saved["name"] != corpus.name:  # a run written before corpora had a fingerprint
        raise HybridError(f"{run_dir}: the run was trained on the corpus {saved['name']}, not {corpus.name}; "
                          f"resume it on the same corpus")
    return saved


def _restore_rng(trainer: dict[str, torch.Tensor], dd: distributed.Dist, seed: int, step: int) -> None:
    """This rank's generators as saved; a rank the checkpoint has none for (a larger world) starts
    a fresh stream, so dropout masks differ from the old run but the data and updates continue."""
    cpu = trainer.get(f"rng.{dd.rank}.cpu", trainer.get("rng.cpu") if dd.rank == 0 else None)
    if cpu is not None:
        torch.set_rng_state(cpu)
    else:
        torch.manual_seed(seed + 7919 * dd.rank + step)
    if dd.device.type == "cuda":
        cuda = trainer.get(f"rng.{dd.rank}.cuda")
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, dd.device)
        else:
            torch.cuda.manual_seed(seed + 7919 * dd.rank + step)


def train(run_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig, corpus: Corpus,
          resume: bool = False, device: torch.device | None = None, progress: bool = True,
          log=print) -> TrainResult:
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


def _train(run_dir: Path, model_cfg: ModelConfig, cfg: TrainConfig, corpus: Corpus, resume: bool,
           dd: distributed.Dist, progress: bool, log) -> TrainResult:
    device = dd.device
    say = log if dd.main else (lambda *a, **k: None)
    B, T, A, W = cfg.batch_size, cfg.seq_len, cfg.grad_accum, dd.world
    check_training(model_cfg, cfg, corpus, W, device)
    share = B // W  # streams of this process: rows [lo, lo + share) of the global batch
    lo, micro = dd.rank * share, share // A
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = HybridLM(model_cfg).to(device)
    if dd.rank:
        torch.manual_seed(cfg.seed + 7919 * dd.rank)  # but each rank its own dropout masks
    optimizer = make_optimizer(model, cfg)
    batcher = StreamBatcher(corpus.train, B, T)
    state = model.initial_state(share, device=device)
    step = 0
    spec = corpus.meta.get("spec")
    if resume:
        saved = _check_resume_config(run_dir, model_cfg, cfg, corpus)
        if spec is None and saved is not None:
            spec = saved.get("spec")  # same corpus (checked): keep how the command line loads it
        damaged: list[Path] = []
        found = ck.latest_valid_checkpoint(run_dir, warn=say, skipped=damaged)
        if found is None and damaged:
            raise HybridError(f"{run_dir / 'checkpoints'}: none of its {len(damaged)} checkpoints verifies "
                              f"(see the warnings above); nothing was changed. Move them aside to start "
                              f"the run again from step 0, or restore a good copy")
        dd.any(False)  # every rank has read its checkpoint before rank 0 moves anything
        error = ""
        if dd.main:
            for p in ck.clean_temporaries(run_dir):
                say(f"removed {p.name}, left by an interrupted write")
            try:
                for p in damaged:  # out of the way of pruning and of the saves to come, never deleted
                    say(f"moved the damaged checkpoint {p.name} to {ck.move_aside(run_dir, p)} (kept for inspection)")
            except HybridError as e:
                error = str(e)
        if dd.any(bool(error)):
            raise HybridError(error or "rank 0 could not move a damaged checkpoint aside (see its message)")
        if found is None:
            say(f"no checkpoint in {run_dir}; starting from step 0")
        else:
            path, info, weights, trainer = found
            ck.load_weights_into(model, weights, str(path / "model.safetensors"))
            optimizer.load_state_dict(ck.optimizer_from_tensors(trainer, info["param_groups"]))
            carry = {k[len("carry."):]: v for k, v in trainer.items() if k.startswith("carry.")}
            if set(carry) != set(state) or any(v.shape[0] != B for v in carry.values()):
                raise HybridError(f"{path}: its carried state does not fit batch size {B} and this model")
            state = {k: v[lo:lo + share].to(device) for k, v in carry.items()}
            step = info["step"]
            _restore_rng(trainer, dd, cfg.seed, step)
            was = info.get("world_size", 1)
            say(f"resumed from {path} (step {step})" + (f"; saved by {was} process(es), now {W}" if was != W else ""))
    net = model
    if dd.on:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    kind = corpus.tokenizer.kind
    metric = metric_name(kind)
    metrics = None
    if dd.main:
        write_run_files(run_dir, model_cfg, cfg, corpus, spec)
        metrics = MetricsLog(run_dir, step, tensorboard=cfg.tensorboard)

    def record(obj):
        if metrics is not None:
            metrics.record(obj)

    def save(valid_loss: float | None = None) -> Path | None:
        # Collectives first (every rank), then rank 0 writes, then every rank learns whether it could.
        carry = dd.gather_rows(state)
        rng = dd.gather_each(ck.rng_tensors(device))
        info = {"metric": metric, "world_size": W, "batch_size": B}
        if valid_loss is not None:
            info["valid_loss"] = valid_loss
        path, error = None, ""
        if dd.main:
            try:
                path = ck.save_checkpoint(run_dir, model, optimizer, step, carry, info,
                                          keep_last=cfg.keep_last, keep_best=cfg.keep_best, rng=rng, log=say)
            except HybridError as e:
                error = str(e)
        if dd.any(bool(error)):
            raise HybridError(error or "rank 0 could not save a checkpoint (see its message)")
        return path

    model.train()
    interrupted = False
    bad_in_row = 0
    t_last, tokens_since = time.perf_counter(), 0
    bar = tqdm(total=cfg.steps, initial=step, desc="train", disable=not (progress and dd.main), dynamic_ncols=True)
    try:
        with _StopFlag(escalate=not dd.on) as stop:
            while step < cfg.steps:
                if batcher.starts_epoch(step):
                    state = model.initial_state(share, device=device)
                lr = lr_at(step, cfg)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                xs, ys = batcher.batch(step)
                x = torch.from_numpy(xs[lo:lo + share]).long().to(device, non_blocking=True)
                y = torch.from_numpy(ys[lo:lo + share]).long().to(device, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                loss_sum = torch.zeros((), device=device)
                parts = []
                for a in range(A):
                    rows = slice(a * micro, (a + 1) * micro)
                    part = state if A == 1 else {k: v[rows] for k, v in state.items()}
                    # DDP averages gradients over processes in the last micro-batch's backward.
                    sync = net.no_sync() if dd.on and a < A - 1 else nullcontext()
                    with sync:
                        with autocast_for(device):
                            nll, part = net(x[rows], part, targets=y[rows])
                        loss = nll.float().mean()
                        (loss / A).backward()
                    loss_sum += loss.detach()
                    parts.append(detach_state(part))
                new_state = parts[0] if A == 1 else {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                # One collective and one host sync a step: the global mean loss, and whether any
                # process was asked to stop (so that all stop after the same step).
                shared = dd.all_sum(torch.stack([loss_sum / A, torch.tensor(float(stop.requested), device=device)]))
                lv, stop_any, gv = torch.stack([shared[0] / W, shared[1], gnorm.float()]).tolist()
                step += 1
                if math.isfinite(lv) and math.isfinite(gv):
                    optimizer.step()
                    state = new_state
                    bad_in_row = 0
                else:
                    bad_in_row += 1
                    what = "loss" if not math.isfinite(lv) else "gradient norm"
                    optimizer.zero_grad(set_to_none=True)
                    # Keep the streams' new state only if it is finite (it is local to each rank).
                    if all(torch.isfinite(v).all() for v in new_state.values()):
                        state = new_state
                    say(f"warning: step {step}: non-finite {what}; update skipped "
                        f"({bad_in_row} in a row, stopping at {cfg.max_bad_steps})")
                    record({"step": step, "skipped": f"non-finite {what}", "lr": lr})
                    if bad_in_row >= cfg.max_bad_steps:
                        last = ck.list_checkpoints(run_dir)
                        raise HybridError(
                            f"training stopped at step {step}: {bad_in_row} steps in a row had a non-finite "
                            f"{what}; the last checkpoint ({last[-1] if last else 'none yet'}) is intact. "
                            f"Lower --lr or check the data, then continue with --resume")
                tokens_since += B * T
                bar.update(1)
                if step % cfg.log_every == 0 or step == cfg.steps:
                    now = time.perf_counter()
                    tps = tokens_since / max(now - t_last, 1e-9)
                    t_last, tokens_since = now, 0
                    if math.isfinite(lv):
                        record({"step": step, "loss": lv, "lr": lr, "grad_norm": gv, "tokens_per_s": tps})
                    bar.set_postfix(loss=f"{lv:.3f}", tok_s=f"{tps:,.0f}")
                valid_loss, t_pause = None, time.perf_counter()
                if step % cfg.eval_every == 0 and step < cfg.steps:
                    valid_loss, _ = _evaluate_shared(model, corpus.valid, cfg, cfg.eval_tokens, dd)
                    record({"step": step, "valid_loss": valid_loss, f"valid_{metric}": metric_value(valid_loss, kind)})
                    if dd.main:
                        bar.write(f"step {step}: valid {metric} {metric_value(valid_loss, kind):.4f}")
                if step % cfg.save_every == 0 and step < cfg.steps:
                    save(valid_loss)
                t_last += time.perf_counter() - t_pause  # tokens/s counts training time only
                if stop_any:
                    interrupted = True
                    break
        bar.close()
        path = save()
        if interrupted:
            say(f"interrupted: saved {path}; continue with --resume")
            return TrainResult(run_dir, step, float("nan"), float("nan"), metric, interrupted=True)
        nll, n = _evaluate_shared(model, corpus.valid, cfg, 0, dd, progress=progress and dd.main)
        value = metric_value(nll, kind)
        record({"step": step, "valid_loss": nll, f"valid_{metric}": value, "valid_tokens": n, "final": True})
        return TrainResult(run_dir, step, nll, value, metric)
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
