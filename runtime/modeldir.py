"""Read and check an exported model directory (docs/model-directory.md, format `hybrid-onnx` v3;
version-1 and version-2 directories are read too).

Only the standard library: this is the part of the contract every reader needs before it loads a
graph, and it refuses anything it does not understand with one clear line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hybrid.runtime.errors import HybridError, is_integer
from hybrid.runtime.files import MiB, inside, read_json

FORMAT = "hybrid-onnx"
FORMAT_VERSION = 3  # what the exporter writes
# 1: the graph takes a float past_mask [batch, mem_len] and returns present_mask.
# 2: it takes onnxruntime-genai's int64 attention_mask [batch, total_sequence_length] instead,
#    and reads the memory's occupancy from its last mem_len + sequence entries.
# 3: the attention memory is a ring of mem_len + 1 slots written in place; the graph reads only
#    the attention_mask's length (the stream's length, which places the ring).
READ_VERSIONS = (1, 2, 3)
ATTENTION_MASK = "attention_mask"
FILE_FORMATS = ("onnx", "ort")  # ort: onnxruntime's ORT format, for its reduced-size (mobile) builds
VARIANTS = ("fp32", "int8", "int4")
# `auto` picks the first variant present in this order: int8 is the fast one on CPUs and keeps
# bits per character within a few thousandths of fp32 on trained models.
AUTO_ORDER = ("int8", "fp32", "int4")
CONFIG_MAX = 16 * MiB  # config.json and export_report.json
MAX_DIM = 1 << 31  # any one size in config.json (the graph's dimensions are int64, its sizes far smaller)


def config_format(path: str | Path) -> str | None:
    """The `format` in a folder's config.json (hybrid-onnx: an export; hybrid-run: a training run),
    or None when there is no readable one."""
    try:
        fmt = read_json(Path(path) / "config.json", "config.json", CONFIG_MAX).get("format")
    except HybridError:
        return None
    return fmt if isinstance(fmt, str) else None


@dataclass(frozen=True)
class StateSpec:
    input: str  # past_key_values.<i>.<kind> or past_mask
    output: str  # present.<i>.<kind> or present_mask
    shape: tuple  # ("batch", d1, d2, ...)
    dtype: str = "float32"

    @property
    def memory(self) -> bool:
        """An attention block's key or value memory (the ring a version-3 graph writes in place)."""
        return self.input.endswith((".key", ".value"))


