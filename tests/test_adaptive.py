"""Adaptive input and adaptive softmax: normalised, equal to a full softmax when everything is in the
head, equal to a plain two-level reference otherwise, the fast NLL path equal to the full one, and
an adaptive model trained, exported and scored by the runtime with the same number as PyTorch."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hybrid.runtime.errors import HybridError
from hybrid.train import checkpoint as ck
from hybrid.train.adaptive import AdaptiveInput, AdaptiveLogSoftmax, adaptive_parameters
from hybrid.train.config import ModelConfig, TrainConfig
from hybrid.train.model import HybridLM, count_parameters

WT2 = Path(__file__).parent / "data" / "wikitext-2-sample"


def pair(V=97, d=32, cutoffs=(10, 40), div=2, tied=True, seed=0):
    torch.manual_seed(seed)
    inp = AdaptiveInput(V, d, cutoffs, div)
    out = AdaptiveLogSoftmax(V, d, cutoffs, div, tie=inp if tied else None)
    with torch.no_grad():  # non-zero biases, so that they are tested too
        for b in out.biases:
            b.normal_(0, 0.5)
        if out.cluster_bias is not None:
            out.cluster_bias.normal_(0, 0.5)
    return inp, out


@pytest.mark.parametrize("cutoffs,div", [((), 4), ((5,), 1), ((10, 40), 2), ((3, 20, 60), 4)])
@pytest.mark.parametrize("tied", [True, False])
def test_log_probs_are_normalised(cutoffs, div, tied):
    _, out = pair(cutoffs=cutoffs, div=div, tied=tied)
    lp = out.log_prob(torch.randn(3, 7, 32) * 3)
    assert lp.shape == (3, 7, 97)
    assert torch.allclose(lp.double().exp().sum(-1), torch.ones(3, 7, dtype=torch.float64), atol=1e-5)


def test_all_in_the_head_is_a_full_softmax():
    _, out = pair(V=41, d=16, cutoffs=())
    h = torch.randn(5, 16)
    full = F.log_softmax(F.linear(h, out.weights[0], out.biases[0]), dim=-1)
    assert torch.allclose(out.log_prob(h), full, atol=1e-6)


def reference_log_prob(out: AdaptiveLogSoftmax, h: torch.Tensor) -> np.ndarray:
    """The two-level softmax spelled out in float64, word by word."""
    h = h.double().numpy()
    W = [w.detach().double().numpy() for w in out.weights]
    b = [x.detach().double().numpy() for x in out.biases]
    bounds = out.bounds
    head_w = np.concatenate([W[0]] + ([out.cluster_weight.detach().double().numpy()] if len(bounds) > 1 else []))
    head_b = np.concatenate([b[0]] + ([out.cluster_bias.detach().double().numpy()] if len(bounds) > 1 else []))
    res = np.zeros((h.shape[0], out.vocab_size))
    for r in range(h.shape[0]):
        head = head_w @ h[r] + head_b
        head = head - np.log(np.exp(head - head.max()).sum()) - head.max()
        for w in range(out.vocab_size):
            i = next(k for k, (lo, hi) in enumerate(bounds) if lo <= w < hi)
            if i == 0:
                res[r, w] = head[w]
                continue
            j = out.proj_index[i]
            x = h[r] if j < 0 else out.projs[j].detach().double().numpy().T @ h[r]
            tail = W[i] @ x + b[i]
            tail = tail - np.log(np.exp(tail - tail.max()).sum()) - tail.max()
            res[r, w] = head[bounds[0][1] + i - 1] + tail[w - bounds[i][0]]
    return res


@pytest.mark.parametrize("tied", [True, False])
def test_clusters_match_a_plain_two_level_reference(tied):
    _, out = pair(cutoffs=(10, 40), div=2, tied=tied)
    h = torch.randn(4, 32)
    assert np.allclose(out.log_prob(h).detach().double().numpy(), reference_log_prob(out, h), atol=1e-5)


def test_fast_nll_equals_the_full_log_prob_and_its_gradients():
    _, out = pair(cutoffs=(3, 20, 60), div=2, tied=False)
    h = torch.randn(6, 9, 32, requires_grad=True)
    t = torch.randint(0, 97, (6, 9))
    t[0, :4] = torch.tensor([0, 5, 30, 96])  # every cluster present
    full = -out.log_prob(h).gather(-1, t[..., None])[..., 0]
    fast = out.nll(h, t)
    assert torch.allclose(fast, full, atol=1e-5)
    g_full = torch.autograd.grad(full.sum(), [h, *out.parameters()])
    g_fast = torch.autograd.grad(fast.sum(), [h, *out.parameters()])
    for a, b in zip(g_full, g_fast):
        assert torch.allclose(a, b, atol=1e-5)


def test_adaptive_input_is_a_per_token_lookup():
    inp, _ = pair(cutoffs=(10, 40), div=2)
    ids = torch.tensor([[0, 9, 10, 39, 40, 96, 55, 3]])
    got = inp(ids)
    for k, w in enumerate(ids[0].tolist()):
        i = next(c for c, (lo, hi) in enumerate(inp.bounds) if lo <= w < hi)
        v = inp.tables[i].weight[w - inp.bounds[i][0]]
        p = inp.proj(i)
        want = v if p is None else p @ v
        assert torch.allclose(got[0, k], want, atol=1e-6)


def small_cfg(V, **kw):
    base = dict(
        vocab_size=V,
        d_model=32,
        n_heads=2,
        d_inner=64,
        pattern="QFAF",
        dropout=0.0,
        mem_len=8,
        adaptive_cutoffs=[20, 120],
        adaptive_div=2,
    )
    base.update(kw)
    return ModelConfig(**base)


def test_model_outputs_log_probs_and_counts_parameters_once(tmp_path):
    cfg = small_cfg(500)
    model = HybridLM(cfg).eval()
    x = torch.randint(0, 500, (2, 11))
    lp, _ = model(x)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 11), atol=1e-5)
    nll, _ = model(x, targets=x)
    assert torch.allclose(nll, -lp.gather(-1, x[..., None])[..., 0], atol=1e-5)
    counts = count_parameters(model)
    assert counts["total"] == sum(counts[k] for k in ("embedding", "attention", "feed-forward", "qrnn", "other"))
    assert counts["embedding"] + counts["other"] - 2 * 32 == adaptive_parameters(500, 32, [20, 120], 2)
    # Tied tables are stored once and come back tied.
    (tmp_path / "w.safetensors").write_bytes(ck.encode_weights(model))
    again = HybridLM(cfg).eval()
    ck.load_weights(again, tmp_path / "w.safetensors")
    assert torch.equal(again(x)[0], lp)
    assert again.head.weights[1] is again.embed.tables[1].weight


@pytest.mark.parametrize(
    "kw,needle",
    [
        (dict(adaptive_cutoffs=[50, 20]), "must increase strictly"),
        (dict(adaptive_cutoffs=[20, 500]), "must increase strictly"),
        (dict(adaptive_cutoffs=[0, 20]), "must increase strictly"),
        (dict(adaptive_cutoffs="20"), "list of integers"),
        (dict(adaptive_div=0), "adaptive_div must be an integer >= 1"),
        (dict(adaptive_cutoffs=[10, 20, 30], adaptive_div=8), "no dimensions"),
    ],
)
def test_bad_adaptive_config_is_a_clear_error(kw, needle):
    with pytest.raises(HybridError, match=needle):
        small_cfg(500, **kw)


def test_wikitext_model_trains_exports_and_scores_the_same_in_the_runtime(tmp_path):
    """Trained in PyTorch, exported to ONNX with full log-probabilities, scored by the runtime on the
    test file: the same perplexity as PyTorch on the cached test split."""
    from hybrid.export.exporter import export_run
    from hybrid.runtime.evaluate import evaluate as runtime_evaluate
    from hybrid.runtime.model import Model
    from hybrid.runtime.textfile import open_text
    from hybrid.train.sources import load_source
    from hybrid.train.trainer import evaluate, load_run_model, train

    corpus = load_source("wikitext-2", WT2, cache_dir=tmp_path / "cache", progress=False)
    V = corpus.tokenizer.vocab_size
    cfg = small_cfg(V, adaptive_cutoffs=[30, 200], adaptive_div=2)
    tc = TrainConfig(
        batch_size=4, seq_len=16, steps=30, lr=3e-3, warmup_steps=3, eval_every=1000, save_every=1000, log_every=10
    )
    result = train(tmp_path / "run", cfg, tc, corpus, progress=False, log=lambda *a: None)
    assert result.metric == "ppl" and result.valid_metric < V  # learnt something: better than uniform
    probe = (WT2 / "wiki.valid.tokens").read_text(encoding="utf-8")
    report = export_run(tmp_path / "run", tmp_path / "model", quantize="int8", probe_text=probe, progress=False)
    assert report["ok"], report["failures"]

    model, _ = load_run_model(tmp_path / "run")
    nll, n = evaluate(model, corpus.test, 4, 16)
    rt = Model(tmp_path / "model", variant="fp32")
    source = open_text(WT2 / "wiki.test.tokens", rt.tokenizer)  # the runtime's own tokenization of the file
    try:
        res = runtime_evaluate(rt, source, streams=4, segment=16)
    finally:
        source.close()
    assert res["tokens"] == n == len(corpus.test) - 1
    assert res["ppl"] == pytest.approx(np.exp(nll), rel=1e-5)
    q = runtime_evaluate(Model(tmp_path / "model", variant="int8"), np.asarray(corpus.test), streams=4, segment=16)
    assert q["ppl"] == pytest.approx(res["ppl"], rel=0.05)
