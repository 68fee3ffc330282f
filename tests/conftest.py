import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd=None, timeout=600, env=None) -> subprocess.CompletedProcess:
    """Run `python -m hybrid ARGS` in a subprocess, as a user would."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "hybrid", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """What the tests build (the fo_pool C kernel, token caches) goes to a temporary folder, not
    the user's ~/.cache/hybrid; subprocesses inherit it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HYBRID_CACHE", str(tmp_path_factory.mktemp("hybrid-cache")))
    yield
    mp.undo()


@pytest.fixture
def cli():
    return run_cli
