"""Adaptive input embeddings and adaptive softmax for large word vocabularies.

Baevski & Auli 2019 (adaptive input) and Grave et al. 2017 (adaptive softmax), as Transformer-XL
uses them for WikiText-103. The vocabulary, sorted by frequency, is cut into clusters at
`cutoffs`: cluster 0 holds the most frequent words, cluster i the next band. Cluster i has
vectors of size d_i = d_model / div**i, projected to and from d_model, so rare words cost few
parameters: WikiText-103's 267,735 words at d_model 512 with cutoffs (20000, 40000, 200000) and
div 4 take 18.8M parameters instead of 137M.

The output side is a two-level softmax: a head over [cluster-0 words; one token per tail cluster]
and, per tail cluster, a softmax over its words. log p(w) = log p_head(cluster of w) +
log p_cluster(w). `log_prob` returns the full [.., vocab] log-probabilities with plain ops
(MatMul, LogSoftmax, Add, Concat) so it exports to ONNX unchanged; `nll` is the training fast
path that scores only each target's cluster, held to `log_prob` by tests.

With `tie=` the output shares the input's tables and projections (Press & Wolf 2017; Transformer-XL's
tie_weight and tie_projs).

Written plainly rather than with torch.nn.AdaptiveLogSoftmaxWithLoss: that module's full
log-probability path uses in-place index writes and its weights are laid out differently.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def cluster_bounds(vocab_size: int, cutoffs) -> list[tuple[int, int]]:
    """[(lo, hi)] of every cluster: [0, c1), [c1, c2), ..., [c_n, vocab)."""
    edges = [0, *cutoffs, vocab_size]
    return [(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def cluster_dims(d_model: int, n_clusters: int, div: int) -> list[int]:
    return [max(1, d_model // div**i) for i in range(n_clusters)]


class AdaptiveInput(nn.Module):
    """Token ids -> [.., d_model]: cluster i looks up a d_i vector and projects it to d_model.

    Every cluster is looked up for every token (ids clamped into range) and masked: a few small
    matrix products, no data-dependent shapes, so the same graph exports to ONNX.
    """

    def __init__(self, vocab_size: int, d_model: int, cutoffs=(), div: int = 4):
        super().__init__()
        self.vocab_size, self.d_model = vocab_size, d_model
        self.bounds = cluster_bounds(vocab_size, cutoffs)
        self.dims = cluster_dims(d_model, len(self.bounds), div)
        self.tables = nn.ModuleList(nn.Embedding(hi - lo, d) for (lo, hi), d in zip(self.bounds, self.dims))
        # Projections d_i -> d_model as raw [d_model, d_i] matrices (F.linear's layout); none where
        # d_i == d_model. Raw parameters, so HybridLM's Linear init does not rescale them: std
        # 1/sqrt(d_i) keeps a projected vector at the table's scale.
        self.projs = nn.ParameterList()
        self.proj_index: list[int] = []
        for d in self.dims:
            if d == d_model:
                self.proj_index.append(-1)
            else:
                self.proj_index.append(len(self.projs))
                self.projs.append(nn.Parameter(torch.randn(d_model, d) / math.sqrt(d)))

    def proj(self, i: int) -> torch.Tensor | None:
        j = self.proj_index[i]
        return None if j < 0 else self.projs[j]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if len(self.bounds) == 1:
            return self.tables[0](ids)
        out = None
        for i, (lo, hi) in enumerate(self.bounds):
            e = self.tables[i]((ids - lo).clamp(0, hi - lo - 1))
            p = self.proj(i)
            if p is not None:
                e = F.linear(e, p)
            inside = ((ids >= lo) & (ids < hi)).unsqueeze(-1).to(e.dtype)
            out = e * inside if out is None else out + e * inside
        return out


class AdaptiveLogSoftmax(nn.Module):
    """Hidden [.., d_model] -> log-probabilities over the vocabulary, by clusters."""

    def __init__(self, vocab_size: int, d_model: int, cutoffs=(), div: int = 4, tie: AdaptiveInput | None = None):
        super().__init__()
        self.vocab_size, self.d_model = vocab_size, d_model
        self.bounds = cluster_bounds(vocab_size, cutoffs)
        self.dims = cluster_dims(d_model, len(self.bounds), div)
        self.shortlist = self.bounds[0][1]
        n_tail = len(self.bounds) - 1
        if tie is not None and (tie.bounds != self.bounds or tie.dims != self.dims):
            raise ValueError("tied adaptive input has different clusters")
        self.weights = nn.ParameterList()
        self.projs = nn.ParameterList()
        self.proj_index: list[int] = []
        for i, ((lo, hi), d) in enumerate(zip(self.bounds, self.dims)):
            if tie is not None:
                self.weights.append(tie.tables[i].weight)  # the same Parameter: stored once
            else:
                self.weights.append(nn.Parameter(torch.randn(hi - lo, d) * 0.02))
            if d == d_model:
                self.proj_index.append(-1)
                continue
            self.proj_index.append(len(self.projs))
            self.projs.append(tie.proj(i) if tie is not None else nn.Parameter(torch.randn(d_model, d) / math.sqrt(d)))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(hi - lo)) for lo, hi in self.bounds)
        # One head entry per tail cluster: the probability of "the word is in cluster i".
        self.cluster_weight = nn.Parameter(torch.randn(n_tail, d_model) * 0.02) if n_tail else None
        self.cluster_bias = nn.Parameter(torch.zeros(n_tail)) if n_tail else None

    def _project(self, hidden: torch.Tensor, i: int) -> torch.Tensor:
        j = self.proj_index[i]
        # Tied projections map d_i -> d_model on the input side; the output uses their transpose.
        return hidden if j < 0 else hidden @ self.projs[j]

    def _head_logprob(self, hidden: torch.Tensor) -> torch.Tensor:
        w, b = self.weights[0], self.biases[0]
        if self.cluster_weight is not None:
            w = torch.cat([w, self.cluster_weight], dim=0)
            b = torch.cat([b, self.cluster_bias], dim=0)
        return F.log_softmax(F.linear(hidden, w, b), dim=-1)

    def _tail_logprob(self, hidden: torch.Tensor, i: int) -> torch.Tensor:
        return F.log_softmax(F.linear(self._project(hidden, i), self.weights[i], self.biases[i]), dim=-1)

    def log_prob(self, hidden: torch.Tensor) -> torch.Tensor:
        """Full log-probabilities [.., vocab_size]; exp sums to 1 over the last axis."""
        head = self._head_logprob(hidden)
        if len(self.bounds) == 1:
            return head
        parts = [head[..., : self.shortlist]]
        for i in range(1, len(self.bounds)):
            k = self.shortlist + i - 1
            parts.append(self._tail_logprob(hidden, i) + head[..., k : k + 1])
        return torch.cat(parts, dim=-1)

    forward = log_prob

    def nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """-log p(target) for every position, computing a tail cluster only for its own targets
        (the training fast path: no [.., vocab] tensor). `log_prob` is its reference."""
        shape = targets.shape
        h = hidden.reshape(-1, hidden.shape[-1])
        t = targets.reshape(-1)
        head = self._head_logprob(h)
        out = torch.zeros(t.shape, dtype=head.dtype, device=head.device)
        lo0, hi0 = self.bounds[0]
        short = t < hi0
        rows = short.nonzero(as_tuple=True)[0]
        out = out.index_put((rows,), -head[rows, t[rows]])
        for i in range(1, len(self.bounds)):
            lo, hi = self.bounds[i]
            rows = ((t >= lo) & (t < hi)).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            tail = self._tail_logprob(h[rows], i)
            lp = head[rows, self.shortlist + i - 1] + tail.gather(1, (t[rows] - lo)[:, None])[:, 0]
            out = out.index_put((rows,), -lp)
        return out.reshape(shape)


def adaptive_parameters(vocab_size: int, d_model: int, cutoffs=(), div: int = 4, tied: bool = True) -> int:
    """Parameter count of AdaptiveInput + AdaptiveLogSoftmax, without building them."""
    bounds = cluster_bounds(vocab_size, cutoffs)
    dims = cluster_dims(d_model, len(bounds), div)
    tables = sum((hi - lo) * d for (lo, hi), d in zip(bounds, dims))
    projs = sum(d_model * d for d in dims if d != d_model)
    n_tail = len(bounds) - 1
    head_extra = vocab_size + n_tail * (d_model + 1)  # biases, cluster rows
    return (tables + projs) * (1 if tied else 2) + head_extra
