"""Model directories of earlier format versions still load and give the same text and numbers as
when they were written: tests/data/v1-model was exported by the version-1 exporter (a QFAF byte
model, mem_len 8, fp32: the float past_mask in the state), tests/data/v2-model by the version-2
exporter (the same architecture trained 150 steps: genai's attention_mask, a sliding memory),
each with its greedy text and bpc."""

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from hybrid.runtime import load_model
from hybrid.runtime.errors import HybridError
from hybrid.runtime.modeldir import open_model_dir
from hybrid.train.data import BUILTIN

DATA = Path(__file__).parent / "data"
V1 = DATA / "v1-model"
EXPECTED = json.loads((DATA / "v1-model.expected.json").read_text(encoding="utf-8"))
V2 = DATA / "v2-model"
EXPECTED_V2 = json.loads((DATA / "v2-model.expected.json").read_text(encoding="utf-8"))


def test_a_version_2_directory_is_what_it_claims():
    md = open_model_dir(V2)
    assert md.version == 2 and md.mask_len == 8 and md.ring_len is None
    assert [s.shape for s in md.state if s.input.endswith(".key")] == [("batch", 2, 8, 12)]


def test_version_2_generates_and_scores_what_it_did_when_written():
    model = load_model(V2, threads=1)
    got = model.generate(EXPECTED_V2["prompt"], max_tokens=EXPECTED_V2["max_tokens"], temperature=0)
    assert got == EXPECTED_V2["text"]  # 300 tokens: far past the 8-token memory, through the stepper
    text = BUILTIN.read_text(encoding="utf-8")[-3000:]
    bpc = model.evaluate(text, streams=EXPECTED_V2["streams"], segment=EXPECTED_V2["segment"])["bpc"]
    assert bpc == pytest.approx(EXPECTED_V2["bpc"], abs=1e-9)


def test_a_version_1_directory_is_what_it_claims():
    md = open_model_dir(V1)
    assert md.config["format_version"] == 1 and md.mask_len is None
    assert md.state[-1].input == "past_mask" and md.state[-1].output == "present_mask"
    assert md.tokenizer_path.name == "tokenizer.json"


def test_version_1_generates_the_text_it_generated_when_written():
    model = load_model(V1, threads=1)
    # 300 tokens: far past the 8-token attention memory.
    assert model.generate(EXPECTED["prompt"], max_tokens=EXPECTED["max_tokens"], temperature=0) == EXPECTED["text"]
    proc = run_cli(
        "generate",
        str(V1),
        "--prompt",
        EXPECTED["prompt"],
        "--max-tokens",
        str(EXPECTED["max_tokens"]),
        "--temperature",
        "0",
        "--threads",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip("\n") == (EXPECTED["prompt"] + EXPECTED["text"]).rstrip("\n")  # the CLI echoes the prompt


def test_version_1_scores_what_it_scored_when_written():
    model = load_model(V1, threads=1)
    text = BUILTIN.read_text(encoding="utf-8")[-3000:]
    got = model.evaluate(text, streams=EXPECTED["streams"], segment=EXPECTED["segment"])["bpc"]
    assert got == pytest.approx(EXPECTED["bpc"], abs=1e-9)


def test_attention_mask_is_refused_in_a_version_1_config(tmp_path):
    d = tmp_path / "m"
    shutil.copytree(V1, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["inputs"]["attention_mask"] = {"dtype": "int64", "shape": ["batch", "total_sequence_length"]}
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HybridError, match="attention_mask' is an input of version 2 graphs"):
        open_model_dir(d)


def test_a_mem_len_that_is_not_the_memorys_size_is_refused(tmp_path):
    """mem_len sizes the ring the runtime feeds a mask for (and its state): mem_len + 1 must be the
    graph's memory length."""
    from hybrid.export.exporter import export_run
    from hybrid.train.config import TrainConfig, preset
    from hybrid.train.data import Corpus, load_text_corpus
    from hybrid.train.trainer import train

    full = load_text_corpus(BUILTIN)
    corpus = Corpus("slice", full.tokenizer, full.train[:3000], full.valid[:300], full.test[:300])
    cfg = TrainConfig(
        batch_size=2,
        seq_len=16,
        steps=1,
        lr=1e-3,
        warmup_steps=1,
        eval_every=10_000,
        save_every=10_000,
        eval_tokens=0,
        log_every=10,
    )
    train(
        tmp_path / "run",
        preset("hybrid-tiny", d_model=16, n_heads=2, d_inner=32, mem_len=8, dropout=0.0),
        cfg,
        corpus,
        progress=False,
        log=lambda *a: None,
    )
    d = tmp_path / "model"
    export_run(tmp_path / "run", d, quantize=(), check=False, progress=False)
    md = open_model_dir(d)
    assert md.version == 3 and md.ring_len == 9 and md.mask_len is None
    config = json.loads((d / "config.json").read_text())
    config["model"]["mem_len"] = 10**12
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(HybridError, match=r"must hold 1000000000001 slots \(model.mem_len = 1000000000000\)"):
        open_model_dir(d)
