"""Distributed training: `torchrun ... -m hybrid train` with 2 CPU processes (gloo) follows the same
losses as 1 process with the same global batch, gradient accumulation too, and a run resumes
under a different world size."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from hybrid.runtime.errors import HybridError
from hybrid.train import checkpoint as ck
from hybrid.train import trainer
from hybrid.train.config import ModelConfig, TrainConfig
from hybrid.train.data import BUILTIN, load_text_corpus
from hybrid.train.distributed import Dist
from hybrid.train.metrics import read_metrics

# No dropout: processes draw different dropout masks than one process would.
MODEL = dict(vocab_size=256, d_model=32, n_heads=2, d_inner=64, pattern="QFAF", dropout=0.0, mem_len=16)
TRAIN = dict(
    batch_size=4,
    seq_len=16,
    steps=12,
    lr=3e-3,
    warmup_steps=2,
    eval_every=6,
    save_every=6,
    log_every=1,
    tensorboard=False,
)
CLI = [
    "--batch-size",
    "4",
    "--seq-len",
    "16",
    "--steps",
    "12",
    "--lr",
    "0.003",
    "--warmup",
    "2",
    "--eval-every",
    "6",
    "--save-every",
    "6",
    "--log-every",
    "1",
    "--no-tensorboard",
    "--no-progress",
    "--device",
    "cpu",
]
QUIET = dict(progress=False, log=lambda *a: None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # torchrun gives each worker one thread too


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    (root / "c.txt").write_bytes(BUILTIN.read_bytes()[:60000])
    (root / "m.json").write_text(json.dumps(MODEL))
    return root


def torchrun(files, out, *extra):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "hybrid",
        "train",
        "--config",
        str(files / "m.json"),
        "--corpus",
        str(files / "c.txt"),
        "--out",
        str(out),
        *CLI,
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def in_process(files, out, resume=False, **over):
    return trainer.train(
        out,
        ModelConfig(**MODEL),
        TrainConfig(**dict(TRAIN, **over)),
        load_text_corpus(files / "c.txt"),
        resume=resume,
        **QUIET,
    )


def losses(run):
    recs = read_metrics(run)
    train = {r["step"]: r["loss"] for r in recs if "loss" in r}
    valid = {r["step"]: r["valid_loss"] for r in recs if "valid_loss" in r}
    return train, valid


def assert_close_runs(a, b, from_step=0, rel=1e-5):
    (ta, va), (tb, vb) = losses(a), losses(b)
    steps = [s for s in ta if s > from_step]
    assert steps and [s for s in tb if s > from_step] == steps
    for s in steps:
        assert tb[s] == pytest.approx(ta[s], rel=rel), f"step {s}"
    for s in (s for s in va if s > from_step):
        assert vb[s] == pytest.approx(va[s], rel=rel), f"valid at step {s}"
    wa, wb = ck.read_safetensors(a / "model.safetensors"), ck.read_safetensors(b / "model.safetensors")
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-5), k


@pytest.fixture(scope="module")
def reference(files):
    in_process(files, files / "one")
    return files / "one"


@pytest.fixture(scope="module")
def two_procs(files):
    proc = torchrun(files, files / "two")
    return files / "two", proc


def test_two_processes_give_the_losses_of_one(reference, two_procs):
    run, proc = two_procs
    assert_close_runs(reference, run)
    steps = [r["step"] for r in read_metrics(run) if "loss" in r]
    assert steps == list(range(1, 13))  # rank 0 alone writes: every step once
    assert proc.stdout.count("done: step 12") == 1
    state = json.loads((ck.list_checkpoints(run)[-1] / "state.json").read_text())
    assert state["world_size"] == 2


def test_gradient_accumulation_gives_the_losses_of_one_batch(files, reference):
    in_process(files, files / "accum", grad_accum=4)  # 4 micro-batches of 1 stream
    assert_close_runs(reference, files / "accum")


def test_resume_on_one_process_from_two(files, reference, two_procs):
    run = shutil.copytree(two_procs[0], files / "two-then-one")
    shutil.rmtree(run / "checkpoints" / "step-00000012")
    result = in_process(files, run, resume=True)
    assert result.step == 12
    assert_close_runs(reference, run)


def test_resume_on_two_processes_from_one_with_accumulation(files, reference):
    run = shutil.copytree(reference, files / "one-then-two")
    shutil.rmtree(run / "checkpoints" / "step-00000012")
    proc = torchrun(files, run, "--resume", "--grad-accum", "2")
    assert "resumed from" in proc.stdout and "(step 6); saved by 1 process(es), now 2" in proc.stdout
    assert_close_runs(reference, run)


def test_batch_must_split_over_processes_and_micro_batches(files):
    corpus = load_text_corpus(files / "c.txt")
    with pytest.raises(HybridError, match=r"divisible by the number of processes \(3\)"):
        trainer._train(
            files / "bad", ModelConfig(**MODEL), TrainConfig(**TRAIN), corpus, False, Dist(rank=0, world=3), **QUIET
        )
    with pytest.raises(HybridError, match="divisible by grad_accum"):
        TrainConfig(**dict(TRAIN, grad_accum=3))