@dataclass
class ModelDir:
    path: Path
    config: dict
    state: list[StateSpec]

    @property
    def model(self) -> dict:
        """The full ModelConfig as a dict (vocab_size, d_model, pattern, mem_len, ...)."""
        return self.config["model"]

    @property
    def metric(self) -> str:
        return self.config["metric"]

    @property
    def vocab_size(self) -> int:
        return int(self.model["vocab_size"])

    def named(self, name, where: str) -> Path:
        """A file config.json names, resolved: refused unless inside the model directory."""
        return inside(self.path, name, f"{self.path / 'config.json'}: {where}")

    @property
    def version(self) -> int:
        return self.config["format_version"]

    @property
    def mask_len(self) -> int | None:
        """mem_len when a version-2 graph takes an attention_mask (a model with an attention
        memory): the runtime then keeps the memory's occupancy as a float `past_mask` of that
        length in its state, as version 1 graphs do themselves. None otherwise."""
        if self.version == 2 and ATTENTION_MASK in self.config.get("inputs", {}):
            return int(self.model["mem_len"])
        return None

    @property
    def ring_len(self) -> int | None:
        """mem_len + 1, the attention memory's ring slots, when a version-3 graph takes an
        attention_mask: the runtime then keeps the stream's length in its state (attention_mask.py).
        None otherwise."""
        if self.version >= 3 and ATTENTION_MASK in self.config.get("inputs", {}):
            return int(self.model["mem_len"]) + 1
        return None

    @property
    def tokenizer_path(self) -> Path:
        return self.named(self.config.get("tokenizer", "tokenizer.json"), "'tokenizer'")

    @property
    def variants(self) -> list[str]:
        """Variants listed in config.json whose file exists, in VARIANTS order."""
        return self.available("onnx")

    def listed(self, file_format: str = "onnx") -> dict[str, str]:
        """variant -> file name: `files` (.onnx) or `ort` (.ort, written by `hybrid export --ort`)."""
        if file_format not in FILE_FORMATS:
            raise HybridError(f"unknown file format {file_format!r} (choose {' or '.join(FILE_FORMATS)})")
        return self.config["files"] if file_format == "onnx" else self.config.get("ort", {})

    def available(self, file_format: str = "onnx") -> list[str]:
        files, key = self.listed(file_format), "files" if file_format == "onnx" else "ort"
        return [v for v in VARIANTS if v in files and self.named(files[v], f"{key}.{v}").is_file()]

    def pick(self, variant: str = "auto", file_format: str = "onnx") -> str:
        have = self.available(file_format)
        kind = "" if file_format == "onnx" else f" {file_format}"
        if file_format == "ort" and not self.listed("ort"):
            raise HybridError(f"{self.path}: has no ORT-format files (export with --ort to write them)")
        if variant == "auto":
            for v in AUTO_ORDER:
                if v in have:
                    return v
            raise HybridError(f"{self.path}: none of the{kind} model files listed in config.json exist")
        if variant not in VARIANTS:
            raise HybridError(f"unknown variant {variant!r} (choose auto, {', '.join(VARIANTS)})")
        if variant not in have:
            listed = self.listed(file_format).get(variant)
            why = f"{listed} is missing" if listed else "it was not exported"
            raise HybridError(f"{self.path}: no {variant}{kind} model ({why}); available: {', '.join(have) or 'none'}")
        return variant

    def file(self, variant: str, file_format: str = "onnx") -> Path:
        v = self.pick(variant, file_format)
        return self.named(self.listed(file_format)[v], f"{'files' if file_format == 'onnx' else 'ort'}.{v}")

    def export_report(self) -> dict | None:
        """The exporter's export_report.json, or None when absent or unreadable."""
        try:
            return read_json(self.named("export_report.json", "export_report.json"), "export report", CONFIG_MAX)
        except HybridError:
            return None

    def state_bytes(self, batch: int = 1) -> int:
        n = 0
        for s in self.state:
            size = batch
            for d in s.shape[1:]:
                size *= int(d)
            n += 4 * size
        return n


def _need(ok: bool, where: Path, msg: str) -> None:
    if not ok:
        raise HybridError(f"{where}: {msg}")


def _check_inputs(cfg: dict, version: int, cfg_path: Path) -> None:
    """Version 2's attention_mask: int64, only with an attention memory (mem_len > 0)."""
    inputs = cfg.get("inputs", {})
    _need(isinstance(inputs, dict), cfg_path, "'inputs' must be an object")
    if ATTENTION_MASK not in inputs:
        return
    spec, mem = inputs[ATTENTION_MASK], cfg["model"].get("mem_len")
    _need(version >= 2, cfg_path, f"{ATTENTION_MASK!r} is an input of version 2 graphs, this is version {version}")
    _need(isinstance(spec, dict) and spec.get("dtype") == "int64", cfg_path, f"inputs.{ATTENTION_MASK} must be int64")
    _need(
        isinstance(mem, int) and not isinstance(mem, bool) and mem > 0,
        cfg_path,
        f"a graph with an {ATTENTION_MASK} needs model.mem_len > 0, got {mem!r}",
    )


def open_model_dir(path: str | Path) -> ModelDir:
    """Check a model directory against the contract; every problem is one HybridError line."""
    path = Path(path)
    cfg_path, cfg, ver = _read_config(path)
    _check_fields(cfg, ver, cfg_path)
    specs = _state_specs(cfg, cfg_path)
    md = ModelDir(path, cfg, specs)
    check_contract(md, cfg_path)
    _need(
        bool(md.variants),
        path,
        f"none of the model files listed in config.json exist ({', '.join(cfg['files'].values())})",
    )
    md.tokenizer_path  # refused here if it names a file outside the directory
    return md


