"""A hostile user's inputs (issue 15): every path, size and number a user or a file supplies gives
one clear line, never a traceback, hang or out-of-memory kill, and loses nothing; nothing outside
a model directory is read because of what it says; one writer per directory.

The model is a tiny run trained for a few steps and exported fp32 without the self-check.
"""

import json
import os
import shutil
import threading

import numpy as np
import pytest
import torch

from hybrid.runtime import load_model
from hybrid.runtime.errors import HybridError
from hybrid.runtime.files import DirLock, atomic_write_bytes, inside, read_json
from hybrid.runtime.tokenizer import load_tokenizer
from hybrid.train.config import TrainConfig, preset
from hybrid.train.data import BUILTIN, Corpus, load_text_corpus
from hybrid.train.trainer import train

from test_runtime import hybrid, one_error_line

SMALL = dict(d_model=32, n_heads=2, d_inner=64, mem_len=16, dropout=0.0)
TEXT = BUILTIN.read_text(encoding="utf-8")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(run_dir, model_dir) of a byte model trained 3 steps, exported fp32 unchecked."""
    from hybrid.export.exporter import export_run

    root = tmp_path_factory.mktemp("tiny")
    full = load_text_corpus(BUILTIN)
    corpus = Corpus("slice", full.tokenizer, full.train[:20000], full.valid[:2000], full.test[:2000])
    cfg = TrainConfig(
        batch_size=2,
        seq_len=16,
        steps=3,
        warmup_steps=1,
        eval_every=1000,
        save_every=1000,
        eval_tokens=200,
        log_every=1,
    )
    train(root / "run", preset("hybrid-tiny", **SMALL), cfg, corpus, progress=False, log=lambda *a: None)
    export_run(root / "run", root / "model", quantize=(), check=False, progress=False)
    return root / "run", root / "model"


def copy_model(tiny, tmp_path, **config_changes):
    d = tmp_path / "m"
    shutil.copytree(tiny[1], d)
    cfg = json.loads((d / "config.json").read_text())
    for k, v in config_changes.items():
        cfg[k] = v
    (d / "config.json").write_text(json.dumps(cfg))
    return d, cfg


def refused(d, needle):
    with pytest.raises(HybridError, match=needle):
        load_model(d, threads=1)


# -- runtime/files.py ---------------------------------------------------------------------------


def test_atomic_write_leaves_the_old_file_on_failure_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    atomic_write_bytes(target, b"old")
    real = os.replace

    def full(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(HybridError, match="a.json: could not write \\(disk full\\); the previous file is intact"):
        atomic_write_bytes(target, b"new")
    monkeypatch.setattr(os, "replace", real)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_reads_refuse_special_files_big_files_and_links_out(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "big.json").write_bytes(b"{}" + b" " * 100)
    (tmp_path / "list.json").write_text("[1]")
    cases = [
        (fifo, "is a FIFO"),
        ("/dev/zero", "is a character device"),
        (tmp_path, "is a directory"),
        (tmp_path / "list.json", "expected a JSON object"),
        (tmp_path / "nope", "not found"),
    ]
    for path, needle in cases:  # the FIFO has no writer: reading it would hang
        with pytest.raises(HybridError, match=needle):
            read_json(path)
    with pytest.raises(HybridError, match="has 102 bytes, more than the 50 a JSON file may have"):
        read_json(tmp_path / "big.json", max_bytes=50)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "out").symlink_to("/etc/hostname")
    for name, needle in (
        ("/etc/passwd", "absolute path"),
        ("../x", "climbs out"),
        ("out", "resolves outside"),
        (5, "must be a string"),
        ("", "is empty"),
    ):
        with pytest.raises(HybridError, match=needle):
            inside(tmp_path / "d", name, "config.json: files.fp32")


def test_dir_lock_is_one_writer_and_names_the_holder(tmp_path):
    target = tmp_path / "not-yet" / "run"
    with DirLock(target) as lock:
        assert lock.path == (tmp_path / "not-yet" / ".run.lock") and not target.exists()
        with pytest.raises(HybridError, match=f"run: process {os.getpid()} is writing to it"):
            DirLock(target).acquire()
        errors = []
        t = threading.Thread(target=lambda: errors.append(pytest.raises(HybridError, DirLock(target).acquire)))
        t.start()
        t.join()
        assert len(errors) == 1  # another thread's open file is another writer too
    assert not lock.path.exists()  # released: removed
    with DirLock(target):  # and free again
        pass


# -- item 2: every path config.json names stays inside the model directory ------------------------


def test_config_paths_outside_the_model_directory_are_refused(tiny, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(tiny[1] / "model.onnx", outside / "model.onnx")
    for files, needle in (
        ({"fp32": str(outside / "model.onnx")}, "absolute path"),
        ({"fp32": "../elsewhere/model.onnx"}, "climbs out with '..'"),
        ({"fp32": 7}, "'files' must map variants to file names"),
    ):
        d, _ = copy_model(tiny, tmp_path, files=files)
        refused(d, needle)
        shutil.rmtree(d)
    d, _ = copy_model(tiny, tmp_path)
    (d / "model.onnx").unlink()
    (d / "model.onnx").symlink_to(outside / "model.onnx")
    refused(d, "resolves outside the directory")
    line = one_error_line(hybrid("generate", d, "--prompt", "a"))
    assert "files.fp32: 'model.onnx' resolves outside" in line


def test_tokenizer_paths_and_special_files_are_refused(tiny, tmp_path):
    for tok, needle in (
        ("/etc/hostname", "absolute path"),
        ("../../x.json", "climbs out"),
        (["tokenizer.json"], "must be a string"),
    ):
        d, _ = copy_model(tiny, tmp_path, tokenizer=tok)
        refused(d, needle)
        shutil.rmtree(d)
    d, _ = copy_model(tiny, tmp_path)
    os.mkfifo(d / "fifo.json")  # no writer: a reader that opens it would wait forever
    (d / "sub").mkdir()
    (d / "zero").symlink_to("/dev/zero")
    for tok, needle in (("fifo.json", "is a FIFO"), ("sub", "is a directory"), ("zero", "resolves outside")):
        cfg = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**cfg, "tokenizer": tok}))
        refused(d, needle)
    (d / "config.json").unlink()
    (d / "config.json").symlink_to(tiny[1] / "config.json")  # config.json itself, from elsewhere
    refused(d, "config.json: 'config.json' resolves outside")


def test_tokenizer_contents_are_checked_and_errors_name_the_file(tiny, tmp_path):
    d, cfg = copy_model(tiny, tmp_path)
    tok = d / cfg["tokenizer"]  # the project's tokenizer file, as config.json names it
    cases = [
        ({"type": "word", "vocab": ["a", "<eos>"]}, "tokenizer.json: word vocabulary must contain '<unk>'"),
        ({"type": "word", "vocab": ["<unk>", "a"]}, "tokenizer.json: word vocabulary must contain"),
        ({"type": "word", "vocab": "abc"}, "'vocab' must be a list of non-empty strings"),
        ({"type": "word", "vocab": ["<unk>", "<eos>", 3]}, "'vocab' must be a list of non-empty strings"),
        ({"type": "word", "vocab": ["<unk>", "<eos>"], "unk": ["x"]}, "'unk' and 'eos' must be strings"),
        ({"type": "byte", "vocab_size": 300}, "a byte tokenizer has vocab_size 256"),
    ]
    for obj, needle in cases:
        tok.write_text(json.dumps(obj))
        with pytest.raises(HybridError, match=needle):
            load_tokenizer(tok)
        refused(d, needle)
    # The exporter reads the run's tokenizer the same way: its error names the file too.
    run = tmp_path / "run"
    shutil.copytree(tiny[0], run, ignore=shutil.ignore_patterns("checkpoints"))
    (run / "tokenizer.json").write_text(json.dumps(cases[0][0]))
    line = one_error_line(hybrid("export", run, "--out", tmp_path / "out", "--no-check", "--quantize", "none"))
    assert f"{run / 'tokenizer.json'}: word vocabulary must contain '<unk>'" in line


# -- item 3: the graph and config.json must tell the same story ------------------------------------


def test_a_graph_with_another_vocabulary_is_refused(tiny, tmp_path):
    words = ["<unk>", "<eos>"] + [f"w{i}" for i in range(298)]
    d, cfg = copy_model(
        tiny, tmp_path, metric="ppl", outputs={"logits": {"dtype": "float32", "shape": ["batch", "sequence", 300]}}
    )
    cfg["model"]["vocab_size"] = 300
    (d / "config.json").write_text(json.dumps(cfg))
    (d / cfg["tokenizer"]).write_text(json.dumps({"type": "word", "vocab": words}))
    refused(d, "the graph's logits are \\['batch', 'sequence', 256\\], but config.json has vocab_size 300")
    assert "not this directory's model" in one_error_line(hybrid("eval", d, BUILTIN))


def test_config_json_must_agree_with_its_own_model_section(tiny, tmp_path):
    d, cfg = copy_model(tiny, tmp_path)
    cfg["state"] = cfg["state"][1:]
    (d / "config.json").write_text(json.dumps(cfg))
    refused(d, "state\\[0\\] is")
    d2, cfg = copy_model(
        tiny, tmp_path / "b", outputs={"logits": {"dtype": "float32", "shape": ["batch", "sequence", 9]}}
    )
    refused(d2, "outputs.logits must be float32 of shape \\['batch', 'sequence', 256\\]")
    d3, _ = copy_model(tiny, tmp_path / "c", metric="ppl")
    refused(d3, "'metric' is 'ppl', but a byte tokenizer's metric is 'bpc'")


# -- item 7: sizes refused before they are allocated; onnxruntime failures are one line ------------


def test_requests_larger_than_the_memory_are_refused_before_allocating(tiny, tmp_path):
    m = load_model(tiny[1], threads=1)
    with pytest.raises(HybridError, match="a state for batch 1000000000 needs about .* GiB of memory"):
        m.initial_state(10**9)
    ids = np.broadcast_to(np.int64(0), (1, 10**9))  # no memory of its own
    with pytest.raises(HybridError, match="forward call on 1 x 1000000000 tokens needs about"):
        m.forward(ids, m.initial_state(1))
    text = tmp_path / "t.txt"
    text.write_text(TEXT[:400_000])
    line = one_error_line(hybrid("eval", tiny[1], text, "--segment", "10000000"))
    assert "segment 10000000" in line and "GiB of memory" in line
    line = one_error_line(hybrid("bench", tiny[1], "--prompt-len", "100000000", "--threads", "1"))
    assert "--prompt-len 100000000 needs about" in line


def test_onnxruntime_run_failures_are_one_line(tiny):
    m = load_model(tiny[1], threads=1)
    state = m.initial_state(1)
    key = next(iter(state))
    state[key] = np.zeros((1, 3), dtype=np.float32)  # the wrong shape for this input
    with pytest.raises(HybridError, match="onnxruntime failed to run the model"):
        m.forward(np.zeros((1, 2), dtype=np.int64), state)


# -- item 8: API edges ---------------------------------------------------------------------------


def test_api_edges_are_one_line_errors(tiny):
    d = tiny[1]
    for kw, needle in (
        ({"threads": 2**31}, "threads must be 0 .* up to 1024"),
        ({"threads": -1}, "threads must be 0"),
        ({"provider": None}, "provider must be a name"),
    ):
        with pytest.raises(HybridError, match=needle):
            load_model(d, **{"threads": 1, **kw})
    m = load_model(d, threads=1)
    s = m.initial_state(1)
    for ids, needle in (
        (np.array([[-1, 2]]), "token ids must be in \\[0, 256\\), got -1..2"),
        (np.array([[5, 256]]), "got 5..256"),
        (np.array([[0.5]]), "must be a \\[batch, tokens\\] array"),
        (np.array([1, 2]), "must be a \\[batch, tokens\\] array"),
    ):
        with pytest.raises(HybridError, match=needle):
            m.forward(ids, s)
    with pytest.raises(HybridError, match="state must be this model's state for batch 2"):
        m.forward(np.zeros((2, 1), dtype=np.int64), s)
    for batch in (-1, 0, 1.5, True):
        with pytest.raises(HybridError, match="batch must be a positive integer"):
            m.initial_state(batch)
    with pytest.raises(HybridError, match="token ids must be in"):
        m.stepper().step(-3)


def test_special_files_as_a_corpus_or_a_text_are_refused(tiny, tmp_path):
    fifo = tmp_path / "fifo.txt"
    os.mkfifo(fifo)
    for corpus, needle in (
        ("/dev/null", "/dev/null: is a character device, not a regular file or a folder of text files"),
        (str(fifo), "fifo.txt: is a FIFO, not a regular file or a folder of text files"),
    ):
        assert needle in one_error_line(hybrid("train", "--corpus", corpus, "--out", tmp_path / "r", "--steps", "1"))
    for path in (fifo, "/dev/zero"):  # eval would hang on the FIFO, and read /dev/zero forever
        assert "not a regular file" in one_error_line(hybrid("eval", tiny[1], path, timeout=60))


# -- item 1: the compiled kernel is loaded only from a directory nobody else can change ------------


@pytest.fixture
def kernel_cache(tmp_path, monkeypatch):
    """Points HYBRID_CACHE at tmp_path/NAME and loads the kernel afresh there; returns library()."""
    from hybrid.train.ops.fo_pool import cpu_kernel

    if cpu_kernel._compiler() is None:
        pytest.skip("no C compiler")
    monkeypatch.delenv("HYBRID_CPU_KERNEL", raising=False)

    def load(root):
        monkeypatch.setenv("HYBRID_CACHE", str(root))
        cpu_kernel.library.cache_clear()
        return cpu_kernel.library()

    yield load
    cpu_kernel.library.cache_clear()


def test_kernel_cache_writable_by_others_or_owned_by_another_user_is_refused(kernel_cache, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: anyone may rename the kernel directory away and put their own
    with pytest.warns(UserWarning, match=f"{shared} is writable by others"):
        assert kernel_cache(shared) is None
    group = tmp_path / "group"
    group.mkdir()
    group.chmod(0o775)
    with pytest.warns(UserWarning, match="is writable by its group"):
        assert kernel_cache(group) is None
    if os.geteuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir()
        os.chown(theirs, 4242, 4242)
        with pytest.warns(UserWarning, match="owned by uid 4242, not by you or root"):
            assert kernel_cache(theirs) is None


def test_kernel_cache_in_a_sticky_directory_is_accepted_and_loaded_through_its_descriptor(
    kernel_cache, tmp_path, monkeypatch
):
    import ctypes

    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)  # as /tmp: others may write, but not rename what is ours
    loaded = []
    real = ctypes.CDLL

    def spy(name, *a, **k):
        loaded.append((name, os.readlink(name) if name.startswith("/proc/self/fd/") else None))
        return real(name, *a, **k)

    monkeypatch.setattr(ctypes, "CDLL", spy)
    assert kernel_cache(sticky / "mine") is not None  # built now, and loaded as the file checked
    assert kernel_cache(sticky / "mine") is not None  # from the cache
    (so,) = (sticky / "mine" / "kernels").glob("*.so")
    assert [target for _, target in loaded] == [str(so), str(so)]
    assert all(name.startswith("/proc/self/fd/") for name, _ in loaded)
    assert oct((sticky / "mine" / "kernels").stat().st_mode & 0o777) == "0o700"


def test_kernel_library_that_is_a_link_is_not_followed(kernel_cache, tmp_path):
    assert kernel_cache(tmp_path / "c") is not None
    (so,) = (tmp_path / "c" / "kernels").glob("*.so")
    real = tmp_path / "real.so"
    so.rename(real)
    so.symlink_to(real)  # a link in our own folder could be turned to any file later
    with pytest.warns(UserWarning, match="C kernel unavailable"):
        assert kernel_cache(tmp_path / "c") is None


# -- items 4-7 on the training side: one writer, validate before deleting, full disk, sizes ---------


def cli(*args):
    """`hybrid ARGS` in this process; a HybridError comes back as the result's exception (the one
    `error:` line `hybrid` prints)."""
    from typer.testing import CliRunner

    from hybrid.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def error_of(result) -> str:
    assert isinstance(result.exception, HybridError), (result.exception, result.output)
    return str(result.exception)


def snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A corpus file, a small model config, and the options of a 2-step run of them."""
    root = tmp_path_factory.mktemp("small")
    (root / "corpus.txt").write_text(TEXT[:40000])
    (root / "model.json").write_text(json.dumps(dict(SMALL, pattern="QFAF")))
    opts = [
        "--corpus",
        root / "corpus.txt",
        "--config",
        root / "model.json",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--eval-every",
        "1000",
        "--save-every",
        "1",
        "--no-progress",
        "--no-tensorboard",
    ]
    return root, opts


