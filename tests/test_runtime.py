"""The runtime: numpy + onnxruntime only, the same numbers as the exporter and PyTorch, streaming
evaluation with flat memory, reproducible generation, and one clear line for every bad input.

The models are tiny runs trained for a few dozen steps here and exported with the real exporter.
"""

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import PROBE, TINY, run_cli
from hybrid.runtime import load_model
from hybrid.runtime.errors import HybridError
from hybrid.runtime.evaluate import evaluate, token_nll
from hybrid.runtime.generate import StopFilter, filtered_probs, sample
from hybrid.runtime.modeldir import open_model_dir
from hybrid.runtime.textfile import ArraySource, open_text
from hybrid.train.config import TrainConfig, preset
from hybrid.train.data import BUILTIN, Corpus, load_text_corpus
from hybrid.train.trainer import evaluate as torch_evaluate
from hybrid.train.trainer import load_run_model, train

SMALL = TINY
TEXT = BUILTIN.read_text(encoding="utf-8")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the runtime sessions below use 1 thread too


def load(path, variant="auto"):
    return load_model(path, variant=variant, threads=1)


def _train(run_dir, corpus, steps, **over):
    cfg = TrainConfig(
        batch_size=4,
        seq_len=32,
        steps=steps,
        lr=3e-3,
        warmup_steps=5,
        eval_every=10_000,
        save_every=10_000,
        eval_tokens=2000,
        log_every=10,
    )
    model_cfg = preset("hybrid-tiny", vocab_size=corpus.tokenizer.vocab_size, **{**SMALL, **over})
    train(run_dir, model_cfg, cfg, corpus, progress=False, log=lambda *a: None)
    return run_dir


@pytest.fixture(scope="module")
def byte_model(tiny_run, tiny_export):
    """(run_dir, model_dir, export report) of a byte-level model, exported fp32 + int8 (conftest's)."""
    return (tiny_run, *tiny_export)


@pytest.fixture(scope="module")
def word_model(tmp_path_factory):
    """(run_dir, model_dir) of a word-level model, exported fp32 only."""
    from hybrid.export.exporter import export_run

    root = tmp_path_factory.mktemp("word")
    full = load_text_corpus(BUILTIN, tokenizer="word", min_count=3)
    corpus = Corpus("slice", full.tokenizer, full.train[:30000], full.valid[:3000], full.test[:3000])
    run = _train(root / "run", corpus, 20)
    export_run(run, root / "model", quantize=(), check=False, progress=False)
    return run, root / "model"


@pytest.fixture(scope="module")
def lean_model(tmp_path_factory):
    """A model without attention (pattern QF), exported fp32 unchecked: fast enough to stream 10 MB."""
    from hybrid.export.exporter import export_run

    root = tmp_path_factory.mktemp("lean")
    full = load_text_corpus(BUILTIN)
    corpus = Corpus("slice", full.tokenizer, full.train[:20000], full.valid[:2000], full.test[:2000])
    run = _train(root / "run", corpus, 5, pattern="QF")
    export_run(run, root / "model", quantize=(), check=False, progress=False)
    return root / "model"


# -- the CLI as a user meets it -----------------------------------------------------------------

DRIVER = textwrap.dedent("""
    import sys
    import hybrid.cli as cli
    from hybrid.runtime import commands
    names = {c.name or c.callback.__name__ for c in cli.app.registered_commands}
    if "eval" not in names:  # until cli.py registers the runtime commands itself
        commands.register(cli.app)
    sys.argv = ["hybrid"] + sys.argv[1:]
    cli.main()
""")


def hybrid(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-c", DRIVER, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, **(env or {})),
    )


def one_error_line(proc) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# -- no torch ------------------------------------------------------------------------------------

