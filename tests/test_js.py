"""The JavaScript package (js/) against the Python runtime: Node (onnxruntime-node) and the demo
page in headless Chromium (onnxruntime-web, wasm) give the same greedy text over 300 tokens (past
the attention memory) for fp32, int8 and int4, the same evaluation as `hybrid eval`, the same
tokenizer and session rules; seeded sampling reproduces; bad input is one clear line.

Needs node with js/node_modules (`tools/setup_js.sh`) and Debian's chromium. Without them these
tests skip on a developer's machine and FAIL under CI (the CI variable set), never silently.
"""

import glob
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_cli
from hybrid.runtime import load_model
from hybrid.runtime.modeldir import open_model_dir
from hybrid.runtime.tokenizer import ByteTokenizer, tokenizer_from_json
from hybrid.train.config import TrainConfig, preset
from hybrid.train.data import BUILTIN, Corpus, load_text_corpus
from hybrid.train.trainer import train

sys.path.insert(0, str(ROOT / "tools"))
from bench_binding import identity_graph, signature  # noqa: E402

JS = ROOT / "js"
CHROMIUM = os.environ.get("HYBRID_CHROMIUM", "/usr/bin/chromium")
SMALL = dict(d_model=32, n_heads=2, d_inner=64, mem_len=16, dropout=0.0)
TEXT = BUILTIN.read_text(encoding="utf-8")
PROBE = TEXT[-6000:]  # held out: the runs train on the first 60k tokens
GREEDY = 300  # tokens: far past the attention memory (mem_len 16)


def need(ok: bool, what: str) -> None:
    """Skip without the JS tools, except under CI, where a missing tool is a failure."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what}; CI runs the JS tests: tools/setup_js.sh installs what they need")
    pytest.skip(what)


@pytest.fixture(scope="module")
def node():
    exe = shutil.which("node")
    need(exe is not None, "node is not installed")
    need((JS / "node_modules" / "onnxruntime-node").is_dir(), "js/node_modules is missing (npm ci --prefix js)")
    return exe


@pytest.fixture(scope="module")
def chromium(node):
    need(Path(CHROMIUM).is_file(), f"{CHROMIUM} is missing (apt-get install chromium)")
    need((JS / "node_modules" / "playwright-core").is_dir(), "js/node_modules/playwright-core is missing")
    return CHROMIUM


def _train_export(root: Path, kind: str, steps: int, quantize) -> Path:
    from hybrid.export.exporter import export_run

    full = load_text_corpus(BUILTIN, tokenizer=kind, **({"min_count": 3} if kind == "word" else {}))
    corpus = Corpus("slice", full.tokenizer, full.train[:60000], full.valid[:3000], full.test[:3000])
    cfg = TrainConfig(
        batch_size=8,
        seq_len=64,
        steps=steps,
        lr=3e-3,
        warmup_steps=5,
        eval_every=10_000,
        save_every=10_000,
        eval_tokens=2000,
        log_every=10,
    )
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # a second torch thread only spins against other processes here
    try:
        train(
            root / "run",
            preset("hybrid-tiny", vocab_size=corpus.tokenizer.vocab_size, **SMALL),
            cfg,
            corpus,
            progress=False,
            log=lambda *a: None,
        )
        export_run(root / "run", root / "model", quantize=quantize, check=False, progress=False)
    finally:
        torch.set_num_threads(n)
    return root / "model"


@pytest.fixture(scope="module")
def byte_model(tmp_path_factory):
    """A byte model (QFAFQFQF, mem_len 16) trained long enough to write words, in fp32, int8 and int4."""
    return _train_export(tmp_path_factory.mktemp("js-byte"), "byte", 150, ("int8", "int4"))


@pytest.fixture(scope="module")
def word_model(tmp_path_factory):
    return _train_export(tmp_path_factory.mktemp("js-word"), "word", 20, ())


def js(node, script: str, job: dict, stdin: str | None = None, timeout: int = 300) -> dict:
    proc = subprocess.run(
        [node, "--expose-gc", str(JS / "scripts" / script), json.dumps(job)],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=timeout,
        cwd=JS,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().split("\n")[-1])  # not splitlines(): the JSON may hold U+2028


def node_job(node, **job) -> dict:
    job["dir"] = str(job["dir"])
    return js(node, "driver.mjs", job)


def python_model(path, variant):
    return load_model(path, variant=variant, threads=1)


# -- Node -----------------------------------------------------------------------------------------


def test_node_unit_tests(node):
    files = sorted(glob.glob(str(JS / "test" / "*.test.js")))
    assert files
    proc = subprocess.run([node, "--test", *files], capture_output=True, text=True, timeout=120, cwd=JS)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout


STEPPERS = {"capi": {}, "binding": {"ioBinding": False}}  # Node's default and its reference


@pytest.mark.parametrize("stepper", list(STEPPERS))
@pytest.mark.parametrize("variant", ["fp32", "int8", "int4"])
def test_node_greedy_text_equals_python(node, byte_model, variant, stepper):
    """Both Node steppers: the C API one with IOBinding (the default) and the binding's session.run."""
    want = python_model(byte_model, variant).generate("ROMEO:", max_tokens=GREEDY, temperature=0)
    got = node_job(
        node,
        op="generate",
        dir=byte_model,
        variant=variant,
        options=STEPPERS[stepper],
        generate={"prompt": "ROMEO:", "maxTokens": GREEDY, "temperature": 0},
    )
    assert got["ok"], got
    assert got["out"]["stepper"] == stepper  # never a silent fallback to the other
    assert len(want.encode()) == GREEDY and len(set(want)) > 3  # words, not one repeated byte
    assert got["out"]["text"] == want