def test_a_second_writer_of_a_run_or_model_directory_is_refused_and_changes_nothing(small_run, tiny, tmp_path):
    from hybrid.export.exporter import export_run

    _, opts = small_run
    run = tmp_path / "run"
    with DirLock(run):  # another `hybrid train` holds it
        assert "is writing to it" in error_of(cli("train", *opts, "--out", run))
    assert not run.exists()
    assert cli("train", *opts, "--out", run).exit_code == 0
    before = snapshot(run)
    with DirLock(run):
        for extra in (["--resume", "--steps", "3"], ["--overwrite"]):
            assert f"{run}: process {os.getpid()} is writing to it" in error_of(
                cli("train", *opts, "--out", run, *extra)
            )
    assert snapshot(run) == before
    out = tmp_path / "model"
    with DirLock(out):  # another `hybrid export` to the same destination, which does not exist yet
        with pytest.raises(HybridError, match="is writing to it"):
            export_run(tiny[0], out, quantize=(), check=False, progress=False)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_overwrite_validates_everything_before_deleting_the_old_run(small_run, tmp_path):
    root, opts = small_run
    run = tmp_path / "run"
    assert cli("train", *opts, "--out", run).exit_code == 0
    (run / "notes.txt").write_text("mine")
    before = snapshot(run)
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps(dict(SMALL, d_model=1 << 16, n_heads=1, d_inner=1 << 16)))
    for extra, needle in (
        (["--batch-size", "4000"], "too short for 4000 streams"),
        (["--config", wide], "needs about .* GiB of memory"),
        (["--seed", str(2**70)], "seed must be an integer from 0 to 2\\*\\*62 - 1"),
        (["--corpus", "/dev/null"], "is a character device"),
    ):
        with pytest.raises(HybridError, match=needle):
            raise cli("train", *opts, "--out", run, "--overwrite", *extra).exception
        assert snapshot(run) == before
    assert cli("train", *opts, "--out", run, "--overwrite").exit_code == 0
    assert not (run / "notes.txt").exists()


