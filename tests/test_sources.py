"""Corpora: enwik8's byte split, WikiText's <eos>/<unk> conventions, your own text, the token cache,
the hub path (datasets.load_dataset replaced by a local stand-in, the loading code unchanged),
bad input without a partial cache, recipes and `hybrid data`."""

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from hybrid.runtime.errors import HybridError
from hybrid.train import cache as cache_mod
from hybrid.train import source_io, source_plans, sources
from hybrid.train.data import load_text_corpus
from hybrid.train.sources import load_source, read_recipe

DATA = Path(__file__).parent / "data"
WT2 = DATA / "wikitext-2-sample"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_default_data(monkeypatch, tmp_path):
    """No $HYBRID_DATA, and ./data is an empty temporary folder: nothing found by accident."""
    monkeypatch.delenv("HYBRID_DATA", raising=False)
    monkeypatch.chdir(tmp_path)


def fake_enwik8(n: int, seed: int = 0) -> bytes:
    """A stand-in: XML-ish lines with every byte value somewhere (enwik8 is bytes, not checked text)."""
    rng = np.random.default_rng(seed)
    body = rng.integers(0, 256, size=n, dtype=np.uint8)
    body[::50] = ord("\n")
    return body.tobytes()


def cache_entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def assert_no_entry(root: Path):
    """Nothing left but (perhaps) the fingerprint memo: no entry, no temporary folder."""
    left = [n for n in cache_entries(root) if n != "fingerprints.json"]
    assert left == [], left


# -- enwik8 ---------------------------------------------------------------------------------------


def test_enwik8_standard_split_sizes_are_90m_5m_5m():
    assert sources.split_points(10**8) == (90_000_000, 95_000_000)


@pytest.mark.parametrize("as_zip", [False, True])
def test_enwik8_stand_in_splits_90_5_5_by_bytes(tmp_path, as_zip):
    data = fake_enwik8(10**6)  # a 1/100 scale enwik8
    raw = tmp_path / "enwik8"
    raw.write_bytes(data)
    path = raw
    if as_zip:
        path = tmp_path / "enwik8.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(raw, "enwik8")
        raw.unlink()
    c = load_source("enwik8", path, cache_dir=tmp_path / "cache", progress=False)
    assert (len(c.train), len(c.valid), len(c.test)) == (900_000, 50_000, 50_000)
    whole = np.frombuffer(data, dtype=np.uint8)
    assert np.array_equal(np.concatenate([c.train, c.valid, c.test]), whole)
    assert c.tokenizer.kind == "byte" and c.name == "enwik8"


def test_enwik8_is_found_in_a_folder_and_under_data(tmp_path):
    folder = tmp_path / "data" / "enwik8"
    folder.mkdir(parents=True)
    (folder / "enwik8").write_bytes(fake_enwik8(4000))
    a = load_source("enwik8", tmp_path / "data" / "enwik8", cache_dir=tmp_path / "c", progress=False)
    b = load_source("enwik8", cache_dir=tmp_path / "c", hub=False, progress=False)  # ./data/enwik8/enwik8
    assert np.array_equal(a.train, b.train) and b.meta["cache_hit"]


def test_corrupt_zip_is_a_clear_error_and_leaves_no_cache(tmp_path):
    bad = tmp_path / "enwik8.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip archive" * 10)
    with pytest.raises(HybridError, match=r"enwik8\.zip: not a valid zip archive"):
        load_source("enwik8", bad, cache_dir=tmp_path / "cache", progress=False)
    assert_no_entry(tmp_path / "cache")


def test_zip_with_damaged_data_is_a_clear_error_and_leaves_no_cache(tmp_path):
    path = tmp_path / "enwik8.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("enwik8", b"<page>" + bytes(range(256)) * 400 + b"</page>")
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # flip a byte inside the stored member: CRC mismatch on read
    path.write_bytes(bytes(blob))
    with pytest.raises(HybridError, match=r"enwik8\.zip: corrupt zip archive"):
        load_source("enwik8", path, cache_dir=tmp_path / "cache", progress=False)
    assert_no_entry(tmp_path / "cache")


