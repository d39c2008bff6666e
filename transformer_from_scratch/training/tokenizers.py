"""Tokenizers that need nothing downloaded: bytes, characters, and words.

Each one reserves a final id for end-of-text, placed between documents in training and used to
stop generation. A tokenizer is described by a small JSON-able dict (saved in checkpoints) and
rebuilt from it with :func:`from_description`.
"""

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from transformer_from_scratch.core.errors import TfsError

EOT = "<|endoftext|>"
UNK = "<|unknown|>"
WORD_PATTERN = re.compile(r"\w+|[^\w\s]|\s+")


@runtime_checkable
class Tokenizer(Protocol):
    """Text <-> ids; ``eot`` is the end-of-text id, ``vocab_size`` the number of ids."""

    name: str
    eot: int
    vocab_size: int

    def encode(self, text: str | bytes) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def describe(self) -> dict[str, Any]: ...


class ByteTokenizer:
    """One id per byte of the UTF-8 encoding (0..255), and 256 for end-of-text.

    It has no vocabulary to learn or download and takes any bytes, valid UTF-8 or not.
    """

    name = "byte"
    eot = 256
    vocab_size = 257

    def encode(self, text: str | bytes) -> list[int]:
        """The bytes of ``text`` (UTF-8 encoded if it is a string)."""
        return list(text.encode("utf-8") if isinstance(text, str) else text)

    def decode(self, ids: Sequence[int]) -> str:
        """Bytes back to text; end-of-text is dropped, invalid UTF-8 shown as U+FFFD."""
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def describe(self) -> dict[str, Any]:
        """The JSON description (for checkpoints)."""
        return {"name": "byte"}


class CharTokenizer:
    """One id per distinct character of the training text, plus end-of-text."""

    name = "char"

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = sorted(set(chars))
        self.index = {c: i for i, c in enumerate(self.chars)}
        self.eot = len(self.chars)
        self.vocab_size = self.eot + 1

    @classmethod
    def fit(cls, texts: Iterable[str]) -> "CharTokenizer":
        """The vocabulary of every character in ``texts``."""
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        return cls(seen)

    def encode(self, text: str | bytes) -> list[int]:
        """Character ids; a character outside the vocabulary is an error naming it."""
        text = _as_text(text)
        try:
            return [self.index[c] for c in text]
        except KeyError:
            unknown = sorted({c for c in text if c not in self.index})
            raise TfsError(
                f"the text has {len(unknown)} character(s) the char tokenizer never saw in "
                f"training: {''.join(unknown[:20])!r}; remove them or train on text that has them"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        """Ids back to text (end-of-text dropped)."""
        return "".join(self.chars[i] for i in ids if i < self.eot)

    def describe(self) -> dict[str, Any]:
        """The JSON description (for checkpoints)."""
        return {"name": "char", "chars": "".join(self.chars)}


class WordTokenizer:
    """Splits at word boundaries: runs of word characters, runs of whitespace, single symbols.

    The vocabulary is the ``max_vocab`` most frequent pieces of the training text; rarer
    pieces in training become the unknown id, and unknown words in a prompt are an error.
    """

    name = "word"

    def __init__(self, words: Sequence[str]) -> None:
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}
        self.unk = len(self.words)
        self.eot = self.unk + 1
        self.vocab_size = self.eot + 1

    @classmethod
    def fit(cls, texts: Iterable[str], max_vocab: int = 8192) -> "WordTokenizer":
        """The ``max_vocab`` most frequent pieces of ``texts`` (ties broken alphabetically)."""
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(WORD_PATTERN.findall(text))
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return cls([word for word, _ in ranked[:max_vocab]])

    def encode(self, text: str | bytes, *, strict: bool = True) -> list[int]:
        """Piece ids; unknown pieces are an error (``strict``) or the unknown id."""
        pieces = WORD_PATTERN.findall(_as_text(text))
        unknown = [p for p in pieces if p not in self.index]
        if strict and unknown:
            shown = ", ".join(repr(p) for p in sorted(set(unknown))[:10])
            raise TfsError(f"the word tokenizer does not know {len(set(unknown))} word(s): {shown}")
        return [self.index.get(p, self.unk) for p in pieces]

    def decode(self, ids: Sequence[int]) -> str:
        """Ids back to text (unknown shown as a marker, end-of-text dropped)."""
        return "".join(self.words[i] if i < self.unk else UNK for i in ids if i != self.eot)

    def describe(self) -> dict[str, Any]:
        """The JSON description (for checkpoints)."""
        return {"name": "word", "words": self.words}


def _as_text(text: str | bytes) -> str:
    return text if isinstance(text, str) else text.decode("utf-8")


TOKENIZERS = ("byte", "char", "word")


def from_description(description: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from what :meth:`describe` returned."""
    name = description.get("name")
    if name == "byte":
        return ByteTokenizer()
    if name == "char":
        return CharTokenizer(description["chars"])
    if name == "word":
        return WordTokenizer(description["words"])
    raise TfsError(f"unknown tokenizer {name!r}; this version knows {', '.join(TOKENIZERS)}")
