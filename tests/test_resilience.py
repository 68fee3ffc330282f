"""No crash, preemption or bad file costs a run.

A hard kill (SIGKILL) at a checkpoint, in the middle of writing one, or at a random moment, then
`--resume`, gives bit-identical weights to a run that was never stopped (CPU, same thread count).
A SIGTERM saves and exits. A truncated checkpoint never loads; the one before is used. A full disk
is one clear error with the last checkpoint intact. Non-finite steps are skipped, and too many in
a row stop the run with its last checkpoint intact. Pruning keeps the newest and the best
(and never deletes a damaged one). `--resume` takes the run's own model, settings and corpus; with no
checkpoint that verifies it stops and changes nothing.
"""

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybrid.runtime.errors import HybridError
from hybrid.train import checkpoint as ck
from hybrid.train import trainer
from hybrid.train.config import ModelConfig, TrainConfig
from hybrid.train.data import BUILTIN, load_text_corpus
from hybrid.train.metrics import read_metrics
from hybrid.train.model import HybridLM

# Dropout and zoneout on: a resume must restore the random-number state, not only the weights.
MODEL = dict(vocab_size=256, d_model=32, n_heads=2, d_inner=64, pattern="QFAF", dropout=0.1, zoneout=0.1, mem_len=16)
# Values the CLI can express too (the CLI test below trains with the same settings).
TRAIN = dict(
    batch_size=4,
    seq_len=32,
    steps=16,
    lr=3e-3,
    warmup_steps=4,
    eval_every=4,
    save_every=4,
    log_every=2,
    tensorboard=False,
)
QUIET = dict(progress=False, log=lambda *a: None)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the children get the same count


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "c.txt"
    path.write_bytes(BUILTIN.read_bytes()[:60000])
    return path


@pytest.fixture(scope="module")
def straight(tmp_path_factory, corpus_file):
    """The reference: 16 steps, never stopped."""
    run = tmp_path_factory.mktemp("straight") / "run"
    result = trainer.train(run, ModelConfig(**MODEL), TrainConfig(**TRAIN), load_text_corpus(corpus_file), **QUIET)
    return run, result


