"""Corpora: a text file, a folder of text files, or (by default) the Python standard library.

Documents are files. A folder is split into training and validation by file (every tenth file,
in sorted order, is validation); a single file is split by position (the first 90% trains).
The default corpus is the running interpreter's own standard-library source, so every machine
has it and nothing is downloaded.
"""

import sysconfig
from pathlib import Path

import attrs
import torch

from transformer_from_scratch.core.errors import TfsError
from transformer_from_scratch.training.tokenizers import (
    ByteTokenizer,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
)

VALIDATION_EVERY = 10


@attrs.frozen
class Document:
    """One file's bytes and where they came from."""

    source: str
    data: bytes


@attrs.frozen
class Corpus:
    """Training and validation documents, and a one-line description."""

    train: list[Document]
    validation: list[Document]
    description: str


def stdlib_corpus() -> Corpus:
    """The standard library's top-level ``.py`` files, in sorted order."""
    folder = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in folder.glob("*.py") if p.is_file())
    if not files:
        raise TfsError(f"found no .py files in the standard library at {folder}; pass --data")
    corpus = _split_files(files)
    return attrs.evolve(corpus, description=f"Python {_version()} standard library ({folder})")


def _version() -> str:
    return sysconfig.get_python_version()


def load_corpus(path: str | Path | None) -> Corpus:
    """The corpus at ``path`` (a file or a folder), or the standard library if ``None``."""
    if path is None:
        return stdlib_corpus()
    path = Path(path)
    if path.is_file():
        return _split_file(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not _hidden(p, path))
        files = [p for p in files if p.stat().st_size > 0]
        if not files:
            raise TfsError(f"the folder {path} has no non-empty files to train on")
        return _split_files(files) if len(files) > 1 else _split_file(files[0])
    raise TfsError(f"--data {path}: no such file or folder")


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _split_file(path: Path) -> Corpus:
    data = path.read_bytes()
    if not data.strip():
        raise TfsError(f"{path} is empty: there is no text to train on")
    cut = int(len(data) * 0.9)
    while 0 < cut < len(data) and data[cut] & 0xC0 == 0x80:  # never inside a UTF-8 character
        cut -= 1
    return Corpus(
        train=[Document(f"{path} (bytes 0..{cut})", data[:cut])],
        validation=[Document(f"{path} (bytes {cut}..)", data[cut:])],
        description=f"{path} (90/10 split by position)",
    )


def _split_files(files: list[Path]) -> Corpus:
    docs = [Document(str(p), p.read_bytes()) for p in files]
    validation = docs[VALIDATION_EVERY - 1 :: VALIDATION_EVERY] or docs[-1:]
    train = [d for d in docs if d not in validation] or docs
    return Corpus(train, validation, f"{len(docs)} files (every {VALIDATION_EVERY}th validates)")


def decode_documents(documents: list[Document]) -> list[str]:
    """UTF-8 text of each document; invalid bytes are an error naming the file and offset."""
    texts = []
    for doc in documents:
        try:
            texts.append(doc.data.decode("utf-8"))
        except UnicodeDecodeError as err:
            raise TfsError(
                f"{doc.source} is not valid UTF-8 at byte offset {err.start} "
                f"({doc.data[err.start : err.start + 4]!r}); the char and word tokenizers need "
                "UTF-8 text: fix the file, or use --tokenizer byte, which takes any bytes"
            ) from None
    return texts


def make_tokenizer(name: str, corpus: Corpus) -> Tokenizer:
    """A tokenizer fitted on the training documents (``byte`` needs no fitting)."""
    if name == "byte":
        return ByteTokenizer()
    texts = decode_documents(corpus.train)
    validation = decode_documents(corpus.validation)
    if name == "char":  # every character of the corpus, as character-level tutorials do
        return CharTokenizer.fit(texts + validation)
    if name == "word":
        return WordTokenizer.fit(texts)
    raise TfsError(f"unknown tokenizer {name!r}; choose byte, char or word")


def token_stream(documents: list[Document], tokenizer: Tokenizer) -> torch.Tensor:
    """All documents as one id sequence, end-of-text between them."""
    ids: list[int] = []
    for doc in documents:
        text = doc.data if isinstance(tokenizer, ByteTokenizer) else doc.data.decode("utf-8")
        if isinstance(tokenizer, WordTokenizer):
            ids.extend(tokenizer.encode(text, strict=False))
        else:
            ids.extend(tokenizer.encode(text))
        ids.append(tokenizer.eot)
    return torch.tensor(ids, dtype=torch.int32)


def opening_words(documents: list[Document], limit: int = 24) -> str:
    """A sample prompt drawn from the data: the first words of the first non-blank line.

    Up to ``limit`` characters, cut at a word boundary and ending in a space, so the model
    continues text of the kind it was trained on (empty when there is no text).
    """
    for doc in documents:
        for line in doc.data.decode("utf-8", errors="ignore").splitlines():
            words = line.split()
            if not words:
                continue
            prompt = words[0][:limit]
            for word in words[1:]:
                if len(prompt) + 1 + len(word) > limit:
                    break
                prompt += " " + word
            return prompt + " "
    return ""
