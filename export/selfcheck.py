"""The exporter's self-check: is the ONNX graph the PyTorch model, and what did quantization cost?

Two parts, both on a probe text:
  parity   PyTorch and onnxruntime fp32 logits on the first L tokens for several L (1, 7, 512,
           2048 where the probe allows), the same text fed to onnxruntime in one call and in
           many calls with carried state, and a batch of 4 streams in one call.
  quality  the probe scored by the evaluation protocol (runtime/scoring.py: parallel streams in
           segments with carried state, as training validates and `hybrid eval` scores): bpc (or
           perplexity) of PyTorch, ONNX fp32 and every quantized model, and for each quantized
           model its mean KL divergence from fp32 and top-1 agreement with fp32 (the numbers
           llama.cpp's perplexity tool reports), all through the runtime's own evaluate().
The parity checks run both sides through one interface, `step(ids, state) -> (logits, state)`
on numpy arrays; the ONNX side is the runtime's Model.
"""

from __future__ import annotations

import numpy as np
import torch

from hybrid.runtime.model import Model
from hybrid.train.model import HybridLM

PARITY_LENGTHS = (1, 7, 512, 2048)
BATCH_CHECK = 4


class TorchStepper:
    def __init__(self, model: HybridLM):
        self.model = model.float().eval()
        self.names = list(model.state_shapes(1))

    def zero_state(self, batch: int) -> dict[str, np.ndarray]:
        return {k: np.zeros(s, np.float32) for k, s in self.model.state_shapes(batch).items()}

    @torch.no_grad()
    def step(self, ids: np.ndarray, state: dict[str, np.ndarray]):
        logits, new = self.model(
            torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)),
            {k: torch.from_numpy(v) for k, v in state.items()},
        )
        return logits.numpy(), {k: v.numpy() for k, v in new.items()}


class OrtStepper:
    """The runtime's own Model (hybrid.runtime.model) behind the stepper interface."""

    def __init__(self, model: Model):
        self.model = model
        self.names = [spec.input for spec in model.state_specs]

    def zero_state(self, batch: int) -> dict[str, np.ndarray]:
        return self.model.initial_state(batch)

    def step(self, ids: np.ndarray, state: dict[str, np.ndarray]):
        return self.model.forward(ids, state)


class TorchModel:
    """The PyTorch model behind the runtime Model's interface (initial_state, forward and the facts
    evaluate() reads, taken from the exported model `like`), so that the runtime's evaluate()
    scores it exactly as it scores an exported variant."""

    variant = "pytorch"

    def __init__(self, model: HybridLM, like: Model):
        self.stepper = TorchStepper(model)
        self.dir, self.tokenizer, self.vocab_size, self.metric = like.dir, like.tokenizer, like.vocab_size, like.metric

    def initial_state(self, batch: int) -> dict[str, np.ndarray]:
        return self.stepper.zero_state(batch)

    def forward(self, ids: np.ndarray, state: dict[str, np.ndarray], in_place: bool = False):
        return self.stepper.step(ids, state)  # new tensors each call: in_place changes nothing here


def run_chunks(stepper, ids: np.ndarray, sizes) -> np.ndarray:
    """Logits of `ids` [B, T] fed in consecutive chunks of the given sizes, state carried."""
    state, out, p = stepper.zero_state(ids.shape[0]), [], 0
    for n in sizes:
        if p >= ids.shape[1]:
            break
        logits, state = stepper.step(ids[:, p : p + n], state)
        out.append(logits)
        p += n
    if p < ids.shape[1]:
        logits, state = stepper.step(ids[:, p:], state)
        out.append(logits)
    return np.concatenate(out, axis=1)


def _rel(diff: float, ref: np.ndarray) -> float:
    return float(diff / max(float(np.abs(ref).max()), 1e-30))


