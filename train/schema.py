"""Schema checks for the JSON a run directory holds: every value has the type its field declares.

JSON carries only objects, arrays, strings, numbers, booleans and null, so a config read from disk
can hold `"steps": "1000"`, `"lr": null` or `"keep_best": 1`. These checks turn each such value
into one clear line before it reaches the training loop. Torch-free.
"""

from __future__ import annotations

import dataclasses

from hybrid.runtime.errors import HybridError

# Annotation (as a string: the config modules use `from __future__ import annotations`) -> test.
_CHECKS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf"),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "list[int]": lambda v: isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v),
}
_NAMES = {
    "int": "an integer",
    "float": "a finite number",
    "bool": "true or false",
    "str": "a string",
    "list[int]": "a list of integers",
}


def check_fields(obj, what: str) -> None:
    """Raise HybridError naming the first field of dataclass `obj` whose value has the wrong type."""
    for f in dataclasses.fields(obj):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        check = _CHECKS.get(kind)
        v = getattr(obj, f.name)
        if check is not None and not check(v):
            raise HybridError(f"{what}: {f.name} must be {_NAMES[kind]}, got {v!r}")


RUN_KEYS = {"format": str, "version": int, "model": dict, "train": dict, "corpus": dict}


def check_run_config(obj: dict, source: str) -> None:
    """The top level of a run's config.json: known keys with the right JSON types.

    The `model` and `train` sections are checked by ModelConfig / TrainConfig.from_dict."""
    unknown = sorted(set(obj) - set(RUN_KEYS))
    if unknown:
        raise HybridError(f"{source}: unknown keys {unknown} in a run config")
    for key, kind in RUN_KEYS.items():
        if key not in obj:
            raise HybridError(f"{source}: run config has no {key!r}")
        v = obj[key]
        if not isinstance(v, kind) or isinstance(v, bool):
            raise HybridError(
                f"{source}: {key!r} must be a JSON {kind.__name__.replace('dict', 'object')}, got {type(v).__name__}"
            )
    corpus = obj["corpus"]
    if not isinstance(corpus.get("name"), str) or corpus.get("tokenizer") not in ("byte", "word"):
        raise HybridError(f"{source}: 'corpus' must hold a name and a tokenizer ('byte' or 'word')")
    spec = corpus.get("spec")  # how --resume loads the corpus again
    if spec is not None and not (
        isinstance(spec, dict)
        and isinstance(spec.get("source"), str)
        and (spec.get("path") is None or isinstance(spec.get("path"), str))
        and isinstance(spec.get("options", {}), dict)
    ):
        raise HybridError(
            f"{source}: 'corpus.spec' must hold a source (a string), a path (a string or null) and options (an object)"
        )
