"""kv_attention (train/ops/kv_attention) and the fused attention step of the exported graph: the
reference equals the model's ring step, onnxruntime's GroupQueryAttention equals the reference
(in place too), and the fused graph equals the plain one wherever the ring stands."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from hybrid.export.fused_attention import translation_table
from hybrid.export.onnx_graph import export_onnx
from hybrid.export.signature import graph_state_shapes, output_name
from hybrid.train.config import ModelConfig
from hybrid.train.model import HybridLM, alibi_slopes
from hybrid.train.ring_memory import fused_inputs, ring_attend, ring_attention_bias
from hybrid.train.ops.kv_attention import kv_attention, kv_attention_naive

H, D_HEAD, M = 2, 8, 12
R = M + 1


def _case(B, n, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, T, 3 * H * D_HEAD, generator=g)
    past_k, past_v = torch.zeros(B, H, R, D_HEAD), torch.zeros(B, H, R, D_HEAD)
    past_k[:, :, :n], past_v[:, :, :n] = (
        torch.randn(B, H, n, D_HEAD, generator=g),
        torch.randn(B, H, n, D_HEAD, generator=g),
    )
    ring_bias, own_bias = ring_attention_bias(alibi_slopes(H), T, M, n)
    f = fused_inputs(alibi_slopes(H), B, T, M, n)
    return qkv, past_k, past_v, ring_bias, own_bias, f


@pytest.mark.parametrize("B,n,T", [(1, 0, 1), (1, 0, 5), (2, 4, 1), (1, 6, 7), (1, 12, 1)])
def test_the_reference_is_the_models_ring_step(B, n, T):
    qkv, past_k, past_v, ring_bias, own_bias, f = _case(B, n, T)
    assert f.first_pass  # these calls fit the ring unwrapped
    y, new_k, new_v = kv_attention_naive(qkv, past_k, past_v, f.bias, f.seqlens_k, f.total_len, H)
    q, k, v = qkv.unflatten(-1, (3 * H, D_HEAD)).transpose(1, 2).split(H, dim=1)
    u = max(n, 1)  # the model reads at least one (masked) slot
    ref = ring_attend(q * D_HEAD**-0.5, k, v, past_k[:, :, :u], past_v[:, :, :u], ring_bias[..., :u], own_bias)
    torch.testing.assert_close(y, ref.transpose(1, 2).reshape(B, T, -1), atol=1e-6, rtol=1e-5)
    assert torch.equal(new_k[:, :, n : n + T], k) and torch.equal(new_v[:, :, n : n + T], v)
    assert torch.equal(new_k[:, :, :n], past_k[:, :, :n]) and torch.equal(new_v[:, :, n + T :], past_v[:, :, n + T :])


@pytest.mark.parametrize("n", [0, 3, M, R, 2 * R + 5])
def test_ring_bias_is_alibi_over_the_visible_slots_and_minus_inf_elsewhere(n):
    """The bias is one product -slope * distance with +inf distances where a key is hidden; held
    here to its definition, position by position (slot s holds the latest p < n with p = s mod R)."""
    T, slopes = 4, alibi_slopes(H)
    ring, own = ring_attention_bias(slopes, T, M, n)
    want_ring = torch.full((1, H, T, R), float("-inf"))
    for s in range(R):
        held = [p for p in range(n) if p % R == s]
        if held and n - held[-1] <= M:
            for t in range(T):
                want_ring[0, :, t, s] = -slopes * (n + t - held[-1])
    want_own = torch.full((1, H, T, T), float("-inf"))
    for t in range(T):
        for j in range(t + 1):
            want_own[0, :, t, j] = -slopes * (t - j)
    assert torch.equal(ring, want_ring) and torch.equal(own, want_own)
    if n + T <= R:  # the fused call's bias: the ring's first n slots, then the call's own keys
        assert torch.equal(fused_inputs(slopes, 1, T, M, n).bias, torch.cat([ring[..., :n], own], dim=-1))


def test_calls_that_do_not_fit_are_not_a_first_pass():
    assert not _case(1, 10, 4)[-1].first_pass  # would wrap the ring
    assert not _case(2, 3, 2)[-1].first_pass  # onnxruntime: batch 1 when T > 1 after earlier tokens
    assert _case(2, 0, 4)[-1].first_pass and _case(3, 5, 1)[-1].first_pass
    with pytest.raises(ValueError, match="do not fit"):
        qkv, past_k, past_v, _, _, f = _case(1, 10, 4)
        kv_attention_naive(qkv, past_k, past_v, f.bias, f.seqlens_k, f.total_len, H)


class _Op(torch.nn.Module):
    def forward(self, qkv, past_k, past_v, bias, seqlens_k, total_len):
        return kv_attention(qkv, past_k, past_v, bias, seqlens_k, total_len, H)


@pytest.mark.parametrize("B,n,T", [(1, 0, 4), (2, 5, 1), (1, 6, 3)])
def test_group_query_attention_equals_the_reference_and_writes_in_place(B, n, T):
    qkv, past_k, past_v, _, _, f = _case(B, n, T, seed=1)
    args = (qkv, past_k, past_v, f.bias, f.seqlens_k, f.total_len)
    names = ["qkv", "past_k", "past_v", "bias", "seqlens_k", "total_len"]
    program = torch.onnx.export(
        _Op(), args, dynamo=True, input_names=names, output_names=["y", "present_k", "present_v"],
        custom_translation_table=translation_table(), verbose=False,
    )  # fmt: skip
    graph = program.model_proto
    assert [(n.domain, n.op_type) for n in graph.graph.node] == [("com.microsoft", "GroupQueryAttention")]
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    y_ref, k_ref, v_ref = (t.numpy() for t in kv_attention_naive(*args, H))
    # With past and present one buffer each (as the runtime's stepper and onnxruntime-genai bind them).
    k_buf, v_buf = past_k.numpy().copy(), past_v.numpy().copy()
    io = session.io_binding()
    for name, t in zip(names, args):
        if name not in ("past_k", "past_v"):
            io.bind_cpu_input(name, t.numpy())
    io.bind_output("y")  # first: copy_outputs_to_cpu lists outputs in binding order
    values = [ort.OrtValue.ortvalue_from_numpy(a) for a in (k_buf, v_buf)]
    for (past, present), value in zip((("past_k", "present_k"), ("past_v", "present_v")), values):
        io.bind_ortvalue_input(past, value)
        io.bind_ortvalue_output(present, value)
    session.run_with_iobinding(io)
    np.testing.assert_allclose(io.copy_outputs_to_cpu()[0], y_ref, atol=1e-6, rtol=1e-5)
    np.testing.assert_array_equal(k_buf, k_ref)  # the whole buffer: the prefix kept, the call written after it
    np.testing.assert_array_equal(v_buf, v_ref)


CFG = dict(vocab_size=40, d_model=16, n_heads=2, d_inner=32, pattern="AQA", qrnn_window=2, mem_len=M)


@pytest.fixture(scope="module")
def graphs():
    torch.manual_seed(0)
    model = HybridLM(ModelConfig(**CFG)).eval()
    made = {}
    for fused in (True, False):
        proto = export_onnx(model, fused_attention=fused)
        made[fused] = (proto, ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]))
    return model, made


def _domains(graph):
    for node in graph.node:
        yield node.domain or "ai.onnx", node.op_type
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _domains(attr.g)


def test_the_fused_graph_has_one_group_query_attention_a_block_and_the_plain_graph_none(graphs):
    _, made = graphs
    fused = [op for op in _domains(made[True][0].graph) if op[0] != "ai.onnx"]
    assert fused == [("com.microsoft", "GroupQueryAttention")] * CFG["pattern"].count("A")
    assert all(domain == "ai.onnx" for domain, _ in _domains(made[False][0].graph))


def test_fused_and_plain_graphs_agree_wherever_the_ring_stands_even_over_unset_slots(graphs):
    """Calls of every kind (first pass, batch 2 after earlier tokens, crossing the ring's end,
    wrapped), past and present apart, and in the fused graph's state the slots the stream has not
    reached set to NaN once it has started (a stream starts from zeros): what GroupQueryAttention
    may leave there is never read."""
    model, made = graphs
    names = list(graph_state_shapes(model, 2))
    ids = np.random.default_rng(0).integers(0, CFG["vocab_size"], (2, 4 * R), dtype=np.int64)
    states = {f: {k: np.zeros(s, np.float32) for k, s in graph_state_shapes(model, 2).items()} for f in made}
    p = 0
    for T in (1, 3, 1, 6, 5, 1, 2 * R, 1):
        for fused, (_, session) in made.items():
            state = states[fused]
            for k in state:
                if fused and k.endswith((".key", ".value")) and 0 < p < R:
                    state[k][:, :, p:] = np.nan
            feed = {"input_ids": ids[:, p : p + T], "attention_mask": np.ones((2, p + T), np.int64), **state}
            outs = session.run(None, feed)
            states[fused] = dict(zip(names, outs[1:]))
            states[fused]["logits"] = outs[0]
        np.testing.assert_allclose(states[True].pop("logits"), states[False].pop("logits"), atol=1e-5, err_msg=f"{p}")
        p += T
        for k in names:
            n = min(p, R) if k.endswith((".key", ".value")) else None
            np.testing.assert_allclose(states[True][k][..., :n, :], states[False][k][..., :n, :], atol=1e-5)
    assert output_name(names[0]).startswith("present.")
