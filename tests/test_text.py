"""minicompress.text: the shipped corpus, its splits and the character alphabet."""

from __future__ import annotations

import pytest
import torch

from minicompress import text


def test_corpus_is_the_recorded_text():
    corpus = text.corpus()
    assert len(corpus) == 1_469_762
    assert set(corpus) <= set(text.ALPHABET)
    assert len(text.ALPHABET) == 96


def test_splits_cover_the_corpus_at_a_newline():
    train, valid = text.split("train"), text.split("validation")
    assert len(train) + len(valid) == len(text.corpus())
    assert int(train[-1]) == 0  # the training text ends with its newline
    assert 0.89 < len(train) / len(text.corpus()) < 0.91
    assert text.decode(valid[:100]) == text.corpus()[len(train) : len(train) + 100]


def test_split_returns_a_copy():
    a = text.split("train")
    a[0] = 5
    assert text.split("train")[0] == text.encode(text.corpus()[0])[0] != 5


def test_encode_decode_round_trip_and_the_map():
    s = "def f(x):\n    return x ~ 1"
    ids = text.encode(s)
    assert ids.dtype == torch.int64
    assert text.decode(ids) == s
    assert text.encode("\n").item() == 0 and text.encode(" ").item() == 1
    assert text.encode("~").item() == 95


def test_bad_input():
    with pytest.raises(ValueError, match="outside the 96-symbol alphabet"):
        text.encode("caf\u00e9")
    with pytest.raises(TypeError, match="text must be a str"):
        text.encode(b"abc")
    with pytest.raises(ValueError, match="ids must be in 0..95"):
        text.decode(torch.tensor([96]))
    with pytest.raises(TypeError, match="ids must be a 1-D int64"):
        text.decode(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="split must be one of"):
        text.split("test")


def test_a_corrupted_corpus_is_refused(tmp_path, monkeypatch):
    import lzma

    bad = tmp_path / "c.txt.xz"
    bad.write_bytes(lzma.compress(b"not the corpus"))
    monkeypatch.setattr(text, "CORPUS", bad)
    text.corpus.cache_clear()
    try:
        with pytest.raises(ValueError, match="SHA-256"):
            text.corpus()
    finally:
        text.corpus.cache_clear()
