"""``tfs check`` run as a user runs it: the table, JSON, exit codes."""

import json
import os
from pathlib import Path

from tests.conftest import DistMaker, Tfs

BROKEN_PLUGIN = """
import torch
from torch import nn
from transformer_from_scratch import hookimpl

class NoisyMLP(nn.Module):
    '''An MLP that adds noise even in eval mode.'''
    def __init__(self, dims):
        super().__init__()
        self.w = nn.Parameter(torch.randn(dims.d_model, dims.d_model) * 0.1)
    def forward(self, residual):
        return residual @ self.w + 0.01 * torch.randn_like(residual)

@hookimpl
def register_components(registry):
    registry.register("mlp", "noisy_mlp", NoisyMLP)
"""


def test_check_prints_the_table_and_writes_json(tfs_cli: Tfs, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = tfs_cli("check", "--kind", "mlp", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("implementation")
    assert any(line.startswith("mlp/gelu ") for line in lines)
    assert "checks run:" in lines[-2]
    data = json.loads(out.read_text())
    assert {r["implementation"] for r in data["results"]} >= {"mlp/gelu", "mlp/relu"}
    assert data["counts"]["FAIL"] == 0


def test_check_exits_1_when_an_installed_plugin_fails(
    tfs_cli: Tfs, make_distribution: DistMaker, tmp_path: Path
) -> None:
    info = make_distribution("tfs-noisy", {"tfs_noisy": BROKEN_PLUGIN}, {"noisy": "tfs_noisy"})
    path = os.pathsep.join([str(info.parent), os.environ.get("PYTHONPATH", "")])
    result = tfs_cli("check", "--plugin", "tfs-noisy", extra_env={"PYTHONPATH": path})
    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "FAIL   mlp/noisy_mlp check_eval_deterministic: two eval-mode runs on one input differ"
        in result.stdout
    )
    assert "failed" in result.stdout.splitlines()[-1]


def test_check_names_an_unknown_implementation(tfs_cli: Tfs) -> None:
    result = tfs_cli("check", "rleu")
    assert result.returncode == 2
    assert "unknown implementation 'rleu'; did you mean 'relu'?" in result.stderr