def assert_same_run(a, b):
    wa, wb = ck.read_safetensors(a / "model.safetensors"), ck.read_safetensors(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # The metrics read as one run: every logged step once, with the same losses.
    ma = [(r["step"], r.get("loss"), r.get("valid_loss")) for r in read_metrics(a)]
    mb = [(r["step"], r.get("loss"), r.get("valid_loss")) for r in read_metrics(b)]
    assert ma == mb


CHILD = r"""
import json, os, signal, sys
import torch
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
from hybrid.train import checkpoint as ck, trainer
from hybrid.train.config import ModelConfig, TrainConfig
from hybrid.train.data import load_text_corpus

mode, at = args["mode"], args["at"]
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if mode == "after-save":  # killed the moment checkpoint `at` is complete
    real_save = ck.save_checkpoint
    def save(run_dir, model, optimizer, step, *a, **k):
        path = real_save(run_dir, model, optimizer, step, *a, **k)
        if step == at:
            die()
        return path
    ck.save_checkpoint = save
elif mode == "mid-write":  # killed halfway through writing checkpoint `at`
    real_write = ck._write_file
    def write(path, data):
        if f"step-{at:08d}" in str(path) and path.name == "trainer.safetensors":
            with open(path, "wb") as fh:
                fh.write(data[: len(data) // 2])
            die()
        real_write(path, data)
    ck._write_file = write
elif mode == "sigterm":  # preempted: SIGTERM arrives during step `at`
    real_lr = trainer.lr_at
    def lr_at(step, cfg):
        if step == at:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_lr(step, cfg)
    trainer.lr_at = lr_at
torch.optim.AdamW([torch.zeros(1, requires_grad=True)])  # the optimizer's slow first import, before "go"
print("go", flush=True)
res = trainer.train(args["run"], ModelConfig(**args["model"]), TrainConfig(**args["train"]),
                    load_text_corpus(args["corpus"]), progress=False, log=lambda *a: None)
print("interrupted" if res.interrupted else "done", res.step, flush=True)
"""


def start_child(run, corpus_file, mode, at):
    args = dict(
        mode=mode,
        at=at,
        run=str(run),
        corpus=str(corpus_file),
        model=MODEL,
        train=TRAIN,
        threads=torch.get_num_threads(),
    )
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def resume(run, corpus_file):
    return trainer.train(
        run, ModelConfig(**MODEL), TrainConfig(**TRAIN), load_text_corpus(corpus_file), resume=True, **QUIET
    )


@pytest.mark.parametrize(
    "mode, at, resumes_from",
    [
        ("after-save", 8, 8),  # half the steps, a hard kill, a resume
        ("mid-write", 12, 8),  # the half-written checkpoint 12 is never seen; 8 is used
    ],
)
def test_hard_kill_then_resume_equals_straight_run(tmp_path, corpus_file, straight, mode, at, resumes_from):
    run = tmp_path / "run"
    child = start_child(run, corpus_file, mode, at)
    out, err = child.communicate(timeout=300)
    assert child.returncode == -signal.SIGKILL, err
    assert [p.name for p in ck.list_checkpoints(run)][-1] == f"step-{resumes_from:08d}"
    assert any(".tmp-" in p.name for p in (run / "checkpoints").iterdir()) == (mode == "mid-write")
    result = resume(run, corpus_file)
    assert not any(".tmp-" in p.name for p in (run / "checkpoints").iterdir())  # leftovers cleaned up
    assert result.step == 16 and result.valid_nll == straight[1].valid_nll
    assert_same_run(run, straight[0])


def test_hard_kill_at_a_random_moment_then_resume_equals_straight_run(tmp_path, corpus_file, straight):
    delay = random.Random().uniform(0.0, 2.0)  # the run takes about 1.5 s after "go"
    run = tmp_path / "run"
    child = start_child(run, corpus_file, "none", -1)
    assert child.stdout.readline().strip() == "go"
    try:
        child.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
    child.communicate(timeout=300)
    result = resume(run, corpus_file)
    assert result.valid_nll == straight[1].valid_nll, f"killed after {delay:.2f} s"
    assert_same_run(run, straight[0])


def test_sigterm_saves_exits_and_resumes_exactly(tmp_path, corpus_file, straight):
    run = tmp_path / "run"
    child = start_child(run, corpus_file, "sigterm", 5)
    out, err = child.communicate(timeout=300)
    assert child.returncode == 0 and out.split()[-2:] == ["interrupted", "6"], err
    assert ck.list_checkpoints(run)[-1].name == "step-00000006"
    resume(run, corpus_file)
    assert_same_run(run, straight[0])


def test_cli_sigterm_saves_and_exits_130(tmp_path, corpus_file):
    cfg = tmp_path / "model.json"
    cfg.write_text(json.dumps(MODEL))
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hybrid",
            "train",
            "--config",
            str(cfg),
            "--corpus",
            str(corpus_file),
            "--out",
            str(run),
            "--steps",
            "100000",
            "--batch-size",
            "4",
            "--seq-len",
            "32",
            "--save-every",
            "100000",
            "--eval-every",
            "100000",
            "--no-progress",
            "--device",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    try:
        for _ in range(1200):  # the first metrics record (step 10) shows the training loop is running
            if proc.poll() is not None or (run / "metrics.jsonl").exists() and (run / "metrics.jsonl").stat().st_size:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: saved" in out
    path, state, _, _ = ck.latest_valid_checkpoint(run)
    assert 0 < state["step"] < 100000


# -- damaged checkpoints --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory, corpus_file):
    run = tmp_path_factory.mktemp("two") / "run"
    small = dict(MODEL, dropout=0.0, zoneout=0.0)
    trainer.train(
        run, ModelConfig(**small), TrainConfig(**dict(TRAIN, steps=8)), load_text_corpus(corpus_file), **QUIET
    )
    assert [p.name for p in ck.list_checkpoints(run)] == ["step-00000004", "step-00000008"]
    return run


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["model.safetensors", "trainer.safetensors", "state.json"]),
    where=st.floats(0.0, 1.0),
    how=st.sampled_from(["truncate", "flip", "delete"]),
)
def test_damaged_checkpoint_never_loads_and_the_previous_is_used(two_checkpoints, name, where, how):
    with tempfile.TemporaryDirectory() as tmp:
        run = shutil.copytree(two_checkpoints, os.path.join(tmp, "run"))
        victim = ck.list_checkpoints(run)[-1] / name
        data = victim.read_bytes()
        cut = min(int(where * len(data)), len(data) - 1)
        if how == "truncate":
            victim.write_bytes(data[:cut])
        elif how == "flip":
            victim.write_bytes(data[:cut] + bytes([data[cut] ^ 0x01]) + data[cut + 1 :])
        else:
            victim.unlink()
        with pytest.raises(HybridError):
            ck.read_checkpoint(victim.parent)
        warnings = []
        path, state, _, _ = ck.latest_valid_checkpoint(run, warn=warnings.append)
        assert path.name == "step-00000004" and state["step"] == 4 and len(warnings) == 1


