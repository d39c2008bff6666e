"""Tokenizers: lossless round trips, end-of-text, and clear errors for what they lack."""

import pytest

import transformer_from_scratch as tfs
from transformer_from_scratch.training.tokenizers import (
    ByteTokenizer,
    CharTokenizer,
    WordTokenizer,
    from_description,
)


def test_bytes_round_trip_any_text_and_take_invalid_utf8() -> None:
    tokenizer = ByteTokenizer()
    text = "héllo, wörld ✓"
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode(b"\xff\xfe") == [255, 254]
    assert tokenizer.vocab_size == 257 and tokenizer.eot == 256
    assert tokenizer.decode([104, 105, 256]) == "hi"


def test_chars_round_trip_and_name_unknown_characters() -> None:
    tokenizer = CharTokenizer.fit(["hello world"])
    assert tokenizer.decode(tokenizer.encode("hello")) == "hello"
    assert tokenizer.eot == len(set("hello world"))
    with pytest.raises(
        tfs.TfsError, match=r"2 character\(s\) the char tokenizer never saw in training: 'QZ'"
    ):
        tokenizer.encode("hello QZ")


def test_words_split_at_word_boundaries() -> None:
    tokenizer = WordTokenizer.fit(["the cat sat. the mat!"])
    ids = tokenizer.encode("the cat sat.")
    assert [tokenizer.words[i] for i in ids] == ["the", " ", "cat", " ", "sat", "."]
    assert tokenizer.decode(ids) == "the cat sat."


def test_unknown_words_are_an_error_in_prompts_and_unknown_in_training_text() -> None:
    tokenizer = WordTokenizer.fit(["a b a"], max_vocab=2)
    with pytest.raises(tfs.TfsError, match=r"does not know 1 word\(s\): 'zebra'"):
        tokenizer.encode("a zebra")
    assert tokenizer.encode("a zebra", strict=False)[-1] == tokenizer.unk


@pytest.mark.parametrize(
    "tokenizer",
    [ByteTokenizer(), CharTokenizer("abc"), WordTokenizer(["a", " "])],
    ids=["byte", "char", "word"],
)
def test_descriptions_rebuild_the_same_tokenizer(tokenizer) -> None:  # type: ignore[no-untyped-def]
    again = from_description(tokenizer.describe())
    assert again.describe() == tokenizer.describe()
    assert again.vocab_size == tokenizer.vocab_size