def parity(torch_model: TorchStepper, fp32: OrtStepper, tokens: np.ndarray, mem_len: int | None) -> dict:
    """Max |logit difference| between PyTorch and onnxruntime fp32, and of chunked vs whole calls.

    Chunked and whole calls agree only while the attention memory covers the whole context, so
    that check uses at most `mem_len` tokens (any length for a model without attention).
    """
    n = len(tokens)
    lengths = sorted({L for L in PARITY_LENGTHS if L <= n} | ({n} if n < max(PARITY_LENGTHS) else set()))
    per_length, worst_rel = {}, 0.0
    for L in lengths:
        ids = tokens[None, :L]
        ref = torch_model.step(ids, torch_model.zero_state(1))[0]
        got = fp32.step(ids, fp32.zero_state(1))[0]
        d = float(np.abs(ref - got).max())
        per_length[str(L)] = {"max_abs": d, "rel": _rel(d, ref)}
        worst_rel = max(worst_rel, _rel(d, ref))

    # One call vs many calls with carried state (1, 2, 3, ... tokens per call), both vs PyTorch.
    L = min(n, 512 if mem_len is None else max(1, mem_len))
    ids = tokens[None, :L]
    whole = fp32.step(ids, fp32.zero_state(1))[0]
    chunked = run_chunks(fp32, ids, range(1, L + 1))
    ref = run_chunks(torch_model, ids, range(1, L + 1))
    d_chunk = float(np.abs(whole - chunked).max())
    d_chunk_ref = float(np.abs(ref - chunked).max())
    worst_rel = max(worst_rel, _rel(d_chunk, whole), _rel(d_chunk_ref, ref))

    # Dynamic batch: 4 different windows of the probe in one call, vs PyTorch and vs batch 1.
    T = max(1, min(64, n // BATCH_CHECK))
    batch = (
        np.stack([tokens[i * T : (i + 1) * T] for i in range(BATCH_CHECK)])
        if n >= BATCH_CHECK
        else np.repeat(tokens[None, :T], BATCH_CHECK, 0)
    )
    got = fp32.step(batch, fp32.zero_state(BATCH_CHECK))[0]
    ref = torch_model.step(batch, torch_model.zero_state(BATCH_CHECK))[0]
    one = np.concatenate([fp32.step(batch[i : i + 1], fp32.zero_state(1))[0] for i in range(BATCH_CHECK)])
    d_batch, d_batch_one = float(np.abs(got - ref).max()), float(np.abs(got - one).max())
    worst_rel = max(worst_rel, _rel(d_batch, ref), _rel(d_batch_one, one))

    return {
        "lengths": per_length,
        "chunked_vs_whole": {"tokens": L, "max_abs": d_chunk, "vs_pytorch_max_abs": d_chunk_ref},
        "batch": {"batch": BATCH_CHECK, "tokens": T, "vs_pytorch_max_abs": d_batch, "vs_batch1_max_abs": d_batch_one},
        "max_rel": worst_rel,
    }


def quality(models: dict, tokens: np.ndarray, streams: int, segment: int) -> dict:
    """Mean NLL of every model on `tokens` ('pytorch', 'fp32', the quantized variants), and KL /
    top-1 agreement of each one but fp32 against fp32.

    Every one is scored by the runtime's own evaluate() (runtime/scoring.py's protocol: parallel
    streams, segments, carried state), so the report's figures are the ones `hybrid eval` prints
    for the same text, streams and segment length.
    """
    from hybrid.runtime.evaluate import evaluate

    fp32 = models["fp32"]
    ref = evaluate(fp32, tokens, streams=streams, segment=segment)
    out = {}
    for name, model in models.items():
        if name == "fp32":
            out[name] = {"nll": ref["nll"]}
            continue
        r = evaluate(model, tokens, streams=streams, segment=segment, base=fp32)
        out[name] = {"nll": r["nll"], "kl_vs_fp32": r["kl"]["mean"], "top1_vs_fp32": r["kl"]["top1_agreement"]}
    return {"tokens": ref["tokens"], "streams": ref["streams"], "segment": ref["segment"], "variants": out}