def test_every_truncation_and_bit_flip_of_state_json_is_refused(two_checkpoints, tmp_path):
    # state.json is not covered by the hashes it records: it carries its own checksum and layout.
    run = shutil.copytree(two_checkpoints, tmp_path / "run")
    path = ck.list_checkpoints(run)[-1]
    data = (path / "state.json").read_bytes()
    damaged = [data[:i] for i in range(len(data))]
    damaged += [data[:i] + bytes([data[i] ^ (1 << b)]) + data[i + 1 :] for i in range(len(data)) for b in range(8)]
    for bad in damaged:
        (path / "state.json").write_bytes(bad)
        with pytest.raises(HybridError):
            ck.read_checkpoint(path)


def test_truncated_weights_file_is_a_clear_error(two_checkpoints, tmp_path):
    run = shutil.copytree(two_checkpoints, tmp_path / "run")
    data = (run / "model.safetensors").read_bytes()
    for cut in (0, 7, 100, len(data) // 2, len(data) - 1):
        (run / "model.safetensors").write_bytes(data[:cut])
        with pytest.raises(HybridError, match="model.safetensors"):
            trainer.load_run_model(run)


def test_full_disk_is_a_clear_error_and_keeps_the_last_checkpoint(tmp_path, corpus_file, monkeypatch):
    real_write = ck._write_file

    def full_disk(path, data):
        if "step-00000008" in str(path):  # the disk fills up while checkpoint 8 is written
            with open(path, "wb") as fh:
                fh.write(data[: len(data) // 3])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, data)

    monkeypatch.setattr(ck, "_write_file", full_disk)
    run = tmp_path / "run"
    small = dict(MODEL, dropout=0.0, zoneout=0.0)
    with pytest.raises(HybridError, match="disk full") as e:
        trainer.train(
            run, ModelConfig(**small), TrainConfig(**dict(TRAIN, steps=12)), load_text_corpus(corpus_file), **QUIET
        )
    assert "step-00000008" in str(e.value) and "earlier checkpoints are intact" in str(e.value)
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000004"]  # no half-written leftovers
    path, state, weights, _ = ck.latest_valid_checkpoint(run)
    root = ck.read_safetensors(run / "model.safetensors")
    assert state["step"] == 4 and all(torch.equal(root[k], weights[k]) for k in weights)
    # Space freed: the run continues from checkpoint 4.
    monkeypatch.setattr(ck, "_write_file", real_write)
    result = trainer.train(
        run,
        ModelConfig(**small),
        TrainConfig(**dict(TRAIN, steps=12)),
        load_text_corpus(corpus_file),
        resume=True,
        **QUIET,
    )
    assert result.step == 12


# -- non-finite steps -------------------------------------------------------------------------------


class _NanGrad(torch.autograd.Function):
    """Identity forward, NaN gradient backward: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def faulty_model(bad: dict[int, str]):
    """HybridLM whose n-th training forward (1-based) returns a NaN loss ("loss") or a NaN gradient ("grad")."""

    class Faulty(HybridLM):
        calls = 0

        def forward(self, input_ids, state=None, targets=None):
            out, new_state = super().forward(input_ids, state, targets)
            if self.training:
                Faulty.calls += 1
                fault = bad.get(Faulty.calls)
                if fault == "loss":
                    out = out * float("nan")
                elif fault == "grad":
                    out = _NanGrad.apply(out)
            return out, new_state

    return Faulty


def test_non_finite_steps_are_skipped(tmp_path, corpus_file, monkeypatch):
    monkeypatch.setattr(trainer, "HybridLM", faulty_model({6: "loss", 8: "grad"}))
    run, log = tmp_path / "run", []
    small = dict(MODEL, dropout=0.0, zoneout=0.0)
    cfg = TrainConfig(**dict(TRAIN, steps=8, save_every=7, eval_every=100))
    result = trainer.train(
        run, ModelConfig(**small), cfg, load_text_corpus(corpus_file), progress=False, log=log.append
    )
    assert result.step == 8 and result.valid_nll == result.valid_nll
    assert [m for m in log if m.startswith("warning")] == [
        "warning: step 6: non-finite loss; update skipped (1 in a row, stopping at 5)",
        "warning: step 8: non-finite gradient norm; update skipped (1 in a row, stopping at 5)",
    ]
    assert [r["step"] for r in read_metrics(run) if r.get("skipped")] == [6, 8]
    # Step 8 was skipped: the final weights are those of step 7.
    _, at7, _ = ck.read_checkpoint(run / "checkpoints" / "step-00000007")
    final = ck.read_safetensors(run / "model.safetensors")
    assert all(torch.equal(final[k], at7[k]) for k in at7)
    assert all(torch.isfinite(t).all() for t in final.values())


def test_too_many_non_finite_steps_stop_the_run_with_the_last_checkpoint_intact(tmp_path, corpus_file, monkeypatch):
    monkeypatch.setattr(trainer, "HybridLM", faulty_model({n: "loss" for n in range(10, 100)}))
    run = tmp_path / "run"
    small = dict(MODEL, dropout=0.0, zoneout=0.0)
    cfg = TrainConfig(**dict(TRAIN, steps=16, save_every=4, max_bad_steps=3))
    with pytest.raises(HybridError, match=r"stopped at step 12: 3 steps in a row had a non-finite loss") as e:
        trainer.train(run, ModelConfig(**small), cfg, load_text_corpus(corpus_file), **QUIET)
    assert "step-00000008" in str(e.value) and "--resume" in str(e.value)
    path, state, weights, _ = ck.latest_valid_checkpoint(run)
    assert state["step"] == 8 and all(torch.isfinite(t).all() for t in weights.values())
    before = ck.read_safetensors(run / "model.safetensors")
    assert all(torch.equal(before[k], weights[k]) for k in weights)  # nothing written after the faults


# -- pruning ----------------------------------------------------------------------------------------


def test_keeps_the_last_k_and_the_best(tmp_path):
    model = HybridLM(ModelConfig(**MODEL))
    opt = trainer.make_optimizer(model, TrainConfig(**TRAIN))
    losses = {1: 5.0, 2: 3.0, 3: 4.0, 4: 6.0, 5: None, 6: 7.0}
    for keep_best, expect in ((True, [2, 5, 6]), (False, [5, 6])):
        run = tmp_path / f"best-{keep_best}"
        for step, loss in losses.items():
            info = {} if loss is None else {"valid_loss": loss}
            ck.save_checkpoint(run, model, opt, step, {}, info, keep_last=2, keep_best=keep_best)
        assert [int(p.name.split("-")[1]) for p in ck.list_checkpoints(run)] == expect
    assert ck.best_checkpoint(tmp_path / "best-True")[1] == 3.0


def test_training_keeps_the_best_evaluated_checkpoint(straight):
    run, _ = straight
    evals = {r["step"]: r["valid_loss"] for r in read_metrics(run) if "valid_loss" in r and not r.get("final")}
    best = min(evals, key=evals.get)
    kept = [int(p.name.split("-")[1]) for p in ck.list_checkpoints(run)]
    assert kept == sorted({12, 16, best})
    assert json.loads((ck.list_checkpoints(run)[-1] / "state.json").read_text())["world_size"] == 1


def test_resume_refuses_a_different_batch_or_segment(straight, tmp_path, corpus_file):
    run = shutil.copytree(straight[0], tmp_path / "run")
    with pytest.raises(HybridError, match="--batch-size 4 --seq-len 32"):
        trainer.train(
            run,
            ModelConfig(**MODEL),
            TrainConfig(**dict(TRAIN, batch_size=8)),
            load_text_corpus(corpus_file),
            resume=True,
            **QUIET,
        )


# -- --resume continues the run as it was configured -----------------------------------------------


def hybrid_cli(*args):
    """`hybrid ARGS` in this process (no interpreter start per call); a HybridError is returned as the
    result's exception, which `hybrid` prints as its one `error:` line."""
    from typer.testing import CliRunner

    from hybrid.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def cli_run(tmp_path, corpus_file):
    """A run made on the command line with non-default settings and its own corpus: 6 steps."""
    (tmp_path / "m.json").write_text(json.dumps(dict(MODEL, dropout=0.0, zoneout=0.0)))
    corpus = shutil.copy(corpus_file, tmp_path / "mine.txt")
    run = tmp_path / "run"
    res = hybrid_cli(
        "train",
        "--config",
        tmp_path / "m.json",
        "--corpus",
        corpus,
        "--out",
        run,
        "--batch-size",
        4,
        "--seq-len",
        16,
        "--lr",
        0.005,
        "--warmup",
        3,
        "--steps",
        6,
        "--save-every",
        3,
        "--eval-every",
        3,
        "--log-every",
        1,
        "--no-progress",
        "--no-tensorboard",
        "--device",
        "cpu",
    )
    assert res.exit_code == 0, (res.output, res.exception)
    return run, Path(corpus)


def test_cli_resume_takes_model_settings_and_corpus_from_the_run(cli_run):
    run, _ = cli_run
    saved = json.loads((run / "config.json").read_text())
    res = hybrid_cli("train", "--out", run, "--resume", "--steps", 9, "--no-progress", "--device", "cpu")
    assert res.exit_code == 0, (res.output, res.exception)
    assert "(step 6)" in res.output and "done: step 9" in res.output
    after = json.loads((run / "config.json").read_text())
    assert after["model"] == saved["model"] and after["corpus"] == saved["corpus"]
    assert after["train"] == dict(saved["train"], steps=9)  # --steps extends the run; nothing else changed
    cfg = TrainConfig(**after["train"])
    lrs = {r["step"]: r["lr"] for r in read_metrics(run) if "lr" in r}
    assert [lrs[s] for s in (7, 8, 9)] == [trainer.lr_at(s - 1, cfg) for s in (7, 8, 9)]


def test_cli_resume_refuses_options_that_differ_from_the_run(cli_run, tmp_path, corpus_file):
    run, corpus = cli_run
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    (tmp_path / "big.json").write_text(json.dumps(dict(MODEL, d_model=64, dropout=0.0, zoneout=0.0)))
    other = tmp_path / "other.txt"
    other.write_bytes(corpus_file.read_bytes()[:50000])
    same = ["--batch-size", 4, "--seq-len", 16]  # as the run: only the option under test differs
    for args, needles in (
        (["--lr", "0.001"], ["--lr", "0.001", "0.005"]),
        (["--warmup", "7"], ["--warmup", "7", "3"]),
        (["--config", tmp_path / "big.json"], ["--config", "d_model", "64", "32"]),
        (["--preset", "hybrid-tiny"], ["--preset", "hybrid-tiny"]),
        (["--corpus", other], ["--corpus", "other.txt", "mine.txt"]),
        (["--tokenizer", "word"], ["--tokenizer", "word", "byte"]),
    ):
        res = hybrid_cli("train", "--out", run, "--resume", *same, *args, "--no-progress", "--device", "cpu")
        assert isinstance(res.exception, HybridError), (args, res.output, res.exception)
        assert all(n in str(res.exception) for n in needles), (args, str(res.exception))
    # The corpus file changed since the run trained on it: refused, not trained on.
    corpus.write_bytes(corpus.read_bytes()[:-1000] + b"x" * 1000)
    res = hybrid_cli("train", "--out", run, "--resume", "--no-progress", "--device", "cpu")
    assert isinstance(res.exception, HybridError) and "mine.txt" in str(res.exception), (res.output, res.exception)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # nothing was changed


def test_cli_resume_refusal_is_one_error_line(cli_run):
    run, _ = cli_run
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hybrid",
            "train",
            "--out",
            str(run),
            "--resume",
            "--lr",
            "0.01",
            "--batch-size",
            "4",
            "--seq-len",
            "16",
            "--no-progress",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: --lr 0.01"), proc.stderr


# -- no verified checkpoint, pruning, old checkpoints ----------------------------------------------


def flip_byte(path, at=100):
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_resume_with_every_checkpoint_damaged_stops_and_changes_nothing(two_checkpoints, tmp_path, corpus_file):
    run = shutil.copytree(two_checkpoints, tmp_path / "run")
    for path in ck.list_checkpoints(run):
        flip_byte(path / "model.safetensors")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    small = dict(MODEL, dropout=0.0, zoneout=0.0)
    with pytest.raises(HybridError, match="none of its 2 checkpoints verifies") as e:
        trainer.train(
            run,
            ModelConfig(**small),
            TrainConfig(**dict(TRAIN, steps=8)),
            load_text_corpus(corpus_file),
            resume=True,
            **QUIET,
        )
    assert str(run / "checkpoints") in str(e.value) and "nothing was changed" in str(e.value)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resume_moves_damaged_checkpoints_aside_and_says_so(two_checkpoints, tmp_path, corpus_file):
    run = shutil.copytree(two_checkpoints, tmp_path / "run")
    flip_byte(run / "checkpoints" / "step-00000008" / "model.safetensors")
    damaged = (run / "checkpoints" / "step-00000008" / "model.safetensors").read_bytes()
    small = dict(MODEL, dropout=0.0, zoneout=0.0)
    log = []
    cfg = TrainConfig(**dict(TRAIN, steps=12, keep_best=False))
    result = trainer.train(
        run, ModelConfig(**small), cfg, load_text_corpus(corpus_file), resume=True, progress=False, log=log.append
    )
    assert result.step == 12 and "resumed from" in "\n".join(log) and "(step 4)" in "\n".join(log)
    aside = run / ck.DAMAGED_DIR / "step-00000008"
    assert (aside / "model.safetensors").read_bytes() == damaged  # kept as it was, for inspection
    assert any("step-00000008" in m and ck.DAMAGED_DIR in m for m in log), log
    assert [p.name for p in ck.list_checkpoints(run)] == ["step-00000008", "step-00000012"]  # new, verified
    for p in ck.list_checkpoints(run):
        ck.read_checkpoint(p)


def test_pruning_never_deletes_the_new_checkpoint_or_a_damaged_one(tmp_path):
    model = HybridLM(ModelConfig(**MODEL))
    opt = trainer.make_optimizer(model, TrainConfig(**TRAIN))
    run = tmp_path / "run"
    for step in (10, 20):
        ck.save_checkpoint(run, model, opt, step, {}, {}, keep_last=2, keep_best=False)
    flip_byte(run / "checkpoints" / "step-00000020" / "trainer.safetensors")
    ck.save_checkpoint(run, model, opt, 5, {}, {}, keep_last=2, keep_best=False)  # fewer steps than those on disk
    assert [p.name for p in ck.list_checkpoints(run)] == ["step-00000005", "step-00000010", "step-00000020"]
    ck.save_checkpoint(run, model, opt, 30, {}, {}, keep_last=2, keep_best=False)
    # The verified ones are pruned by step (5 goes); the damaged one is never deleted by pruning.
    assert [p.name for p in ck.list_checkpoints(run)] == ["step-00000010", "step-00000020", "step-00000030"]
    # Checkpoints sort by step, not by name (a step past 8 digits).
    for step in (99999999, 100000000):
        ck.save_checkpoint(run, model, opt, step, {}, {}, keep_last=0)
    assert ck.list_checkpoints(run)[-1].name == "step-100000000"


def test_checkpoint_from_an_older_version_still_loads(two_checkpoints, tmp_path, corpus_file):
    # Before state.json carried its own checksum it was written as json.dumps(state, indent=2) + "\n".
    run = shutil.copytree(two_checkpoints, tmp_path / "run")
    path = ck.list_checkpoints(run)[-1]
    state = json.loads((path / "state.json").read_bytes())
    state.pop("state_sha256")
    (path / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    assert ck.read_checkpoint(path)[0]["step"] == 8
    small = dict(MODEL, dropout=0.0, zoneout=0.0)
    log = []
    trainer.train(
        run,
        ModelConfig(**small),
        TrainConfig(**dict(TRAIN, steps=10)),
        load_text_corpus(corpus_file),
        resume=True,
        progress=False,
        log=log.append,
    )
    assert any("(step 8)" in m for m in log), log
    # The self-checksummed layout stays strict: with its checksum, a trailing newline is damage.
    new = ck.list_checkpoints(run)[-1]
    ck.read_checkpoint(new)
    (new / "state.json").write_bytes((new / "state.json").read_bytes() + b"\n")
    with pytest.raises(HybridError, match="not in the layout it was written in"):
        ck.read_checkpoint(new)