def _read_config(path: Path) -> tuple[Path, dict, int]:
    """config.json of the directory at path, read inside it and checked to be a model directory's
    (not a training run's) of a format version this reader knows: (its path, its object, the version)."""
    if not path.exists():
        raise HybridError(f"{path}: model directory not found")
    if not path.is_dir():
        raise HybridError(f"{path}: not a directory (expected an exported model directory)")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        hint = (
            " (a training run? export it first: hybrid export RUN_DIR --out MODEL_DIR)"
            if (path / "model.safetensors").exists()
            else ""
        )
        raise HybridError(f"{path}: no config.json; not an exported model directory{hint}")
    cfg = read_json(inside(path, "config.json", f"{cfg_path}"), "config.json", CONFIG_MAX)
    fmt = cfg.get("format")
    if fmt == "hybrid-run":
        raise HybridError(
            f"{path}: is a training run, not an exported model; export it first: hybrid export {path} --out MODEL_DIR"
        )
    _need(fmt == FORMAT, cfg_path, f"unknown format {fmt!r} (this hybrid reads {FORMAT!r})")
    ver = cfg.get("format_version")
    _need(
        type(ver) is int and ver in READ_VERSIONS,
        cfg_path,
        f"format_version {ver!r} is not supported (this hybrid reads {FORMAT} versions "
        f"{', '.join(map(str, READ_VERSIONS))})",
    )
    return cfg_path, cfg, ver


def _check_fields(cfg: dict, ver: int, cfg_path: Path) -> None:
    """The model, metric, files, inputs and ort entries of config.json."""
    model = cfg.get("model")
    _need(
        isinstance(model, dict) and _size(model.get("vocab_size")) and model["vocab_size"] > 0,
        cfg_path,
        f"'model' must be an object with a vocab_size from 1 to {MAX_DIM:,}",
    )
    _need(cfg.get("metric") in ("bpc", "ppl"), cfg_path, f"'metric' must be 'bpc' or 'ppl', got {cfg.get('metric')!r}")
    files = cfg.get("files")
    _need(
        isinstance(files, dict) and files and all(isinstance(v, str) for v in files.values()),
        cfg_path,
        "'files' must map variants to file names",
    )
    _need(
        all(k in VARIANTS for k in files),
        cfg_path,
        f"'files' has unknown variants {sorted(set(files) - set(VARIANTS))} (known: {', '.join(VARIANTS)})",
    )
    _check_inputs(cfg, ver, cfg_path)
    ort_files = cfg.get("ort", {})
    _need(
        isinstance(ort_files, dict) and all(k in VARIANTS and isinstance(v, str) for k, v in ort_files.items()),
        cfg_path,
        f"'ort' must map variants ({', '.join(VARIANTS)}) to file names",
    )


def _state_specs(cfg: dict, cfg_path: Path) -> list[StateSpec]:
    """config.json's state tensors, each float32 of shape ['batch', sizes...]; with an attention_mask,
    the attention memory's key/value state as long as model.mem_len."""
    state = cfg.get("state")
    _need(isinstance(state, list), cfg_path, "'state' must be a list")
    specs = []
    for i, s in enumerate(state):
        ok = (
            isinstance(s, dict)
            and isinstance(s.get("input"), str)
            and isinstance(s.get("output"), str)
            and isinstance(s.get("shape"), list)
            and len(s["shape"]) >= 2
            and s["shape"][0] == "batch"
            and all(_size(d) for d in s["shape"][1:])
            and s.get("dtype", "float32") == "float32"
        )
        _need(ok, cfg_path, f"state[{i}] must have input, output, dtype float32 and shape ['batch', sizes...]")
        specs.append(StateSpec(s["input"], s["output"], tuple(s["shape"]), "float32"))
    if ATTENTION_MASK in cfg.get("inputs", {}):  # version 2: mem_len slots; version 3: a ring of mem_len + 1
        slots = cfg["model"]["mem_len"] + (cfg["format_version"] >= 3)
        _need(
            all(len(s.shape) == 4 and s.shape[2] == slots for s in specs if s.memory),
            cfg_path,
            f"the attention memory's key/value state must hold {slots} slots (model.mem_len = {cfg['model']['mem_len']})",
        )
    return specs


def _size(d) -> bool:
    return is_integer(d) and 0 <= d <= MAX_DIM


