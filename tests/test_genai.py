"""onnxruntime-genai runs an exported model directory as it is (docs/model-directory.md): its
greedy text equals the Python runtime's and `hybrid generate --temperature 0`'s byte for byte over
300 tokens (far past the 16-token attention memory), for every preset's pattern and both QRNN
windows, fp32, int8 and int4 (genai's CPU path runs MatMulNBits); and its logits equal the
runtime's exactly when both are fed the same text in the same pieces.

The models are tiny runs (a few seconds of training), exported with the real exporter.
"""

import json

import numpy as np
import onnxruntime_genai as og
import pytest
import torch

from conftest import run_cli
from hybrid.export.exporter import export_run
from hybrid.runtime import load_model
from hybrid.train.config import TrainConfig, preset
from hybrid.train.data import BUILTIN, Corpus, load_text_corpus
from hybrid.train.trainer import train

TOKENS = 300
PROMPT = "ROMEO: "
FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "int4": "model.int4.onnx"}
# (preset, QRNN window, variants): every architecture; window 1 has no conv of its own.
MODELS = [
    ("hybrid-tiny", 2, ("int8", "int4")),
    ("hybrid-tiny", 1, ("int8",)),
    ("attn-qrnn-tiny", 1, ("int8",)),
    ("transformer-tiny", 2, ("int8",)),
    ("par-tiny", 2, ()),
]


@pytest.fixture(scope="module")
def corpus():
    full = load_text_corpus(BUILTIN)
    return Corpus("slice", full.tokenizer, full.train[:60000], full.valid[:4000], full.test[:4000])


