"""The exporter's self-check: is the ONNX graph the PyTorch model, and what did quantization cost?

Two parts, both on a probe text:
  parity   PyTorch and onnxruntime fp32 logits on the first L tokens for several L (1, 7, 512,
           2048 where the probe allows), the same text fed to onnxruntime in one call and in
           many calls with carried state, and a batch of 4 streams in one call.
  quality  the probe scored as parallel streams in segments with carried state (as training
           validates): bpc (or perplexity) of PyTorch, ONNX fp32 and every quantized model, and for
           each quantized model its mean KL divergence from fp32 and top-1 agreement with fp32
           (the numbers llama.cpp's perplexity tool reports).
Both sides run through one interface, `step(ids, state) -> (logits, state)` on numpy arrays.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from hybrid.export.signature import graph_state_shapes, output_name, uses_attention_mask
from hybrid.runtime.attention_mask import PAST_MASK, split_past_mask
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
        logits, new = self.model(torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)),
                                 {k: torch.from_numpy(v) for k, v in state.items()})
        return logits.numpy(), {k: v.numpy() for k, v in new.items()}


class OrtStepper:
    """The graph's state (signature.py) plus, for a model with an attention memory, the float
    past_mask that the graph's attention_mask is made of (as the runtime does it)."""

    def __init__(self, path: Path, model: HybridLM):
        from hybrid.export.quantize import load_session

        self.session = load_session(path)
        self.model = model
        self.names = list(graph_state_shapes(model, 1))
        self.outputs = ["logits", *(output_name(n) for n in self.names)]

    def zero_state(self, batch: int) -> dict[str, np.ndarray]:
        state = {k: np.zeros(s, np.float32) for k, s in graph_state_shapes(self.model, batch).items()}
        if uses_attention_mask(self.model):
            state[PAST_MASK] = np.zeros((batch, self.model.cfg.mem_len), np.float32)
        return state

    def step(self, ids: np.ndarray, state: dict[str, np.ndarray]):
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        feed, past_mask = split_past_mask(state, ids.shape[1]) if PAST_MASK in state else (state, None)
        out = self.session.run(self.outputs, {"input_ids": ids, **feed})
        new = dict(zip(self.names, out[1:]))
        if past_mask is not None:
            new[PAST_MASK] = past_mask
        return out[0], new


def run_chunks(stepper, ids: np.ndarray, sizes) -> np.ndarray:
    """Logits of `ids` [B, T] fed in consecutive chunks of the given sizes, state carried."""
    state, out, p = stepper.zero_state(ids.shape[0]), [], 0
    for n in sizes:
        if p >= ids.shape[1]:
            break
        logits, state = stepper.step(ids[:, p:p + n], state)
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
    batch = np.stack([tokens[i * T:(i + 1) * T] for i in range(BATCH_CHECK)]) if n >= BATCH_CHECK \
        else np.repeat(tokens[None, :T], BATCH_CHECK, 0)
    got = fp32.step(batch, fp32.zero_state(BATCH_CHECK))[0]
    ref = torch_model.step(batch, torch_model.zero_state(BATCH_CHECK))[0]
    one = np.concatenate([fp32.step(batch[i:i + 1], fp32.zero_state(1))[0] for i in range(BATCH_CHECK)])
    d_batch, d_batch_one = float(np.abs(got - ref).max()), float(np.abs(got - one).max())
    worst_rel = max(worst_rel, _rel(d_batch, ref), _rel(d_batch_one, one))

    return {"lengths": per_length,
            "chunked_vs_whole": {"tokens": L, "max_abs": d_chunk, "vs_pytorch_max_abs": d_chunk_ref},
            "batch": {"batch": BATCH_CHECK, "tokens": T, "vs_pytorch_max_abs": d_batch,
                      "vs_batch1_max_abs": d_batch_one},
            "max_rel": worst_rel}


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)  # float32 is plenty; the sums below accumulate in float64
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def stream_layout(n_tokens: int, streams: int, seg_len: int) -> tuple[int, int, int]:
    """(streams, stream length, segment length) for scoring n_tokens as parallel streams."""
    streams = max(1, min(streams, (n_tokens - 1) // 2))
    return streams, (n_tokens - 1) // streams, seg_len


def quality(steppers: dict, tokens: np.ndarray, streams: int, seg_len: int) -> dict:
    """Mean NLL of each stepper on `tokens`, and KL / top-1 agreement of each one against 'fp32'.

    The probe is cut into `streams` contiguous streams scored side by side, `seg_len` tokens per
    call, state carried: every model sees exactly the same inputs.
    """
    B, L, T = stream_layout(len(tokens), streams, seg_len)
    x = tokens[:B * L].reshape(B, L)
    y = tokens[1:B * L + 1].reshape(B, L)
    states = {k: s.zero_state(B) for k, s in steppers.items()}
    nll = {k: 0.0 for k in steppers}
    kl = {k: 0.0 for k in steppers if k != "fp32"}
    top1 = {k: 0 for k in kl}
    for p in range(0, L, T):
        xs, ys = x[:, p:p + T], y[:, p:p + T]
        logp = {}
        for k, s in steppers.items():
            logits, states[k] = s.step(xs, states[k])
            logp[k] = _log_softmax(logits)
            nll[k] -= float(np.take_along_axis(logp[k], ys[..., None], -1).sum(dtype=np.float64))
        if "fp32" in logp:
            ref = logp["fp32"]
            for k in kl:
                kl[k] += float((np.exp(ref) * (ref - logp[k])).sum(dtype=np.float64))
                top1[k] += int((ref.argmax(-1) == logp[k].argmax(-1)).sum())
    n = B * L
    out = {k: {"nll": v / n} for k, v in nll.items()}
    for k in kl:
        out[k]["kl_vs_fp32"] = max(kl[k] / n, 0.0)  # KL >= 0: rounding can leave a near-zero sum just below
        out[k]["top1_vs_fp32"] = top1[k] / n
    return {"tokens": n, "streams": B, "segment": T, "variants": out}


def metric_of(nll: float, metric: str) -> float:
    return nll / math.log(2) if metric == "bpc" else math.exp(min(nll, 50.0))
