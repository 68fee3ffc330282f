"""Resuming a run: the checks that it continues as configured, and its state read back from the
newest checkpoint that verifies (checkpoint.py), on one process or many."""

from __future__ import annotations

from pathlib import Path

import torch

from hybrid.runtime.errors import HybridError
from hybrid.train import checkpoint as ck
from hybrid.train import distributed
from hybrid.train.config import ModelConfig, TrainConfig
from hybrid.train.data import Corpus
from hybrid.train.rundir import corpus_fingerprint, read_run_config


# Train settings that fix what a run computes: a resume must keep them (TrainConfig's field
# metadata says which; the others extend the run or change how often it evaluates, saves, logs).
RESUME_FIXED = TrainConfig.resume_fields("fixed")


def model_differences(a: ModelConfig, b: ModelConfig) -> list[tuple[str, object, object]]:
    """(field, a's value, b's value) where two model configs differ (the name aside)."""
    da, db = a.to_dict(), b.to_dict()
    return [(k, da[k], db[k]) for k in da if k != "name" and da[k] != db[k]]


def check_resume_config(run_dir: Path, model_cfg: ModelConfig, cfg: TrainConfig, corpus: Corpus) -> dict | None:
    """A resume continues the run as it was configured: the same model, the same settings that
    fix the updates (RESUME_FIXED; the data order is a function of batch_size and seq_len) and the
    same corpus. Returns the run's saved corpus section (None before the run's first start)."""
    if not (run_dir / "config.json").is_file():
        return None
    old_model, old, obj = read_run_config(run_dir)
    if (old.batch_size, old.seq_len) != (cfg.batch_size, cfg.seq_len):
        raise HybridError(
            f"{run_dir}: the run trains on batch size {old.batch_size} and segment length "
            f"{old.seq_len}; resume it with --batch-size {old.batch_size} --seq-len {old.seq_len} "
            f"(the world size and --grad-accum may change)"
        )
    diffs = model_differences(old_model, model_cfg)
    if diffs:
        k, was, now = diffs[0]
        raise HybridError(
            f"{run_dir}: the run's model has {k} {was!r}, not {now!r}; resume it with its own model (its config.json)"
        )
    for k in RESUME_FIXED:
        if getattr(old, k) != getattr(cfg, k):
            raise HybridError(
                f"{run_dir}: the run trains with {k} {getattr(old, k)!r}, not {getattr(cfg, k)!r}; "
                f"a resume keeps the run's settings (its config.json)"
            )
    saved = obj["corpus"]
    if saved["tokenizer"] != corpus.tokenizer.kind:
        raise HybridError(f"{run_dir}: the run trains on {saved['tokenizer']} tokens, not {corpus.tokenizer.kind}")
    if isinstance(saved.get("fingerprint"), str):
        if saved["fingerprint"] != corpus_fingerprint(corpus):
            raise HybridError(
                f"{run_dir}: the corpus differs from the one the run was trained on "
                f"({saved['name']}, fingerprint {saved['fingerprint']}; now {corpus.name}, "
                f"fingerprint {corpus_fingerprint(corpus)})"
            )
    elif saved["name"] != corpus.name:  # a run written before corpora had a fingerprint
        raise HybridError(
            f"{run_dir}: the run was trained on the corpus {saved['name']}, not {corpus.name}; "
            f"resume it on the same corpus"
        )
    return saved


def restore_rng(trainer: dict[str, torch.Tensor], dd: distributed.Dist, seed: int, step: int) -> None:
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


def resume(
    run_dir: Path,
    model,
    optimizer,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    corpus: Corpus,
    dd: distributed.Dist,
    state: dict,
    say,
) -> tuple[dict, int, dict | None]:
    """Load the run's newest valid checkpoint into `model` and `optimizer`: (this process's carried
    state, the step, the saved corpus section or None). Damaged checkpoints are moved aside, never
    deleted; with none at all the run starts from step 0."""
    B, share = cfg.batch_size, cfg.batch_size // dd.world
    lo = dd.rank * share
    saved = check_resume_config(run_dir, model_cfg, cfg, corpus)
    damaged: list[Path] = []
    found = ck.latest_valid_checkpoint(run_dir, warn=say, skipped=damaged)
    if found is None and damaged:
        raise HybridError(
            f"{run_dir / 'checkpoints'}: none of its {len(damaged)} checkpoints verifies "
            f"(see the warnings above); nothing was changed. Move them aside to start "
            f"the run again from step 0, or restore a good copy"
        )
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
        return state, 0, saved
    path, info, weights, trainer = found
    ck.load_weights_into(model, weights, str(path / "model.safetensors"))
    optimizer.load_state_dict(ck.optimizer_from_tensors(trainer, info["param_groups"]))
    carry = {k[len("carry.") :]: v for k, v in trainer.items() if k.startswith("carry.")}
    if set(carry) != set(state) or any(v.shape[0] != B for v in carry.values()):
        raise HybridError(f"{path}: its carried state does not fit batch size {B} and this model")
    state = {k: v[lo : lo + share].to(dd.device) for k, v in carry.items()}
    step = info["step"]
    restore_rng(trainer, dd, cfg.seed, step)
    was = info.get("world_size", 1)
    say(
        f"resumed from {path} (step {step})"
        + (f"; saved by {was} process(es), now {dd.world}" if was != dd.world else "")
    )
    return state, step, saved