NO_TORCH = textwrap.dedent("""
    import sys
    class Block:  # any attempt to import torch fails, as in an install without it
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError("torch is blocked in this test")
    sys.meta_path.insert(0, Block())
    model_dir, text_file = sys.argv[1], sys.argv[2]
    import hybrid.runtime
    from hybrid.runtime import load_model
    from hybrid.runtime.bench import run_bench
    m = load_model(model_dir, variant="int8", threads=1)
    r = m.evaluate(open(text_file).read()[:3000])
    out = m.generate("ROMEO:", max_tokens=8, temperature=0.8, top_k=20, top_p=0.9, seed=1, stop=["zz"])
    s = m.session(); s.feed("To be"); s.feed(" or not"); s.generate(max_tokens=4)
    run_bench(model_dir, variants=["int8"], threads=[1], reps=1, prompt_len=8, gen_tokens=2, streams=2,
              segment=4, log=lambda s: None)
    import hybrid.cli as cli
    from hybrid.runtime import commands
    commands.register(cli.app)
    for argv in (["eval", model_dir, text_file, "--max-tokens", "500", "--json"],
                 ["generate", model_dir, "--prompt", "KING", "--max-tokens", "5", "--seed", "3"]):
        try:
            cli.app(argv)
        except SystemExit as e:
            assert not e.code, e.code
    loaded = sorted(k for k in sys.modules if k == "torch" or k.startswith("torch."))
    print("TORCH_MODULES", loaded, r["bpc"] > 0)
""")


def test_runtime_runs_and_never_imports_torch(byte_model, tmp_path):
    _, model_dir, _ = byte_model
    text = tmp_path / "t.txt"
    text.write_text(PROBE)
    proc = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(model_dir), str(text)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "TORCH_MODULES [] True" in proc.stdout


# -- the same numbers as the exporter and PyTorch ------------------------------------------------------


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_bpc_equals_export_report(byte_model, variant):
    _, model_dir, report = byte_model
    probe = report["probe"]
    m = load(model_dir, variant)
    r = evaluate(
        m,
        ArraySource(m.tokenizer.encode(PROBE)),
        streams=probe["streams"],
        segment=probe["segment"],
        max_tokens=probe["tokens"],
    )
    assert r["tokens"] == probe["tokens"]
    assert r["bpc"] == pytest.approx(report["variants"][variant]["bpc"], abs=1e-5)
    assert r["bpc"] == pytest.approx(r["nll"] / math.log(2))


