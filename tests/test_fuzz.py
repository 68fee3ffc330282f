"""Property tests (hypothesis): tokenizers round-trip and handle unknown words; every reader of
user input (tokenizer and config JSON, corpora, checkpoints, ONNX files, and the runtime's text,
token and sampling inputs: random, empty, very long) either works or raises our one-line
HybridError, never anything else."""

import json
import math
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hybrid.runtime.errors import HybridError
from hybrid.runtime.safe_onnx import check_external_data, external_locations
from hybrid.runtime.tokenizer import EOS, UNK, ByteTokenizer, WordTokenizer, load_tokenizer, tokenizer_from_json

FIXTURES_OK = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=12,
)


def ours_or_nothing(fn, *args, **kwargs):
    """Call fn; a HybridError is a fine answer, any other exception fails the test."""
    try:
        return fn(*args, **kwargs)
    except HybridError as e:
        assert str(e) and "\n" not in str(e).strip(), repr(e)
        return None


# -- tokenizers ----------------------------------------------------------------------------------------


@given(st.text())
def test_byte_tokenizer_round_trips_text(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and (len(ids) == 0 or (ids.min() >= 0 and ids.max() < 256))
    assert tok.decode(ids) == text


@given(st.binary())
def test_byte_tokenizer_round_trips_any_bytes_and_decodes_incrementally(data):
    tok = ByteTokenizer()
    assert tok.decode_bytes(tok.encode(data)) == data
    dec = tok.decoder()
    assert "".join(dec.push(b) for b in data) + dec.flush() == tok.decode(list(data))


WORD = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8).filter(
    lambda w: w.split() == [w] and w not in (UNK, EOS)
)


@given(
    vocab_lines=st.lists(st.lists(WORD, max_size=6).map(" ".join), max_size=8),
    text=st.text(alphabet=st.sampled_from("ab c\nxyz\t\u00e9 \u2028"), max_size=60),
    min_count=st.integers(1, 3),
)
def test_word_tokenizer_maps_unknown_words_to_unk(vocab_lines, text, min_count):
    tok = WordTokenizer.build(vocab_lines, min_count=min_count)
    assert tok.vocab[:2] == [UNK, EOS] and len(set(tok.vocab)) == len(tok.vocab)
    ids = tok.encode(text)
    assert len(ids) == 0 or (ids.min() >= 0 and ids.max() < tok.vocab_size)
    known = set(tok.vocab)
    expect = "".join(" ".join(w if w in known else UNK for w in line.split()) + "\n" for line in text.splitlines())
    assert tok.decode(ids) == expect
    unknown = [w for line in text.splitlines() for w in line.split() if w not in known]
    assert tok.unknown_words(text) == list(dict.fromkeys(unknown))
    assert (ids == tok.unk_id).sum() == len(unknown)
    # The saved form loads back to the same tokenizer.
    again = tokenizer_from_json(json.loads(json.dumps(tok.to_json())))
    assert again.vocab == tok.vocab and np.array_equal(again.encode(text), ids)


@given(JSON)
def test_tokenizer_json_of_any_shape(obj):
    ours_or_nothing(tokenizer_from_json, obj)


@settings(max_examples=60)
@given(st.binary(max_size=200) | JSON.map(lambda o: json.dumps(o).encode()))
def test_tokenizer_file_of_any_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    path.write_bytes(data)
    ours_or_nothing(load_tokenizer, path)


# -- configs, corpora, checkpoints ----------------------------------------------------------------------

FIELDS = [
    "batch_size",
    "seq_len",
    "steps",
    "lr",
    "warmup_steps",
    "grad_clip",
    "keep_best",
    "grad_accum",
    "vocab_size",
    "d_model",
    "n_heads",
    "pattern",
    "qrnn_window",
    "dropout",
    "mem_len",
    "adaptive_cutoffs",
]


@given(st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), JSON, max_size=5))
def test_configs_from_any_json(obj):
    from hybrid.train.config import ModelConfig, TrainConfig

    ours_or_nothing(ModelConfig.from_dict, {k: v for k, v in obj.items()}, "fuzz")
    ours_or_nothing(TrainConfig.from_dict, {k: v for k, v in obj.items()}, "fuzz")