# -- WikiText -------------------------------------------------------------------------------------


def literature_tokens(path: Path) -> list[list[str]]:
    """The literature's rule, written out: each '\\n' line's words, then <eos> (empty lines too)."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [line.split() + ["<eos>"] for line in text.split("\n")[:-1]]


def test_wikitext_eos_at_every_line_end_and_unk_is_unk(tmp_path):
    c = load_source("wikitext-2", WT2, cache_dir=tmp_path / "cache", progress=False)
    tok = c.tokenizer
    assert tok.vocab[:2] == ["<unk>", "<eos>"] and c.tokenizer.kind == "word"
    train_words = {w for line in literature_tokens(WT2 / "wiki.train.tokens") for w in line}
    assert set(tok.vocab) == train_words | {"<unk>", "<eos>"}  # every train type, nothing else
    for split in ("train", "valid", "test"):
        want = literature_tokens(WT2 / f"wiki.{split}.tokens")
        ids = np.asarray(getattr(c, split))
        assert len(ids) == sum(len(line) for line in want)
        assert np.count_nonzero(ids == tok.eos_id) == len(want)  # one <eos> per line, empty lines too
        words = [w for line in want for w in line]
        expect = [tok.index.get(w, tok.unk_id) for w in words]
        assert ids.tolist() == expect
        # The file's own <unk> is the tokenizer's <unk>; words outside the train vocabulary become it too.
        assert np.count_nonzero(ids == tok.unk_id) == sum(w == "<unk>" or w not in tok.index for w in words)
    assert np.count_nonzero(np.asarray(c.valid) == tok.unk_id) > 0
    info = c.meta["split_info"]
    assert info["valid"]["lines"] == 12 and info["valid"]["unk"] == int(
        np.count_nonzero(np.asarray(c.valid) == tok.unk_id)
    )


def test_wikitext_raw_files_and_byte_level(tmp_path):
    folder = tmp_path / "wt"
    folder.mkdir()
    for s in ("train", "valid", "test"):
        (folder / f"wiki.{s}.raw").write_bytes((WT2 / f"wiki.{s}.tokens").read_bytes().replace(b"<unk>", b"Zq"))
    words = load_source("wikitext-2", folder, cache_dir=tmp_path / "c", progress=False)  # .tokens absent: .raw
    assert "Zq" in words.tokenizer.index and words.meta["describe"].endswith("wiki.*.raw")
    chars = load_source("wikitext-2", folder, "byte", cache_dir=tmp_path / "c", progress=False)
    assert bytes(np.asarray(chars.valid)) == (folder / "wiki.valid.raw").read_bytes()
    with pytest.raises(HybridError, match=r"missing wiki.train.tokens"):
        load_source("wikitext-2", folder, raw=False, cache_dir=tmp_path / "c", progress=False)


def test_wikitext_vocabulary_options(tmp_path):
    full = load_source("wikitext-2", WT2, cache_dir=tmp_path / "c", progress=False)
    small = load_source("wikitext-2", WT2, min_count=3, cache_dir=tmp_path / "c", progress=False)
    capped = load_source("wikitext-2", WT2, max_vocab=50, cache_dir=tmp_path / "c", progress=False)
    assert capped.tokenizer.vocab_size == 50 < small.tokenizer.vocab_size < full.tokenizer.vocab_size
    assert capped.tokenizer.vocab[:50] == full.tokenizer.vocab[:50]  # most frequent first
    assert len({full.meta["cache_path"], small.meta["cache_path"], capped.meta["cache_path"]}) == 3


# -- your own text ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["byte", "word"])
def test_a_text_file_matches_load_text_corpus(tmp_path, kind):
    path = tmp_path / "mine.txt"
    path.write_text("".join(f"line {i} of my own text, naïve café {i % 7}\n" for i in range(400)), encoding="utf-8")
    c = load_source(str(path), tokenizer=kind, cache_dir=tmp_path / "c", progress=False)
    ref = load_text_corpus(path, kind)
    assert c.tokenizer.to_json() == ref.tokenizer.to_json()
    for s in ("train", "valid", "test"):
        assert np.array_equal(np.asarray(getattr(c, s)), getattr(ref, s))


def test_a_folder_of_text_and_word_vocabulary_options(tmp_path):
    folder = tmp_path / "books"
    (folder / "b").mkdir(parents=True)
    (folder / "a.txt").write_text("the cat sat\n" * 50 + "rare words once\n")
    (folder / "b" / "c.txt").write_text("the dog ran\n" * 50)
    (folder / ".hidden").write_text("\xff never read")
    c = load_source("text", folder, "word", min_count=2, cache_dir=tmp_path / "c", progress=False)
    assert c.tokenizer.vocab[:2] == ["<unk>", "<eos>"] and "rare" not in c.tokenizer.index
    assert len(c.train) + len(c.valid) + len(c.test) == 101 * 4
    c2 = load_source("text", folder, "word", max_vocab=4, cache_dir=tmp_path / "c", progress=False)
    assert c2.tokenizer.vocab_size == 4
    b = load_source("text", folder, cache_dir=tmp_path / "c", progress=False)
    assert (
        len(b.train) + len(b.valid) + len(b.test)
        == (folder / "a.txt").stat().st_size + (folder / "b" / "c.txt").stat().st_size
    )


def test_not_utf8_for_a_word_model_is_a_clear_error_and_leaves_no_cache(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9 au lait\n" * 100)
    with pytest.raises(HybridError, match=r"latin1.txt: not UTF-8 text \(bad byte at offset 3\)"):
        load_source("text", path, "word", cache_dir=tmp_path / "cache", progress=False)
    assert_no_entry(tmp_path / "cache")
    wt = tmp_path / "wt"
    wt.mkdir()
    for s in ("train", "valid", "test"):
        (wt / f"wiki.{s}.tokens").write_bytes((WT2 / f"wiki.{s}.tokens").read_bytes())
    (wt / "wiki.test.tokens").write_bytes(b" ok line\n \xff\xfe bad\n")
    with pytest.raises(HybridError, match=r"wiki.test.tokens: not UTF-8 text \(bad byte at offset 10\)"):
        load_source("wikitext-2", wt, cache_dir=tmp_path / "cache", progress=False)
    assert_no_entry(tmp_path / "cache")


def test_split_too_short_for_one_segment_is_a_clear_error_and_leaves_no_cache(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("a few words\n" * 30)  # 360 bytes: valid and test get 18 bytes each
    with pytest.raises(HybridError, match=r"the valid split has 18 tokens, too short for one 64-token segment"):
        load_source("text", path, seq_len=64, cache_dir=tmp_path / "cache", progress=False)
    assert_no_entry(tmp_path / "cache")
    ok = load_source("text", path, seq_len=16, cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(HybridError, match=r"too short for one 64-token segment"):  # a cached entry is checked too
        load_source("text", path, seq_len=64, cache_dir=tmp_path / "cache", progress=False)
    assert Path(ok.meta["cache_path"]).exists()


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(HybridError, match=r"nothing\.txt: corpus file not found"):
        load_source(str(tmp_path / "nothing.txt"), cache_dir=tmp_path / "c")
    with pytest.raises(HybridError, match=r"unknown corpus 'wikitext-5'"):
        load_source("wikitext-5", cache_dir=tmp_path / "c")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(HybridError, match=r"corpus is empty"):
        load_source("text", tmp_path / "empty.txt", cache_dir=tmp_path / "c")
    with pytest.raises(HybridError, match=r"enwik8: no local enwik8"):
        load_source("enwik8", hub=False, cache_dir=tmp_path / "c")
    with pytest.raises(HybridError, match=r"byte-level"):
        load_source("enwik8", tokenizer="word", cache_dir=tmp_path / "c")


# -- the cache ------------------------------------------------------------------------------------


def test_second_load_is_a_cache_hit_without_reading_or_encoding(tmp_path, monkeypatch):
    first = load_source("wikitext-2", WT2, cache_dir=tmp_path / "cache", progress=False)
    assert not first.meta["cache_hit"] and isinstance(first.train, np.memmap)

    def boom(*a, **k):
        raise AssertionError("re-encoded or re-hashed on a cache hit")

    monkeypatch.setattr(source_plans, "_encode_lines", boom)
    monkeypatch.setattr(source_io, "hash_bytes_of", boom)
    second = load_source("wikitext-2", WT2, cache_dir=tmp_path / "cache", progress=False)
    assert second.meta["cache_hit"] and second.meta["cache_path"] == first.meta["cache_path"]
    assert second.tokenizer.to_json() == first.tokenizer.to_json()
    for s in ("train", "valid", "test"):
        assert np.array_equal(getattr(first, s), getattr(second, s))


def test_changed_source_is_a_new_entry(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("x" * 1000)
    a = load_source("text", path, cache_dir=tmp_path / "c", progress=False)
    path.write_text("y" * 1001)
    b = load_source("text", path, cache_dir=tmp_path / "c", progress=False)
    assert not b.meta["cache_hit"] and a.meta["cache_path"] != b.meta["cache_path"]
    assert int(np.asarray(b.train)[0]) == ord("y")


def test_a_failed_encode_removes_its_temporary_folder(tmp_path):
    cache = cache_mod.TokenCache(tmp_path / "cache")

    def encode(writer):
        writer.begin("train")
        writer.write(np.arange(10))
        raise KeyboardInterrupt  # Ctrl-C in the middle of an encode

    with pytest.raises(KeyboardInterrupt):
        cache.build("k" * 24, np.int32, encode, {})
    assert cache_entries(tmp_path / "cache") == [] and cache.get("k" * 24) is None


def _damage_tokens_bin(e: Path):
    data = (e / "tokens.bin").read_bytes()
    (e / "tokens.bin").write_bytes(data[: len(data) // 2])  # disk full, a partial copy


def _edit_meta(change):
    def damage(e: Path):
        meta = json.loads((e / "meta.json").read_text())
        (e / "meta.json").write_text(json.dumps(change(meta)))

    return damage


DAMAGE = {
    "truncated tokens.bin": _damage_tokens_bin,
    "missing tokens.bin": lambda e: (e / "tokens.bin").unlink(),
    "garbled tokenizer.json": lambda e: (e / "tokenizer.json").write_text("{"),
    "wrong tokenizer.json": lambda e: (e / "tokenizer.json").write_text('{"type": "word", "vocab": ["a", "b"]}'),
    "meta.json without splits": _edit_meta(lambda m: {k: v for k, v in m.items() if k != "splits"}),
    "meta.json splits of the wrong type": _edit_meta(lambda m: {**m, "splits": {"train": "0:10"}}),
    "meta.json bad dtype": _edit_meta(lambda m: {**m, "dtype": None}),
    "meta.json a list": lambda e: (e / "meta.json").write_text("[1, 2]"),
    "garbled meta.json": lambda e: (e / "meta.json").write_bytes(b"\xff{"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_cache_entry_is_rebuilt(tmp_path, damage):
    path = tmp_path / "t.txt"
    path.write_text("the quick brown fox jumps over the lazy dog\n" * 400)

    def load():
        return load_source("text", path, "word", cache_dir=tmp_path / "c", progress=False, seq_len=8)

    first = load()
    entry = Path(first.meta["cache_path"])
    want = {s: np.array(getattr(first, s)) for s in ("train", "valid", "test")}  # not the memory map damaged below
    del first
    DAMAGE[damage](entry)
    with pytest.warns(UserWarning, match=f"{entry.name} is not valid"):
        again = load()  # rebuilt in place of the damaged entry, with no error
    assert not again.meta["cache_hit"] and again.meta["cache_path"] == str(entry)
    third = load()
    assert third.meta["cache_hit"]
    for s in ("train", "valid", "test"):
        assert np.array_equal(want[s], getattr(again, s)) and np.array_equal(want[s], getattr(third, s))
    assert cache_entries(tmp_path / "c") == sorted([entry.name, "fingerprints.json"])


def _encode_small(writer):
    from hybrid.runtime.tokenizer import ByteTokenizer

    for s in ("train", "valid", "test"):
        writer.begin(s)
        writer.write(np.arange(10))
    return ByteTokenizer()


def test_build_over_a_valid_or_invalid_entry_and_a_racing_builder(tmp_path, monkeypatch):
    cache, key = cache_mod.TokenCache(tmp_path / "c"), "k" * 24
    first = cache.build(key, np.uint8, _encode_small, {"n": 1})
    # Another process finished the same key first: its entry is used, our temporary folder removed.
    second = cache.build(key, np.uint8, _encode_small, {"n": 2})
    assert second.meta["n"] == 1 and cache_entries(tmp_path / "c") == [key]
    # An invalid entry is renamed aside and replaced, even when another builder moves it aside first.
    _damage_tokens_bin(first.path)
    real_rename, moved = cache_mod.os.rename, []

    def racing_rename(src, dst):
        if not moved:
            moved.append(dst)
            real_rename(src, tmp_path / "elsewhere")  # the other builder wins the rename-aside
        return real_rename(src, dst)

    monkeypatch.setattr(cache_mod.os, "rename", racing_rename)
    third = cache.build(key, np.uint8, _encode_small, {"n": 3})
    assert moved and third.meta["n"] == 3 and np.array_equal(third.splits["test"], np.arange(10))
    assert cache.get(key).meta["n"] == 3 and cache_entries(tmp_path / "c") == [key]


def test_new_content_with_the_old_size_and_mtime_is_not_a_stale_hit(tmp_path):
    import os
    import time

    path = tmp_path / "t.txt"
    path.write_text("aaaa bbbb cccc\n" * 400)
    a = load_source("text", path, cache_dir=tmp_path / "c", progress=False)
    st = os.stat(path)
    time.sleep(0.05)  # past the kernel's coarse timestamp tick, so the rewrite gets a new ctime
    path.write_text("xxxx yyyy zzzz\n" * 400)  # same size, same inode
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # what cp -p / rsync -a do
    b = load_source("text", path, cache_dir=tmp_path / "c", progress=False)
    assert not b.meta["cache_hit"] and a.meta["cache_path"] != b.meta["cache_path"]
    assert bytes(np.asarray(b.train[:4])) == b"xxxx"


def test_an_old_fingerprint_memo_record_is_not_used(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("aaaa bbbb cccc\n" * 400)
    st = path.stat()
    old_key = json.dumps([(str(path.resolve()), st.st_size, st.st_mtime_ns)])  # the (path, size, mtime) memo
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "fingerprints.json").write_text(json.dumps({old_key: "0" * 32}))
    c = load_source("text", path, cache_dir=tmp_path / "c", progress=False)
    assert c.meta["source"]["content"] == cache_mod.hash_bytes_of([path])


def test_fingerprint_records_of_changed_or_removed_files_are_dropped(tmp_path):
    memo = tmp_path / "c" / "fingerprints.json"
    gone, kept, new = (tmp_path / f"{n}.txt" for n in ("gone", "kept", "new"))
    for f in (gone, kept, new):
        f.write_text(f"{f.stem} text, long enough\n" * 300)
    load_source("text", gone, cache_dir=tmp_path / "c", progress=False)
    load_source("text", kept, cache_dir=tmp_path / "c", progress=False)
    assert len(json.loads(memo.read_text())) == 2
    gone.unlink()
    load_source("text", new, cache_dir=tmp_path / "c", progress=False)
    paths = [json.loads(k)[0][0] for k in json.loads(memo.read_text())]
    assert sorted(paths) == sorted(str(f.resolve()) for f in (kept, new))  # bounded by the files that still exist


def test_a_killed_builds_temporary_folders_are_removed_by_the_next_build(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("some text to encode\n" * 300)
    first = load_source("text", path, cache_dir=tmp_path / "c", progress=False)
    key, dead = first.meta["cache_path"].split("/")[-1], 2**22 + 4321  # no such process
    shutil.rmtree(first.meta["cache_path"])  # so the next load builds again
    for name in (f".{key}.tmp-{dead}", f".{key}.old-{dead}-abcd", f".{key}.tmp-{os.getpid()}-x"):
        (tmp_path / "c" / name).mkdir()
    load_source("text", path, cache_dir=tmp_path / "c", progress=False)
    left = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert left == sorted([key, "fingerprints.json", f".{key}.tmp-{os.getpid()}-x"])  # a live process's stays


# -- the hub --------------------------------------------------------------------------------------


@pytest.fixture
def fake_hub(monkeypatch):
    """datasets.load_dataset answering from local stand-ins, recording its calls."""
    datasets = pytest.importorskip("datasets")
    calls = []

    def rows_of(path: Path) -> list[str]:
        # The hub's WikiText: one row per line of the file, with its '\n' ("" for an empty line).
        return [l + "\n" if l.strip() else "" for l in path.read_text(encoding="utf-8").split("\n")[:-1]]

    def load_dataset(repo, config=None, split=None, **kw):
        calls.append((repo, config, split))
        if repo == "Salesforce/wikitext":
            name = {"train": "train", "validation": "valid", "test": "test"}[split]
            return datasets.Dataset.from_dict({"text": rows_of(WT2 / f"wiki.{name}.tokens")})
        if repo == "LTCB/enwik8":
            return datasets.Dataset.from_dict({"text": ["<mediawiki>\n" + "Ünïcödé text " * 2000 + "\n</mediawiki>"]})
        raise ConnectionError(f"no route to the hub for {repo}")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(source_io, "hub_unreachable", lambda: None)  # the stand-in needs no network
    return calls


def test_wikitext_from_the_hub_equals_the_local_files(tmp_path, fake_hub):
    hub = load_source("wikitext-2", cache_dir=tmp_path / "c", progress=False)
    assert fake_hub == [("Salesforce/wikitext", "wikitext-2-v1", s) for s in ("train", "validation", "test")]
    local = load_source("wikitext-2", WT2, cache_dir=tmp_path / "c", progress=False)
    assert hub.tokenizer.to_json() == local.tokenizer.to_json()
    for s in ("train", "valid", "test"):
        assert np.array_equal(getattr(hub, s), getattr(local, s))
    again = load_source("wikitext-2", cache_dir=tmp_path / "c", progress=False)
    assert again.meta["cache_hit"]
    load_source("wikitext-2", raw=True, cache_dir=tmp_path / "c", progress=False)
    assert fake_hub[-1] == ("Salesforce/wikitext", "wikitext-2-raw-v1", "test")


def test_enwik8_from_the_hub(tmp_path, fake_hub):
    c = load_source("enwik8", cache_dir=tmp_path / "c", progress=False)
    text = ("<mediawiki>\n" + "Ünïcödé text " * 2000 + "\n</mediawiki>").encode("utf-8")
    assert bytes(np.concatenate([c.train, c.valid, c.test])) == text
    assert len(c.train) == len(text) * 90 // 100


def test_hub_failure_is_one_clear_line(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'Salesforce/wikitext' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(source_io, "hub_unreachable", lambda: None)  # datasets' own failure, as online
    with pytest.raises(
        HybridError,
        match=r"wikitext-103: no local copy, and loading Salesforce/wikitext "
        r"\(wikitext-103-v1\) from the hub failed: Couldn't reach",
    ):
        load_source("wikitext-103", cache_dir=tmp_path / "c")
    assert_no_entry(tmp_path / "c")


def test_an_unreachable_hub_is_one_line_before_datasets_retries(tmp_path, monkeypatch):
    """Offline, datasets retries for half a minute; a connection test refuses at once instead."""
    datasets = pytest.importorskip("datasets")

    def never(*a, **k):
        raise AssertionError("datasets was asked although the hub cannot be reached")

    monkeypatch.setattr(datasets, "load_dataset", never)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    with pytest.raises(HybridError, match=r"enwik8: no local copy, and the hub \(127.0.0.1\) cannot be reached"):
        load_source("enwik8", cache_dir=tmp_path / "c")
    assert_no_entry(tmp_path / "c")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline mode: datasets reads its own cache
    assert source_io.hub_unreachable() is None


# -- recipes --------------------------------------------------------------------------------------

RECIPES = sorted((ROOT / "recipes").glob("*/*.json"))


def test_there_is_a_recipe_per_model_and_corpus():
    names = {(p.parent.name, p.stem) for p in RECIPES}
    assert names == {(c, a) for c in ("enwik8", "wikitext-103") for a in ("transformer", "par", "attn-qrnn", "hybrid")}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_loads_and_its_parameter_count_is_in_the_docs(path):
    import torch

    from hybrid.train.config import PRESETS
    from hybrid.train.model import HybridLM, count_parameters

    model, train, data = read_recipe(path)
    arch = path.stem
    assert model.pattern == PRESETS[f"{arch}-paper"]["pattern"] and model.d_model == 512
    if path.parent.name == "enwik8":
        assert data["source"] == "enwik8" and model.vocab_size == 256 and (train.seq_len, model.mem_len) == (512, 512)
    else:
        assert data["source"] == "wikitext-103" and model.adaptive_cutoffs == [20000, 40000, 200000]
        assert (train.seq_len, model.mem_len, train.batch_size) == (150, 150, 60)
    with torch.device("meta"):
        total = count_parameters(HybridLM(model))["total"]
    assert f"{total:,}" in (ROOT / "docs" / "recipes.md").read_text()


# -- hybrid data ----------------------------------------------------------------------------------


def test_data_commands(tmp_path):
    from hybrid.train import data_commands

    app = typer.Typer()
    data_commands.register(app)

    @app.callback()
    def main():
        pass

    runner = CliRunner()
    cache = str(tmp_path / "cache")
    r = runner.invoke(app, ["data", "prepare", "wikitext-2", "--path", str(WT2), "--cache-dir", cache, "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "wikitext-2: word tokens" in r.output and "encoded in" in r.output
    r = runner.invoke(app, ["data", "prepare", "wikitext-2", "--path", str(WT2), "--cache-dir", cache])
    assert r.exit_code == 0 and "already cached" in r.output
    r = runner.invoke(app, ["data", "info", "wikitext-2", "--path", str(WT2), "--cache-dir", cache, "--json"])
    info = json.loads(r.output)
    assert info["splits"]["valid"]["lines"] == 12 and info["vocab_size"] > 100
    r = runner.invoke(app, ["data", "info", "--cache-dir", cache])
    assert r.exit_code == 0 and "1 entry" in r.output and "wikitext-2" in r.output
    r = runner.invoke(app, ["data", "prepare", "enwik8", "--no-hub", "--cache-dir", cache])
    assert r.exit_code != 0 and isinstance(r.exception, HybridError)
