"""An exported model on onnxruntime: the graph, its state, and a buffer-reusing stepper.

    model = Model("model_dir", variant="int8", threads=4)
    logits, state = model.forward(ids, model.initial_state(batch))   # the plain path
    stepper = model.stepper(state)                                   # token by token, IOBinding
    logits = stepper.step(token)

Needs numpy and onnxruntime only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np
import onnxruntime as ort

from hybrid.runtime.safe_onnx import check_external_data
from hybrid.runtime.errors import HybridError, first_line, is_integer
from hybrid.runtime.attention_mask import PAST_LENGTH, PAST_MASK, checked_length, ring_feed, split_past_mask
from hybrid.runtime.limits import MAX_THREADS, check_fits, forward_bytes
from hybrid.runtime.modeldir import ATTENTION_MASK, ModelDir, check_tokenizer, open_model_dir
from hybrid.runtime.textfile import check_token_range
from hybrid.runtime.tokenizer import load_tokenizer

LARGE = 1 << 28  # bytes; reading the free memory costs a file read: only larger requests are checked
if TYPE_CHECKING:
    from hybrid.runtime.session import Session
    from hybrid.runtime.stepper import Stepper

# Keyed by graph input name (past_key_values.<i>.<kind>), and for models with an attention memory
# past_length [B, 1] (version 3) or past_mask [B, mem_len] (a graph input in version 1, kept by the
# runtime in version 2): see attention_mask.py.
State = dict[str, np.ndarray]

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "dml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
}


def resolve_provider(name: str) -> str:
    if not isinstance(name, str):
        raise HybridError(f"provider must be a name such as 'cpu' or 'cuda', got {name!r}")
    full = PROVIDERS.get(name.lower(), name)
    have = ort.get_available_providers()
    if full not in have:
        raise HybridError(
            f"execution provider {name!r} is not available in this onnxruntime (available: {', '.join(have)})"
        )
    return full


def make_session(path: Path, threads: int = 0, provider: str = "cpu") -> ort.InferenceSession:
    """An InferenceSession with all graph optimisations and `threads` intra-op threads (0 = default)."""
    if not is_integer(threads) or not 0 <= threads <= MAX_THREADS:
        raise HybridError(
            f"threads must be 0 (onnxruntime's default) or a positive integer up to {MAX_THREADS}, got {threads!r}"
        )
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    # onnxruntime's warnings are for developers, and its errors reach the caller as exceptions
    # (turned into one HybridError line here): its log would only print them twice.
    opts.log_severity_level = 4
    # Masked attention scores are -inf: exp() of them goes through denormal numbers, which make
    # Softmax 4-5x slower on x86. Flushing denormals to zero changes no logit that matters.
    opts.add_session_config_entry("session.set_denormal_as_zero", "1")
    check_external_data(path)  # a model must not read weights from outside its own directory
    providers = [resolve_provider(provider)]
    if providers[0] != "CPUExecutionProvider":
        providers.append("CPUExecutionProvider")  # for the nodes the accelerator lacks
    try:
        return ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        raise HybridError(f"{path}: onnxruntime cannot load this model ({first_line(e)})") from None


class Model:
    """One variant of an exported model directory, loaded into onnxruntime."""

    def __init__(
        self,
        path: str | Path,
        variant: str = "auto",
        threads: int = 0,
        provider: str = "cpu",
        file_format: str = "onnx",
    ):
        if not isinstance(path, (str, Path)):
            raise HybridError(f"a model directory path is needed, got {type(path).__name__}")
        self.dir: ModelDir = open_model_dir(path)
        self.variant = self.dir.pick(variant, file_format)
        self.file_format = file_format
        self.path = self.dir.file(self.variant, file_format)
        self.tokenizer = load_tokenizer(self.dir.tokenizer_path)
        check_tokenizer(self.dir, self.tokenizer)
        check_fits(2 * self.path.stat().st_size, f"loading {self.path}")  # the file, and the session's copy
        self.threads, self.provider = threads, provider
        self.ort = make_session(self.path, threads, provider)
        self.state_specs = self.dir.state
        self.mask_len = self.dir.mask_len  # version 2: the graph takes an attention_mask (attention_mask.py)
        self.ring_len = self.dir.ring_len  # version 3: likewise, and the memory is a ring written in place
        self.output_names = ["logits"] + [s.output for s in self.state_specs]
        self._check_graph()

    def _check_graph(self) -> None:
        inputs = {i.name for i in self.ort.get_inputs()}
        outputs = {o.name for o in self.ort.get_outputs()}
        want_in = {"input_ids"} | {s.input for s in self.state_specs} | ({ATTENTION_MASK} if self.takes_mask else set())
        want_out = {"logits"} | {s.output for s in self.state_specs}
        if inputs != want_in or not want_out <= outputs:
            missing = sorted((want_in - inputs) | (want_out - outputs))
            extra = sorted(inputs - want_in)
            raise HybridError(
                f"{self.path}: graph does not match config.json (missing {missing[:3]}, unexpected inputs {extra[:3]})"
            )
        graph = {i.name: i.shape for i in self.ort.get_inputs()}
        for spec in self.state_specs:
            fixed = graph[spec.input][1:]  # the batch dimension is free
            if len(fixed) != len(spec.shape) - 1 or any(
                isinstance(g, int) and g != want for g, want in zip(fixed, spec.shape[1:])
            ):
                raise HybridError(
                    f"{self.path}: state {spec.input!r} is {['batch', *fixed]} in the graph "
                    f"but {list(spec.shape)} in config.json"
                )
        self._check_order_and_logits()

    def _check_order_and_logits(self) -> None:
        """The rest of the contract: inputs and outputs in config.json's order, input_ids int64,
        float state, and logits [batch, sequence, vocab_size] (tried on one token when the graph
        leaves the vocabulary dimension open)."""
        ins, outs = self.ort.get_inputs(), self.ort.get_outputs()
        ids_in = ["input_ids"] + ([ATTENTION_MASK] if self.takes_mask else [])  # int64 inputs
        order_in = ids_in + [s.input for s in self.state_specs]
        order_out = ["logits"] + [s.output for s in self.state_specs]
        if [i.name for i in ins] != order_in or [o.name for o in outs][: len(order_out)] != order_out:
            raise HybridError(f"{self.path}: the graph's inputs and outputs are not in config.json's order")
        types = {i.name: i.type for i in ins} | {o.name: o.type for o in outs}
        bad = [n for n in order_in[len(ids_in) :] + order_out if types[n] != "tensor(float)"]
        not_int = [n for n in ids_in if types[n] != "tensor(int64)"]
        if not_int or bad:
            raise HybridError(
                f"{self.path}: {not_int[0] + ' is not int64' if not_int else bad[0] + ' is not float32'} "
                f"in the graph, as config.json states"
            )
        shape = outs[0].shape
        vocab = shape[-1] if len(shape) == 3 else None
        if not isinstance(vocab, int) and len(shape) == 3:
            logits, _ = self.forward(np.zeros((1, 1), dtype=np.int64), self.initial_state(1))
            vocab = logits.shape[-1]
        if vocab != self.vocab_size:
            raise HybridError(
                f"{self.path}: the graph's logits are {list(shape)}, but config.json has "
                f"vocab_size {self.vocab_size}; the graph is not this directory's model"
            )

    # -- facts -----------------------------------------------------------------------------------
    @property
    def takes_mask(self) -> bool:
        """The graph takes an attention_mask (versions 2 and 3, a model with an attention memory)."""
        return bool(self.mask_len or self.ring_len)

    @property
    def runtime_state(self) -> str | None:
        """The state entry the runtime keeps beside the graph's: past_length, past_mask, or none."""
        return PAST_LENGTH if self.ring_len else PAST_MASK if self.mask_len else None

    @property
    def vocab_size(self) -> int:
        return self.dir.vocab_size

    @property
    def metric(self) -> str:
        return self.dir.metric

    def __repr__(self) -> str:
        return f"Model({str(self.dir.path)!r}, variant={self.variant!r}, metric={self.metric!r})"

    # -- the plain path: numpy in, numpy out -------------------------------------------------------
    def initial_state(self, batch: int = 1) -> State:
        """Zeros for every state tensor: a fresh stream (an all-zero past_mask is an empty memory)."""
        if not is_integer(batch) or batch <= 0:
            raise HybridError(f"batch must be a positive integer, got {batch!r}")
        need = self.dir.state_bytes(int(batch))
        if need > LARGE:
            check_fits(need, f"a state for batch {batch}")
        state = {s.input: np.zeros((batch, *s.shape[1:]), dtype=np.float32) for s in self.state_specs}
        if self.ring_len:
            state[PAST_LENGTH] = np.zeros((batch, 1), dtype=np.float32)
        elif self.mask_len:
            state[PAST_MASK] = np.zeros((batch, self.mask_len), dtype=np.float32)
        return state

    def forward(self, ids: np.ndarray, state: State, in_place: bool = False) -> tuple[np.ndarray, State]:
        """logits [B, T, vocab] and the state after these T tokens; `ids` is [B, T] integers in
        [0, vocab_size), `state` as initial_state(B) gives it. `in_place`: a version-3 graph may
        write the attention memory into `state`'s own arrays (no copy of it; `state` is then
        spent: keep only the returned one), as the evaluation and a session's feeding do."""
        ids = self._checked_ids(ids, state)
        feed, kept = self.graph_inputs(ids, state)
        try:
            if in_place and self.ring_len:
                outs = self._run_in_place(feed)
            else:
                outs = self.ort.run(self.output_names, feed)
        except Exception as e:  # onnxruntime's own exception types: one line, as at load
            raise HybridError(f"{self.path}: onnxruntime failed to run the model ({first_line(e)})") from None
        new_state = {s.input: o for s, o in zip(self.state_specs, outs[1:])}
        if kept is not None:
            new_state[self.runtime_state] = kept
        return outs[0], new_state

    def _run_in_place(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One run with each attention key/value array bound as both past and present (one
        OrtValue over the array's memory: the graph writes the call's keys and values into it),
        the other outputs new."""
        io, memory = self.ort.io_binding(), {}
        io.bind_output("logits")
        in_place = {spec.input for spec in self.state_specs if spec.memory}
        for name, value in feed.items():  # input_ids, attention_mask and the rest of the state
            if name not in in_place:
                io.bind_cpu_input(name, value)
        for spec in self.state_specs:
            if spec.memory:
                array = np.ascontiguousarray(feed[spec.input], dtype=np.float32)
                memory[spec.input] = (array, ort.OrtValue.ortvalue_from_numpy(array))
                io.bind_ortvalue_input(spec.input, memory[spec.input][1])
                io.bind_ortvalue_output(spec.output, memory[spec.input][1])
            else:
                io.bind_output(spec.output)
        self.ort.run_with_iobinding(io)
        outs = io.get_outputs()
        return [outs[0].numpy()] + [
            memory[spec.input][0] if spec.input in memory else value.numpy()
            for spec, value in zip(self.state_specs, outs[1:])
        ]

    def graph_inputs(self, ids: np.ndarray, state: State) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """(the graph's inputs for int64 `ids` [B, T] from `state`, with the attention_mask the
        format version needs; the runtime's own state entry after the call, or None)."""
        feed, kept = state, None
        if self.ring_len:
            feed, kept = ring_feed(state, ids.shape[1], self.ring_len)
        elif self.mask_len:
            feed, kept = split_past_mask(state, ids.shape[1])
        return {"input_ids": ids, **feed}, kept

    def _checked_ids(self, ids, state) -> np.ndarray:
        """ids as contiguous int64 [B, T], refused in one line when they are not integers in range,
        the state does not belong to this model and batch, or the call would not fit in memory."""
        arr = np.asarray(ids)
        if arr.ndim != 2 or (arr.size and arr.dtype.kind not in "iu"):
            raise HybridError(f"ids must be a [batch, tokens] array of integers, got {arr.dtype} of shape {arr.shape}")
        names = {s.input for s in self.state_specs} | ({self.runtime_state} if self.runtime_state else set())
        if (
            not isinstance(state, dict)
            or set(state) != names
            or any(getattr(v, "shape", (None,))[0] != arr.shape[0] for v in state.values())
        ):
            raise HybridError(
                f"state must be this model's state for batch {arr.shape[0]} "
                f"(as initial_state({arr.shape[0]}) or forward() returns it)"
            )
        if self.ring_len:
            checked_length(state[PAST_LENGTH], self.ring_len)
        need = forward_bytes(self.dir.model, arr.shape[0], arr.shape[1])
        if need > LARGE:
            check_fits(need, f"a forward call on {arr.shape[0]} x {arr.shape[1]} tokens")
        check_token_range(arr, self.vocab_size)
        return np.ascontiguousarray(arr, dtype=np.int64)

    def forward_segments(
        self, ids: np.ndarray, state: State, segment: int = 128, in_place: bool = False
    ) -> Iterator[tuple[np.ndarray, State]]:
        """forward() over [B, T] ids in segments of at most `segment` tokens, carrying state,
        so memory stays bounded however long T is. Yields (logits of the segment, state after it).
        `in_place` as forward()'s: every yielded state is then spent by the next segment."""
        for p in range(0, ids.shape[1], segment):
            logits, state = self.forward(ids[:, p : p + segment], state, in_place=in_place)
            yield logits, state

    # -- the fast path for generation ----------------------------------------------------------------
    def stepper(self, state: State | None = None) -> "Stepper":
        """Token-by-token generation from `state` (copied in): runtime/stepper.py."""
        from hybrid.runtime.stepper import Stepper

        return Stepper(self, state)

    # -- conveniences for apps (see session.py / evaluate.py) -------------------------------------------
    def session(self) -> "Session":
        """A stateful stream: feed text incrementally, read next-token probabilities, generate."""
        from hybrid.runtime.session import Session

        return Session(self)

    def evaluate(self, text: str, streams: int = 16, segment: int = 128) -> dict:
        """Bits per character (byte models) or perplexity (word models) of `text`; see evaluate.py."""
        from hybrid.runtime.evaluate import ArraySource, evaluate

        if not isinstance(text, str):
            raise HybridError(
                f"evaluate() takes a str, got {type(text).__name__} (token ids: hybrid.runtime.evaluate.evaluate)"
            )
        return evaluate(self, ArraySource(self.tokenizer.encode(text)), streams=streams, segment=segment)

    def generate(
        self,
        prompt: str = "",
        max_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Iterable[str] = (),
    ) -> str:
        """The continuation of `prompt` as one string; options as in Session.stream."""
        return "".join(self.stream(prompt, max_tokens, temperature, top_k, top_p, seed, stop))

    def stream(
        self,
        prompt: str = "",
        max_tokens: int = 200,
        temperature: float = 0.8,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Iterable[str] = (),
    ) -> Iterator[str]:
        """The continuation of `prompt`, piece by piece as it is generated."""
        s = self.session()
        s.feed(prompt)
        return s.stream(
            max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop=stop, final=True
        )


def load_model(
    path: str | Path, variant: str = "auto", threads: int = 0, provider: str = "cpu", file_format: str = "onnx"
) -> Model:
    """Load an exported model directory. variant: auto (int8 if present, else fp32), fp32, int8 or int4;
    threads: onnxruntime intra-op threads (0 = its default); provider: cpu, cuda, ... or a full
    onnxruntime execution-provider name; file_format: onnx, or ort for the ORT-format files of
    `hybrid export --ort` (what onnxruntime-mobile runs)."""
    return Model(path, variant=variant, threads=threads, provider=provider, file_format=file_format)
