"""``tfs export``: a checkpoint (sharded or not) as one ordinary file, or as a Hugging Face
model folder."""

import argparse
from pathlib import Path
from typing import Any

from transformer_from_scratch.core.errors import TfsError


def add_commands(sub: Any) -> None:
    """Register ``tfs export``."""
    p = sub.add_parser(
        "export",
        help="write a checkpoint as one model file, or as a Hugging Face model folder",
        description="Put a checkpoint together in one file: a sharded run's shards become one "
        "model.safetensors that `tfs generate` and load_checkpoint read (--to tfs), or a folder "
        "with config.json and model.safetensors that transformers loads (--to hf: GPT-2, Llama, "
        "Mistral and GPT-NeoX-shaped specs).",
    )
    add = p.add_argument
    add("checkpoint", metavar="CHECKPOINT",
        help="a run folder (its latest checkpoint), checkpoint folder or model file")  # fmt: skip
    add("destination", nargs="?", metavar="OUT", help="the file or folder to write (or --out)")
    add("--out", metavar="PATH", help="the file (--to tfs) or folder (--to hf) to write")
    add("--to", nargs="+", default=["tfs"], metavar="FORMAT",
        help="tfs: one model.safetensors (the default); hf: a Hugging Face folder. The "
        "destination may follow: --to hf DIR")  # fmt: skip
    p.set_defaults(run=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Read the checkpoint whole and write it in the asked form; never overwrites."""
    from transformer_from_scratch.core.checkpoint import load_checkpoint, save_decoder
    from transformer_from_scratch.generation.loading import checkpoint_path
    from transformer_from_scratch.interop.hf_export import save_hf

    form, out = _form_and_destination(args)
    source = checkpoint_path(args.checkpoint)
    checkpoint = load_checkpoint(source)
    step = checkpoint.metadata.get("step", "?")
    if form == "hf":
        save_hf(checkpoint.decoder, out)
        what = "config.json and model.safetensors"
    else:
        if out.exists():
            raise TfsError(f"{out} already exists; nothing was written. Choose another --out")
        extra = {"step": step, "exported_from": str(source)}
        save_decoder(checkpoint.decoder, out, tokenizer=checkpoint.tokenizer, extra=extra)
        what = "one model file"
    count = sum(p.numel() for p in checkpoint.decoder.parameters())
    print(f"wrote {out} ({what}: {count:,} parameters, step {step}) from {source}")
    return 0


def _form_and_destination(args: argparse.Namespace) -> tuple[str, Path]:
    form, *rest = args.to
    if form not in ("tfs", "hf") or len(rest) > 1:
        raise TfsError(f"--to {' '.join(args.to)}: give tfs or hf, then at most the destination "
                       "(for example --to hf exported/)")  # fmt: skip
    given = list(dict.fromkeys(p for p in (args.destination, args.out, *rest) if p))
    if not given:
        raise TfsError("say where to write: tfs export CHECKPOINT OUT (or --out OUT)")
    if len(given) > 1:
        raise TfsError(f"two destinations given ({' and '.join(given)}); give one")
    return form, Path(given[0])
