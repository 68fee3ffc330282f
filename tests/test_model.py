"""The model: presets, causality, streaming equivalence, state contract."""

import pytest
import torch

from hybrid.runtime.errors import HybridError
from hybrid.train.config import PRESETS, ModelConfig, preset
from hybrid.train.model import HybridLM, count_parameters


def tiny(pattern="QFAFQA", **kw):
    base = dict(
        vocab_size=61, d_model=32, n_heads=4, d_inner=64, pattern=pattern, dropout=0.0, mem_len=24, qrnn_window=2
    )
    base.update(kw)
    torch.manual_seed(0)
    return HybridLM(ModelConfig(**base)).eval()


def test_paper_transformer_baseline_is_41m_and_presets_count():
    counts = {name: count_parameters(HybridLM(preset(name)))["total"] for name in PRESETS}
    assert abs(counts["transformer-paper"] - 41e6) / 41e6 < 0.05
    for arch in ("par", "attn-qrnn", "hybrid"):  # the paper's point: no bigger than the baseline (+5%)
        assert counts[f"{arch}-paper"] < 1.05 * counts["transformer-paper"]
    for name, n in counts.items():
        if name.endswith("-tiny"):
            assert n < 1.5e6


def test_parameter_breakdown_adds_up():
    c = count_parameters(HybridLM(preset("hybrid-tiny")))
    assert c["total"] == sum(c[k] for k in ("embedding", "attention", "feed-forward", "qrnn", "other"))
    assert c["attention"] > 0 and c["qrnn"] > 0 and c["feed-forward"] > 0


@pytest.mark.parametrize("pattern", ["QFAFQA", "AF", "QQ", "FQ"])
@pytest.mark.parametrize("window", [1, 2])
def test_causality(pattern, window):
    model = tiny(pattern, qrnn_window=window)
    x = torch.randint(0, 61, (2, 40))
    base, _ = model(x)
    for t in (0, 17, 39):
        y = x.clone()
        y[:, t] = (y[:, t] + 7) % 61
        out, _ = model(y)
        assert torch.equal(out[:, :t], base[:, :t]), f"logits before {t} changed"
        assert not torch.allclose(out[:, t:], base[:, t:])


@pytest.mark.parametrize("window", [1, 2])
def test_streaming_equals_one_segment(window):
    # The memory (24) covers all earlier context when segments are <= 24 - position... use a
    # length the memory fully covers: 4 segments of 8 tokens, mem_len 24 (>= 32 - 8).
    model = tiny(qrnn_window=window)
    x = torch.randint(0, 61, (3, 32))
    whole, whole_state = model(x)
    state = model.initial_state(3)
    parts = []
    for i in range(0, 32, 8):
        out, state = model(x[:, i : i + 8], state)
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-5, atol=1e-5)
    for name in whole_state:
        if "recurrent_state" in name or "conv_state" in name:
            torch.testing.assert_close(state[name], whole_state[name], rtol=1e-5, atol=1e-6)


def test_qrnn_streaming_is_exact_at_any_length():
    model = tiny("QFQF")
    x = torch.randint(0, 61, (2, 301))
    whole, _ = model(x)
    state, parts = model.initial_state(2), []
    for i in range(0, 301, 43):
        out, state = model(x[:, i : i + 43], state)
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-5, atol=1e-5)


def test_token_by_token_equals_one_segment():
    model = tiny()
    x = torch.randint(0, 61, (1, 20))
    whole, _ = model(x)
    state, parts = model.initial_state(1), []
    for t in range(20):
        out, state = model(x[:, t : t + 1], state)
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, 1), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pattern,mem_len", [("QFAFQA", 24), ("AF", 5), ("QQAQQA", 3)])
def test_the_ring_layout_gives_the_sliding_memorys_logits(pattern, mem_len):
    """The exported graph's ring (mem_len + 1 slots, written in place) against the sliding memory
    the model trains with, fed in chunks shorter and longer than the ring."""
    model = tiny(pattern, mem_len=mem_len)
    x = torch.randint(0, 61, (2, 50))
    whole_rings = [mem_len + 1] * (50 // (mem_len + 1))
    rest = [50 - sum(whole_rings)] if sum(whole_rings) < 50 else []
    for chunks in ([50], [1] * 50, [3, 7, 1, 12, 2, 25], whole_rings + rest):
        sliding, ring, p, a, b = model.initial_state(2), model.initial_state(2, ring=True), 0, [], []
        for n in chunks:
            with torch.no_grad():
                out, sliding = model(x[:, p : p + n], sliding)
                a.append(out)
                out, ring = model(x[:, p : p + n], ring, past_len=p)
                b.append(out)
            p += n
        torch.testing.assert_close(torch.cat(b, 1), torch.cat(a, 1), rtol=1e-5, atol=1e-5)
    key = next(k for k in ring if k.endswith(".key"))
    assert ring[key].shape[2] == mem_len + 1 and "past_mask" not in ring


def test_memory_is_bounded_and_forgets_beyond_it():
    model = tiny("AF", mem_len=8)
    x = torch.randint(0, 61, (1, 30))
    state = model.initial_state(1)
    for i in range(0, 20, 5):
        _, state = model(x[:, i : i + 5], state)
    assert state["past_key_values.0.key"].shape == (1, 4, 8, 8)
    assert torch.all(state["past_mask"] == 1)
    # With only attention, tokens more than mem_len back cannot matter.
    a, _ = model(x[:, 20:25], state)
    y = x.clone()
    y[:, :10] = (y[:, :10] + 1) % 61
    state2 = model.initial_state(1)
    for i in range(0, 20, 5):
        _, state2 = model(y[:, i : i + 5], state2)
    b, _ = model(x[:, 20:25], state2)
    torch.testing.assert_close(a, b)


def test_state_names_follow_the_onnx_contract():
    model = tiny("QFAF")
    names = list(model.state_shapes(2))
    assert names == [
        "past_key_values.0.recurrent_state",
        "past_key_values.0.conv_state",
        "past_key_values.2.key",
        "past_key_values.2.value",
        "past_mask",
    ]
    _, new = model(torch.zeros(2, 3, dtype=torch.long))
    assert set(new) == set(names)


def test_bad_config_values_are_clear():
    with pytest.raises(HybridError, match="pattern"):
        ModelConfig(pattern="AXF")
    with pytest.raises(HybridError, match="divisible"):
        ModelConfig(d_model=30, n_heads=4)
    with pytest.raises(HybridError, match="qrnn_window"):
        ModelConfig(qrnn_window=3)
    with pytest.raises(HybridError, match="unknown preset"):
        preset("gpt-5")