@settings(max_examples=40, deadline=None)
@given(
    st.binary(max_size=300)
    | JSON.map(lambda o: json.dumps({"format": "hybrid-run", "version": 1, "model": o}).encode())
)
def test_run_config_of_any_bytes(tmp_path_factory, data):
    from hybrid.train.trainer import read_run_config

    run = tmp_path_factory.mktemp("run")
    (run / "config.json").write_bytes(data)
    ours_or_nothing(read_run_config, run)


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=400) | st.text(max_size=400).map(str.encode), kind=st.sampled_from(["byte", "word"]))
def test_corpus_of_any_bytes(tmp_path_factory, data, kind):
    from hybrid.train.data import load_text_corpus

    path = tmp_path_factory.mktemp("corpus") / "c.txt"
    path.write_bytes(data)
    corpus = ours_or_nothing(load_text_corpus, path, kind)
    if corpus is not None:
        assert corpus.train.max(initial=0) < corpus.tokenizer.vocab_size


@settings(max_examples=40, deadline=None)
@given(state=st.binary(max_size=200) | JSON.map(lambda o: json.dumps(o).encode()), blob=st.binary(max_size=200))
def test_checkpoint_of_any_bytes(tmp_path_factory, state, blob):
    from hybrid.train import checkpoint as ck

    path = tmp_path_factory.mktemp("ckpt") / "step-00000001"
    path.mkdir()
    (path / "state.json").write_bytes(state)
    (path / "model.safetensors").write_bytes(blob)
    (path / "trainer.safetensors").write_bytes(blob)
    with pytest.raises(HybridError):
        ck.read_checkpoint(path)
    assert ours_or_nothing(ck.read_safetensors, path / "model.safetensors") in (None, {})


# -- ONNX external data ---------------------------------------------------------------------------------


def _onnx_with_external(tmp, location):
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((2, 2), np.float32), "W")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        w.external_data.add(key=k, value=v)
    body = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["s2"])],
        "body",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, 2])],
        [helper.make_tensor_value_info("s2", TensorProto.FLOAT, [2, 2])],
        [w],
    )
    # The external tensor sits in a subgraph (as in a Scan body), not the main graph.
    node = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
    )
    path = tmp / "model.onnx"
    path.write_bytes(helper.make_model(g).SerializeToString())
    return path


@pytest.mark.parametrize(
    "location, why",
    [
        ("/etc/passwd", "absolute path"),
        ("../secret.bin", "climbs out"),
        ("a/../../b", "climbs out"),
        ("C:\\Windows\\x", "absolute path"),
        ("..\\x", "climbs out"),
        ("", "is empty"),
        ("link/w.bin", "resolves outside"),
        ("missing.bin", "not found"),
    ],
)
def test_onnx_external_data_outside_the_directory_is_refused(tmp_path, location, why):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "w.bin").write_bytes(bytes(16))
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "link").symlink_to(outside, target_is_directory=True)
    path = _onnx_with_external(model_dir, location)
    with pytest.raises(HybridError, match=why):
        check_external_data(path)


def test_onnx_external_data_inside_the_directory_is_accepted_and_all_are_found(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "w.bin").write_bytes(bytes(16))
    path = _onnx_with_external(tmp_path, "sub/w.bin")
    assert check_external_data(path) == ["sub/w.bin"]
    # The walker finds exactly what the onnx package finds (both branches of the If).
    model = onnx.load(str(path), load_external_data=False)
    theirs = [
        (t.name, e.value)
        for t in _get_all_tensors(model)
        if uses_external_data(t)
        for e in t.external_data
        if e.key == "location"
    ]
    assert sorted(external_locations(path.read_bytes())) == sorted(theirs) and len(theirs) == 2


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=300))
def test_onnx_check_of_any_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    path.write_bytes(data)
    ours_or_nothing(check_external_data, path)


