"""The export self-check's probe text: the tokens every variant is scored on (exporter.py).

    probe_tokens(run_dir, corpus, tokenizer, probe_text, log) -> (tokens, description)

A given text is cut to MAX_PROBE_TOKENS; without one, the run's own held-out test split, or the
built-in corpus's when the run's corpus cannot be loaded here (with a note saying so).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hybrid.runtime.errors import HybridError

PROBE_TOKENS = 16384  # tokens of the built-in probe that are scored
MAX_PROBE_TOKENS = 65536  # a given probe text is cut to this many tokens
MIN_PROBE_TOKENS = 16


def probe_tokens(run_dir: Path, corpus: dict, tokenizer, probe_text, log):
    """The tokens the self-check scores and where they come from: the given text, else the run's
    own test split (default_probe). Too few tokens to score is an error."""
    if probe_text is not None:
        tokens, source = tokenizer.encode(probe_text)[: MAX_PROBE_TOKENS + 1], "given text"
    else:
        tokens, source = default_probe(run_dir, corpus, tokenizer, log)
    if len(tokens) < MIN_PROBE_TOKENS:
        raise HybridError(f"probe text is too short: {len(tokens)} tokens, need at least {MIN_PROBE_TOKENS}")
    return tokens, source


def default_probe_text() -> tuple[str, str]:
    """The built-in corpus's test split (its last 5%, from a line start): held out from training."""
    from hybrid.train.data import BUILTIN

    text = BUILTIN.read_text(encoding="utf-8")
    start = text.index("\n", len(text) * 95 // 100) + 1
    return text[start:], f"built-in corpus test split ({BUILTIN.name})"


def default_probe(run_dir: Path, corpus: dict, tokenizer, log):
    """The self-check's text when none is given: the run's own test split, held out from training
    (its config.json says how to load the corpus; the local copy must still have the run's
    fingerprint). Returns (tokens, description); the built-in corpus's test split, with a note,
    for a run whose corpus cannot be loaded here."""
    from hybrid.train.rundir import corpus_from_spec, corpus_fingerprint

    spec, why = corpus.get("spec"), "its config.json does not say how to load its corpus"
    if isinstance(spec, dict) and spec.get("source") == "builtin":
        from hybrid.train.data import BUILTIN

        text, _ = default_probe_text()
        return tokenizer.encode(text)[: PROBE_TOKENS + 1], f"the run's own test split (built-in {BUILTIN.name})"
    if isinstance(spec, dict):
        try:
            loaded = corpus_from_spec(spec, tokenizer.kind, None, False, lambda msg: None, hub=False)
            if loaded.tokenizer.to_json() != tokenizer.to_json() or corpus.get("fingerprint") not in (
                None,
                corpus_fingerprint(loaded),
            ):
                raise HybridError(f"{loaded.name} is not the corpus the run was trained on (it changed)")
            return np.asarray(loaded.test[: PROBE_TOKENS + 1]), f"the run's own test split ({loaded.name})"
        except HybridError as e:
            why = f"its corpus cannot be loaded here ({e})"
    text, source = default_probe_text()
    log(f"note: {run_dir}: {why}; the self-check scores the {source} instead (--probe FILE to choose)")
    return tokenizer.encode(text)[: PROBE_TOKENS + 1], source