@pytest.fixture(scope="module")
def exported(tmp_path_factory, corpus):
    """{(preset, window): model_dir}, trained and exported once for the module."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for name, window, variants in MODELS:
            root = tmp_path_factory.mktemp(f"{name}-k{window}")
            cfg = TrainConfig(
                batch_size=4,
                seq_len=32,
                steps=80,
                lr=1e-2,
                warmup_steps=5,
                eval_every=10_000,
                save_every=10_000,
                eval_tokens=0,
                log_every=10,
            )
            model_cfg = preset(name, d_model=32, n_heads=2, d_inner=64, mem_len=16, dropout=0.0, qrnn_window=window)
            train(root / "run", model_cfg, cfg, corpus, progress=False, log=lambda *a: None)
            export_run(root / "run", root / "model", quantize=variants, check=False, progress=False)
            out[name, window] = root / "model"
    finally:
        torch.set_num_threads(n)
    return out


def genai_model(model_dir, variant):
    """og.Model of the directory, the graph of `variant` chosen through a config overlay."""
    config = og.Config(str(model_dir))
    config.overlay(json.dumps({"model": {"decoder": {"filename": FILES[variant]}}}))
    return og.Model(config)


def genai_greedy(model_dir, variant, prompt, n):
    """(generated token ids, the whole sequence's text) from genai's own greedy loop."""
    model = genai_model(model_dir, variant)
    tokenizer = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt.encode()) + n, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(tokenizer.encode(prompt))
    while not generator.is_done():
        generator.generate_next_token()
    sequence = generator.get_sequence(0)
    tokens, text = [int(t) for t in sequence[len(prompt.encode()) :]], tokenizer.decode(sequence)
    del generator, params, tokenizer, model  # genai reports objects still alive at exit as leaks
    return tokens, text


CASES = [(name, window, v) for name, window, variants in MODELS for v in ("fp32", *variants)]


@pytest.mark.parametrize("name,window,variant", CASES, ids=[f"{n}-k{w}-{v}" for n, w, v in CASES])
def test_genai_greedy_text_equals_the_runtime(exported, name, window, variant):
    model_dir = exported[name, window]
    session = load_model(model_dir, variant=variant, threads=1).session()
    session.feed(PROMPT)
    ours = session.generate_tokens(max_tokens=TOKENS, temperature=0)
    theirs, text = genai_greedy(model_dir, variant, PROMPT, TOKENS)
    assert len(ours) == TOKENS and 0 not in ours  # genai stops at byte 0 (its eos)
    assert theirs == ours  # byte for byte: a byte model's tokens are the text's bytes
    if bytes(ours).decode("utf-8", "ignore").encode() == bytes(ours):  # whole characters only:
        assert text == PROMPT + bytes(ours).decode()  # decoders may differ on broken UTF-8


def test_genai_equals_hybrid_generate_on_the_command_line(exported):
    model_dir = exported["hybrid-tiny", 2]
    proc = run_cli(
        "generate",
        str(model_dir),
        "--prompt",
        PROMPT,
        "--max-tokens",
        str(TOKENS),
        "--temperature",
        "0",
        "--threads",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["genai"]["variant"] == "int8"  # og.Model(dir) runs what `auto` runs
    model = og.Model(str(model_dir))
    tokenizer = og.Tokenizer(model)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(PROMPT) + TOKENS)
    generator = og.Generator(model, params)
    generator.append_tokens(tokenizer.encode(PROMPT))
    while not generator.is_done():
        generator.generate_next_token()
    text = tokenizer.decode(generator.get_sequence(0))
    del generator, params, tokenizer, model
    assert proc.stdout.rstrip("\n") == text.rstrip("\n")


@pytest.mark.parametrize("key", [("hybrid-tiny", 2), ("attn-qrnn-tiny", 1)], ids=["hybrid-k2", "attn-qrnn-k1"])
@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_genai_logits_equal_the_runtime_over_real_text_in_pieces(exported, key, variant):
    """Real text (not a model's own repetitive greedy output) fed in pieces of varied length, well
    past the memory: genai's state handling must give exactly the runtime's logits. The same
    pieces on both sides: int8's dynamic quantization depends on how many tokens a call holds."""
    model_dir = exported[key]
    ours = load_model(model_dir, variant=variant, threads=1)
    model = genai_model(model_dir, variant)
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=4096)
    generator = og.Generator(model, params)
    text = list(BUILTIN.read_text(encoding="utf-8")[-2000:].encode())
    state, pos, worst = ours.initial_state(1), 0, 0.0
    for n in [5, 1, 1, 7, 30, 1, 2, 100, 1, 1, 17, 1, 64, 1]:
        piece, pos = text[pos : pos + n], pos + n
        generator.append_tokens(np.array(piece, dtype=np.int32))
        logits, state = ours.forward(np.array([piece]), state)
        worst = max(worst, float(np.abs(logits[0, -1] - generator.get_logits()[0, -1]).max()))
    del generator, params, model
    assert pos > 200 and worst <= 1e-5


def test_genai_tokenizer_is_the_byte_tokenizer(exported):
    model = og.Model(str(exported["hybrid-tiny", 2]))
    tokenizer = og.Tokenizer(model)
    text = "Ünïcode — 字 \n\t  spaces  and <eos> 🙂"
    ids = tokenizer.encode(text)
    assert list(ids) == list(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text
    ascii_ids = np.arange(1, 128, dtype=np.int32)
    assert tokenizer.decode(ascii_ids) == bytes(range(1, 128)).decode()
    stream = tokenizer.create_stream()  # streaming: a character comes out when its last byte does
    assert "".join(stream.decode(int(i)) for i in ids) == text
    del stream
    del tokenizer, model


def test_word_models_get_no_genai_files(tmp_path):
    full = load_text_corpus(BUILTIN, tokenizer="word", min_count=3)
    corpus = Corpus("slice", full.tokenizer, full.train[:3000], full.valid[:300], full.test[:300])
    cfg = TrainConfig(
        batch_size=2,
        seq_len=16,
        steps=2,
        lr=1e-3,
        warmup_steps=1,
        eval_every=10_000,
        save_every=10_000,
        eval_tokens=0,
        log_every=10,
    )
    train(
        tmp_path / "run",
        preset(
            "hybrid-tiny",
            vocab_size=full.tokenizer.vocab_size,
            d_model=16,
            n_heads=2,
            d_inner=32,
            mem_len=8,
            dropout=0.0,
        ),
        cfg,
        corpus,
        progress=False,
        log=lambda *a: None,
    )
    export_run(tmp_path / "run", tmp_path / "model", quantize=(), check=False, progress=False)
    names = {p.name for p in (tmp_path / "model").iterdir()}
    assert names == {"config.json", "export_report.json", "hybrid_tokenizer.json", "model.onnx"}
    assert "genai" not in json.loads((tmp_path / "model" / "config.json").read_text())
