"""The repository's real third-party plugin, installed as its own distribution."""

from importlib import metadata
from pathlib import Path

import pytest
import torch

import transformer_from_scratch as tfs
from tests.conftest import Tfs
from transformer_from_scratch.conformance.tasks import xor_accuracy

INSTALL_HINT = (
    "install it first: pip install -e plugins/example-plugin (the README's install command does)"
)


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    try:
        metadata.distribution("tfs-example-plugin")
    except metadata.PackageNotFoundError:
        pytest.fail(f"tfs-example-plugin is not installed; {INSTALL_HINT}")


def test_it_is_discovered_through_its_entry_point() -> None:
    entry = tfs.load_registry(strict=True).get("mlp", "squared_relu")
    assert entry.provider.distribution == "tfs-example-plugin"
    assert entry.provider.version == metadata.version("tfs-example-plugin")
    assert entry.provider.plugin == "example"


def test_tfs_list_reports_it_with_its_distribution(tfs_cli: Tfs) -> None:
    result = tfs_cli("list")
    assert result.returncode == 0, result.stderr
    [row] = [line.split() for line in result.stdout.splitlines() if "squared_relu" in line]
    assert row[:4] == [
        "mlp",
        "squared_relu",
        "tfs-example-plugin",
        metadata.version("tfs-example-plugin"),
    ]


def test_a_spec_naming_it_builds_and_learns(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text(tfs.DecoderSpec.preset("tiny").evolve(mlp="squared_relu").to_toml())
    decoder = tfs.build_decoder(tfs.load_spec(path))
    assert decoder(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, 256)
    mlp = decoder.blocks[0].mlp
    assert isinstance(mlp, torch.nn.Module)
    assert xor_accuracy(mlp, 32) == 1.0


def test_autoload_off_leaves_it_out(tfs_cli: Tfs) -> None:
    result = tfs_cli("list", extra_env={"TFS_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert "squared_relu" not in result.stdout