@pytest.mark.parametrize("stepper", list(STEPPERS))
def test_node_state_after_300_tokens_equals_python(node, byte_model, stepper):
    """The state the stepper carries through 300 generated tokens gives the same distribution."""
    m = python_model(byte_model, "fp32")
    s = m.session()
    s.feed("JULIET:\n")
    text = s.generate(max_tokens=GREEDY, temperature=0)
    want = s.next_token_logprobs()
    got = node_job(
        node,
        op="session",
        dir=byte_model,
        variant="fp32",
        options=STEPPERS[stepper],
        steps=[["feed", "JULIET:\n"], ["generate", {"maxTokens": GREEDY, "temperature": 0}], ["logprobs"], ["stepper"]],
    )
    assert got["ok"], got
    assert got["out"][3] == stepper
    assert got["out"][1] == text
    assert max(abs(a - b) for a, b in zip(got["out"][2], want.tolist())) < 1e-4


@pytest.mark.parametrize("case", ["byte-fp32", "byte-int8", "byte-int4-ctx", "word-fp32"])
def test_node_evaluation_equals_hybrid_eval(node, byte_model, word_model, tmp_path, case):
    kind, variant, *ctx = case.split("-")
    model_dir = byte_model if kind == "byte" else word_model
    text = PROBE if kind == "byte" else TEXT[-20000:]
    f = tmp_path / "probe.txt"
    f.write_text(text, encoding="utf-8")
    opts = {"streams": 4, "segment": 64, "ctx": 256 if ctx else 0} if variant != "fp32" else {}
    args = [f"--{k}={v}" for k, v in opts.items()]
    proc = run_cli("eval", str(model_dir), str(f), "--variant", variant, "--threads", "1", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    want = json.loads(proc.stdout)
    got = node_job(node, op="evaluate", dir=model_dir, variant=variant, text=text, evaluate=opts)
    assert got["ok"], got
    got = got["out"]
    for key in ("metric", "tokens", "protocol", "streams", "segment", "tokens_processed"):
        assert got[key] == want[key], key
    assert abs(got["nll"] - want["nll"]) < 1e-5
    if kind == "byte":
        assert abs(got["bpc"] - want["bpc"]) < 1e-4
    else:
        assert abs(got["ppl"] - want["ppl"]) / want["ppl"] < 1e-4


TRICKY = [
    "",
    "a",
    "hello world",
    "  two  spaces  ",
    "line one\nline two\n",
    "no break at end",
    "\n\n\n",
    "crlf\r\nand cr\rand lf\n",
    "tab\there",
    "nbsp\xa0and\u2003em\u3000ideo",
    "sep\x1cfile\x1dgroup\x1erec\x1funit",
    "nel\x85ls\u2028ps\u2029end",
    "vt\x0bff\x0cend",
    "zero\u200bwidth\ufeffbom",
    "émoji 😀 and 日本語",
    "ROMEO: the king is here\nJULIET: and unknownword xyzzy\n",
    "trailing space \n",
    " \n \n",
]


@pytest.mark.parametrize("kind", ["byte", "word"])
def test_tokenizers_equal_python(node, byte_model, word_model, kind):
    model_dir = byte_model if kind == "byte" else word_model
    name = json.loads((model_dir / "config.json").read_text())["tokenizer"]  # hybrid_tokenizer.json in version 2
    spec = json.loads((model_dir / name).read_text(encoding="utf-8"))
    tok = tokenizer_from_json(spec)
    texts = TRICKY + [TEXT[1000:3000]]
    rng = random.Random(1)
    streams = (
        [list(s.encode()) for s in TRICKY]
        + [[rng.randrange(256) for _ in range(60)] for _ in range(30)]
        + [
            [0xE2, 0x82],
            [0xF0, 0x9F, 0x98],
            [0xED, 0xA0, 0x80],
            [0xED, 0xAE],
            [0xED, 0xAE, 0xE2, 0x82, 0xAC],
            [0xED, 0xBF, 0xED, 0xA0, 0x41],
            [0xC0, 0xAF, 0xE0, 0x80, 0xBF, 0xF4, 0x90, 0x80, 0x80],
        ]
    )
    got = js(node, "tokenize.mjs", {"tokenizer": spec, "texts": texts, "byteStreams": streams})
    assert got["encode"] == [tok.encode(t).tolist() for t in texts]
    assert got["encodeOpen"] == [tok.encode(t, eos_at_end=False).tolist() for t in texts]
    assert got["unknown"] == [tok.unknown_words(t) for t in texts]
    if kind == "word":
        assert got["decode"] == [tok.decode(tok.encode(t)) for t in texts]
    for ids, out in zip(streams, got["decodeStreams"]):
        d = ByteTokenizer().decoder()
        assert out["pieces"] == [d.push(i) for i in ids] and out["flush"] == d.flush()
        assert out["whole"] == ByteTokenizer().decode(ids)


def test_byte_tokenizer_surrogate_escapes_equal_python(node, byte_model):
    spec = {"type": "byte", "vocab_size": 256}
    texts = ["a\udc80b\udcff", "bad \ud800 surrogate"]  # raw bytes as Python's surrogateescape; a lone high surrogate
    got = js(node, "tokenize.mjs", {"tokenizer": spec, "texts": [{"escaped": [ord(c) for c in t]} for t in texts]})
    assert got["encode"][0] == ByteTokenizer().encode(texts[0]).tolist() == [97, 0x80, 98, 0xFF]
    assert got["encode"][1] == {"error": "text has a character that is not valid Unicode at position 4"}


WORD_FEEDS = [
    ["the ki", "ng is here\nand"],
    ["the king\r", "\nis here "],
    ["The ", "xyzzy", " and"],
    [""],
    ["KING RICHARD:\nWhat"],
    ["  lead", "ing spaces\n"],
    ["end with break\n"],
]


@pytest.mark.parametrize("feeds", WORD_FEEDS, ids=range(len(WORD_FEEDS)))
def test_word_session_rules_equal_python(node, word_model, feeds):
    """Held partial words, a split \\r\\n, <unk>, spaces before generated words: as runtime/session.py."""
    s = python_model(word_model, "fp32").session()
    want = [s.feed(f) for f in feeds] + [
        s.generate(max_tokens=12, temperature=0),
        s.n_tokens,
        s.generate(max_tokens=5, temperature=0),
    ]
    steps = [["feed", f] for f in feeds] + [
        ["generate", {"maxTokens": 12, "temperature": 0}],
        ["nTokens"],
        ["generate", {"maxTokens": 5, "temperature": 0}],
    ]
    got = node_job(node, op="session", dir=word_model, variant="fp32", steps=steps)
    assert got["ok"], got
    assert got["out"] == want


def test_byte_session_keeps_a_split_character_for_the_next_call(node, byte_model):
    s = python_model(byte_model, "fp32").session()
    s.feed_tokens([0xC3])  # a model is free to generate half a character; here it is fed
    want = [s.generate(max_tokens=1, temperature=0) for _ in range(3)]
    got = node_job(
        node,
        op="session",
        dir=byte_model,
        variant="fp32",
        steps=[["feedTokens", [0xC3]]] + [["generate", {"maxTokens": 1, "temperature": 0}]] * 3,
    )
    assert got["ok"], got
    assert got["out"][1:] == want


def test_seeded_sampling_is_reproducible(node, byte_model):
    opts = {"prompt": "KING:", "maxTokens": 120, "temperature": 0.9, "topK": 40, "topP": 0.95}

    def run(**o):
        return node_job(node, op="generate", dir=byte_model, variant="int8", generate={**opts, **o})["out"]["text"]

    a, b, c = run(seed=5), run(seed=5), run(seed=6)
    assert a == b and a != c and len(a.encode()) == 120
    stop = a[40:43]
    cut = run(seed=5, stop=[stop])
    assert cut == a[: a.index(stop)]


BAD_OPTIONS = [
    ({"variant": "fp16"}, 'unknown variant "fp16"'),
    ({"options": {"threads": -1}}, "threads must be 0"),
    ({"options": {"thread": 1}}, 'unknown option "thread"'),
    ({"options": {"ioBinding": "yes"}}, 'ioBinding must be true or false, got "yes"'),
    ({"generate": {"maxTokens": 0}}, "maxTokens must be a positive integer, got 0"),
    ({"generate": {"temperature": -1}}, "temperature must be >= 0"),
    ({"generate": {"topP": 2}}, "topP must be in (0, 1]"),
    ({"generate": {"topK": 1.5}}, "topK must be an integer >= 0"),
    ({"generate": {"stop": ""}}, "stop strings must be non-empty"),
]


@pytest.mark.parametrize("opts,message", BAD_OPTIONS, ids=[m for _, m in BAD_OPTIONS])
def test_bad_options_are_one_clear_line(node, byte_model, opts, message):
    job = {"op": "generate", "dir": byte_model, "generate": {"prompt": "a"}, **opts}
    if "generate" in opts:
        job["generate"] = {"prompt": "a", **opts["generate"]}
    got = node_job(node, **job)
    assert not got["ok"] and message in got["error"] and "\n" not in got["error"], got


def _copy_model(src: Path, dst: Path, **config) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(config)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_bad_directories_are_one_clear_line(node, byte_model, tmp_path):
    (tmp_path / "secret.onnx").write_bytes((byte_model / "model.onnx").read_bytes())
    (tmp_path / "empty").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model.safetensors").write_bytes(b"x")
    linked = _copy_model(byte_model, tmp_path / "linked")
    (linked / "model.onnx").unlink()
    (linked / "model.onnx").symlink_to(tmp_path / "secret.onnx")
    cases = [
        (tmp_path / "nope", "model directory not found"),
        (tmp_path / "secret.onnx", "not a directory"),
        (tmp_path / "empty", "no config.json; not an exported model directory"),
        (tmp_path / "run", "a training run? export it first"),
        (_copy_model(byte_model, tmp_path / "v9", format_version=9), "format_version 9 is not supported"),
        (_copy_model(byte_model, tmp_path / "fmt", format="other"), 'unknown format "other"'),
        (_copy_model(byte_model, tmp_path / "up", files={"fp32": "../secret.onnx"}), "climbs out with '..'"),
        (_copy_model(byte_model, tmp_path / "abs", files={"fp32": str(tmp_path / "secret.onnx")}), "absolute path"),
        (linked, "resolves outside the model directory"),
        (_copy_model(byte_model, tmp_path / "gone", files={"fp32": "missing.onnx"}), "none of the model files listed"),
    ]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    cases.append((tmp_path / "bad", "malformed JSON"))
    for path, message in cases:
        got = node_job(node, op="load", dir=path, variant="fp32" if path != tmp_path / "gone" else "auto")
        assert not got["ok"] and message in got["error"] and "\n" not in got["error"], (path, got)
        assert got["error"].startswith(str(path)), got


def test_a_forged_stream_length_is_one_error_line(node, byte_model):
    """A version-3 state's length sizes the attention_mask JavaScript makes: checked first."""
    for bad in (-1, 2.5, 1e300, "3"):
        got = node_job(node, op="forward", dir=byte_model, length=bad)
        assert not got["ok"] and "state.length must be the stream's token count" in got["error"], (bad, got)
    assert node_job(node, op="forward", dir=byte_model, length=10**15) == {"ok": True, "out": 10**15 + 1}


@pytest.mark.parametrize("what", ["stepper", "model"])
def test_a_step_after_release_is_one_error_line(node, byte_model, what):
    """The C API stepper's bindings are freed by its release() or its model's: a later step is refused
    in one line, never a call into freed memory."""
    got = node_job(node, op="released", dir=byte_model, what=what)
    assert got == {"ok": False, "error": f"{byte_model}: this stepper was released (or its model was)"}


def test_dropped_steppers_are_freed_by_the_collector(node, byte_model):
    """C API steppers dropped without release() are freed when collected (the model keeps fewer than
    it made), the model still generates the Python runtime's text, and releasing the model with a
    stepper alive exits cleanly."""
    got = node_job(node, op="dropped", dir=byte_model, variant="int8")
    assert got["ok"] and got["out"]["gc"], got
    assert got["out"]["left"] < 50
    want = python_model(byte_model, "int8").generate("ROMEO:", max_tokens=40, temperature=0)
    assert got["out"]["text"] == want


@pytest.mark.parametrize("stepper", list(STEPPERS))
@pytest.mark.parametrize("version", [1, 2])
def test_node_reads_version_1_and_2_directories(node, byte_model, version, stepper):
    """The earlier formats' fixtures (tests/test_format_versions.py) give in Node the text and bpc
    recorded when they were written: version 1's past_mask state, version 2's sliding memory."""
    d = ROOT / "tests" / "data" / f"v{version}-model"
    expected = json.loads((ROOT / "tests" / "data" / f"v{version}-model.expected.json").read_text(encoding="utf-8"))
    got = node_job(
        node,
        op="generate",
        dir=d,
        variant="fp32",
        options=STEPPERS[stepper],
        generate={"prompt": expected["prompt"], "maxTokens": expected["max_tokens"], "temperature": 0},
    )
    assert got["ok"], got
    assert got["out"]["stepper"] == stepper
    assert got["out"]["text"] == expected["text"]
    text = TEXT[-3000:]
    got = node_job(
        node,
        op="evaluate",
        dir=d,
        variant="fp32",
        text=text,
        evaluate={"streams": expected["streams"], "segment": expected["segment"]},
    )
    assert abs(got["out"]["bpc"] - expected["bpc"]) < 1e-4
    v3 = json.loads((byte_model / "config.json").read_text())
    assert v3["format_version"] == 3 and "attention_mask" in v3["inputs"]  # what the other tests run


# -- the demo page in headless Chromium ------------------------------------------------------------------


@pytest.fixture
def server(node, byte_model):
    proc = subprocess.Popen(
        [node, str(JS / "demo" / "serve.mjs"), "--port", "0", "--model", str(byte_model)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=JS,
    )
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_demo_page_in_chromium_equals_python(chromium, node, byte_model, server, tmp_path):
    score_text = PROBE[:3000]
    runs = [
        {
            "model": "/model/",
            "variant": v,
            "prompt": "ROMEO:",
            "maxTokens": GREEDY,
            "temperature": 0,
            **({"score": score_text} if v != "int4" else {}),
        }
        for v in ("fp32", "int8", "int4")
    ]
    runs.append({"model": "/nowhere/", "variant": "auto"})
    shot = tmp_path / "page.png"
    got = js(
        node, "browser.mjs", {"url": server, "chromium": chromium, "runs": runs, "screenshot": str(shot)}, timeout=600
    )
    assert all("404 (Not Found)" in line for line in got["console"]), got["console"]  # only /nowhere/
    for run, r in zip(runs, got["runs"]):
        if run["model"] == "/nowhere/":
            assert r["load"]["state"] == "error" and "model directory not found" in r["load"]["text"], r
            continue
        v = run["variant"]
        assert r["load"]["state"] == "ready" and r["generate"]["state"] == "ready", r
        m = python_model(byte_model, v)
        assert r["text"] == m.generate("ROMEO:", max_tokens=GREEDY, temperature=0), v
        assert r["msPerToken"] > 0 and f"{GREEDY} tokens" in r["stats"]
        if "score" in run:
            from hybrid.runtime.evaluate import evaluate
            from hybrid.runtime.textfile import ArraySource

            want = evaluate(m, ArraySource(m.tokenizer.encode(score_text)))
            assert r["score"]["tokens"] == want["tokens"] and abs(r["score"]["bpc"] - want["bpc"]) < 1e-4, v
            assert "bits per character" in r["scoreLine"]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _js_blocks(markdown: str) -> list[str]:
    return [b.split("\n", 1)[1] for b in markdown.split("```")[1::2] if b.startswith("js\n")]


def test_readme_snippets_run(node, byte_model, tmp_path):
    """The Node snippets of js/README.md and README.md are js/examples/*.mjs as written, and they run."""
    blocks = _js_blocks((JS / "README.md").read_text(encoding="utf-8"))
    blocks += _js_blocks((JS.parent / "README.md").read_text(encoding="utf-8"))
    for name in ("node.mjs", "readme.mjs"):
        assert (JS / "examples" / name).read_text(encoding="utf-8") in blocks, name
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "hybrid-tiny").symlink_to(byte_model)  # the path the snippets name
    for name in ("node.mjs", "readme.mjs"):
        proc = subprocess.run(
            [node, str(JS / "examples" / name)], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        last = proc.stdout.strip().split("\n")[-1].split()
        bpc = float(last[0] if name == "node.mjs" else last[1])
        assert 0 < bpc < 9


# -- tools/bench_binding.py ------------------------------------------------------------------------


def test_binding_probe_has_the_models_signature(node, byte_model, tmp_path):
    """The probe graph is called exactly as the model is (names, dtypes, shapes), so its per-call
    cost is the binding's cost for this model; and the tool runs in Python and Node."""
    import onnxruntime as ort

    cfg = json.loads((byte_model / "config.json").read_text())
    identity_graph(*signature(open_model_dir(byte_model)), tmp_path / "probe.onnx")
    real, probe = (ort.InferenceSession(str(p)) for p in (byte_model / "model.onnx", tmp_path / "probe.onnx"))
    for get in ("get_inputs", "get_outputs"):
        want = [(x.name, x.type, [d if isinstance(d, int) else 1 for d in x.shape]) for x in getattr(real, get)()]
        want = [(n, t, s if n != "attention_mask" else [1, cfg["model"]["mem_len"] + 2]) for n, t, s in want]
        assert [(x.name, x.type, x.shape) for x in getattr(probe, get)()] == want
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench_binding.py"), str(byte_model), "--calls", "5", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| separate") or line.startswith("| packed")]
    assert len(rows) == 2 and rows[1].split("|")[2].strip() == "5"