def expected_state(model: dict, version: int = FORMAT_VERSION) -> list[tuple[str, str, tuple]] | None:
    """(input, output, shape) of every state tensor the contract of `version` gives a model
    config, in graph order (docs/model-directory.md); None when the config lacks a field it needs.
    Version 1 carries the memory mask as state (past_mask) and no conv_state for window 1; version
    2 takes attention_mask instead and a pass-through conv_state for window 1 (onnxruntime-genai
    pairs every recurrent_state with one); version 3 keeps the memory as a ring of mem_len + 1."""
    keys = ("pattern", "n_heads", "d_model", "mem_len", "qrnn_window")
    if not (
        isinstance(model.get("pattern"), str)
        and all(_size(model.get(k)) for k in keys[1:])
        and model["n_heads"] > 0
        and model["d_model"] % model["n_heads"] == 0
    ):
        return None
    H, D, M, k = model["n_heads"], model["d_model"], model["mem_len"], model["qrnn_window"]
    slots = M + 1 if version >= 3 else M
    out = []
    for i, kind in enumerate(model["pattern"]):
        if kind == "A" and M > 0:
            out += [
                (f"past_key_values.{i}.{n}", f"present.{i}.{n}", ("batch", H, slots, D // H)) for n in ("key", "value")
            ]
        elif kind == "Q":
            out.append((f"past_key_values.{i}.recurrent_state", f"present.{i}.recurrent_state", ("batch", D)))
            if k > 1 or version >= 2:
                out.append((f"past_key_values.{i}.conv_state", f"present.{i}.conv_state", ("batch", max(k - 1, 1), D)))
    if "A" in model["pattern"] and M > 0 and version == 1:
        out.append(("past_mask", "present_mask", ("batch", M)))
    return out


def check_contract(md: ModelDir, cfg_path: Path) -> None:
    """config.json against itself: the state list, the logits shape and the input dtype are what
    the contract derives from its `model` section; the metric is the tokenizer's (checked when the
    tokenizer is loaded: check_tokenizer)."""
    version = md.config["format_version"]
    want = expected_state(md.model, version)
    _need(want is not None, cfg_path, "'model' must give pattern, n_heads, d_model, mem_len and qrnn_window as sizes")
    memory = "A" in md.model["pattern"] and md.model["mem_len"] > 0
    _need(
        version == 1 or (ATTENTION_MASK in md.config.get("inputs", {})) == memory,
        cfg_path,
        "inputs must hold attention_mask exactly when the model has an attention memory (mem_len > 0)",
    )
    have = [(s.input, s.output, s.shape) for s in md.state]
    if have != want:
        diff = next(
            (f"state[{i}] is {h} but the model config gives {w}" for i, (h, w) in enumerate(zip(have, want)) if h != w),
            f"{len(have)} state tensors listed, the model config gives {len(want)}",
        )
        raise HybridError(f"{cfg_path}: {diff}")
    logits = (md.config.get("outputs") or {}).get("logits") if isinstance(md.config.get("outputs"), dict) else None
    _need(
        isinstance(logits, dict)
        and logits.get("shape") == ["batch", "sequence", md.vocab_size]
        and logits.get("dtype") == "float32",
        cfg_path,
        f"outputs.logits must be float32 of shape ['batch', 'sequence', {md.vocab_size}] (the model's vocab_size)",
    )
    ids = (md.config.get("inputs") or {}).get("input_ids") if isinstance(md.config.get("inputs"), dict) else None
    _need(
        isinstance(ids, dict) and ids.get("dtype") == "int64" and ids.get("shape") == ["batch", "sequence"],
        cfg_path,
        "inputs.input_ids must be int64 of shape ['batch', 'sequence']",
    )


def check_tokenizer(md: ModelDir, tokenizer) -> None:
    """The tokenizer fits the model: the same vocabulary size, and the metric of its kind (bpc is
    bits per byte: byte tokenizers only; ppl: word tokenizers)."""
    if tokenizer.vocab_size != md.vocab_size:
        raise HybridError(
            f"{md.tokenizer_path}: vocabulary of {tokenizer.vocab_size} tokens, but the model has {md.vocab_size}"
        )
    want = "bpc" if tokenizer.kind == "byte" else "ppl"
    if md.metric != want:
        raise HybridError(
            f"{md.path / 'config.json'}: 'metric' is {md.metric!r}, but a {tokenizer.kind} "
            f"tokenizer's metric is {want!r}"
        )
