"""Corpora: the standard library by default, files and folders, and bad data named precisely."""

from pathlib import Path

import pytest

import transformer_from_scratch as tfs
from transformer_from_scratch.training.data import load_corpus, make_tokenizer, token_stream


def test_default_corpus_is_the_standard_library_split_by_file() -> None:
    corpus = load_corpus(None)
    assert "standard library" in corpus.description
    sources = [d.source for d in corpus.train + corpus.validation]
    assert all(s.endswith(".py") for s in sources)
    assert [d.source for d in corpus.train] == sorted(d.source for d in corpus.train)
    assert not {d.source for d in corpus.train} & {d.source for d in corpus.validation}
    assert len(corpus.validation) == len(sources) // 10
    assert load_corpus(None) == corpus


def test_a_single_file_is_split_by_position(tmp_path: Path) -> None:
    path = tmp_path / "text.txt"
    path.write_text("abcdefghij" * 10)
    corpus = load_corpus(path)
    assert corpus.train[0].data + corpus.validation[0].data == path.read_bytes()
    assert len(corpus.train[0].data) == 90


def test_documents_are_separated_by_end_of_text(tmp_path: Path) -> None:
    for name in "abcdefghijk":
        (tmp_path / f"{name}.txt").write_text(name * 3)
    corpus = load_corpus(tmp_path)
    tokenizer = make_tokenizer("byte", corpus)
    stream = token_stream(corpus.train[:2], tokenizer).tolist()
    assert stream == [97, 97, 97, 256, 98, 98, 98, 256]


def test_a_missing_path_is_named(tmp_path: Path) -> None:
    with pytest.raises(tfs.TfsError, match="no such file or folder"):
        load_corpus(tmp_path / "absent")


def test_an_empty_folder_or_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(tfs.TfsError, match="has no non-empty files"):
        load_corpus(tmp_path)
    (tmp_path / "blank.txt").write_text("   \n")
    with pytest.raises(tfs.TfsError, match="is empty: there is no text"):
        load_corpus(tmp_path / "blank.txt")


def test_invalid_utf8_is_named_by_file_and_offset_for_char_and_word(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine text here\xffmore" * 3)
    corpus = load_corpus(path)
    for name in ("char", "word"):
        with pytest.raises(
            tfs.TfsError, match=r"bad.txt \(bytes 0..\d+\) is not valid UTF-8 at byte offset 14"
        ):
            make_tokenizer(name, corpus)
    assert make_tokenizer("byte", corpus).vocab_size == 257
