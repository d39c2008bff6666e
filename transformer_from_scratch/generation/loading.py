"""Load a decoder and its tokenizer from a checkpoint file or a run folder."""

from pathlib import Path

from transformer_from_scratch.core.checkpoint import load_checkpoint
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.errors import CheckpointError
from transformer_from_scratch.core.sharded import is_sharded
from transformer_from_scratch.training import state as run_folder
from transformer_from_scratch.training.tokenizers import Tokenizer, from_description


def checkpoint_path(path: str | Path) -> Path:
    """A model file or checkpoint folder as given, or the latest checkpoint in a run folder."""
    path = Path(path)
    if path.is_dir() and not is_sharded(path):
        saved = run_folder.latest(path)
        if saved is None:
            raise CheckpointError(
                f"{path} is a folder without a checkpoint ({run_folder.LATEST} is missing)"
            )
        return saved.model
    return path


def load_for_generation(path: str | Path) -> tuple[Decoder, Tokenizer]:
    """The decoder (eval mode) and the tokenizer it was trained with."""
    checkpoint = load_checkpoint(checkpoint_path(path))
    if checkpoint.tokenizer is None:
        raise CheckpointError(f"{path} records no tokenizer, so text cannot be encoded for it")
    return checkpoint.decoder, from_description(checkpoint.tokenizer)
