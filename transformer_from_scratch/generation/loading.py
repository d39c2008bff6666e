"""Load a decoder and its tokenizer from a checkpoint file or a run folder."""

from pathlib import Path

from transformer_from_scratch.core.checkpoint import load_checkpoint
from transformer_from_scratch.core.decoder import Decoder
from transformer_from_scratch.core.errors import CheckpointError
from transformer_from_scratch.core.sharded import is_sharded
from transformer_from_scratch.training import state as run_folder
from transformer_from_scratch.training.tokenizers import Tokenizer, from_description

MODEL = "model.safetensors"  # a checkpoint folder's model file


def checkpoint_path(path: str | Path) -> Path:
    """A model file or sharded checkpoint folder as given, the model file of one checkpoint
    folder of a run (``RUN/ckpt-0000500``: an earlier step), or the latest checkpoint of a run
    folder."""
    path = Path(path)
    if path.is_dir() and not is_sharded(path):
        if (path / MODEL).is_file() and not (path / run_folder.LATEST).exists():
            return path / MODEL
        saved = run_folder.latest(path)
        if saved is None:
            raise CheckpointError(
                f"{path} is a folder without a checkpoint (neither {run_folder.LATEST}, as a run "
                f"folder has, nor {MODEL}, as each checkpoint folder in it has)"
            )
        return saved.model
    return path


def load_for_generation(path: str | Path) -> tuple[Decoder, Tokenizer]:
    """The decoder (eval mode) and the tokenizer it was trained with."""
    checkpoint = load_checkpoint(checkpoint_path(path))
    if checkpoint.tokenizer is None:
        raise CheckpointError(f"{path} records no tokenizer, so text cannot be encoded for it")
    return checkpoint.decoder, from_description(checkpoint.tokenizer)
