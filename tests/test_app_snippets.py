"""README's "Use it from your app": every snippet runs here as written (read from README.md), or
its section names the test that covers it."""

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from hybrid.export.exporter import export_run
from hybrid.train.config import TrainConfig, preset
from hybrid.train.data import BUILTIN, Corpus, load_text_corpus
from hybrid.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]


def app_sections() -> dict[str, str]:
    """'### heading' -> its text, within README's '## Use it from your app'."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    part = readme.split("\n## Use it from your app\n", 1)[1].split("\n## ", 1)[0]
    chunks = re.split(r"^### (.+)$", part, flags=re.M)
    return {chunks[i].strip(): chunks[i + 1] for i in range(1, len(chunks), 2)}


def code_blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```$", section, flags=re.M | re.S)


def section(title_start: str) -> str:
    matches = [text for title, text in app_sections().items() if title.startswith(title_start)]
    assert len(matches) == 1, f"README has no single '### {title_start}...' under 'Use it from your app'"
    return matches[0]


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory):
    """A working directory holding models/hybrid-tiny, as the snippets expect (a tiny byte model)."""
    root = tmp_path_factory.mktemp("app")
    full = load_text_corpus(BUILTIN)
    corpus = Corpus("slice", full.tokenizer, full.train[:60000], full.valid[:4000], full.test[:4000])
    cfg = TrainConfig(
        batch_size=4,
        seq_len=32,
        steps=60,
        lr=1e-2,
        warmup_steps=5,
        eval_every=10_000,
        save_every=10_000,
        eval_tokens=0,
        log_every=10,
    )
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(
            root / "run",
            preset("hybrid-tiny", d_model=32, n_heads=2, d_inner=64, mem_len=16, dropout=0.0),
            cfg,
            corpus,
            progress=False,
            log=lambda *a: None,
        )
        export_run(root / "run", root / "models" / "hybrid-tiny", quantize=("int8",), check=False, progress=False)
    finally:
        torch.set_num_threads(n)
    return root


def run_snippet(code: str, cwd: Path) -> str:
    """Execute a README snippet as a script in `cwd`; returns what it printed."""
    out, here, scope = io.StringIO(), os.getcwd(), {"__name__": "__main__"}
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "README.md", "exec"), scope)
    finally:
        os.chdir(here)
        scope.clear()  # releases genai's objects now (it reports live ones at exit as leaks)
    return out.getvalue()


@pytest.fixture(scope="module")
def python_output(app_dir):
    (code,) = code_blocks(section("Python"), "python")
    return run_snippet(code, app_dir)


def test_python_snippet_prints_what_hybrid_generate_does(app_dir, python_output):
    proc = run_cli(
        "generate", "models/hybrid-tiny", "--prompt", "ROMEO:", "--max-tokens", "100", "--temperature", "0", cwd=app_dir
    )
    assert proc.returncode == 0, proc.stderr
    assert len(python_output.encode()) > 100
    assert "ROMEO:" + python_output.rstrip("\n") == proc.stdout.rstrip("\n")  # the CLI echoes the prompt


def test_genai_snippet_prints_the_python_snippets_text(app_dir, python_output):
    (code,) = code_blocks(section("onnxruntime-genai"), "python")
    genai_output = run_snippet(code, app_dir)
    assert genai_output == python_output[:-1]  # print() added one line break


def test_phone_snippets_name_the_test_that_covers_them_and_use_the_contracts_names(app_dir):
    text = section("Android and iOS")
    assert "not run in CI" in text and "tests/test_ort.py" in text and (ROOT / "tests" / "test_ort.py").is_file()
    kotlin, swift = code_blocks(text, "kotlin"), code_blocks(text, "swift")
    assert len(kotlin) == 1 and len(swift) == 1
    for name in ("input_ids", "attention_mask"):
        assert f'"{name}"' in kotlin[0] and f'"{name}"' in swift[0]
    assert "model.int8.ort" in kotlin[0] and '"logits"' in swift[0]


def test_node_and_browser_section_is_there():
    assert "Node.js and the browser" in app_sections()


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("cc") is None,
    reason="the C snippet is built here with the system C compiler against the Linux wheel",
)
def test_genai_c_snippet_compiled_and_run_prints_the_python_snippets_text(app_dir, python_output, tmp_path):
    import onnxruntime
    import onnxruntime_genai

    (code,) = code_blocks(section("onnxruntime-genai"), "c")
    (tmp_path / "main.c").write_text(code)
    shutil.copy(ROOT / "tests" / "data" / "ort_genai_c.h", tmp_path / "ort_genai_c.h")
    lib_dir = Path(onnxruntime_genai.__file__).parent
    build = subprocess.run(
        [
            "cc",
            "-O1",
            "-Wall",
            "-Werror",
            "-o",
            str(tmp_path / "main"),
            str(tmp_path / "main.c"),
            f"-I{tmp_path}",
            f"-L{lib_dir}",
            "-l:libonnxruntime-genai.so",
            f"-Wl,-rpath,{lib_dir}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    (ort_lib,) = (Path(onnxruntime.__file__).parent / "capi").glob("libonnxruntime.so*")
    proc = subprocess.run(
        [str(tmp_path / "main")],
        cwd=app_dir,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ORT_LIB_PATH": str(ort_lib)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == python_output[:-1]
