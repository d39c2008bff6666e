"""``tfs export``: a run's checkpoint as one file or as a Hugging Face folder, and its errors."""

import json
from pathlib import Path

import pytest
import torch
import transformers

from transformer_from_scratch.cli import main
from transformer_from_scratch.core.checkpoint import load_checkpoint


@pytest.fixture
def run(tmp_path: Path) -> Path:
    data = tmp_path / "text.txt"
    data.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    out = tmp_path / "run"
    code = main(["train", "--spec", "tiny", "--data", str(data), "--tokenizer", "char",
                 "--steps", "2", "--batch-size", "2", "--context", "8", "--sample-tokens", "0",
                 "--quiet", "--out", str(out)])  # fmt: skip
    assert code == 0
    return out


def test_a_gpt2_shaped_run_exports_to_a_folder_transformers_loads(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "hf"
    assert main(["export", str(run), "--to", "hf", str(folder)]) == 0
    assert f"wrote {folder}" in capsys.readouterr().out
    assert json.loads((folder / "config.json").read_text())["model_type"] == "gpt2"
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    ours = load_checkpoint(run / "ckpt-0000002" / "model.safetensors").decoder
    tokens = torch.randint(0, ours.spec.d_vocab, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(tokens).logits, ours(tokens), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "say where to write: tfs export CHECKPOINT OUT"),
        (["a.safetensors", "--out", "b.safetensors"], "two destinations given"),
        (["--to", "onnx", "x"], "--to onnx x: give tfs or hf"),
        (["--to", "hf", "{existing}"], "is not empty; nothing was written"),
        (["{existing}/model.safetensors"], "already exists; nothing was written"),
    ],
)
def test_export_mistakes_are_one_clear_error_and_write_nothing(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str],
    message: str,
) -> None:  # fmt: skip
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "model.safetensors").write_bytes(b"mine")
    given = [a.replace("{existing}", str(existing)) for a in arguments]
    assert main(["export", str(run), *given]) == 2
    assert message in capsys.readouterr().err
    assert [p.name for p in existing.iterdir()] == ["model.safetensors"]
    assert (existing / "model.safetensors").read_bytes() == b"mine"
