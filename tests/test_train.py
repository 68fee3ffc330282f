"""Training: the loss goes down, checkpoints reload exactly, resume continues the same schedule."""

import json

import numpy as np
import pytest
import torch

from hybrid.runtime.errors import HybridError
from hybrid.train import checkpoint as ck
from hybrid.train.config import ModelConfig, TrainConfig
from hybrid.train.data import BUILTIN, Corpus, StreamBatcher, load_text_corpus, split_90_5_5
from hybrid.train.model import HybridLM
from hybrid.train.trainer import evaluate, load_run_model, lr_at, train

SMALL = dict(vocab_size=256, d_model=32, n_heads=2, d_inner=64, pattern="QFAF", dropout=0.0, mem_len=16)


@pytest.fixture(scope="module")
def corpus():
    full = load_text_corpus(BUILTIN)
    # A slice keeps the test quick; the split rule is tested separately.
    return Corpus("shakespeare-slice", full.tokenizer, full.train[:60000], full.valid[:6000], full.test[:6000])


def cfg(steps, **kw):
    base = dict(
        batch_size=4,
        seq_len=32,
        steps=steps,
        lr=3e-3,
        warmup_steps=5,
        eval_every=1000,
        save_every=1000,
        eval_tokens=0,
        log_every=5,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_split_is_90_5_5():
    tr, va, te = split_90_5_5(np.arange(1000))
    assert (len(tr), len(va), len(te)) == (900, 50, 50)
    assert tr[-1] + 1 == va[0] and va[-1] + 1 == te[0]


def test_stream_batches_are_contiguous_and_deterministic():
    tokens = np.arange(1001)
    b = StreamBatcher(tokens, batch_size=4, seq_len=10)
    x0, y0 = b.batch(0)
    x1, _ = b.batch(1)
    assert np.array_equal(y0, x0 + 1)
    assert np.array_equal(x1[:, 0], x0[:, -1] + 1)  # the next segment continues each stream
    assert np.array_equal(b.batch(b.segments_per_epoch)[0], x0) and b.starts_epoch(b.segments_per_epoch)


def test_short_training_lowers_validation_loss(tmp_path, corpus):
    model = HybridLM(ModelConfig(**SMALL))
    before, _ = evaluate(model, corpus.valid, 4, 32)
    result = train(tmp_path / "run", ModelConfig(**SMALL), cfg(60), corpus, progress=False, log=lambda *a: None)
    assert result.valid_nll < before - 0.5
    assert result.metric == "bpc" and result.valid_metric == pytest.approx(result.valid_nll / np.log(2))
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["final"] and lines[-1]["valid_bpc"] == pytest.approx(result.valid_metric)


def test_checkpoint_reloads_to_identical_outputs(tmp_path, corpus):
    train(tmp_path / "run", ModelConfig(**SMALL), cfg(10), corpus, progress=False, log=lambda *a: None)
    model, tok = load_run_model(tmp_path / "run")
    ref = HybridLM(ModelConfig(**SMALL))
    ck.load_weights(ref, tmp_path / "run" / "checkpoints" / "step-00000010" / "model.safetensors")
    ref.eval()
    x = torch.from_numpy(tok.encode("To be, or not to be")).long()[None]
    a, _ = model(x)
    b, _ = ref(x)
    assert torch.equal(a, b)
    assert model.head.weight.data_ptr() == model.embed.weight.data_ptr()  # tying survives the round trip


def test_resume_equals_straight_run(tmp_path, corpus):
    # Interrupting at step 10 (the checkpoint a Ctrl-C or save_every writes) and resuming gives the
    # same weights as running 20 steps straight: schedule, optimizer, RNG and carried state restored.
    straight = train(
        tmp_path / "a",
        ModelConfig(**SMALL, zoneout=0.2),
        cfg(20, save_every=10),
        corpus,
        progress=False,
        log=lambda *a: None,
    )
    ck_dir = tmp_path / "a" / "checkpoints"
    assert (ck_dir / "step-00000010").is_dir()
    # Make run b from a's step-10 checkpoint only.
    import shutil

    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-00000020")
    resumed = train(
        tmp_path / "b",
        ModelConfig(**SMALL, zoneout=0.2),
        cfg(20, save_every=10),
        corpus,
        resume=True,
        progress=False,
        log=lambda *a: None,
    )
    wa = ck.read_safetensors(tmp_path / "a" / "model.safetensors")
    wb = ck.read_safetensors(tmp_path / "b" / "model.safetensors")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert resumed.valid_nll == straight.valid_nll


def test_lr_schedule_warms_up_then_decays():
    c = cfg(100, warmup_steps=10)
    lrs = [lr_at(s, c) for s in range(100)]
    assert lrs[0] < lrs[9] == pytest.approx(c.lr)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(c.lr * c.min_lr_ratio, rel=0.01)


def test_truncated_checkpoint_is_skipped(tmp_path, corpus):
    train(tmp_path / "run", ModelConfig(**SMALL), cfg(10, save_every=5), corpus, progress=False, log=lambda *a: None)
    last = tmp_path / "run" / "checkpoints" / "step-00000010" / "model.safetensors"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])
    warnings = []
    found = ck.latest_valid_checkpoint(tmp_path / "run", warn=warnings.append)
    assert found[0].name == "step-00000005" and "damaged" in warnings[0]


def test_too_short_corpus_is_a_clear_error(tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hello world\n")
    c = load_text_corpus(tiny)
    with pytest.raises(HybridError, match="too short"):
        train(tmp_path / "run", ModelConfig(**SMALL), cfg(5), c, progress=False, log=lambda *a: None)