# -- the runtime -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_export):
    """Byte and word models: conftest's tiny byte model, and a word model trained for a few steps
    here; both exported with the real exporter."""
    import torch

    from hybrid.export.exporter import export_run
    from hybrid.train.config import TrainConfig, preset
    from hybrid.train.data import BUILTIN, Corpus, load_text_corpus
    from hybrid.train.trainer import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fuzz-models")
    out = {"byte": tiny_export[0]}
    try:
        full = load_text_corpus(BUILTIN, tokenizer="word", min_count=5)
        corpus = Corpus("slice", full.tokenizer, full.train[:8000], full.valid[:1000], full.test[:1000])
        cfg = TrainConfig(
            batch_size=2,
            seq_len=16,
            steps=3,
            warmup_steps=1,
            eval_every=100,
            save_every=100,
            eval_tokens=200,
            tensorboard=False,
        )
        mcfg = preset(
            "hybrid-tiny",
            vocab_size=corpus.tokenizer.vocab_size,
            d_model=16,
            n_heads=2,
            d_inner=32,
            mem_len=8,
            dropout=0.0,
            pattern="QFAF",
        )
        train(root / "word", mcfg, cfg, corpus, progress=False, log=lambda *a: None)
        export_run(root / "word", root / "word-model", quantize=(), check=False, progress=False)
        out["word"] = root / "word-model"
    finally:
        torch.set_num_threads(threads)
    from hybrid.runtime import load_model

    return {k: load_model(p, threads=1) for k, p in out.items()}


TEXT = st.text(max_size=300) | st.text(alphabet=string.printable, max_size=300)
NUMBER = (
    st.integers(-5, 300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.booleans()
    | st.none()
    | st.text(max_size=3)
)


@FIXTURES_OK
@given(kind=st.sampled_from(["byte", "word"]), pieces=st.lists(TEXT, max_size=4))
def test_runtime_session_takes_any_text(models, kind, pieces):
    s = models[kind].session()
    for text in pieces:
        s.feed(text)
    lp = s.next_token_logprobs()
    assert lp.shape == (models[kind].vocab_size,) and np.isfinite(lp).all()
    assert math.isclose(np.exp(lp).sum(), 1.0, rel_tol=1e-6)


@FIXTURES_OK
@given(kind=st.sampled_from(["byte", "word"]), text=TEXT)
def test_runtime_evaluates_any_text_or_says_too_short(models, kind, text):
    res = ours_or_nothing(models[kind].evaluate, text, streams=3, segment=16)
    if res is None:
        assert len(models[kind].tokenizer.encode(text)) < 2
    else:
        assert math.isfinite(res["nll"]) and res["tokens"] >= 1


@FIXTURES_OK
@given(
    kind=st.sampled_from(["byte", "word"]),
    prompt=TEXT,
    max_tokens=NUMBER,
    temperature=NUMBER,
    top_k=NUMBER,
    top_p=NUMBER,
    seed=NUMBER,
    stop=st.lists(st.text(max_size=3), max_size=2),
)
def test_runtime_generates_or_refuses_bad_options(
    models, kind, prompt, max_tokens, temperature, top_k, top_p, seed, stop
):
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool):
        assume(max_tokens <= 20)
    out = ours_or_nothing(
        models[kind].generate,
        prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        stop=stop,
    )
    assert out is None or isinstance(out, str)


@FIXTURES_OK
@given(
    kind=st.sampled_from(["byte", "word"]),
    ids=st.lists(st.integers(-(2**40), 2**40) | st.integers(-2, 300), max_size=20),
)
def test_runtime_takes_any_token_ids_or_refuses(models, kind, ids):
    s = models[kind].session()
    n = ours_or_nothing(s.feed_tokens, ids)
    V = models[kind].vocab_size
    assert (n == len(ids)) if all(0 <= i < V for i in ids) else n is None


def test_runtime_very_long_inputs(models):
    rng = np.random.default_rng(0)
    long_text = "".join(rng.choice(list(string.printable + "\u00e9\u4e2d"), size=100_000))
    for kind, model in models.items():
        s = model.session()
        s.feed(long_text)
        assert np.isfinite(s.next_token_logprobs()).all()
        assert isinstance(s.generate(max_tokens=5, seed=1), str)
        res = model.evaluate(long_text, streams=16, segment=64)
        n = len(model.tokenizer.encode(long_text)) - 1
        assert math.isfinite(res["nll"]) and n - 16 < res["tokens"] <= n  # whole streams: a remainder < 16 is left