def test_cli_eval_on_a_file_equals_export_report(byte_model, tmp_path):
    _, model_dir, report = byte_model
    f = tmp_path / "probe.txt"
    f.write_text(PROBE, encoding="utf-8")
    probe = report["probe"]
    proc = hybrid(
        "eval",
        model_dir,
        f,
        "--variant",
        "fp32",
        "--streams",
        probe["streams"],
        "--segment",
        probe["segment"],
        "--max-tokens",
        probe["tokens"],
        "--json",
        "--threads",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["bpc"] == pytest.approx(report["variants"]["fp32"]["bpc"], abs=1e-5)
    assert res["tokens"] == probe["tokens"] and res["tokens_per_s"] > 0


def test_cli_eval_ctx_and_kl_base(byte_model, tmp_path):
    _, model_dir, report = byte_model
    f = tmp_path / "probe.txt"
    f.write_text(PROBE, encoding="utf-8")
    proc = hybrid(
        "eval", model_dir, f, "--variant", "int8", "--kl-base", "fp32", "--ctx", "256", "--json", "--threads", "1"
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["protocol"] == "ctx" and res["chunks"] == len(PROBE.encode()) // 256
    assert res["tokens"] == res["chunks"] * (256 - 1 - 128)
    assert 0 <= res["kl"]["mean"] < 0.05 and 0.9 < res["kl"]["top1_agreement"] <= 1
    proc = hybrid(
        "eval", model_dir, f, "--kl-base", str(model_dir), "--variant", "fp32", "--threads", "1"
    )  # a directory: its fp32
    assert proc.returncode == 0 and "top-1 agreement 100.00%" in proc.stdout, proc.stderr + proc.stdout


def test_eval_equals_pytorch_evaluate(byte_model):
    run, model_dir, _ = byte_model
    tm, tok = load_run_model(run)
    tokens = tok.encode(PROBE[:5000])
    ref_nll, ref_n = torch_evaluate(tm, tokens, 16, 32)
    r = evaluate(load(model_dir, "fp32"), ArraySource(tokens), streams=16, segment=32)
    assert r["tokens"] == ref_n
    assert r["nll"] == pytest.approx(ref_nll, abs=1e-5)


def test_kl_against_fp32(byte_model):
    _, model_dir, report = byte_model
    probe = report["probe"]
    fp32, int8 = load(model_dir, "fp32"), load(model_dir, "int8")
    src = ArraySource(fp32.tokenizer.encode(PROBE))
    same = evaluate(
        fp32, src, streams=probe["streams"], segment=probe["segment"], max_tokens=probe["tokens"], base=fp32
    )
    assert same["kl"]["mean"] == pytest.approx(0.0, abs=1e-9) and same["kl"]["top1_agreement"] == 1.0
    r = evaluate(int8, src, streams=probe["streams"], segment=probe["segment"], max_tokens=probe["tokens"], base=fp32)
    ref = report["variants"]["int8"]
    assert r["kl"]["mean"] == pytest.approx(ref["kl_vs_fp32"], rel=1e-3, abs=1e-9)
    assert r["kl"]["top1_agreement"] == pytest.approx(ref["top1_vs_fp32"])
    assert r["kl"]["base_bpc"] == pytest.approx(report["variants"]["fp32"]["bpc"], abs=1e-5)


# -- evaluation protocols and token sources --------------------------------------------------------


def test_file_source_equals_memory_and_word_tokens_match(byte_model, word_model, tmp_path, monkeypatch):
    import hybrid.runtime.textfile as tf

    monkeypatch.setattr(tf, "CHUNK", 7)  # tiny pieces: lines, '\r\n' and UTF-8 characters cut everywhere
    text = "héllo wörld\r\nthe king\rof  all\n\nthé end \u2028x\x0cy\r\n" * 5 + "last line"
    f = tmp_path / "t.txt"
    f.write_bytes(text.encode("utf-8"))
    word = load(word_model[1], "fp32")
    src = open_text(f, word.tokenizer)
    assert np.array_equal(src.read(0, src.n), word.tokenizer.encode(text))
    assert src.unknown == int(np.count_nonzero(word.tokenizer.encode(text) == word.tokenizer.unk_id))
    src.close()
    byte = load(byte_model[1], "fp32")
    src = open_text(f, byte.tokenizer)
    assert np.array_equal(src.read(0, src.n), byte.tokenizer.encode(text))
    monkeypatch.setattr(tf, "CHUNK", 1 << 20)
    f.write_text(PROBE[:6000], encoding="utf-8")
    a = evaluate(byte, open_text(f, byte.tokenizer), streams=5, segment=17)
    b = evaluate(byte, ArraySource(byte.tokenizer.encode(PROBE[:6000])), streams=5, segment=17)
    assert a["nll"] == b["nll"] and a["tokens"] == b["tokens"] == (6000 - 1) // 5 * 5


def test_ctx_protocol_scores_second_halves(byte_model):
    m = load(byte_model[1], "fp32")
    tokens = m.tokenizer.encode(PROBE[:1000])
    N = 64
    # Plain reference: each chunk alone from a fresh state, positions N/2 .. N-2 predict the next token.
    total, count = 0.0, 0
    for c in range(len(tokens) // N):
        chunk = tokens[c * N : (c + 1) * N][None]
        logits, _ = m.forward(chunk, m.initial_state(1))
        total += token_nll(logits[0, N // 2 : N - 1], chunk[0, N // 2 + 1 :]).sum(dtype=np.float64)
        count += N - 1 - N // 2
    for streams, segment in ((1, N), (4, N), (3, 16)):
        r = evaluate(m, ArraySource(tokens), ctx=N, streams=streams, segment=segment)
        assert r["tokens"] == count and r["chunks"] == len(tokens) // N
        # Segments shorter than the chunk see only the attention memory of earlier segments.
        assert r["nll"] == pytest.approx(total / count, abs=1e-5 if segment == N else 0.05)


def test_word_model_reports_perplexity_and_unknowns(word_model, tmp_path):
    m = load(word_model[1])
    assert m.metric == "ppl" and m.variant == "fp32"  # auto: int8 was not exported
    r = m.evaluate(PROBE[:4000] + "\nzzyzx qwxv\n")
    assert r["metric"] == "ppl" and r["ppl"] == pytest.approx(math.exp(r["nll"]))
    f = tmp_path / "w.txt"
    f.write_text(PROBE[:2000] + "\nzzyzx qwxv\n")
    proc = hybrid("eval", word_model[1], f, "--streams", "2", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "ppl" in proc.stdout and "<unk>" in proc.stdout


@pytest.mark.slow
def test_eval_memory_is_flat_in_file_length(lean_model, tmp_path):
    model_dir = lean_model
    small, big = tmp_path / "1mb.txt", tmp_path / "10mb.txt"
    data = TEXT.encode("utf-8")
    small.write_bytes((data * 2)[:1_000_000])
    big.write_bytes((data * 10)[:10_000_000])
    peaks = {}
    for f in (small, big):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                DRIVER,
                "eval",
                str(model_dir),
                str(f),
                "--json",
                "--streams",
                "256",
                "--segment",
                "64",
                "--threads",
                "1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        out, err = proc.stdout.read(), proc.stderr.read()
        assert os.waitstatus_to_exitcode(status) == 0, err.decode()[-2000:]
        res = json.loads(out)
        assert res["tokens"] == (len(f.read_bytes()) - 1) // 256 * 256
        peaks[f.name] = usage.ru_maxrss  # KiB on Linux
    assert peaks["10mb.txt"] < 1.2 * peaks["1mb.txt"], peaks


# -- generation -----------------------------------------------------------------------------------


def test_stepper_equals_plain_forward(byte_model):
    for variant in ("fp32", "int8"):
        m = load(byte_model[1], variant)
        ids = m.tokenizer.encode("First Citizen:\nBefore we proceed")
        whole, _ = m.forward(ids[None], m.initial_state(1))
        M = m.dir.model["mem_len"]  # one call and many calls agree while the memory covers the context
        st = m.stepper()
        stepped = np.stack([st.step(int(t)).copy() for t in ids])
        state = m.initial_state(1)
        plain = []
        for t in ids:
            logits, state = m.forward(np.array([[t]]), state)
            plain.append(logits[0, -1])
        assert np.array_equal(stepped, np.stack(plain))  # same graph, same inputs: bit-identical
        if variant == "fp32":  # int8 quantizes activations per call: scales differ by call shape
            np.testing.assert_allclose(stepped[:M], whole[0, :M], atol=1e-4)
        for k, v in st.state.items():  # a ring's slots past the stream are unset with past and present apart
            n = len(ids) if k.endswith((".key", ".value")) else None
            np.testing.assert_array_equal(v[..., :n, :] if n else v, state[k][..., :n, :] if n else state[k])


def test_seeded_generation_is_reproducible(byte_model):
    m = load(byte_model[1], "int8")
    kw = dict(max_tokens=60, temperature=1.0, top_k=40, top_p=0.95)
    a = m.generate("ROMEO:", seed=7, **kw)
    assert a == m.generate("ROMEO:", seed=7, **kw)
    assert "".join(m.stream("ROMEO:", seed=7, **kw)) == a
    assert a != m.generate("ROMEO:", seed=8, **kw)


def test_greedy_generation_equals_pytorch(byte_model):
    run, model_dir, _ = byte_model
    tm, tok = load_run_model(run)
    prompt = tok.encode("KING RICHARD:\nWhat")
    with torch.inference_mode():
        logits, state = tm(torch.from_numpy(prompt)[None], tm.initial_state(1))
        ref = []
        for _ in range(40):
            t = int(logits[0, -1].argmax())
            ref.append(t)
            logits, state = tm(torch.tensor([[t]]), state)
    s = load(model_dir, "fp32").session()
    s.feed("KING RICHARD:\nWhat")
    assert s.generate_tokens(max_tokens=40, temperature=0) == ref


def test_session_feeds_incrementally(byte_model, word_model):
    m = load(byte_model[1], "fp32")
    a, b = m.session(), m.session()
    a.feed("To be, or not")
    a.feed(" to be: that is")
    b.feed("To be, or not to be: that is")
    np.testing.assert_allclose(a.next_token_logprobs(), b.next_token_logprobs(), atol=1e-5)
    assert a.n_tokens == b.n_tokens
    # Generation continues the stream, and the stream keeps the generated tokens even if the
    # caller stops reading early.
    n = a.n_tokens
    for i, _ in enumerate(a.stream(max_tokens=50, seed=1)):
        if i == 2:
            break
    assert n < a.n_tokens <= n + 50 and a.last_stats["tokens"] == a.n_tokens - n
    w = load(word_model[1])
    a, b = w.session(), w.session()
    a.feed("the ki")
    a.feed("ng is here\nand")
    b.feed("the king is here\nand")
    np.testing.assert_allclose(a.next_token_logprobs(), b.next_token_logprobs(), atol=1e-5)
    assert a.n_tokens == b.n_tokens == 5  # the king is here <eos>; "and" may go on: held, read on a copy
    # "\r\n" split across two feeds is one line break, as in one feed.
    a, b = w.session(), w.session()
    a.feed("the king\r")
    a.feed("\nis here ")
    b.feed("the king\r\nis here ")
    assert a.n_tokens == b.n_tokens == 5  # the king <eos> is here
    np.testing.assert_allclose(a.next_token_logprobs(), b.next_token_logprobs(), atol=1e-5)


def test_reading_the_distribution_changes_nothing(byte_model, word_model):
    for model_dir, first, rest in ((byte_model[1], "", "Hello"), (word_model[1], "the ki", "ng is ")):
        m = load(model_dir, "fp32")
        a, b = m.session(), m.session()
        a.feed(first)
        before = a.next_token_logprobs()
        np.testing.assert_array_equal(before, a.next_token_logprobs())
        a.feed(rest)
        b.feed(first + rest)
        assert a.n_tokens == b.n_tokens
        np.testing.assert_allclose(a.next_token_logprobs(), b.next_token_logprobs(), atol=1e-5)


def test_generation_continues_after_feeding(byte_model):
    """A session's second generation (its stepper reused, the state fed since copied in) equals a
    fresh session given the same text."""
    m = load(byte_model[1], "fp32")
    a = m.session()
    a.feed("The ")
    first = a.generate(max_tokens=6, temperature=0)
    a.feed(" and")
    second = a.generate(max_tokens=6, temperature=0)
    b = m.session()
    b.feed("The " + first + " and")
    assert second == b.generate(max_tokens=6, temperature=0)


def test_characters_split_across_generate_calls_come_out_whole(byte_model, monkeypatch):
    import hybrid.runtime.session as session_mod

    text = "h\u00e9llo w\u00f6rld \u20ac!"  # 2- and 3-byte characters
    data = iter(text.encode())
    monkeypatch.setattr(session_mod, "sample", lambda *args, **kw: next(data))
    s = load(byte_model[1], "fp32").session()
    s.feed("x")
    pieces = [s.generate(max_tokens=2) for _ in range(len(text.encode()) // 2)]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    # One-shot generation (nothing follows) ends a cut-off character as decode() does.
    data = iter(b"a\xe2\x82")
    assert load(byte_model[1], "fp32").generate("x", max_tokens=3) == "a\ufffd"


def test_word_generation_after_a_space_adds_no_second_space(word_model, monkeypatch):
    import hybrid.runtime.session as session_mod

    w = load(word_model[1], "fp32")
    king = w.tokenizer.encode("king", eos_at_end=False)[0]
    monkeypatch.setattr(session_mod, "sample", lambda *args, **kw: king)
    assert w.generate("the ", max_tokens=2) == "king king"
    assert w.generate("the", max_tokens=1) == " king"
    assert w.generate("the\n", max_tokens=1) == "king"


def test_stop_strings():
    f = StopFilter(["</s>", "\n\n"])
    out = "".join(f.push(p) for p in ["ab", "c<", "/", "s", ">xyz"]) + f.flush()
    assert out == "abc" and f.stopped
    f = StopFilter(["</s>"])
    assert f.push("a<") == "a" and f.push("b") == "<b" and f.flush() == ""
    assert "".join(StopFilter([]).push(p) for p in ["x", "y"]) == "xy"


def test_generation_stops_at_stop_string(byte_model):
    m = load(byte_model[1], "fp32")
    full = m.generate("The ", max_tokens=80, temperature=0)
    stop = full[30:33]
    cut = m.generate("The ", max_tokens=80, temperature=0, stop=[stop])
    assert cut == full[: full.index(stop)]


def test_tiny_temperatures_are_greedy_not_nan():
    logits = np.array([1.0, 3.0, 2.0, 0.0], np.float32)
    for t in (1e-3, 1e-300, 1e-310, 1e-320):
        np.testing.assert_array_equal(filtered_probs(logits, t), [0, 1, 0, 0])
        assert sample(logits, t, rng=np.random.default_rng(0)) == 1


def test_sampling_filters_match_a_plain_reference():
    rng = np.random.default_rng(0)
    for _ in range(50):
        logits = rng.normal(size=12).astype(np.float32) * 3
        T, k, p = rng.choice([0.5, 1.0, 1.7]), int(rng.integers(0, 13)), float(rng.choice([0.3, 0.8, 1.0]))
        # Reference, written the slow way.
        probs = [math.exp(l / T) for l in logits.astype(np.float64)]
        probs = [x / sum(probs) for x in probs]
        order = sorted(range(12), key=lambda i: -probs[i])
        allowed = set(order[:k]) if 0 < k < 12 else set(order)
        if 0 < k < 12:  # ties with the k-th stay
            allowed |= {i for i in range(12) if logits[i] >= logits[order[k - 1]]}
        q = [probs[i] if i in allowed else 0.0 for i in range(12)]
        q = [x / sum(q) for x in q]
        if p < 1:
            keep, mass = set(), 0.0
            for i in sorted(range(12), key=lambda i: -q[i]):
                if mass >= p:
                    break
                keep.add(i)
                mass += q[i]
            q = [q[i] if i in keep else 0.0 for i in range(12)]
            q = [x / sum(q) for x in q]
        np.testing.assert_allclose(filtered_probs(logits, T, k, p), q, atol=1e-12)
    logits = np.array([0.0, 5.0, 1.0, 4.9])
    assert sample(logits, temperature=0) == 1 and sample(logits, top_k=1, rng=rng) == 1
    draws = [sample(logits, 1.0, 2, 1.0, rng) for _ in range(300)]
    assert set(draws) == {1, 3}


# -- bench -----------------------------------------------------------------------------------------------


def test_bench_reports_every_figure(byte_model):
    from hybrid.train.eager import run_bench

    run, model_dir, _ = byte_model
    res = run_bench(
        model_dir,
        variants=["fp32", "int8", "int4"],
        threads=[1],
        reps=2,
        prompt_len=16,
        gen_tokens=4,
        streams=4,
        segment=8,
        run_dir=run,
        log=lambda s: None,
    )
    tests = {(r["backend"], r["variant"], r["test"]) for r in res["results"]}
    for backend, v in (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("torch", "fp32")):
        for t in ("pp16", "ev1x8", "ev4x8", "tg4"):
            assert (backend, v, t) in tests
    assert "int4" not in res["variants"]  # not exported: skipped with a note
    assert all(r["tokens_per_s"] > 0 and r["ms_per_token"] > 0 for r in res["results"])
    assert res["variants"]["int8"]["file_mib"] < res["variants"]["fp32"]["file_mib"]
    assert all(v["peak_rss_mib"] > 0 for v in res["variants"].values())
    whats = {d["what"] for d in res["derived"]}
    assert "generation ms/token / bandwidth bound" in whats and "tg4 speed-up vs eager PyTorch fp32" in whats
    assert res["bandwidth_gbs"][1] > 0


# -- bad input: one clear line --------------------------------------------------------------------------


def test_bench_refuses_a_run_that_is_not_the_models_own_before_measuring(byte_model, word_model):
    from hybrid.train.eager import run_bench

    logged = []
    with pytest.raises(HybridError, match="tokenizer differs"):
        run_bench(byte_model[1], variants=["fp32"], threads=[1], reps=1, run_dir=word_model[0], log=logged.append)
    assert logged == []  # refused before any measurement


def test_eval_notes_streams_too_short_and_too_many_threads(byte_model, tmp_path):
    (tmp_path / "short.txt").write_text("To be, or not to be\n")
    proc = hybrid("eval", byte_model[1], tmp_path / "short.txt", "--threads", str(4 * (os.cpu_count() or 1)))
    assert proc.returncode == 0, proc.stderr
    assert "streams holds only" in proc.stderr and "threads on" in proc.stderr


def test_bad_model_directories(byte_model, tmp_path):
    run, model_dir, _ = byte_model
    assert "model directory not found" in one_error_line(hybrid("eval", tmp_path / "nope", tmp_path / "x.txt"))
    assert "is a training run" in one_error_line(hybrid("generate", run, "--prompt", "a"))
    (tmp_path / "empty").mkdir()
    assert "no config.json" in one_error_line(hybrid("bench", tmp_path / "empty"))
    for change, needle in (
        ({"format": "something"}, "unknown format 'something'"),
        ({"format_version": 4}, "format_version 4 is not supported"),
        ({"format_version": True}, "format_version True is not supported"),
    ):
        d = tmp_path / f"bad{len(needle)}"
        d.mkdir()
        cfg = json.loads((model_dir / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, **change}))
        assert needle in one_error_line(hybrid("generate", d, "--prompt", "a"))
        with pytest.raises(HybridError, match=needle.split("'")[0]):
            open_model_dir(d)
    assert "no int4 model" in one_error_line(hybrid("generate", model_dir, "--variant", "int4"))


def test_bad_text_files(byte_model, tmp_path):
    _, model_dir, _ = byte_model
    cases = {
        "empty.txt": (b"", "file is empty"),
        "bin.dat": (b"\x7fELF\x02\x01\x00\x00abc", "not a text file (NUL byte at offset 6)"),
        "latin1.txt": ("caf\u00e9 ok".encode("latin-1"), "not a text file (invalid UTF-8 at byte 3)"),
        "one.txt": (b"a", "too short to evaluate"),
    }
    for name, (data, needle) in cases.items():
        (tmp_path / name).write_bytes(data)
        assert needle in one_error_line(hybrid("eval", model_dir, tmp_path / name))
    assert "file not found" in one_error_line(hybrid("eval", model_dir, tmp_path / "missing.txt"))
    assert "is a directory" in one_error_line(hybrid("eval", model_dir, tmp_path))
    (tmp_path / "ok.txt").write_text(PROBE[:300])
    assert "segment must be a positive integer" in one_error_line(
        hybrid("eval", model_dir, tmp_path / "ok.txt", "--segment", "0")
    )
    assert "shorter than one --ctx chunk" in one_error_line(
        hybrid("eval", model_dir, tmp_path / "ok.txt", "--ctx", "4096")
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--max-tokens", "0"], "max_tokens must be a positive integer, got 0"),
        (["--max-tokens", "-5"], "max_tokens must be a positive integer, got -5"),
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--top-p", "0"], "top_p must be in (0, 1]"),
        (["--top-k", "-1"], "top_k must be an integer >= 0"),
        (["--threads", "-2"], "threads must be 0"),
        (["--provider", "nosuch"], "execution provider 'nosuch' is not available"),
    ],
)
def test_bad_generation_options(byte_model, args, needle):
    assert needle in one_error_line(hybrid("generate", byte_model[1], "--prompt", "Hi", *args))


def test_bad_api_arguments_are_one_line_errors(byte_model):
    from hybrid.runtime.session import Session

    m = load(byte_model[1], "fp32")
    cases = [
        (lambda: m.evaluate(None), "evaluate\\(\\) takes a str"),
        (lambda: evaluate(m, np.array([300, 1, 2, 3])), "token ids must be in \\[0, 256\\)"),
        (lambda: evaluate(m, None), "takes token ids or a token source"),
        (lambda: evaluate(m, np.array([0.5, 1.0])), "must be a 1-D sequence of integers"),
        (lambda: Session(m, segment=0), "segment must be a positive integer"),
        (lambda: m.session().feed_tokens("abc"), "token ids must be integers"),
        (lambda: m.session().feed_tokens([1.5]), "token ids must be integers"),
        (lambda: m.session().feed_tokens([256]), "token ids must be in"),
        (lambda: m.generate("a", stop=5), "stop must be a string or a list"),
        (lambda: load_model(None), "a model directory path is needed"),
        (lambda: load_model(byte_model[1], threads=True), "threads must be 0"),
    ]
    for call, needle in cases:
        with pytest.raises(HybridError, match=needle):
            call()
    # numpy scalars are numbers like any other, and no stop strings is None as well as [].
    assert m.generate("a", max_tokens=np.int64(3), temperature=np.float32(0.7), seed=np.int64(1), stop=None)
    assert evaluate(m, m.tokenizer.encode(PROBE[:500]), streams=np.int64(2))["tokens"] > 0


def test_graph_and_config_state_shapes_must_agree(byte_model, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(byte_model[1], d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model"]["mem_len"] += 1  # config.json agrees with itself (a longer memory), not with the graph
    for spec in cfg["state"]:
        if spec["input"] == "past_mask" or spec["input"].endswith((".key", ".value")):
            spec["shape"][-1 if spec["input"] == "past_mask" else 2] += 1
    (d / "config.json").write_text(json.dumps(cfg))
    line = one_error_line(hybrid("generate", d, "--prompt", "a"))
    assert ".key' is ['batch'," in line and "in the graph but" in line


def test_forward_in_place_writes_the_memory_into_the_given_arrays_and_agrees(byte_model):
    """in_place=True (evaluation, a session's feeding) binds each attention memory as past and
    present: the same logits and state as the plain path, in the caller's own arrays."""
    m = load(byte_model[1], "int8")
    ids = np.random.default_rng(0).integers(0, 256, (3, 150))
    plain, own = m.initial_state(3), m.initial_state(3)
    key = next(k for k in own if k.endswith(".key"))
    for p in range(0, 150, 40):  # 40-token calls: the 17-slot ring wraps within and across calls
        a, plain = m.forward(ids[:, p : p + 40], plain)
        memory = own[key]
        b, own = m.forward(ids[:, p : p + 40], own, in_place=True)
        assert own[key] is memory
        np.testing.assert_array_equal(a, b)
    for k in plain:
        np.testing.assert_array_equal(plain[k], own[k])


def test_kl_in_blocks_equals_kl_at_once(byte_model, monkeypatch):
    import hybrid.runtime.evaluate as ev

    _, model_dir, _ = byte_model
    fp32, int8 = load(model_dir, "fp32"), load(model_dir, "int8")
    src = ArraySource(fp32.tokenizer.encode(PROBE[:3000]))
    whole = evaluate(int8, src, streams=4, segment=32, base=fp32)
    monkeypatch.setattr(ev, "KL_BLOCK", 3 * fp32.vocab_size)  # 3 rows per block
    blocks = evaluate(int8, src, streams=4, segment=32, base=fp32)
    assert blocks["kl"]["mean"] == pytest.approx(whole["kl"]["mean"], rel=1e-12)
    assert blocks["kl"]["max"] == whole["kl"]["max"]


def test_prompt_outside_the_vocabulary_falls_back_to_unk(word_model, byte_model):
    proc = hybrid("generate", word_model[1], "--prompt", "the zzyzx king", "--max-tokens", "5", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert "not in the vocabulary, fed as <unk>: zzyzx" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout.startswith("the zzyzx king")
    # Byte models have no unknowns: any text, any script, is bytes.
    proc = hybrid("generate", byte_model[1], "--prompt", "日本語 ✓", "--max-tokens", "5", "--seed", "1")
    assert proc.returncode == 0 and proc.stdout.startswith("日本語 ✓"), proc.stderr
    # An empty prompt starts at the beginning of a line.
    proc = hybrid("generate", byte_model[1], "--max-tokens", "5", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    with pytest.raises(HybridError, match="feed\\(\\) takes a str"):
        load(byte_model[1]).session().feed(b"bytes")


def test_eval_on_a_checkpoint_equals_eval_on_its_export(byte_model, tmp_path):
    """`hybrid eval RUN_DIR FILE` (PyTorch) and `hybrid eval MODEL_DIR FILE` (onnxruntime fp32) give
    the same bpc: the literature's protocol on a checkpoint and on its export."""
    run, model_dir, _ = byte_model
    text = tmp_path / "probe.txt"
    text.write_text(PROBE, encoding="utf-8")
    results = []
    for target, extra in ((run, []), (model_dir, ["--variant", "fp32"])):
        proc = run_cli("eval", str(target), str(text), "--json", "--streams", "4", "--threads", "1", *extra)
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads(proc.stdout))
    assert results[0]["variant"] == "pytorch" and results[0]["tokens"] == results[1]["tokens"]
    assert results[0]["bpc"] == pytest.approx(results[1]["bpc"], rel=1e-5)


def test_profile_tool_sums_time_by_operator(byte_model):
    """tools/profile_onnx.py: one Scan per QRNN block per call, every op type timed."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "profile_onnx.py"
    spec = importlib.util.spec_from_file_location("profile_onnx", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    res = tool.profile(byte_model[1], variant="int8", batch=2, seq=8, runs=2, warmup=1)
    ops = {o["op"]: o for o in res["ops"]}
    assert ops["Scan"]["nodes"] == open_model_dir(byte_model[1]).model["pattern"].count("Q")
    assert "DynamicQuantizeMatMul" in ops and all(o["ms"] >= 0 for o in res["ops"])
    assert res["ms_per_call"] > 0 and sum(o["ms"] for o in res["ops"]) > 0
    # One token at a time after a context, as the runtime's stepper runs it (memory in place).
    step = tool.profile(byte_model[1], variant="int8", batch=1, seq=1, runs=2, warmup=1, context=20)
    assert step["seq"] == 1 and step["ms_per_call"] > 0
    for bad in (["--context", "-3"], ["--batch", "0"], ["--seq", "x"]):
        with pytest.raises(SystemExit) as exit_info:
            tool.main([str(byte_model[1]), *bad])
        assert exit_info.value.code == 2  # argparse's one-line usage error, no traceback
    for bad_dir, variant, needle in (
        (byte_model[1] / "nope", "int8", "model directory not found"),
        (byte_model[1], "fp16", "fp16"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            tool.main([str(bad_dir), "--variant", variant])
        assert str(exit_info.value.code).startswith("error: ") and needle in str(exit_info.value.code)
