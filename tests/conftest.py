import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    """Run `python -m hybrid ARGS` in a subprocess, as a user would."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "hybrid", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env
    )


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """What the tests build (the fo_pool C kernel, token caches, compiled graphs) goes to temporary
    folders, not the user's ~/.cache/hybrid or /tmp; subprocesses inherit them."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HYBRID_CACHE", str(tmp_path_factory.mktemp("hybrid-cache")))
    # torch.compile's and Triton's caches too, which would otherwise stay in /tmp and ~/.triton.
    mp.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path_factory.mktemp("torchinductor")))
    mp.setenv("TRITON_CACHE_DIR", str(tmp_path_factory.mktemp("triton")))
    # Triton 3.9 warns that its default for FP fusion will change; the kernels are tested as
    # they compile today (fusion on), said explicitly.
    mp.setenv("TRITON_DEFAULT_FP_FUSION", os.environ.get("TRITON_DEFAULT_FP_FUSION", "1"))
    yield
    mp.undo()


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread: on a small shared machine torch's second thread
    spins against other processes (a 40-step run took 20 s with 2 threads, 1.3 s with 1), and
    subprocesses are given the same count, since float results may depend on it. A module asks
    for it with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = dict(d_model=32, n_heads=2, d_inner=64, mem_len=16, dropout=0.0)  # the hybrid-tiny pattern, narrower


def builtin_text() -> str:
    from hybrid.train.data import BUILTIN

    return BUILTIN.read_text(encoding="utf-8")


# Held out: the shared run trains on the built-in corpus's first 60k tokens only.
PROBE = builtin_text()[-12000:]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """One tiny trained byte-level run for the whole session (the modules that read a run share
    it): hybrid-tiny's pattern at d_model 32, 40 steps on the built-in corpus's first 60k tokens,
    metrics every 5 steps, validation and a checkpoint every 10. Treat it as read-only."""
    import torch

    from hybrid.train.config import TrainConfig, preset
    from hybrid.train.data import BUILTIN, Corpus, load_text_corpus
    from hybrid.train.trainer import train

    full = load_text_corpus(BUILTIN)
    corpus = Corpus("slice", full.tokenizer, full.train[:60000], full.valid[:4000], full.test[:4000])
    cfg = TrainConfig(
        batch_size=4,
        seq_len=32,
        steps=40,
        lr=3e-3,
        warmup_steps=5,
        eval_every=10,
        save_every=10,
        eval_tokens=2000,
        log_every=5,
    )
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path_factory.mktemp("tiny") / "run"
        train(run, preset("hybrid-tiny", vocab_size=256, **TINY), cfg, corpus, progress=False, log=lambda *a: None)
    finally:
        torch.set_num_threads(before)
    return run


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory):
    """(model_dir, export report): tiny_run exported fp32 + int8, self-checked on PROBE."""
    import torch

    from hybrid.export.exporter import export_run

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("tiny-export") / "model"
        report = export_run(tiny_run, out, quantize=("int8",), probe_text=PROBE, progress=False)
    finally:
        torch.set_num_threads(before)
    return out, report
