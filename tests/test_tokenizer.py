"""Tokenizers: round trips, <unk>/<eos> conventions, JSON round trip and bad files."""

import pytest

from hybrid.runtime.errors import HybridError
from hybrid.runtime.tokenizer import ByteTokenizer, WordTokenizer, load_tokenizer, save_tokenizer


def test_byte_round_trip_any_text():
    tok = ByteTokenizer()
    text = "naïve café — 日本語\n\ttabs"
    ids = tok.encode(text)
    assert ids.max() < 256 and len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_word_conventions():
    tok = WordTokenizer.build(["the cat sat", "the dog"], min_count=1)
    assert tok.vocab[:2] == ["<unk>", "<eos>"] and tok.vocab[2] == "the"
    ids = tok.encode("the cow sat\nthe")
    words = [tok.vocab[i] for i in ids]
    assert words == ["the", "<unk>", "sat", "<eos>", "the", "<eos>"]
    assert tok.decode(tok.encode("the cat sat\nthe dog")) == "the cat sat\nthe dog\n"


def test_word_vocab_limits():
    lines = ["a a a b b c"]
    assert WordTokenizer.build(lines, min_count=2).vocab == ["<unk>", "<eos>", "a", "b"]
    assert WordTokenizer.build(lines, max_size=3).vocab == ["<unk>", "<eos>", "a"]


def test_json_round_trip(tmp_path):
    tok = WordTokenizer.build(["x y z"])
    save_tokenizer(tok, tmp_path / "tokenizer.json")
    back = load_tokenizer(tmp_path / "tokenizer.json")
    assert back.vocab == tok.vocab
    save_tokenizer(ByteTokenizer(), tmp_path / "b.json")
    assert load_tokenizer(tmp_path / "b.json").kind == "byte"


def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(HybridError, match="not found"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "t.json").write_text("{nope")
    with pytest.raises(HybridError, match="malformed JSON"):
        load_tokenizer(tmp_path / "t.json")
    (tmp_path / "t.json").write_text('{"type": "bpe"}')
    with pytest.raises(HybridError, match="unknown tokenizer type"):
        load_tokenizer(tmp_path / "t.json")