def test_a_model_or_step_larger_than_the_memory_is_refused_before_allocating(small_run, tmp_path):
    from hybrid.runtime.limits import available_bytes
    from hybrid.train.preflight import parameter_count

    root, opts = small_run
    have = available_bytes()
    if have is None:
        pytest.skip("no /proc/meminfo")
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps(dict(SMALL, d_model=1 << 17, n_heads=1)))
    assert "needs about" in error_of(cli("info", "--config", huge))
    # Weights that fit, but not with their gradients and AdamW's moments: refused by the step estimate.
    cfg = dict(SMALL, pattern="F", d_inner=1)
    cfg["d_inner"] = int(have / 2 / 4 / (2 * SMALL["d_model"]))
    (tmp_path / "wide.json").write_text(json.dumps(cfg))
    assert 4 * parameter_count(preset("hybrid-tiny", **cfg)) < have
    line = error_of(cli("train", *opts, "--config", tmp_path / "wide.json", "--out", tmp_path / "r"))
    assert "training with --batch-size 2 --seq-len 16" in line and "GiB of memory" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("how", ["tmpfs", "injected"])
def test_a_full_disk_while_building_the_token_cache_is_one_line_and_leaves_nothing(
    small_run, tmp_path, how, monkeypatch
):
    import errno
    import subprocess

    from hybrid.train import cache

    root, _ = small_run
    disk = tmp_path / "disk"
    disk.mkdir()
    if how == "tmpfs":  # a real full disk: a 16 KiB file system (needs root and mount rights)
        if subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(disk)], capture_output=True
        ).returncode:
            pytest.skip("cannot mount a tmpfs here")
    else:
        real = cache.Writer.write

        def full(self, tokens):
            real(self, tokens[: len(tokens) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(cache.Writer, "write", full)
    try:
        line = error_of(cli("data", "prepare", root / "corpus.txt", "--cache-dir", disk / "tokens", "--no-progress"))
        assert "could not write the token cache entry (disk full); nothing was left behind" in line
        assert [p.name for p in (disk / "tokens").iterdir() if p.name != "fingerprints.json"] == []
    finally:
        if how == "tmpfs":
            subprocess.run(["umount", str(disk)])


# -- past the list: the same classes of fault elsewhere ----------------------------------------------


def test_special_files_in_a_run_or_as_options_are_refused_without_hanging(tiny, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny[0], run, ignore=shutil.ignore_patterns("checkpoints"))
    (run / "model.safetensors").unlink()
    os.mkfifo(run / "model.safetensors")  # reading it would wait for a writer forever
    line = one_error_line(hybrid("export", run, "--out", tmp_path / "m", "--no-check", timeout=120))
    assert "model.safetensors: cannot read the weights file (is a FIFO, not a regular file)" in line
    os.mkfifo(tmp_path / "probe.txt")
    line = one_error_line(
        hybrid("export", tiny[0], "--out", tmp_path / "m", "--probe", tmp_path / "probe.txt", timeout=120)
    )
    assert "probe.txt: probe text is a FIFO" in line
    os.mkfifo(tmp_path / "enwik8.zip")
    assert "enwik8.zip: is a FIFO, not a regular file" in error_of(
        cli("data", "prepare", "enwik8", "--path", tmp_path / "enwik8.zip", "--no-hub")
    )
    (tmp_path / "m.json").symlink_to("/dev/zero")  # a config that never ends
    assert "m.json: config file is a character device" in error_of(cli("info", "--config", tmp_path / "m.json"))


def test_recipe_and_run_config_values_of_the_wrong_type_are_one_line(small_run, tmp_path):
    recipe = json.loads((BUILTIN.parents[3] / "recipes" / "enwik8" / "hybrid.json").read_text())
    for key, value in (("source", 5), ("path", ["x"]), ("raw", "yes"), ("min_count", 1.5), ("tokenizer", "bpe")):
        bad = dict(recipe, data=dict(recipe["data"], **{key: value}))
        (tmp_path / "r.json").write_text(json.dumps(bad))
        assert f"r.json: data.{key} must be" in error_of(cli("train", "--recipe", tmp_path / "r.json"))
    root, opts = small_run
    run = tmp_path / "run"
    assert cli("train", *opts, "--out", run).exit_code == 0
    cfg = json.loads((run / "config.json").read_text())
    cfg["corpus"]["spec"] = {"source": "text", "path": 7}
    (run / "config.json").write_text(json.dumps(cfg))
    assert "'corpus.spec' must hold a source" in error_of(cli("train", "--out", run, "--resume", "--no-progress"))


def test_a_token_cache_entry_that_is_a_link_is_not_read(small_run, tmp_path):
    from hybrid.train.sources import load_source

    root, _ = small_run
    first = load_source(str(root / "corpus.txt"), cache_dir=tmp_path / "a", progress=False)
    other = tmp_path / "b"
    other.mkdir()
    (other / first.meta["cache_path"].split("/")[-1]).symlink_to(first.meta["cache_path"])  # planted
    with pytest.warns(UserWarning, match="is a symbolic link"):
        again = load_source(str(root / "corpus.txt"), cache_dir=other, progress=False)
    assert not again.meta["cache_hit"] and not os.path.islink(again.meta["cache_path"])


def test_a_forged_stream_length_in_a_state_is_refused(tiny):
    """past_length sizes the attention_mask the runtime makes: a forged one is one line, not a
    huge allocation or a wrong ring position."""
    m = load_model(tiny[1], threads=1)
    for bad in (1e9, -1.0, 2.5, float("nan")):
        state = m.initial_state(1)
        state["past_length"][:] = bad
        with pytest.raises(HybridError, match="'past_length' must be one integer in \\[0, 34\\)"):
            m.forward(np.zeros((1, 1), dtype=np.int64), state)
        with pytest.raises(HybridError, match="'past_length' must be one integer"):
            m.stepper(state)


def test_a_stepper_refuses_a_state_that_is_not_its_models(tiny):
    m = load_model(tiny[1], threads=1)
    with pytest.raises(HybridError, match="state must be this model's state for batch 1"):
        m.stepper(m.initial_state(2))
    with pytest.raises(HybridError, match="state must be this model's state"):
        m.stepper().load({"past_mask": np.zeros((1, 16), dtype=np.float32)})
    with pytest.raises(HybridError, match="seed must be an integer from 0"):
        TrainConfig(seed=-1)
