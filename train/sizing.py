"""Equal parameter counts: each architecture's layer pattern widened to a target size.

The paper compares its four patterns at (nearly) equal parameter count. `sized_config` keeps an
architecture's tiny pattern (config.TINY_PATTERNS) and picks the width whose parameter count, as
`hybrid info` counts it, is closest to the target; used by tools/compare.py and tools/converge.py.
"""

from __future__ import annotations

import torch

from hybrid.train.config import _TINY, TINY_PATTERNS, ModelConfig
from hybrid.train.model import HybridLM, count_parameters
from hybrid.runtime.errors import HybridError


def count_params(cfg: ModelConfig) -> int:
    """Total parameters as `hybrid info` counts them, without allocating the weights."""
    with torch.device("meta"):
        return count_parameters(HybridLM(cfg))["total"]


def sized_config(
    arch: str, target: int, vocab_size: int, n_heads: int = 4, step: int = 4, **base
) -> tuple[ModelConfig, int]:
    """(config, parameters) of the architecture's tiny pattern at the width closest to `target`.

    d_model runs over multiples of `step` (d_inner = 4 d_model); then, for patterns with
    feed-forward blocks, d_inner moves in steps of 8 toward the target (parameters are linear in
    d_inner). `base` overrides other ModelConfig fields (dropout, adaptive_cutoffs, ...).
    """
    fields = dict(_TINY, vocab_size=vocab_size, n_heads=n_heads, pattern=TINY_PATTERNS[arch], name=f"{arch}-sized")
    fields.update(base)
    best = None
    for d in range(max(step, n_heads), 2049, step):
        if d % n_heads:
            continue
        try:
            cfg = ModelConfig(**dict(fields, d_model=d, d_inner=4 * d))
        except HybridError:  # e.g. adaptive clusters that get no dimensions at this width
            continue
        n = count_params(cfg)
        if best is None or abs(n - target) < abs(best[1] - target):
            best = (cfg, n)
        if n > 2 * target:
            break
    if best is None:
        raise HybridError(f"{arch}: no width gives a valid model config near {target:,} parameters")
    cfg, n = best
    if "F" in cfg.pattern:
        per_unit = count_params(ModelConfig(**dict(fields, d_model=cfg.d_model, d_inner=cfg.d_inner + 8))) - n
        units = round((target - n) / per_unit)
        d_inner = max(8, cfg.d_inner + 8 * units)
        cfg = ModelConfig(**dict(fields, d_model=cfg.d_model, d_inner=d_inner))
        n = count_params(cfg)
    return cfg, n
