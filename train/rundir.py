"""A run directory: its own files, config.json (model, training settings, corpus) and
tokenizer.json, and the trained model read back from them (written by the trainer, read by
resume, export and `hybrid eval RUN_DIR`); one writer at a time; cleared only when the new run is
known to start.

lock_run_dir holds a DirLock (runtime/files.py) on --out for the whole command (under torchrun,
rank 0's), taken before anything reads or changes the directory, so a second `hybrid train` or
`--resume` into it stops at once with one line and changes nothing. prepare_run_dir runs every
check the trainer would (preflight.check_training) and only then, for --overwrite, deletes the
old run: a bad setting never costs it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from hybrid.runtime.errors import HybridError
from hybrid.runtime.files import DirLock, atomic_write_json, describe_os_error
from hybrid.runtime.tokenizer import load_tokenizer, save_tokenizer
from hybrid.train import checkpoint as ck
from hybrid.train.config import ModelConfig, TrainConfig, read_json
from hybrid.train.data import Corpus
from hybrid.train.distributed import launch_env
from hybrid.train.model import HybridLM
from hybrid.train.schema import check_run_config

RUN_FORMAT = "hybrid-run"
RUN_VERSION = 1


def corpus_fingerprint(corpus: Corpus) -> str:
    """A hash of what training reads: the tokenizer and the tokens of every split (bytes as uint8,
    words as int32, whatever array type the loader gave them), so the same text loaded through
    either loader gives the same fingerprint. Remembered in corpus.meta."""
    if isinstance(corpus.meta.get("token_fingerprint"), str):
        return corpus.meta["token_fingerprint"]
    dtype = np.dtype("u1") if corpus.tokenizer.kind == "byte" else np.dtype("<i4")
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps(corpus.tokenizer.to_json(), sort_keys=True).encode())
    for split in ("train", "valid", "test"):
        tokens = getattr(corpus, split)
        h.update(f"\0{split}:{len(tokens)}\0".encode())
        for i in range(0, len(tokens), 1 << 24):
            h.update(np.ascontiguousarray(tokens[i : i + (1 << 24)], dtype=dtype).data)
    corpus.meta["token_fingerprint"] = h.hexdigest()
    return corpus.meta["token_fingerprint"]


def write_run_files(
    run_dir: Path, model_cfg: ModelConfig, train_cfg: TrainConfig, corpus: Corpus, spec: dict | None = None
) -> None:
    """config.json and tokenizer.json. The corpus section names the corpus, its fingerprint (see
    corpus_fingerprint) and, from the command line, `spec`: how to load it again on --resume."""
    run_dir.mkdir(parents=True, exist_ok=True)
    section = {"name": corpus.name, "tokenizer": corpus.tokenizer.kind, "fingerprint": corpus_fingerprint(corpus)}
    spec = spec if spec is not None else corpus.meta.get("spec")
    if spec is not None:
        section["spec"] = spec
    atomic_write_json(
        run_dir / "config.json",
        {
            "format": RUN_FORMAT,
            "version": RUN_VERSION,
            "model": model_cfg.to_dict(),
            "train": train_cfg.to_dict(),
            "corpus": section,
        },
    )
    save_tokenizer(corpus.tokenizer, run_dir / "tokenizer.json")


def read_run_config(run_dir: Path) -> tuple[ModelConfig, TrainConfig, dict]:
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise HybridError(f"{run_dir}: run directory not found")
    obj = read_json(path)
    if obj.get("format") != RUN_FORMAT:
        raise HybridError(f"{path}: not a hybrid run config (format {obj.get('format')!r})")
    if obj.get("version") != RUN_VERSION:
        raise HybridError(
            f"{path}: run format version {obj.get('version')!r} is not supported (this hybrid reads {RUN_VERSION})"
        )
    check_run_config(obj, str(path))
    return (ModelConfig.from_dict(obj["model"], str(path)), TrainConfig.from_dict(obj["train"], str(path)), obj)


def load_run_model(run_dir: Path, device="cpu") -> tuple[HybridLM, object]:
    """A trained model and its tokenizer from a run (or model) directory."""
    model_cfg, _, _ = read_run_config(run_dir)
    model = HybridLM(model_cfg)
    ck.load_weights(model, Path(run_dir) / "model.safetensors")
    return model.to(device).eval(), load_tokenizer(Path(run_dir) / "tokenizer.json")


def corpus_from_spec(
    spec: dict, tokenizer: str | None, seq_len: int | None, progress: bool, log, given=None, hub: bool = True
) -> Corpus:
    """The corpus a run's corpus spec (config.json corpus.spec, see train/commands.py) names;
    `given` (source, path) as the user wrote them, for messages that name the path as given."""
    from hybrid.train.data import load_text_corpus
    from hybrid.train.sources import load_source

    if spec["source"] == "builtin":
        corpus = load_text_corpus(None, tokenizer or "byte")
    else:
        source, path = given or (spec["source"], spec["path"])
        corpus = load_source(
            source, path, tokenizer, seq_len=seq_len, progress=progress, log=log, hub=hub, **spec.get("options", {})
        )
    corpus.meta["spec"] = spec
    return corpus


def lock_run_dir(ctx, out: Path) -> None:
    """Lock `out` until the command `ctx` ends (rank 0 only: the other ranks never write)."""
    if launch_env()[0] == 0:
        ctx.with_resource(DirLock(out))


def prepare_run_dir(out: Path, overwrite: bool, model_cfg, train_cfg, corpus, device) -> None:
    """Run every check the trainer would, then (--overwrite, rank 0; the lock is already held)
    delete the old run at `out`: deleting is the last thing done before training starts."""
    from hybrid.train.preflight import check_training

    check_training(model_cfg, train_cfg, corpus, launch_env()[1], device)
    if overwrite and launch_env()[0] == 0 and out.exists():
        try:
            shutil.rmtree(out)
        except OSError as e:
            raise HybridError(f"{out}: cannot remove the old run ({describe_os_error(e)})") from None
