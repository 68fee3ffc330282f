"""One JSON-serialisable config drives every model; presets name the paper's four architectures.

The layer pattern is a string over three blocks:  A = attention,  F = feed-forward,  Q = QRNN.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from hybrid.runtime.errors import HybridError

BLOCKS = {"A": "attention", "F": "feed-forward", "Q": "qrnn"}
# torch seeds are 64-bit; a rank's and a resumed step's seeds are derived by adding to it.
SEED_LIMIT = 1 << 62


@dataclass
class ModelConfig:
    vocab_size: int = 256
    d_model: int = 128
    n_heads: int = 4
    d_inner: int = 512
    pattern: str = "QFAFQFQF"
    qrnn_window: int = 2  # QRNN convolution width k (1 or 2)
    dropout: float = 0.1
    attn_dropout: float = 0.0
    zoneout: float = 0.0  # QRNN forget-gate zoneout (training only)
    mem_len: int = 128  # attention memory of earlier segments, in tokens
    tie_embeddings: bool = True
    # Adaptive input + adaptive softmax for large word vocabularies (train/adaptive.py): the
    # frequency-sorted vocabulary is cut at these ids; cluster i has vectors of d_model / div**i.
    # Empty: one embedding table and a plain (tied) softmax.
    adaptive_cutoffs: list[int] = field(default_factory=list)
    adaptive_div: int = 4
    name: str = "custom"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        from hybrid.train.schema import check_fields

        if isinstance(self.adaptive_cutoffs, tuple):
            self.adaptive_cutoffs = list(self.adaptive_cutoffs)
        check_fields(self, "model config")  # every field has its declared type

        def need(ok: bool, msg: str):
            if not ok:
                raise HybridError(f"model config: {msg}")

        need(len(self.pattern) > 0, "pattern must be a non-empty string")
        bad = sorted(set(self.pattern) - set(BLOCKS))
        need(not bad, f"pattern {self.pattern!r} has unknown block letters {bad} (use A, F, Q)")
        for key in ("vocab_size", "d_model", "n_heads", "d_inner"):
            need(getattr(self, key) > 0, f"{key} must be a positive integer, got {getattr(self, key)!r}")
        need(
            self.d_model % self.n_heads == 0, f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
        )
        need(self.qrnn_window in (1, 2), f"qrnn_window must be 1 or 2, got {self.qrnn_window!r}")
        need(self.mem_len >= 0, f"mem_len must be >= 0, got {self.mem_len!r}")
        for key in ("dropout", "attn_dropout", "zoneout"):
            need(0.0 <= getattr(self, key) < 1.0, f"{key} must be in [0, 1), got {getattr(self, key)!r}")
        cuts = self.adaptive_cutoffs
        need(
            all(a < b for a, b in zip([0, *cuts], [*cuts, self.vocab_size])),
            f"adaptive_cutoffs {list(cuts)} must increase strictly between 0 and vocab_size ({self.vocab_size})",
        )
        div = self.adaptive_div
        need(div >= 1, f"adaptive_div must be an integer >= 1, got {div!r}")
        need(
            self.d_model // div ** len(cuts) >= 1,
            f"adaptive_div {div} leaves the last of {len(cuts) + 1} clusters no dimensions at d_model {self.d_model}",
        )

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_blocks(self) -> int:
        return len(self.pattern)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, obj: dict, source: str = "config") -> "ModelConfig":
        return _config_from_dict(cls, obj, source, "model")


# What a resume may change, per TrainConfig field (the field's metadata "resume"):
#   fixed       fixes what the run computes (the updates, the data order): a resume keeps it
#   changeable  splits the same work or says how often to evaluate, save or log: may change
#   extends     steps: a larger value extends the run
FIXED, CHANGEABLE, EXTENDS = ({"resume": k} for k in ("fixed", "changeable", "extends"))


@dataclass
class TrainConfig:
    batch_size: int = field(default=16, metadata=FIXED)  # parallel streams: the global batch, whatever the world size
    seq_len: int = field(default=128, metadata=FIXED)  # segment length T
    steps: int = field(default=1000, metadata=EXTENDS)
    lr: float = field(default=2e-3, metadata=FIXED)
    min_lr_ratio: float = field(default=0.1, metadata=FIXED)
    warmup_steps: int = field(default=100, metadata=FIXED)
    weight_decay: float = field(default=0.1, metadata=FIXED)
    beta1: float = field(default=0.9, metadata=FIXED)
    beta2: float = field(default=0.99, metadata=FIXED)
    grad_clip: float = field(default=1.0, metadata=FIXED)
    eval_every: int = field(default=250, metadata=CHANGEABLE)
    # valid tokens scored at each periodic evaluation (0 = whole split); the final one scores all
    eval_tokens: int = field(default=32768, metadata=CHANGEABLE)
    save_every: int = field(default=250, metadata=CHANGEABLE)
    keep_last: int = field(default=2, metadata=CHANGEABLE)  # newest checkpoints kept (0 = keep all)
    keep_best: bool = field(default=True, metadata=CHANGEABLE)  # also keep the lowest periodic validation loss
    seed: int = field(default=1234, metadata=FIXED)
    log_every: int = field(default=10, metadata=CHANGEABLE)
    # micro-batches per step on each process (the batch is split, not grown)
    grad_accum: int = field(default=1, metadata=CHANGEABLE)
    # abort after this many steps in a row with a non-finite loss or gradient
    max_bad_steps: int = field(default=5, metadata=CHANGEABLE)
    tensorboard: bool = field(default=True, metadata=CHANGEABLE)  # also log to RUN_DIR/tensorboard when it imports

    @classmethod
    def resume_fields(cls, kind: str) -> tuple[str, ...]:
        """The fields whose resume rule is `kind` (fixed, changeable, extends), in field order."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.metadata["resume"] == kind)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        from hybrid.train.schema import check_fields

        check_fields(self, "train config")

        def need(ok: bool, msg: str):
            if not ok:
                raise HybridError(f"train config: {msg}")

        for key in (
            "batch_size",
            "seq_len",
            "steps",
            "eval_every",
            "save_every",
            "log_every",
            "grad_accum",
            "max_bad_steps",
        ):
            need(getattr(self, key) > 0, f"{key} must be positive, got {getattr(self, key)!r}")
        for key in ("warmup_steps", "eval_tokens", "keep_last", "weight_decay"):
            need(getattr(self, key) >= 0, f"{key} must be >= 0, got {getattr(self, key)!r}")
        need(self.lr > 0, f"lr must be positive, got {self.lr!r}")
        need(self.grad_clip > 0, f"grad_clip must be positive, got {self.grad_clip!r}")
        need(0.0 <= self.min_lr_ratio <= 1.0, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        for key in ("beta1", "beta2"):
            need(0.0 <= getattr(self, key) < 1.0, f"{key} must be in [0, 1), got {getattr(self, key)!r}")
        need(0 <= self.seed < SEED_LIMIT, f"seed must be an integer from 0 to 2**62 - 1, got {self.seed!r}")
        need(
            self.batch_size % self.grad_accum == 0,
            f"batch_size ({self.batch_size}) must be divisible by grad_accum ({self.grad_accum})",
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, obj: dict, source: str = "config") -> "TrainConfig":
        return _config_from_dict(cls, obj, source, "train")


def _config_from_dict(cls, obj, source: str, what: str):
    """A config dataclass from a JSON object, refusing unknown keys; every error names `source`."""
    if not isinstance(obj, dict):
        raise HybridError(f"{source}: {what} config must be a JSON object")
    unknown = sorted(set(obj) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise HybridError(f"{source}: unknown {what} config keys {unknown}")
    try:
        return cls(**obj)
    except TypeError as e:
        raise HybridError(f"{source}: {e}") from None
    except HybridError as e:
        raise HybridError(f"{source}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Presets. Paper scale follows Transformer-XL's 12-layer enwik8 model (d_model 512, 8 heads,
# ~41M parameters) and the layer patterns of the paper's four architectures (Lindenmaier et al. 2025);
# `tiny` sizes of each train on a laptop CPU in minutes.
# ---------------------------------------------------------------------------------------------

PATTERNS = {
    # Transformer baseline: alternating attention and feed-forward, 12 layers = 24 blocks.
    "transformer": "AF" * 12,
    # PAR Transformer: ~2/3 of the attention blocks replaced by FF, attention kept in the lower
    # layers (20 blocks, so that it stays near the baseline's parameter count).
    "par": "AF" * 4 + "F" * 12,
    # Attn-QRNN: QRNN blocks with a few attention blocks between them.
    "attn-qrnn": "QQQQQQQA" * 3,
    # Hybrid Transformer: attention, FF and QRNN mixed, most attention replaced (~38M parameters).
    "hybrid": "QF" * 2 + "AF" + "QF" * 3 + "AF" + "QF" * 3,
}

TINY_PATTERNS = {
    "transformer": "AF" * 4,
    "par": "AFAF" + "F" * 4,
    "attn-qrnn": "QQAQQA",
    "hybrid": "QFAFQFQF",
}

_PAPER = dict(
    vocab_size=256,
    d_model=512,
    n_heads=8,
    d_inner=2304,
    dropout=0.1,
    attn_dropout=0.0,
    zoneout=0.1,
    mem_len=512,
    qrnn_window=2,
)
_TINY = dict(
    vocab_size=256,
    d_model=128,
    n_heads=4,
    d_inner=512,
    dropout=0.1,
    attn_dropout=0.0,
    zoneout=0.0,
    mem_len=128,
    qrnn_window=2,
)


def _presets() -> dict[str, dict]:
    out = {}
    for arch in PATTERNS:
        out[f"{arch}-paper"] = dict(_PAPER, pattern=PATTERNS[arch], name=f"{arch}-paper")
        out[f"{arch}-tiny"] = dict(_TINY, pattern=TINY_PATTERNS[arch], name=f"{arch}-tiny")
    return out


PRESETS = _presets()


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise HybridError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
    return ModelConfig(**{**PRESETS[name], **overrides})


def read_json(path: str | Path, what: str = "config") -> dict:
    """Read a JSON object from disk, turning every failure into one clear error line."""
    from hybrid.runtime.files import read_json as read_checked

    return read_checked(path, f"{what} file")


def load_model_config(path: str | Path) -> ModelConfig:
    """A model config from a JSON file: either a bare model config or a run's config.json."""
    obj = read_json(path)
    obj = obj.get("model", obj)
    return ModelConfig.from_dict(obj, str(path))
